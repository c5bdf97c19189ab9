"""Issue 11, the inventory's side: one request id gets one decision across processes (4), a bad
quantity is refused as such whatever the stock (17), made-up sale ids cost no memory (8), and
one request that cannot be sent never fails its batch-mates (1b). Two Inventory instances on
their own Redis clients stand for two server processes: each has its own sold-out flags and
batch queues."""

from __future__ import annotations

import asyncio
import functools
import os
import random
import secrets
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any

import polling
import pytest
from conftest import sale_spec

from inventory import model
from inventory.inventory import Inventory, InventoryConfig
from inventory.keys import SaleKeys
from inventory.model import InventoryError, Reserved
from live.redis_client import connect
from live.supervisor import Supervisor

Outcome = tuple[Any, ...]


@pytest.fixture
def rng() -> random.Random:
    """Random but repeatable: the seed is printed (pytest shows it when the test fails)."""
    seed = int(os.environ.get("TEST_SEED", random.randrange(2**32)))
    print(f"TEST_SEED={seed}")
    return random.Random(seed)


@asynccontextmanager
async def two(
    redis_url: str, a: dict[str, Any], b: dict[str, Any]
) -> AsyncIterator[tuple[Inventory, Inventory]]:
    """Two "processes" on one Redis and one key prefix, with configs of their own."""
    prefix = f"t{uuid.uuid4().hex[:12]}"
    clients = [connect(redis_url), connect(redis_url)]
    pair = [
        Inventory(c, InventoryConfig(key_prefix=prefix, **cfg), Supervisor())
        for c, cfg in zip(clients, (a, b), strict=True)
    ]
    for inv in pair:
        await inv.start()
    try:
        yield pair[0], pair[1]
    finally:
        for inv in pair:
            await inv.stop()
        for c in clients:
            await c.aclose()


async def outcome(call: Awaitable[Reserved]) -> Outcome:
    """What a buyer is told, comparable across copies."""
    try:
        held = await call
    except InventoryError as exc:
        return (exc.code, tuple(sorted(exc.data.items())))
    return ("reserved", held.hold_id, held.quantity, held.expires_at_ms)


async def holds_by_rid(inv: Inventory, sale_id: str) -> Counter[tuple[str, str]]:
    """How many holds each (user, request id) has in Redis (lib.lua's hold record)."""
    raw = await inv.redis.hgetall(SaleKeys(inv.config.key_prefix, sale_id).holds)
    found: Counter[tuple[str, str]] = Counter()
    for record in raw.values():
        _, _, _, _, klen, rest = record.decode().split("|", 5)
        found[(rest[int(klen) :], rest[: int(klen)])] += 1
    return found


async def hold_ids(inv: Inventory, sale_id: str) -> set[str]:
    return {h.decode() for h in await inv.redis.hkeys(SaleKeys(inv.config.key_prefix, sale_id).holds)}


async def invariant(inv: Inventory, sale_id: str) -> model.SaleStatus:
    status = await inv.status(sale_id)
    assert status.total == status.available + status.held + status.sold, status
    return status


until = functools.partial(polling.until, timeout_s=10.0, every_s=0.005)


# -- 4. one request id, one decision, across processes -----------------------------------------


async def test_a_copy_on_a_process_that_believes_sold_out_gets_the_one_decision(redis_url: str) -> None:
    """The reported race: the original waits in one process's batch queue; its retry reaches a
    process whose sold-out flag is up. The retry must not be answered sold_out while the
    original then takes a hold nobody hears of: both get the one decision."""
    async with two(redis_url, {"batch_window_ms": 400}, {}) as (a, b):
        await a.open_sale(sale_spec("s1", stock=5))
        await a.reserve("s1", "zed", 1, "z1")  # a knows the sale now
        original = asyncio.create_task(outcome(a.reserve("s1", "ann", 1, "r1")))
        await until(lambda: bool(a._queues.get("s1") and a._queues["s1"].pending))  # waiting
        b.sold_out.add("s1")  # b's flag is up (stale, or a sell-out that is being undone)
        retry = await outcome(b.reserve("s1", "ann", 1, "r1"))
        assert await original == retry
        assert retry[0] == "reserved"
        assert (await holds_by_rid(a, "s1"))[("ann", "r1")] == 1
        await invariant(a, "s1")


