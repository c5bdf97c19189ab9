"""Every inventory Lua script called directly (no Python batching in between), each also run
twice with the same arguments: the second call must answer as the header says and keep the
invariant total = available + held + sold. And every Lua file's header (inventory/lua and
gateway/lua) checked against its code: each KEYS[n] and ARGV[n] the code reads is documented,
and the header documents nothing the code does not read."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

import pytest
from conftest import sale_spec

from inventory.inventory import Inventory
from inventory.keys import SaleKeys
from inventory.scripts import NAMES, source


async def call(inv: Inventory, name: str, sale_id: str, *args: Any) -> Any:
    return await inv.scripts.call(name, inv.keys(sale_id), list(args))


async def counters(inv: Inventory, sale_id: str) -> dict[str, int]:
    raw = await inv.redis.hmget(inv.keys(sale_id)[0], ["total", "available", "held", "sold"])
    values = dict(zip(["total", "available", "held", "sold"], (int(v or 0) for v in raw), strict=True))
    assert values["total"] == values["available"] + values["held"] + values["sold"], values
    return values


async def until_redis_time(inv: Inventory, ms: int) -> None:
    """Wait until Redis's clock (the one the scripts read) has reached ``ms``."""
    while True:
        seconds, micros = await inv.redis.time()
        if seconds * 1000 + micros // 1000 >= ms:
            return
        await asyncio.sleep(0.002)


async def opened(inv: Inventory, **overrides: Any) -> str:
    spec = sale_spec(**overrides)
    assert await inv.open_sale(spec)
    return spec.id


#: Every Lua directory of the project: the scripts and, in inventory/, the helpers (lib.lua)
#: that inventory/scripts.py puts in front of each of them.
LUA_DIRS: dict[str, Traversable] = {
    package: resources.files(package) / "lua" for package in ("inventory", "gateway", "live")
}
LUA_FILES = sorted(
    (package, entry.name)
    for package, folder in LUA_DIRS.items()
    for entry in folder.iterdir()
    if entry.name.endswith(".lua")
)
#: Files of helpers, not scripts: they return nothing, and the scripts bring their own ARGV.
HELPERS = {"lib.lua"}

_REF = re.compile(r"\b(KEYS|ARGV)\[(\d+)(\.\.)?\]")
_WHOLE = re.compile(r"^(KEYS|ARGV):\s*(.*)$", re.MULTILINE)
_OTHER_FILE = re.compile(r"\b([\w-]+\.lua)\b")


def _spread(kind: str) -> re.Pattern[str]:
    """A read of the whole list or of a computed index: ``#ARGV``, ``unpack(ARGV)``,
    ``ipairs(KEYS)``, ``ARGV[i + 1]``."""
    return re.compile(rf"#{kind}\b|\b(?:unpack|ipairs|pairs)\({kind}\)|\b{kind}\[(?!\d+\])")


def split_header(text: str) -> tuple[str, str]:
    """The header (the comment lines at the top, ``--`` taken off) and the code below it with
    its comments taken out (no script has ``--`` inside a string)."""
    lines = text.splitlines()
    n = next((i for i, line in enumerate(lines) if not line.startswith("--")), len(lines))
    header = "\n".join(line[2:].strip() for line in lines[:n])
    body = "\n".join(re.sub(r"--.*", "", line) for line in lines[n:])
    return header, body


def documented_keys(text: str) -> set[int]:
    """The KEYS[n] a file's header names one by one (the layout another header may refer to)."""
    header, _ = split_header(text)
    return {int(n) for kind, n, rest in _REF.findall(header) if kind == "KEYS" and not rest}


