"""Branches of inventory/ that the flows in the other tests never take, each as an operator or
a caller meets it: every kind of disagreement reconcile reports, a ledger that cannot store an
order, the replicas a confirm waited for and did not get, refused arguments, and a payment
provider that is slow or failing. Real Redis, real SQLite."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import polling
import pytest
from conftest import sale_spec

from inventory.inventory import Inventory, InventoryConfig
from inventory.keys import SaleKeys
from inventory.ledger import Ledger, LedgerConfig
from inventory.model import InvalidQuantity, Order, PaymentFailed, SoldOut
from inventory.payments import SimulatedPayments
from inventory.reconcile import check
from live.redis_client import connect, open_redis
from live.redis_server import EmbeddedRedis, find_redis_server
from live.supervisor import Supervisor
from storage import DatabaseError


@pytest.fixture
async def ledger(inventory: Inventory, tmp_path: Path) -> AsyncIterator[Ledger]:
    config = LedgerConfig(key_prefix=inventory.config.key_prefix)
    ledger = await Ledger.open(inventory.redis, tmp_path / "ledger.db", config, Supervisor())
    await ledger.start(consume=False)
    yield ledger
    await ledger.close()


def an_order(order_id: str = "s1.1.1", amount_cents: int = 999) -> Order:
    return Order(order_id, "s1", "ann", 1, 999, 0, amount_cents, None, None, "k", 1)


# -- reconcile --------------------------------------------------------------------------------


async def test_reconcile_reports_every_kind_of_disagreement(inventory: Inventory, ledger: Ledger) -> None:
    spec = sale_spec(stock=10, per_user_limit=2)
    await inventory.open_sale(spec)
    hold = await inventory.reserve(spec.id, "ann", 2)
    order = await inventory.confirm(hold.hold_id, "ann")
    await ledger.record([order])
    report = await check(inventory, ledger, spec.id, recorded_total=10)
    assert report.clean, report.text()

    k = SaleKeys(inventory.config.key_prefix, spec.id)
    await inventory.redis.hset(k.sale, mapping={"available": -1, "held": 3})  # oversold, held off
    # a hold Redis keeps for ann beyond her limit (2 bought + 1 held), not in her count
    await inventory.redis.hset(k.holds, f"{spec.id}.9.1", f"1|{2**40}|999||0|ann")
    altered = json.loads(order.to_json()) | {"amount": 1}
    await inventory.redis.hset(k.orders, order.id, json.dumps(altered))  # Redis and SQLite differ
    report = await check(inventory, ledger, spec.id, recorded_total=12)
    assert report.problems == [
        "invariant broken: total 10 != -1 + 3 + 2 = 4",
        "total 10 in Redis != stock 12 in the sale's record",
        "available is negative (-1): oversold by 1",
        "held counter 3 != sum of holds 1",
        "user 'ann': counted 2 units, holds + orders are 3",
        "user 'ann' has 3 units, above the limit 2",
        f"order {order.id} differs: Redis 'ann' x2 1c, ledger 'ann' x2 1998c",
    ]
    assert not report.clean and report.text().count("\n  - ") == len(report.problems)


async def test_reconcile_of_a_sale_redis_no_longer_has(inventory: Inventory, ledger: Ledger) -> None:
    report = await check(inventory, ledger, "gone", recorded_total=5)
    assert report.problems == ["the sale is missing from Redis (run `live reconcile --repair`)"]


# -- the ledger -------------------------------------------------------------------------------


async def test_an_order_sqlite_refuses_fails_its_caller_and_not_the_writer(ledger: Ledger) -> None:
    with pytest.raises(DatabaseError):
        await ledger.record([an_order("s1.1.1", amount_cents=-1)])  # CHECK (amount_cents >= 0)
    await ledger.record([an_order("s1.2.1")])  # the writer goes on
    assert await ledger.order("s1.1.1") is None
    assert await ledger.order("s1.2.1") == an_order("s1.2.1")


async def test_closing_writes_the_orders_still_queued(inventory: Inventory, tmp_path: Path) -> None:
    config = LedgerConfig(key_prefix=inventory.config.key_prefix)
    path = tmp_path / "ledger.db"
    ledger = await Ledger.open(inventory.redis, path, config, Supervisor())  # no writer running
    waiting = asyncio.create_task(ledger.record([an_order()]))
    await asyncio.sleep(0)  # queued, and nobody to write it
    assert not waiting.done()
    await ledger.close()
    waiting.cancel()
    again = await Ledger.open(inventory.redis, path, config, Supervisor())
    try:
        assert await again.order(an_order().id) == an_order()
    finally:
        await again.close()


async def test_drained_without_a_stream_or_without_the_group(inventory: Inventory, ledger: Ledger) -> None:
    assert await ledger.drained("no-orders-yet")
    stream = SaleKeys(inventory.config.key_prefix, "unread").stream
    await inventory.redis.xadd(stream, {"o": an_order().to_json()})
    await inventory.redis.xgroup_create(stream, "someone-else", id="0")
    assert not await ledger.drained("unread")  # an order the ledger's group never read
    await ledger.drain("unread")
    assert await ledger.drained("unread")


# -- the inventory ----------------------------------------------------------------------------


async def test_an_order_stands_when_fewer_replicas_have_it_than_asked(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = connect(redis_url)
    config = InventoryConfig(key_prefix=f"t{uuid.uuid4().hex[:12]}", wait_replicas=1, wait_timeout_ms=20)
    inventory = Inventory(client, config, Supervisor())
    await inventory.start()
    try:
        spec = sale_spec()
        await inventory.open_sale(spec)
        hold = await inventory.reserve(spec.id, "ann", 1)
        with caplog.at_level(logging.WARNING, logger="inventory.inventory"):
            order = await inventory.confirm(hold.hold_id, "ann")
        assert order.quantity == 1
        assert (await inventory.status(spec.id)).sold == 1
        assert "orders not yet on enough replicas" in caplog.text  # the session's Redis has none
    finally:
        await inventory.stop()
        await client.aclose()


async def test_arguments_refused_before_redis_changes_anything(inventory: Inventory) -> None:
    spec = sale_spec(group_size=2, group_price_cents=500, team_ms=60_000)
    await inventory.open_sale(spec)
    before = await inventory.status(spec.id)
    assert await inventory.facts("bad\ud800id") is None  # no sale has an id Redis cannot be sent
    assert await inventory.room_of("bad\ud800id") is None
    with pytest.raises(InvalidQuantity):
        await inventory.open_team(spec.id, "ann", quantity=0)
    hold = await inventory.reserve(spec.id, "ann", 1)
    with pytest.raises(ValueError, match="payment attempt"):
        await inventory.paid_confirm(hold.hold_id, "ann", None, -1, "not printable\n")
    with pytest.raises(ValueError, match="payment attempt"):
        await inventory.void_payment(spec.id, "x" * 129)
    assert await inventory.team_payments(spec.id, "T1", []) == []
    after = await inventory.status(spec.id)
    assert dataclasses.replace(after, held=0, available=after.available + 1) == before
    assert (after.held, after.sold) == (1, 0)  # only the reservation took anything


until = functools.partial(polling.until, timeout_s=20.0, every_s=0.02)


async def test_the_availability_listener_survives_a_lost_connection(inventory: Inventory) -> None:
    spec = sale_spec(stock=1)
    await inventory.open_sale(spec)
    hold = await inventory.reserve(spec.id, "ann", 1)
    with pytest.raises(SoldOut):
        await inventory.reserve(spec.id, "bob", 1)
    assert spec.id in inventory.sold_out  # the next keyless request is refused without Redis
    # the only pub/sub client of this test's process on the session's Redis is the listener's
    assert await inventory.redis.client_kill_filter(_type="pubsub") >= 1
    await until(lambda: spec.id not in inventory.sold_out)  # flags may be stale now: dropped
    with pytest.raises(SoldOut):
        await inventory.reserve(spec.id, "bob", 1)  # learnt again from Redis
    assert spec.id in inventory.sold_out
    await inventory.cancel(hold.hold_id, "ann")  # units again: announced on the channel...
    await until(lambda: spec.id not in inventory.sold_out)  # ...which is listened to again
    assert (await inventory.reserve(spec.id, "bob", 1)).quantity == 1


async def test_the_availability_listener_waits_out_a_redis_that_is_down(tmp_path: Path) -> None:
    """Its Redis stops for a while: the listener keeps trying (it does not die: nothing for the
    supervisor to restart) and, the Redis back, it hears the channel again."""
    redis = EmbeddedRedis(tmp_path / "redis", find_redis_server(os.environ.get("LIVE_REDIS_SERVER")))
    redis.start()
    supervisor = Supervisor()
    client = await open_redis(redis.url)
    inventory = Inventory(client, InventoryConfig(key_prefix="down"), supervisor)
    try:
        await inventory.start()
        redis.stop()
        await asyncio.sleep(2)  # (the listener's reads fail meanwhile, a reconnect each half second)
        redis.start()
        spec = sale_spec(stock=1)
        await inventory.open_sale(spec)
        hold = await inventory.reserve(spec.id, "ann", 1)
        with pytest.raises(SoldOut):
            await inventory.reserve(spec.id, "bob", 1)
        await until(lambda: spec.id in inventory.sold_out)
        await inventory.cancel(hold.hold_id, "ann")  # announced on the channel: heard again
        await until(lambda: spec.id not in inventory.sold_out)
        assert supervisor.crashes == {} and supervisor.down() == []
    finally:
        await inventory.stop()
        await client.aclose()
        redis.stop()


async def test_a_reservation_whose_caller_gave_up_still_holds_until_it_expires(
    inventory: Inventory,
) -> None:
    spec = sale_spec()
    await inventory.open_sale(spec)
    assert await inventory.facts(spec.id) is not None  # known: a request goes straight to the queue
    waiting = asyncio.create_task(inventory.reserve(spec.id, "ann", 2, key="k1"))
    await asyncio.sleep(0)  # queued for the sale's next call
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    deadline = time.monotonic() + 20
    while (await inventory.status(spec.id)).held != 2:  # decided all the same, and recorded
        assert time.monotonic() < deadline, "the reservation was never decided"
        await asyncio.sleep(0.02)
    again = await inventory.reserve(spec.id, "ann", 2, key="k1")  # the caller's retry gets it
    assert (await inventory.status(spec.id)).held == 2 and again.quantity == 2


# -- the simulated payment provider -----------------------------------------------------------


async def test_a_slow_provider_moves_money_only_when_its_call_returns() -> None:
    payments = SimulatedPayments(delay_ms=20)
    charging = asyncio.create_task(payments.charge("h1", "ann", 500))
    await asyncio.sleep(0)
    assert payments.charged == {} and not charging.done()  # the call is under way
    charge = await charging
    assert payments.charged == {"h1": 500} and charge.new
    refunding = asyncio.create_task(payments.refund("h1", charge.attempt))
    await asyncio.sleep(0)
    assert payments.refunded == {}
    assert await refunding is True
    assert payments.refunded == {"h1": 500} and payments.charged == {}


async def test_a_failing_provider_takes_nothing() -> None:
    payments = SimulatedPayments(fail_rate=1.0, seed=1)
    with pytest.raises(PaymentFailed):
        await payments.charge("h1", "ann", 500)
    assert payments.charged == {} and payments.movements == []