async def _sold_out_then_refilled(a: Inventory, b: Inventory) -> None:
    await a.open_sale(sale_spec("s1", stock=1))
    await a.reserve("s1", "zed", 1, "z1")
    with pytest.raises(model.SoldOut):
        await a.reserve("s1", "ann", 1, "r1")
    await b.add_stock("s1", 3)


async def _short_then_refilled(a: Inventory, b: Inventory) -> None:
    await a.open_sale(sale_spec("s1", stock=2, per_user_limit=3))
    with pytest.raises(model.InsufficientStock):
        await a.reserve("s1", "ann", 3, "r1")
    await b.add_stock("s1", 5)


async def _over_the_limit_then_cancelled(a: Inventory, b: Inventory) -> None:
    await a.open_sale(sale_spec("s1", stock=10, per_user_limit=2))
    held = await a.reserve("s1", "ann", 2, "first")
    with pytest.raises(model.LimitReached):
        await a.reserve("s1", "ann", 1, "r1")
    await b.cancel(held.hold_id, "ann")


async def _early_then_started(a: Inventory, b: Inventory) -> None:
    now = int(time.time() * 1000)
    await a.open_sale(sale_spec("s1", starts_at_ms=now + 1000, ends_at_ms=now + 60_000))
    with pytest.raises(model.NotStarted):
        await a.reserve("s1", "ann", 1, "r1")
    deadline = time.monotonic() + 10
    while (await b.status("s1")).phase != "live":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)


@pytest.mark.parametrize(
    ("setup", "quantity", "refused"),
    [
        (_sold_out_then_refilled, 1, model.SoldOut),
        (_short_then_refilled, 3, model.InsufficientStock),
        (_over_the_limit_then_cancelled, 1, model.LimitReached),
        (_early_then_started, 1, model.NotStarted),
    ],
)
async def test_a_refusal_is_the_decision_for_every_later_copy(
    redis_url: str, setup: Any, quantity: int, refused: type[InventoryError]
) -> None:
    """A copy that arrives after the refusal's cause went away (a refill, a cancel, the start)
    gets the refusal again, on the other process too: it must not take a hold while another
    copy was told no. A new attempt takes a new request id."""
    async with two(redis_url, {}, {}) as (a, b):
        await setup(a, b)
        first_data = None
        for inv in (a, b, a):
            with pytest.raises(refused) as again:
                await inv.reserve("s1", "ann", quantity, "r1")
            first_data = first_data or again.value.data
            assert again.value.data == first_data  # insufficient_stock: the units left then
        assert (await holds_by_rid(a, "s1"))[("ann", "r1")] == 0
        assert (await b.reserve("s1", "ann", quantity, "r2")).quantity == quantity
        await invariant(a, "s1")


async def test_a_bad_quantity_is_one_decision_too(redis_url: str) -> None:
    async with two(redis_url, {}, {}) as (a, b):
        await a.open_sale(sale_spec("s1", per_user_limit=2))
        for inv in (a, b):
            with pytest.raises(model.InvalidQuantity):
                await inv.reserve("s1", "ann", 3, "r1")
        with pytest.raises(model.Duplicate):  # the id was used, for another quantity
            await b.reserve("s1", "ann", 1, "r1")
        assert (await a.reserve("s1", "ann", 1, "r2")).quantity == 1


