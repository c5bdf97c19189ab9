"""The durable order ledger: confirmed orders go from Redis (the sale's orders stream) into
the store of record (each test on SQLite and on PostgreSQL), none lost and none twice --
through the consumer group, through the confirming process's own group-committed write,
after a consumer died holding entries, and when a second order turns up for one request id.
And reconciliation: clean after a rush, a corrupted counter or a lost row is reported in
words, and repair makes the sale clean again. And the consumer reads sales in several Redis
Cluster slots, each slot's streams with one command."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from conftest import sale_spec
from postgres import StoreDb
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from inventory import model, reconcile
from inventory.inventory import Inventory, InventoryConfig
from inventory.keys import SaleKeys, active_sales_key, as_text
from inventory.ledger import GROUP, Ledger, LedgerConfig, streams_by_slot
from inventory.model import Order, SaleSpec
from live.redis_client import open_redis
from live.store import Store
from live.supervisor import Supervisor

CLAIM_IDLE_MS = 300

# -- helpers ----------------------------------------------------------------------------------


@pytest.fixture
async def db_path(store_db: StoreDb) -> StoreDb:
    """The store of record with live's schema (the store runs its migrations)."""
    store = await Store.open(store_db.path, database_url=store_db.url)
    await store.close()
    return store_db


async def open_ledger(inventory: Inventory, where: StoreDb, config: LedgerConfig) -> Ledger:
    return await Ledger.open(inventory.redis, where.path, config, Supervisor(), database_url=where.url)


def ledger_config(inventory: Inventory, consumer: str = "c1") -> LedgerConfig:
    return LedgerConfig(
        key_prefix=inventory.config.key_prefix, consumer=consumer, block_ms=50, claim_idle_ms=CLAIM_IDLE_MS
    )


@pytest.fixture
async def ledger(inventory: Inventory, db_path: StoreDb) -> AsyncIterator[Ledger]:
    """The ledger with its writer running (record() works); each test drives the consumer."""
    led = await open_ledger(inventory, db_path, ledger_config(inventory))
    await led.start(consume=False)
    yield led
    await led.close()


async def open_active(inventory: Inventory, sale_id: str, **overrides: int) -> SaleSpec:
    """Open a sale and list it among the sales the ledger consumer reads."""
    spec = sale_spec(sale_id, **overrides)
    assert await inventory.open_sale(spec)
    await inventory.redis.sadd(active_sales_key(inventory.config.key_prefix), sale_id)
    return spec


async def buy(inventory: Inventory, sale_id: str, user: str, quantity: int = 1, key: str = "") -> Order:
    held = await inventory.reserve(sale_id, user, quantity, key)
    return await inventory.confirm(held.hold_id, user)


def stream_of(inventory: Inventory, sale_id: str) -> str:
    return SaleKeys(inventory.config.key_prefix, sale_id).stream


async def stored(db_path: StoreDb, sale_id: str) -> dict[str, tuple[str, int, int, str]]:
    """The ledger's rows of a sale, read through a connection of their own: id -> (user,
    quantity, amount, idempotency key)."""
    db = await db_path.connect()
    try:
        rows = await db.fetch(
            "SELECT id, user_id, quantity, amount_cents, idempotency_key FROM orders WHERE sale_id = ?",
            (sale_id,),
        )
    finally:
        await db.close()
    return {r[0]: (r[1], r[2], r[3], r[4]) for r in rows}


def as_rows(orders: list[Order]) -> dict[str, tuple[str, int, int, str]]:
    return {o.id: (o.user_id, o.quantity, o.amount_cents, o.idempotency_key) for o in orders}


async def read_and_never_ack(inventory: Inventory, sale_id: str, consumer: str) -> list[Order]:
    """What a consumer of the group reads (XREADGROUP) before it dies."""
    reply: Any = await inventory.redis.xreadgroup(GROUP, consumer, {stream_of(inventory, sale_id): ">"})
    return [Order.from_json(fields[b"o"]) for _, fields in reply[0][1]]


async def pending(inventory: Inventory, sale_id: str) -> int:
    return int((await inventory.redis.xpending(stream_of(inventory, sale_id), GROUP))["pending"])