def header_problems(name: str, text: str, read: Callable[[str], str | None]) -> list[str]:
    """What is wrong with a Lua file's KEYS/ARGV/Returns header, [] when nothing. ``read``
    gives another file of the same folder (or None), for a header that says ``KEYS: as due.lua``.

    The rule, for KEYS and for ARGV: the header describes them (``KEYS[1] ...``; ``ARGV[4..]``
    for the rest of the list; or one ``ARGV: ...`` line for the whole list, ``ARGV: none`` when
    there are none, or ``KEYS: ... (lib.lua)`` for another file's layout). Every literal
    index the code reads is documented; every index the header names one by one is read; the
    indices documented run 1..n without a gap (a caller passes them by position); a ``[n..]``
    or whole-list description goes with code that reads the list as a whole or by a computed
    index, and code that does is documented that way.
    """
    header, body = split_header(text)
    problems: list[str] = []
    if not header:
        return [f"{name}: no header comment at the top"]
    if name not in HELPERS and "Returns" not in header:
        problems.append(f"{name}: the header does not say what the script returns")
    kinds = ("KEYS",) if name in HELPERS else ("KEYS", "ARGV")
    for kind in kinds:
        named = {int(n) for k, n, rest in _REF.findall(header) if k == kind and not rest}
        rests = [int(n) for k, n, rest in _REF.findall(header) if k == kind and rest]
        whole = [d.strip() for k, d in _WHOLE.findall(header) if k == kind]
        used = {int(n) for n in re.findall(rf"\b{kind}\[(\d+)\]", body)}
        spread = bool(_spread(kind).search(body))
        inherited: set[int] = set()
        listed = False  # a whole-list description that is not another file's layout
        for description in whole:
            if description == "none":
                if used or spread:
                    problems.append(f"{name}: the header says {kind}: none, but the code reads {kind}")
                continue
            other = _OTHER_FILE.search(description)
            if other:
                other_text = read(other.group(1))
                if other_text is None:
                    problems.append(f"{name}: {kind} refers to {other.group(1)}, which does not exist")
                else:
                    inherited |= documented_keys(other_text)
            else:
                listed = True
        if not (named or rests or whole):
            problems.append(f"{name}: the header does not describe {kind}")
        start = min(rests, default=None)
        for n in sorted(used):
            if not (n in named or n in inherited or listed or (start is not None and n >= start)):
                problems.append(f"{name}: the code reads {kind}[{n}], which the header does not document")
        for n in sorted(named - used):
            problems.append(f"{name}: the header documents {kind}[{n}], which the code never reads")
        positions = named | set(range(1, start)) if start is not None else named
        if positions and positions != set(range(1, max(positions) + 1)):
            missing = sorted(set(range(1, max(positions) + 1)) - positions)
            problems.append(f"{name}: the header skips {kind}{missing}")
        if (start is not None or listed) and not spread:
            problems.append(f"{name}: the header describes a list of {kind} the code never reads as one")
        if spread and not (start is not None or listed or inherited):
            problems.append(f"{name}: the code reads {kind} by a computed index; the header has no [n..]")
    return problems


def _reader(package: str) -> Callable[[str], str | None]:
    def read(file: str) -> str | None:
        entry = LUA_DIRS[package] / file
        return entry.read_text() if entry.is_file() else None

    return read


@pytest.mark.parametrize(("package", "file"), LUA_FILES, ids=[f"{p}/{f}" for p, f in LUA_FILES])
def test_every_lua_file_has_a_header_matching_its_keys_and_argv(package: str, file: str) -> None:
    text = (LUA_DIRS[package] / file).read_text()
    assert header_problems(file, text, _reader(package)) == []


def test_every_inventory_script_is_loaded_after_the_shared_helpers() -> None:
    lua = LUA_DIRS["inventory"]
    scripts = {f.removesuffix(".lua") for p, f in LUA_FILES if p == "inventory"} - {"lib"}
    assert scripts == set(NAMES)  # no script in the folder that nothing loads (or tests)
    lib = (lua / "lib.lua").read_text()
    for name in NAMES:
        assert source(name) == lib + "\n" + (lua / f"{name}.lua").read_text(), name


# The checker itself, on texts with one thing wrong each (the real files all pass it).

GOOD = """-- Add likes.
--
-- KEYS[1]  state hash
-- ARGV[1]  channel    ARGV[2]  likes to add
-- Returns: the new total.

local total = redis.call('HINCRBY', KEYS[1], 'likes', ARGV[2])
redis.call('PUBLISH', ARGV[1], total)
return total
"""