@pytest.mark.parametrize("state", ["live", "sold_out", "refilling"])
async def test_concurrent_copies_on_two_processes_get_one_decision(
    redis_url: str, rng: random.Random, state: str
) -> None:
    """Every request id is sent 2-3 times at once, over both processes (one batching with a
    window and small batches, one without), while the sale is live, sold out, or sold out and
    refilled meanwhile. Every copy of a request id is told the same; Redis holds at most one
    hold for it, the one it was told."""
    window = {"batch_window_ms": 3.0, "max_batch": 8}
    async with two(redis_url, window, {"batch_window_ms": 0.0}) as (a, b):
        stock = 400 if state == "live" else 20
        await a.open_sale(sale_spec("s1", stock=stock, per_user_limit=1))
        fillers: list[tuple[str, Reserved]] = []
        if state != "live":  # the sale sold out, seen so by both processes
            fillers = [(f"f{i}", await a.reserve("s1", f"f{i}", 1, f"fill{i}")) for i in range(stock)]
            await until(lambda: "s1" in a.sold_out and "s1" in b.sold_out)

        async def copy(inv: Inventory, user: str, rid: str) -> Outcome:
            await asyncio.sleep(rng.random() * 0.02)
            return await outcome(inv.reserve("s1", user, 1, rid))

        async def refill() -> None:  # units come back while the copies are on their way
            for user, held in fillers[:8]:
                await asyncio.sleep(rng.random() * 0.01)
                if rng.random() < 0.5:
                    await b.cancel(held.hold_id, user)
                else:
                    await a.add_stock("s1", 1)

        buyers = [(f"u{i}", f"rid-{i}") for i in range(150)]
        calls: list[tuple[str, Awaitable[Outcome]]] = []
        for user, rid in buyers:
            for _ in range(rng.choice((2, 3))):
                calls.append((rid, copy(rng.choice((a, b)), user, rid)))
        rng.shuffle(calls)
        extra = [refill()] if state == "refilling" else []
        results = await asyncio.gather(*(c for _, c in calls), *extra)
        told: dict[str, set[Outcome]] = {}
        for (rid, _), said in zip(calls, results, strict=False):
            told.setdefault(rid, set()).add(said)
        for user, rid in buyers:  # and once more, later, on each process
            told[rid].add(await outcome(a.reserve("s1", user, 1, rid)))
            told[rid].add(await outcome(b.reserve("s1", user, 1, rid)))

        assert {rid: said for rid, said in told.items() if len(said) != 1} == {}
        holds = await holds_by_rid(a, "s1")
        ids = await hold_ids(a, "s1")
        for user, rid in buyers:
            (said,) = told[rid]
            assert holds[(user, rid)] == (1 if said[0] == "reserved" else 0), (rid, said)
            if said[0] == "reserved":
                assert said[1] in ids
            else:
                assert said[0] == "sold_out", said
        reserved = sum(1 for said in told.values() if next(iter(said))[0] == "reserved")
        if state == "live":
            assert reserved == len(buyers)
        elif state == "sold_out":
            assert reserved == 0
        status = await invariant(a, "s1")
        fillers_holding = sum(n for (user, _), n in holds.items() if user.startswith("f"))
        assert status.held == reserved + fillers_holding


# -- 17. a bad request gets the same code whatever the stock and the window ---------------------


async def test_the_script_checks_the_quantity_before_the_window_and_the_stock(inventory: Inventory) -> None:
    now = int(time.time() * 1000)
    await inventory.open_sale(sale_spec("gone", stock=1, per_user_limit=2))
    await inventory.reserve("gone", "zed", 1)
    await inventory.open_sale(sale_spec("later", starts_at_ms=now + 60_000, ends_at_ms=now + 120_000))
    await inventory.open_sale(sale_spec("over", starts_at_ms=now - 10_000, ends_at_ms=now - 1))
    await inventory.open_sale(sale_spec("live", per_user_limit=2))
    for sale in ("gone", "later", "over", "live"):
        for key in ("", "k1"):
            out = await inventory.scripts.call("reserve", inventory.keys(sale), ["ann", 3, key])
            assert out == [b"invalid_quantity", b"", 0], (sale, key)


async def test_a_quantity_over_the_limit_is_invalid_before_and_after_the_sell_out(
    inventory: Inventory,
) -> None:
    await inventory.open_sale(sale_spec("s1", stock=2, per_user_limit=2))
    for n, key in enumerate(("", "a", "")):
        with pytest.raises(model.InvalidQuantity):
            await inventory.reserve("s1", "ann", 3, key and f"{key}{n}")
    await inventory.reserve("s1", "bob", 2)
    with pytest.raises(model.SoldOut):
        await inventory.reserve("s1", "cat", 1)
    assert "s1" in inventory.sold_out  # the flag is up: the shortcut must check the request first
    for n, key in enumerate(("", "b", "")):
        with pytest.raises(model.InvalidQuantity):
            await inventory.reserve("s1", "ann", 3, key and f"{key}{n}")