async def consume_until_drained(ledger: Ledger, *sale_ids: str, timeout_s: float = 15) -> None:
    """Run the consumer, one step at a time (claim what is idle, read what is new, write it,
    acknowledge it), until every given sale's stream is acknowledged into SQLite."""
    deadline = time.monotonic() + timeout_s
    while not all([await ledger.drained(s) for s in sale_ids]):
        assert time.monotonic() < deadline, f"the ledger consumer did not drain {sale_ids} in {timeout_s} s"
        assert await ledger.step(), "no active sales"


def order(order_id: str, user: str, key: str, quantity: int = 1, sale_id: str = "s1") -> Order:
    """An order as confirm.lua writes it."""
    return Order(
        order_id, sale_id, user, quantity, 999, 0, 999 * quantity, None, None, key, 1_700_000_000_000
    )


# -- a. the consumer ----------------------------------------------------------------------------


async def test_confirmed_orders_reach_sqlite_through_the_consumer(
    inventory: Inventory, ledger: Ledger, db_path: StoreDb
) -> None:
    await open_active(inventory, "s1", stock=100, per_user_limit=3)
    await open_active(inventory, "s2", stock=100, per_user_limit=3)
    orders = await asyncio.gather(
        *(buy(inventory, f"s{1 + i % 2}", f"u{i}", 1 + i % 3, f"r{i}") for i in range(40)),
        buy(inventory, "s1", "ann"),  # no request id: the order's own id is its key
    )
    assert not await ledger.drained("s1") and await stored(db_path, "s1") == {}

    await consume_until_drained(ledger, "s1", "s2")

    for sale_id in ("s1", "s2"):
        mine = sorted((o for o in orders if o.sale_id == sale_id), key=lambda o: o.id)
        assert await ledger.orders(sale_id) == mine
        assert await stored(db_path, sale_id) == as_rows(mine)
        assert await pending(inventory, sale_id) == 0
    assert (await ledger.order(orders[-1].id)) == orders[-1] and orders[-1].idempotency_key == orders[-1].id

    # orders confirmed later are read too
    late = await buy(inventory, "s2", "late")
    assert not await ledger.drained("s2")
    await consume_until_drained(ledger, "s2")
    assert await ledger.order(late.id) == late


# -- b. redelivery ------------------------------------------------------------------------------


async def test_an_order_written_twice_is_one_row(
    inventory: Inventory, ledger: Ledger, db_path: StoreDb
) -> None:
    await open_active(inventory, "s1", stock=100, per_user_limit=5)
    orders = [await buy(inventory, "s1", f"u{i}", 1 + i % 5, f"r{i}") for i in range(10)]
    await ledger.record(orders)  # the confirming process wrote them ...
    await ledger.record(orders[:3])  # ... and again, for a retried confirm
    # the same order twice in the stream (a redelivery)
    await inventory.redis.xadd(stream_of(inventory, "s1"), {"o": orders[0].to_json()})

    await consume_until_drained(ledger, "s1")  # ... and the consumer reads every one of them again

    assert await stored(db_path, "s1") == as_rows(orders)
    assert await pending(inventory, "s1") == 0


async def test_an_entry_delivered_twice_is_one_row(
    inventory: Inventory, ledger: Ledger, db_path: StoreDb
) -> None:
    """A consumer wrote its entries into SQLite and died before acknowledging them: they are
    delivered again, to the next consumer, and written again."""
    await open_active(inventory, "s1", stock=100, per_user_limit=5)
    orders = [await buy(inventory, "s1", f"u{i}", 2, f"r{i}") for i in range(10)]
    await ledger.ensure_group("s1")
    read = await read_and_never_ack(inventory, "s1", "dying")
    assert read == orders
    await ledger.record(read)  # written, never acknowledged

    await consume_until_drained(ledger, "s1")

    assert await stored(db_path, "s1") == as_rows(orders)
    assert await pending(inventory, "s1") == 0


# -- c. a consumer that dies --------------------------------------------------------------------