def _problems(text: str, files: dict[str, str] | None = None) -> list[str]:
    return header_problems("x.lua", text, (files or {}).get)


def test_the_checker_passes_a_header_that_matches() -> None:
    assert _problems(GOOD) == []


def test_the_checker_finds_an_argument_the_header_leaves_out() -> None:
    text = GOOD.replace("ARGV[2]  likes to add", "likes to add")
    assert _problems(text) == ["x.lua: the code reads ARGV[2], which the header does not document"]


def test_the_checker_finds_a_key_the_code_no_longer_reads() -> None:
    text = GOOD.replace("-- KEYS[1]  state hash", "-- KEYS[1]  state hash   KEYS[2]  old set")
    assert _problems(text) == ["x.lua: the header documents KEYS[2], which the code never reads"]


def test_the_checker_reads_only_the_header_at_the_top() -> None:
    # the old test collected every comment line of the file: one lower down counted
    text = GOOD.replace("-- ARGV[1]  channel    ARGV[2]  likes to add\n", "")
    text += "-- ARGV[1] channel, ARGV[2] likes (Returns)\n"
    assert _problems(text) == [
        "x.lua: the header does not describe ARGV",
        "x.lua: the code reads ARGV[1], which the header does not document",
        "x.lua: the code reads ARGV[2], which the header does not document",
    ]
    assert _problems("local x = KEYS[1]\n-- KEYS[1] ARGV: none Returns\n") == [
        "x.lua: no header comment at the top"
    ]


def test_the_checker_wants_returns_a_gapless_list_and_list_reads_documented() -> None:
    assert _problems(GOOD.replace("Returns:", "Gives:")) == [
        "x.lua: the header does not say what the script returns"
    ]
    gap = GOOD.replace("ARGV[2]", "ARGV[3]")
    assert _problems(gap) == ["x.lua: the header skips ARGV[2]"]
    loop = GOOD.replace("return total", "for i = 3, #ARGV do redis.call('DEL', ARGV[i]) end\nreturn total")
    assert _problems(loop) == ["x.lua: the code reads ARGV by a computed index; the header has no [n..]"]
    documented = loop.replace("likes to add", "likes to add   ARGV[3..] keys to delete")
    assert _problems(documented) == []
    unread = documented.replace("for i = 3, #ARGV do redis.call('DEL', ARGV[i]) end\n", "")
    assert _problems(unread) == ["x.lua: the header describes a list of ARGV the code never reads as one"]


def test_the_checker_follows_a_layout_in_another_file() -> None:
    layout = "-- KEYS[1] sale   KEYS[2] users\n\nlocal SALE, USERS = KEYS[1], KEYS[2]\n"
    text = GOOD.replace("-- KEYS[1]  state hash", "-- KEYS: the sale's keys (lib.lua)")
    assert _problems(text, {"lib.lua": layout}) == []
    assert _problems(text.replace("KEYS[1]", "KEYS[3]"), {"lib.lua": layout}) == [
        "x.lua: the code reads KEYS[3], which the header does not document"
    ]
    assert _problems(text) == [
        "x.lua: KEYS refers to lib.lua, which does not exist",
        "x.lua: the code reads KEYS[1], which the header does not document",
    ]
    none = GOOD.replace("-- ARGV[1]  channel    ARGV[2]  likes to add", "-- ARGV: none")
    assert _problems(none) == [
        "x.lua: the header says ARGV: none, but the code reads ARGV",
        "x.lua: the code reads ARGV[1], which the header does not document",
        "x.lua: the code reads ARGV[2], which the header does not document",
    ]


async def test_open_sale_twice(inventory: Inventory) -> None:
    fields = sale_spec().redis_fields(inventory.channel)
    args = [x for pair in fields.items() for x in pair]
    assert await call(inventory, "open_sale", "s1", *args) == b"created"
    assert await call(inventory, "open_sale", "s1", *args) == b"exists"
    assert await counters(inventory, "s1") == {"total": 10, "available": 10, "held": 0, "sold": 0}