# -- 8. made-up sale ids cost no memory; the sales kept are bounded ------------------------------


def container_sizes(obj: object) -> dict[str, int]:
    return {name: len(v) for name, v in vars(obj).items() if isinstance(v, dict | set | list)}


async def test_made_up_sale_ids_are_unknown_and_not_kept(inventory: Inventory) -> None:
    await inventory.open_sale(sale_spec("real"))
    await inventory.reserve("real", "ann", 1, "k")
    ids = [f"s_{secrets.token_hex(8)}" for _ in range(20_000)]
    for start in range(0, len(ids), 250):
        said = await asyncio.gather(
            *(outcome(inventory.reserve(s, "ann", 1, "k")) for s in ids[start : start + 250])
        )
        assert set(said) == {("unknown_sale", ())}
    sizes = container_sizes(inventory)
    assert max(sizes.values()) <= 8, sizes
    assert (await inventory.reserve("real", "bob", 1, "k")).quantity == 1


async def test_the_sales_kept_are_bounded_and_evicted_ones_still_work(redis_url: str) -> None:
    client = connect(redis_url)
    inv = Inventory(
        client, InventoryConfig(key_prefix=f"t{uuid.uuid4().hex[:12]}", sale_cache_size=4), Supervisor()
    )
    await inv.start()
    try:
        for i in range(10):
            await inv.open_sale(sale_spec(f"s{i}"))
            await inv.reserve(f"s{i}", "ann", 1, "k")
        assert len(inv._facts) <= 4 and not inv._queues, container_sizes(inv)
        for i in range(10):  # evicted or not: the same answers, the same keys
            assert await outcome(inv.reserve(f"s{i}", "ann", 1, "k")) == await outcome(
                inv.reserve(f"s{i}", "ann", 1, "k")
            )
            assert (await inv.status(f"s{i}")).held == 1
            assert (await inv.reserve(f"s{i}", "bob", 2, "k")).quantity == 2
        assert len(inv._facts) <= 4 and not inv._queues, container_sizes(inv)
    finally:
        await inv.stop()
        await client.aclose()


# -- 1b. one request's failure in a batch is that request's alone -------------------------------


@pytest.mark.parametrize("field", ["key", "user_id"])
async def test_an_unsendable_request_fails_alone_and_its_batch_mates_get_holds(
    inventory: Inventory, field: str
) -> None:
    await inventory.open_sale(sale_spec("s1", stock=50, per_user_limit=1))
    bad = "\ud800"

    def args(i: int) -> tuple[str, str]:
        user, key = f"u{i}", f"k{i}"
        if i == 7:
            user, key = (user, bad) if field == "key" else (bad, key)
        return user, key

    said = await asyncio.gather(
        *(outcome(inventory.reserve("s1", args(i)[0], 1, args(i)[1])) for i in range(20))
    )
    assert [s[0] for s in said].count("reserved") == 19
    assert said[7][0] == "invalid_field"
    assert (await invariant(inventory, "s1")).held == 19


async def test_a_batch_call_that_fails_on_one_request_is_split_until_only_it_fails(
    inventory: Inventory,
) -> None:
    """Past the checks (here: queued directly, as a bug might), a request that cannot be sent
    fails its call; the call is decided again in halves, so only that request fails, and every
    other gets exactly one hold."""
    await inventory.open_sale(sale_spec("s1", stock=50, per_user_limit=1))
    await inventory.reserve("s1", "warm", 1, "w")
    calls = [
        inventory._enqueue("s1", f"u{i}", 1, "\udfff" if i == 13 else ("" if i % 3 else f"k{i}"))
        for i in range(20)
    ]
    said = await asyncio.gather(*(outcome(c) for c in calls))
    assert [s[0] for s in said].count("reserved") == 19, said
    assert said[13][0] == "invalid_field"
    assert (await invariant(inventory, "s1")).held == 20  # 19 and the warm-up: one hold each
    assert all(n == 1 for n in (await holds_by_rid(inventory, "s1")).values())