async def test_a_dead_consumers_entries_are_claimed_and_written(
    inventory: Inventory, ledger: Ledger, db_path: StoreDb
) -> None:
    await open_active(inventory, "s1", stock=100, per_user_limit=5)
    orders = [await buy(inventory, "s1", f"u{i}", 1 + i % 5, f"r{i}") for i in range(25)]
    await ledger.ensure_group("s1")
    assert await read_and_never_ack(inventory, "s1", "dead") == orders
    assert await pending(inventory, "s1") == len(orders)  # read, and the reader is gone for good
    assert await stored(db_path, "s1") == {}

    # nothing is new to read: the live consumer gets them only by claiming them once idle
    await consume_until_drained(ledger, "s1")

    assert await stored(db_path, "s1") == as_rows(orders)
    assert await pending(inventory, "s1") == 0
    consumers = await inventory.redis.xinfo_consumers(stream_of(inventory, "s1"), GROUP)
    assert {c["name"].decode(): c["pending"] for c in consumers}.get("dead", 0) == 0

    more = [await buy(inventory, "s1", f"v{i}", 1, f"q{i}") for i in range(5)]
    await consume_until_drained(ledger, "s1")
    assert await stored(db_path, "s1") == as_rows(orders + more)


async def test_close_stops_the_consumer_whenever_it_comes(inventory: Inventory, db_path: StoreDb) -> None:
    """close() cancels the consumer and waits for it: it must return whenever it comes -- here
    right after a Redis reply of its own (drained()), while the consumer is busy between quick
    commands (claiming on 20 sales at every step)."""
    for i in range(20):
        await open_active(inventory, f"s{i}")
    config = dataclasses.replace(ledger_config(inventory), claim_idle_ms=0)
    for attempt in range(6):
        ledger = await open_ledger(inventory, db_path, config)
        await ledger.start()  # the writer and the consumer
        await asyncio.sleep(0.05 + 0.01 * attempt)  # at another point of its cycle each time
        assert await ledger.drained("s0")
        closing = asyncio.create_task(ledger.close())
        done, _ = await asyncio.wait({closing}, timeout=5)
        assert closing in done, "Ledger.close() hangs: the consumer survived its cancellation"
        assert [t for t in asyncio.all_tasks() if t.get_name().startswith("ledger-") and not t.done()] == []


# -- d. group commit ----------------------------------------------------------------------------


async def test_concurrent_records_share_commits_and_all_land(
    ledger: Ledger, db_path: StoreDb, monkeypatch: pytest.MonkeyPatch
) -> None:
    commits = 0
    transaction = ledger.db.transaction

    def counting_transaction() -> Any:
        nonlocal commits
        commits += 1
        return transaction()

    monkeypatch.setattr(ledger.db, "transaction", counting_transaction)
    orders = [order(f"s1.{i}.1", f"u{i}", f"r{i}") for i in range(300)]
    calls = [ledger.record([o]) for o in orders]
    calls += [ledger.record(orders[i : i + 3]) for i in range(0, 300, 30)]  # some again, in threes
    await asyncio.wait_for(asyncio.gather(*calls), 15)

    assert await stored(db_path, "s1") == as_rows(orders)
    assert 1 <= commits < len(calls) // 10, f"{len(calls)} records took {commits} commits"
    await ledger.record([])  # nothing to write: returns at once


# -- e. a second order for one request id -------------------------------------------------------