async def test_reserve_batch_in_order_and_replayed(inventory: Inventory) -> None:
    sale = await opened(inventory, stock=3, per_user_limit=2)
    batch = ["ann", 2, "k1", "bob", 2, "k2", "cat", 1, "k3", "ann", 1, "k4", "dan", 5, ""]
    out = await call(inventory, "reserve", sale, *batch)
    codes = out[0::3]
    assert codes == [b"reserved", b"insufficient_stock", b"reserved", b"limit_reached", b"invalid_quantity"]
    assert out[4] == b"" and out[5] == 1  # bob learns that 1 unit is left
    assert await counters(inventory, sale) == {"total": 3, "available": 0, "held": 3, "sold": 0}

    again = await call(inventory, "reserve", sale, *batch)
    # same keys, same quantities: the same answers again, refusals included (changed with issue
    # 11: one request id, one decision, recorded); the keyless request is decided afresh
    assert again[:12] == out[:12]
    assert again[12:] == [b"invalid_quantity", b"", 0]
    assert await counters(inventory, sale) == {"total": 3, "available": 0, "held": 3, "sold": 0}

    other = await call(inventory, "reserve", sale, "ann", 1, "k1")
    assert other[0] == b"duplicate"


async def test_reserve_outside_the_window_and_unknown_sale(inventory: Inventory) -> None:
    later = await opened(inventory, sale_id="later", starts_at_ms=sale_spec().ends_at_ms)
    over = await opened(inventory, sale_id="over", starts_at_ms=0, ends_at_ms=1)
    assert (await call(inventory, "reserve", later, "u", 1, ""))[0] == b"not_started"
    assert (await call(inventory, "reserve", over, "u", 1, ""))[0] == b"ended"
    assert await call(inventory, "reserve", "nope", "u", 1, "", "v", 1, "") == [
        b"unknown_sale", b"", 0, b"unknown_sale", b"", 0,
    ]  # fmt: skip


async def test_confirm_twice_and_someone_elses_hold(inventory: Inventory) -> None:
    sale = await opened(inventory)
    hold = (await call(inventory, "reserve", sale, "ann", 2, "k"))[1]
    assert (await call(inventory, "confirm", sale, hold, "bob", "", -1))[0] == b"not_your_hold"
    assert (await call(inventory, "confirm", sale, hold, "ann", "", 1))[0] == b"amount_changed"
    first = await call(inventory, "confirm", sale, hold, "ann", "", 1998)
    second = await call(inventory, "confirm", sale, hold, "ann", "", 1998)
    assert first[0] == second[0] == b"confirmed" and first[1] == second[1] == 1998
    assert first[2] == second[2]
    order = json.loads(first[2])
    assert order["id"] == hold.decode() and order["qty"] == 2 and order["key"] == "k"
    assert await counters(inventory, sale) == {"total": 10, "available": 8, "held": 0, "sold": 2}
    assert await inventory.redis.xlen(SaleKeys(inventory.config.key_prefix, sale).stream) == 1
    assert (await call(inventory, "confirm", sale, hold, "bob", "", -1))[0] == b"hold_not_found"


async def test_confirm_after_expiry_gives_the_units_back(inventory: Inventory) -> None:
    sale = await opened(inventory, hold_ms=1)
    _, hold, expires = await call(inventory, "reserve", sale, "ann", 1, "")
    await until_redis_time(inventory, expires)  # the hold expires
    assert (await call(inventory, "confirm", sale, hold, "ann", "", -1))[0] == b"hold_expired"
    assert (await call(inventory, "confirm", sale, hold, "ann", "", -1))[0] == b"hold_not_found"
    assert await counters(inventory, sale) == {"total": 10, "available": 10, "held": 0, "sold": 0}


