"""Every inventory Lua script called directly (no Python batching in between), each also run
twice with the same arguments: the second call must answer as the header says and keep the
invariant total = available + held + sold."""

from __future__ import annotations

import asyncio
import json
from importlib import resources
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


async def opened(inv: Inventory, **overrides: Any) -> str:
    spec = sale_spec(**overrides)
    assert await inv.open_sale(spec)
    return spec.id


@pytest.mark.parametrize("name", NAMES)
def test_every_script_has_a_header_naming_keys_argv_and_returns(name: str) -> None:
    own = source(name).split("local SALE, USERS", 1)[1].split("\nend\n")[-1]  # past lib.lua
    text = (resources.files("inventory") / "lua" / f"{name}.lua").read_text()
    header = text.split("\n\n", 1)[0] if text.startswith("--") else ""
    header += "\n".join(line for line in text.splitlines() if line.startswith("--"))
    assert all(word in header for word in ("KEYS", "ARGV", "Returns")), name
    assert own  # the script follows the shared helpers


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
    hold = (await call(inventory, "reserve", sale, "ann", 1, ""))[1]
    await asyncio.sleep(0.01)  # the hold expires
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
    await call(inventory, "reserve", sale, "ann", 2, "")
    await asyncio.sleep(0.01)
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
    await call(inventory, "team", sale, "open", "T1", "ann", 2, "")
    await asyncio.sleep(0.01)
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