async def test_a_second_order_for_one_request_id_is_kept_under_its_own_key(
    ledger: Ledger, db_path: StoreDb, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = order("s1.1.1", "ann", "r1"), order("s1.2.2", "ann", "r1", quantity=2)
    with caplog.at_level(logging.ERROR, logger="inventory.ledger"):
        await ledger.record([first])
        await ledger.record([second])  # Redis lost the request's record; a retry made this one
    both = {"s1.1.1": ("ann", 1, 999, "r1"), "s1.2.2": ("ann", 2, 1998, "r1#s1.2.2")}
    assert await stored(db_path, "s1") == both
    assert any("second order" in r.getMessage() for r in caplog.records), "the operator is not told"

    await ledger.record([second, first])  # delivered again: nothing changes
    assert await stored(db_path, "s1") == both

    # both in one group commit: the batch fails on UNIQUE and is written one by one
    third, fourth, other = (
        order("s1.3.3", "bob", "r9"),
        order("s1.4.4", "bob", "r9"),
        order("s1.5.5", "cat", "r9"),
    )
    await asyncio.gather(ledger.record([third]), ledger.record([fourth, other]))
    rows = await stored(db_path, "s1")
    assert (rows["s1.3.3"][3], rows["s1.4.4"][3], rows["s1.5.5"][3]) == ("r9", "r9#s1.4.4", "r9")
    assert len(rows) == 5


# -- f. reconciliation --------------------------------------------------------------------------


async def rush(inventory: Inventory, sale_id: str, rng: random.Random) -> None:
    """200 buyers at once: most pay, some cancel, some still hold when it is over."""

    async def buyer(i: int) -> None:
        user = f"u{i}"
        try:
            held = await inventory.reserve(sale_id, user, rng.randint(1, 3), f"r{i}")
        except (model.SoldOut, model.InsufficientStock):
            return
        match rng.choice(["pay", "pay", "pay", "cancel", "hold"]):
            case "pay":
                await inventory.confirm(held.hold_id, user)
            case "cancel":
                await inventory.cancel(held.hold_id, user)

    await asyncio.gather(*(buyer(i) for i in range(200)))


async def orders_in_redis(inventory: Inventory, sale_id: str) -> dict[str, Order]:
    raw = await inventory.redis.hgetall(SaleKeys(inventory.config.key_prefix, sale_id).orders)
    return {as_text(k): Order.from_json(v) for k, v in raw.items()}


async def check(inventory: Inventory, ledger: Ledger, sale_id: str) -> reconcile.Report:
    report = await reconcile.check(inventory, ledger, sale_id)
    assert report.text().startswith(f"sale {sale_id}: total ")
    return report


async def test_reconcile_is_clean_after_a_rush_and_repair_fixes_what_breaks(
    inventory: Inventory, ledger: Ledger, db_path: StoreDb
) -> None:
    spec = await open_active(inventory, "s1", stock=120, per_user_limit=3)
    await rush(inventory, "s1", random.Random(7))
    await consume_until_drained(ledger, "s1")
    keys = SaleKeys(inventory.config.key_prefix, "s1")
    before = await inventory.status("s1")
    orders_before = await orders_in_redis(inventory, "s1")
    assert before.sold > 0 and before.held > 0 and before.available >= 0

    report = await check(inventory, ledger, "s1")
    assert report.clean, report.text()
    assert report.text().endswith(": clean")
    assert (report.sold, report.ledger_units, report.ledger_orders) == (
        before.sold,
        before.sold,
        len(orders_before),
    )

    # a counter off by one
    await inventory.redis.hincrby(keys.sale, "available", 1)
    report = await check(inventory, ledger, "s1")
    assert not report.clean
    assert any(p.startswith("invariant broken: total 120 != ") for p in report.problems), report.text()
    assert "1 problem(s)" in report.text() and "invariant broken" in report.text()
    repaired = await reconcile.repair(inventory, ledger, spec, stopped=False)
    assert repaired.clean, repaired.text()
    assert await inventory.status("s1") == before

    # an order row lost from the ledger: Redis still has it, repair writes it back
    lost = sorted(await stored(db_path, "s1"))[0]
    db = await db_path.connect()
    try:
        assert await db.execute("DELETE FROM orders WHERE id = ?", (lost,)) == 1
    finally:
        await db.close()
    report = await check(inventory, ledger, "s1")
    assert report.problems == [f"order {lost} is sold in Redis but missing from the ledger"], report.text()
    repaired = await reconcile.repair(inventory, ledger, spec, stopped=False)
    assert repaired.clean, repaired.text()
    assert lost in await stored(db_path, "s1")

    # Redis lost its orders: the ledger has them, repair puts them back and recounts
    await inventory.redis.delete(keys.orders)
    report = await check(inventory, ledger, "s1")
    assert f"sold counter {before.sold} != sum of orders in Redis 0" in report.problems, report.text()
    assert any("is in the ledger but not counted in Redis" in p for p in report.problems)
    repaired = await reconcile.repair(inventory, ledger, spec, stopped=False)
    assert repaired.clean, repaired.text()
    assert await orders_in_redis(inventory, "s1") == orders_before
    assert await inventory.status("s1") == before

    # and the repaired sale sells on
    await inventory.add_stock("s1", 1)
    await buy(inventory, "s1", "after-repair")
    assert (await check(inventory, ledger, "s1")).clean


async def test_the_consumer_honours_a_cancellation_a_library_lost(ledger: Ledger) -> None:
    """A cancellation swallowed inside a step (as redis-py can, mid-command) still ends the
    consumer at its next step: it is not lost, and no second cancellation is needed."""
    steps = 0

    async def swallowing_step() -> bool:
        nonlocal steps
        steps += 1
        with contextlib.suppress(asyncio.CancelledError):  # what the library did: it "returned"
            await asyncio.sleep(10)
        return True

    ledger.step = swallowing_step  # type: ignore[method-assign]
    consumer = asyncio.create_task(ledger.run())
    while steps == 0:
        await asyncio.sleep(0.01)
    consumer.cancel()
    done, _ = await asyncio.wait({consumer}, timeout=5)
    assert consumer in done and consumer.cancelled() and steps == 1


# -- g. sales in several Redis Cluster slots ----------------------------------------------------


@pytest.fixture(params=["redis", "cluster"])
async def any_inventory(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[Inventory]:
    """An Inventory on the session's single Redis, then on the session's Valkey cluster."""
    url = redis_url if request.param == "redis" else str(request.getfixturevalue("valkey_cluster").url)
    client = await open_redis(url)
    inv = Inventory(client, InventoryConfig(key_prefix=f"t{uuid.uuid4().hex[:12]}"), Supervisor())
    await inv.start()
    yield inv
    await inv.stop()
    await client.aclose()


async def test_the_consumer_reads_sales_in_several_slots_each_slot_with_one_command(
    any_inventory: Inventory, db_path: StoreDb, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Six sales whose streams hash to different slots (on a cluster, to different nodes): the
    consumer reads them all: on a cluster one XREADGROUP per slot (a cross-slot one fails
    there), on a single Redis all of them in one."""
    inventory = any_inventory
    sales = [f"s{i}" for i in range(6)]
    streams = [stream_of(inventory, s) for s in sales]
    assert len({key_slot(s.encode()) for s in streams}) > 1
    for sale_id in sales:
        await open_active(inventory, sale_id, stock=50, per_user_limit=3)
    orders = [await buy(inventory, sales[i % 6], f"u{i}", 1, f"r{i}") for i in range(30)]
    reads: list[list[str]] = []
    xreadgroup = inventory.redis.xreadgroup

    async def recorded(groupname: str, consumername: str, streams: dict[Any, Any], **kw: Any) -> Any:
        reads.append(sorted(as_text(k) for k in streams))
        return await xreadgroup(groupname, consumername, streams, **kw)

    monkeypatch.setattr(inventory.redis, "xreadgroup", recorded)
    ledger = await open_ledger(inventory, db_path, ledger_config(inventory))
    await ledger.start(consume=False)
    try:
        await consume_until_drained(ledger, *sales)
        for sale_id in sales:
            mine = sorted((o for o in orders if o.sale_id == sale_id), key=lambda o: o.id)
            assert await ledger.orders(sale_id) == mine
            assert await pending(inventory, sale_id) == 0
    finally:
        await ledger.close()
    assert reads, "the consumer read nothing"
    if isinstance(inventory.redis, RedisCluster):
        for read in reads:  # every read named the streams of one slot only
            assert len({key_slot(s.encode()) for s in read}) == 1, read
    else:
        assert all(read == sorted(streams) for read in reads), reads  # every stream, each time


def test_streams_are_grouped_by_slot_in_order() -> None:
    tagged = ["{a}x", "{b}y", "{a}z", "{c}w", "{b}v"]
    assert streams_by_slot(tagged) == [["{a}x", "{a}z"], ["{b}y", "{b}v"], ["{c}w"]]
    assert streams_by_slot([]) == []