async def test_cancel_twice(inventory: Inventory) -> None:
    sale = await opened(inventory)
    hold = (await call(inventory, "reserve", sale, "ann", 2, ""))[1]
    assert await call(inventory, "cancel", sale, hold, "bob") == [b"not_your_hold", 0]
    assert await call(inventory, "cancel", sale, hold, "ann") == [b"cancelled", 2]
    assert await call(inventory, "cancel", sale, hold, "ann") == [b"hold_not_found", 0]
    assert await counters(inventory, sale) == {"total": 10, "available": 10, "held": 0, "sold": 0}
    assert await inventory.redis.hget(inventory.keys(sale)[1], "ann") is None  # the user's count is gone


async def test_sweep_expires_once_and_announces_once(inventory: Inventory) -> None:
    sale = await opened(inventory, hold_ms=1, stock=2)
    expires = (await call(inventory, "reserve", sale, "ann", 2, ""))[2]
    await until_redis_time(inventory, expires)
    first = await call(inventory, "sweep", sale, 100, 0, 10_000)
    second = await call(inventory, "sweep", sale, 100, 0, 10_000)
    assert first[0] == b"live" and first[1] == b""  # first sight: announced by this call
    assert second[0] == second[1] == b"live"  # no change for the second
    assert [x for x in first[8][1::3]] == [b"ann"] and second[8] == []
    assert first[2] == 2 and second[2] == -1  # stock: one update, then nothing new
    assert await counters(inventory, sale) == {"total": 2, "available": 2, "held": 0, "sold": 0}


async def test_sweep_countdown_and_end(inventory: Inventory) -> None:
    soon = sale_spec().starts_at_ms + 6_000
    sale = await opened(inventory, starts_at_ms=soon)
    out = await call(inventory, "sweep", sale, 100, 200, 10_000)
    assert out[0] in (b"countdown:5", b"countdown:4")
    await call(inventory, "stop", sale)
    assert (await call(inventory, "stop", sale))[0] == b"already_ended"
    out = await call(inventory, "sweep", sale, 100, 200, 10_000)
    assert out[0] == b"ended" and out[1].startswith(b"countdown")


async def test_add_stock_twice_and_sold_out_flag(inventory: Inventory) -> None:
    sale = await opened(inventory, stock=1)
    await call(inventory, "reserve", sale, "ann", 1, "")
    assert (await call(inventory, "reserve", sale, "bob", 1, ""))[0] == b"sold_out"
    assert await call(inventory, "add_stock", sale, 5) == [b"added", 6, 5]
    assert await call(inventory, "add_stock", sale, 5) == [b"added", 11, 10]
    assert await counters(inventory, sale) == {"total": 11, "available": 10, "held": 1, "sold": 0}
    assert (await call(inventory, "add_stock", "nope", 5))[0] == b"unknown_sale"


async def test_team_opens_fills_and_replays(inventory: Inventory) -> None:
    sale = await opened(inventory, group_size=2, group_price_cents=500, team_ms=60_000)
    opened_team = await call(inventory, "team", sale, "open", "T1", "ann", 1, "k1")
    assert opened_team[0] == b"joined" and opened_team[2] == b"T1" and opened_team[4:6] == [1, 2]
    assert (await call(inventory, "team", sale, "open", "T1", "bob", 1, ""))[0] == b"team_exists"
    assert (await call(inventory, "team", sale, "join", "T1", "ann", 1, ""))[0] == b"already_in_team"
    assert (await call(inventory, "team", sale, "join", "T9", "bob", 1, ""))[0] == b"team_not_found"
    done = await call(inventory, "team", sale, "join", "T1", "bob", 1, "k2")
    assert done[0] == b"completed" and len(done[6]) == 2
    assert {json.loads(o)["amount"] for o in done[6]} == {500}
    replay = await call(inventory, "team", sale, "join", "T1", "bob", 1, "k2")
    assert replay[0] == b"completed" and replay[1] == done[1]
    assert (await call(inventory, "team", sale, "join", "T1", "cat", 1, ""))[0] == b"team_closed"
    assert await counters(inventory, sale) == {"total": 10, "available": 8, "held": 0, "sold": 2}


