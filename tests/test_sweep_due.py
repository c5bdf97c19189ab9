"""Sweeping only the sales that are due: an idle sale is not swept every interval, yet holds
expire, teams fail, the countdown ticks and phases are announced on time; a change makes a sale
due at once, a lease keeps two processes from sweeping one idle sale, and a sweep that read a
sale before a change cannot postpone it."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from conftest import bearer, sale_spec
from test_gateway import token
from test_sales import ask, open_sale
from wsclient import Client

from inventory.inventory import Inventory, InventoryConfig
from inventory.keys import active_sales_key, due_sales_key, sweep_leases_key
from live.auth import ANY_ROOM, Role
from live.redis_client import connect
from live.server import Running, running
from live.settings import Settings
from live.supervisor import Supervisor

HOUR_MS = 3_600_000


@pytest.fixture
async def quiet(settings: Settings) -> AsyncIterator[Running]:
    """A server whose idle sales are swept once an hour: whatever happens in a test happens
    because it was due, or because the sale changed."""
    async with running(dataclasses.replace(settings, sweep_idle_ms=HOUR_MS)) as srv:
        await srv.services.rooms.create("shop", host_id="host1", room_id="shop")
        yield srv


async def shop_of(srv: Running, http: aiohttp.ClientSession) -> tuple[str, dict[str, str]]:
    host = srv.services.auth.mint("host1", ANY_ROOM, Role.HOST, 600)
    async with http.post(
        "/api/rooms/shop/products", json={"title": "茶叶", "price_cents": 1500}, headers=bearer(host)
    ) as resp:
        assert resp.status == 201
        product = await resp.json()
    return host, {"room": "shop", "product": product["id"]}


async def sweeps(http: aiohttp.ClientSession) -> int:
    async with http.get("/metrics") as resp:
        text = await resp.text()
    found = re.search(r"^live_sale_sweeps_total (\S+)$", text, re.M)
    assert found, "no live_sale_sweeps_total in /metrics"
    return int(float(found.group(1)))


async def test_an_idle_sale_is_not_swept_every_interval(quiet: Running) -> None:
    async with aiohttp.ClientSession(base_url=quiet.url) as http:
        host, shop = await shop_of(quiet, http)
        fan = await Client.connect(http, "shop", token(quiet, "fan"))
        sale = await open_sale(http, host, shop, duration_s=3600)
        await fan.recv_type("sale_started", timeout=15)  # its first sweep
        before = await sweeps(http)
        await asyncio.sleep(2.0)  # 20 sweep intervals: the old sweeper swept it 20 times
        assert await sweeps(http) - before <= 1

        # a change makes it due at once: the stock update and, later, the hold's expiry
        buyer = await Client.connect(http, "shop", token(quiet, "ann"))
        held = await ask(buyer, {"type": "reserve", "rid": "r1", "sale_id": sale["id"], "quantity": 1})
        assert held["type"] == "ack"
        stock = await fan.recv_until(lambda m: m["type"] == "sale_stock" and m["available"] == 4, timeout=15)
        assert stock["sale_id"] == sale["id"]
        assert await sweeps(http) > before


async def test_a_hold_expires_and_a_team_fails_when_due(quiet: Running) -> None:
    async with aiohttp.ClientSession(base_url=quiet.url) as http:
        host, shop = await shop_of(quiet, http)
        sale = await open_sale(
            http,
            host,
            shop,
            duration_s=3600,
            hold_s=1,
            group={"size": 3, "price_cents": 1000, "team_s": 2},
        )
        buyer = await Client.connect(http, "shop", token(quiet, "ann"))
        await buyer.recv_type("sale_started", timeout=15)
        held = await ask(buyer, {"type": "reserve", "rid": "r1", "sale_id": sale["id"], "quantity": 1})
        team = await ask(buyer, {"type": "open_team", "rid": "t1", "sale_id": sale["id"], "quantity": 1})
        assert held["type"] == team["type"] == "ack"
        # nothing changes the sale any more: only their due times bring the sweeps
        expired = await buyer.recv_until(
            lambda m: m["type"] == "order_status" and m["status"] == "expired", timeout=20
        )
        assert expired["hold_id"] == held["hold_id"]
        failed = await buyer.recv_until(
            lambda m: m["type"] == "order_status" and m["status"] == "team_failed", timeout=20
        )
        assert failed["hold_id"] == team["hold_id"] and failed["code"] == team["code"]
        status = await quiet.services.inventory.status(sale["id"])
        assert (status.available, status.held) == (5, 0)


async def test_countdown_start_and_end_are_announced_once_each_when_due(quiet: Running) -> None:
    async with aiohttp.ClientSession(base_url=quiet.url) as http:
        host, shop = await shop_of(quiet, http)
        fan = await Client.connect(http, "shop", token(quiet, "fan"))
        sale = await open_sale(http, host, shop, starts_in_s=4, duration_s=2)
        events: list[dict[str, Any]] = []
        while not events or events[-1]["type"] != "sale_ended":
            message = await fan.recv(timeout=20)
            if message["type"] in ("sale_countdown", "sale_started", "sale_ended"):
                assert message["sale_id"] == sale["id"]
                events.append(message)
        events += [m for m in await fan.collect(1.0) if m["type"].startswith("sale_")]
        kinds = [e["type"] for e in events]
        assert kinds.count("sale_started") == 1 and kinds.count("sale_ended") == 1
        assert kinds.index("sale_started") == len(kinds) - 2 and kinds[-1] == "sale_ended"
        seconds = [e["seconds_left"] for e in events if e["type"] == "sale_countdown"]
        # one announcement a second, counting down (a loaded machine may skip one)
        assert len(seconds) >= 2 and seconds == sorted(set(seconds), reverse=True), seconds
        assert seconds[0] <= 4 and seconds[-1] in (1, 2), seconds
        started = events[kinds.index("sale_started")]
        assert started["ts_ms"] >= sale["starts_at_ms"]


# -- the due set, leases and changes, on the inventory alone -----------------------------------


@pytest.fixture
async def pair(redis_url: str) -> AsyncIterator[tuple[Inventory, Inventory]]:
    """Two processes' inventories on one prefix, whose idle sales are due once an hour."""
    prefix = f"t{uuid.uuid4().hex[:12]}"
    config = InventoryConfig(key_prefix=prefix, sweep_idle_ms=HOUR_MS)
    clients = [connect(redis_url), connect(redis_url)]
    inventories = (Inventory(clients[0], config, Supervisor()), Inventory(clients[1], config, Supervisor()))
    for inv in inventories:
        await inv.start()
    yield inventories
    for inv in inventories:
        await inv.stop()
    for client in clients:
        await client.aclose()