async def test_team_past_its_deadline_fails_once(inventory: Inventory) -> None:
    sale = await opened(inventory, group_size=3, group_price_cents=500, team_ms=1)
    deadline = (await call(inventory, "team", sale, "open", "T1", "ann", 2, ""))[3]
    await until_redis_time(inventory, deadline)
    first = await call(inventory, "sweep", sale, 100, 200, 10_000)
    second = await call(inventory, "sweep", sale, 100, 200, 10_000)
    assert first[9][:2] == [b"T1", 1] and first[9][3:5] == [b"ann", 1000]
    assert second[9] == []
    assert (await call(inventory, "team", sale, "join", "T1", "bob", 1, ""))[0] == b"team_closed"
    assert await counters(inventory, sale) == {"total": 10, "available": 10, "held": 0, "sold": 0}


async def test_team_on_a_sale_without_group_price(inventory: Inventory) -> None:
    sale = await opened(inventory)
    assert (await call(inventory, "team", sale, "open", "T1", "ann", 1, ""))[0] == b"not_group_sale"


async def test_coupons_drop_claim_twice_and_apply_once(inventory: Inventory) -> None:
    sale = await opened(inventory)
    assert await call(inventory, "coupons", sale, "drop", "b1", 2, 300) == [b"dropped", 2, 300]
    assert (await call(inventory, "coupons", sale, "drop", "b1", 2, 300))[0] == b"batch_exists"
    ann = await call(inventory, "coupons", sale, "claim", "b1", "ann")
    assert ann == await call(inventory, "coupons", sale, "claim", "b1", "ann")  # one per user
    await call(inventory, "coupons", sale, "claim", "b1", "bob")
    assert (await call(inventory, "coupons", sale, "claim", "b1", "cat"))[0] == b"coupons_gone"
    assert (await call(inventory, "coupons", sale, "claim", "b9", "cat"))[0] == b"batch_not_found"
    coupon = ann[1].decode()
    hold = (await call(inventory, "reserve", sale, "ann", 1, ""))[1]
    other = (await call(inventory, "reserve", sale, "bob", 1, ""))[1]
    assert (await call(inventory, "confirm", sale, other, "bob", coupon, -1))[0] == b"coupon_invalid"
    out = await call(inventory, "confirm", sale, hold, "ann", coupon, 699)
    assert out[:2] == [b"confirmed", 699]
    hold2 = (await call(inventory, "reserve", sale, "ann", 1, ""))[1]
    assert (await call(inventory, "confirm", sale, hold2, "ann", coupon, -1))[0] == b"coupon_invalid"


async def test_repair_twice_rebuilds_the_same_counters(inventory: Inventory) -> None:
    spec = sale_spec()
    await inventory.open_sale(spec)
    sale = spec.id
    hold = (await call(inventory, "reserve", sale, "ann", 2, ""))[1]
    await call(inventory, "reserve", sale, "bob", 1, "")
    order = (await call(inventory, "confirm", sale, hold, "ann", "", -1))[2]
    await inventory.redis.hset(inventory.keys(sale)[0], mapping={"available": 99, "sold": 0})  # corrupt
    fields = {**spec.redis_fields(inventory.channel), "seq": 2, "state": ""}
    first = await call(inventory, "repair", sale, json.dumps(fields), order)
    second = await call(inventory, "repair", sale, json.dumps(fields), order)
    assert first == second == [7, 1, 2, 10, 1]
    assert await counters(inventory, sale) == {"total": 10, "available": 7, "held": 1, "sold": 2}


async def test_one_key_twice_in_one_batch_is_one_hold(inventory: Inventory) -> None:
    sale = await opened(inventory, per_user_limit=5)
    out = await call(inventory, "reserve", sale, "ann", 2, "k", "ann", 2, "k", "ann", 1, "k", "bob", 1, "k")
    assert out[0::3] == [b"reserved", b"reserved", b"duplicate", b"reserved"]
    assert out[1] == out[4] and out[1] != out[10]  # bob's "k" is bob's own
    assert await counters(inventory, sale) == {"total": 10, "available": 7, "held": 3, "sold": 0}
    assert await inventory.redis.hget(inventory.keys(sale)[1], "ann") == b"2"