async def activate(inv: Inventory, sale_id: str = "s1", **spec: Any) -> None:
    await inv.open_sale(sale_spec(sale_id, ends_at_ms=int(time.time() * 1000) + HOUR_MS, **spec))
    await inv.redis.sadd(active_sales_key(inv.config.key_prefix), sale_id)


async def score(inv: Inventory, sale_id: str = "s1") -> float | None:
    result: float | None = await inv.redis.zscore(due_sales_key(inv.config.key_prefix), sale_id)
    return result


async def test_a_due_sale_is_leased_to_one_process_and_rescheduled(pair: tuple[Inventory, Inventory]) -> None:
    a, b = pair
    await activate(a)
    leased = await a.due(1000, 100)
    assert [s for s, _ in leased] == ["s1"]
    assert await b.due(1000, 100) == []  # leased to a: b skips it
    swept = await a.sweep("s1")
    assert swept.due_ms > swept.now_ms + HOUR_MS - 5_000  # nothing due: the idle limit
    assert await a.reschedule([("s1", leased[0][1], swept.due_ms)]) == 1
    assert await score(a) == swept.due_ms
    assert await a.due(1000, 100) == [] and await b.due(1000, 100) == []


async def test_a_change_after_the_lease_keeps_the_sale_due(pair: tuple[Inventory, Inventory]) -> None:
    a, b = pair
    await activate(a)
    [(_, lease)] = await a.due(1000, 100)
    stale = await a.sweep("s1")  # a reads the sale...
    held = await b.reserve("s1", "ann", 1)  # ...b changes it...
    assert "s1" in b.changed
    assert await b.due(1000, 0) == []  # ...and tells (leasing nothing this time)
    assert await score(a) == 0  # due at once, a's lease void
    assert await a.reschedule([("s1", lease, stale.due_ms)]) == 0  # a cannot postpone it
    assert await score(a) == 0
    [(_, lease)] = await b.due(1000, 100)
    await asyncio.sleep(b.config.stock_update_ms / 1000)  # (a's sweep sent a stock update)
    fresh = await b.sweep("s1")
    assert fresh.due_ms == held.expires_at_ms  # the new hold is what is due next
    assert fresh.stock == 9  # and the stock update went out
    assert await b.reschedule([("s1", lease, fresh.due_ms)]) == 1
    assert await score(a) == held.expires_at_ms


async def test_a_pending_stock_update_and_a_team_deadline_are_due(pair: tuple[Inventory, Inventory]) -> None:
    a, _ = pair
    await activate(a, hold_ms=HOUR_MS, group_size=3, group_price_cents=500, team_ms=600_000)
    first = await a.sweep("s1")
    assert first.stock == 10
    await a.reserve("s1", "ann", 1)
    early = await a.sweep("s1")  # within stock_update_ms of the last update: not yet...
    assert early.stock is None
    assert early.due_ms <= early.now_ms + a.config.stock_update_ms  # ...but due when it may go
    team = await a.open_team("s1", "bob", 1)
    await asyncio.sleep(a.config.stock_update_ms / 1000)
    later = await a.sweep("s1")
    assert later.stock == 8 and later.due_ms == team.deadline_ms  # the team, before the hold


async def test_a_sale_leaves_the_due_set_with_the_active_set(pair: tuple[Inventory, Inventory]) -> None:
    a, b = pair
    await activate(a)
    await a.due(1000, 100)
    await a.retire("s1", 60_000)
    assert await score(a) is None
    assert not await a.redis.sismember(active_sales_key(a.config.key_prefix), "s1")
    assert await a.redis.hget(sweep_leases_key(a.config.key_prefix), "s1") is None
    assert 0 < await a.redis.pttl(a.keys("s1")[0]) <= 60_000
    b.changed.add("s1")  # a late change does not bring a retired sale back
    assert await b.due(1000, 100) == [] and await score(a) is None
    # a sale put in the active set by hand is found; one taken out, forgotten
    await activate(a, "s2")
    assert [s for s, _ in await b.due(1000, 100)] == ["s2"]
    await a.redis.srem(active_sales_key(a.config.key_prefix), "s2")
    await activate(a, "s3")  # (the two sets have one member each: only a full look tells)
    assert [s for s, _ in await b.due(1000, 100, sync=True)] == ["s3"] and await score(a, "s2") is None


async def test_lost_writes_make_every_active_sale_due(pair: tuple[Inventory, Inventory]) -> None:
    a, _ = pair
    for sale_id in ("s1", "s2", "s3"):
        await activate(a, sale_id)
    leased = await a.due(1000, 100)
    assert len(leased) == 3
    await a.reschedule([(s, t, int(time.time() * 1000) + HOUR_MS) for s, t in leased])
    assert await a.due(1000, 100) == []
    # Redis goes back in time (a failover to a replica that lagged): the lease counter with it
    await a.redis.hset(sweep_leases_key(a.config.key_prefix), "#", 1)
    assert sorted(s for s, _ in await a.due(1000, 100)) == ["s1", "s2", "s3"]
