"""Retention: an ended sale's Redis keys expire once it is settled (the ledger, SQLite or
PostgreSQL, is its record, and the API answers from it), and a room's bans and mutes expire a while after the
last one; none of it is kept in Redis for ever."""

from __future__ import annotations

import dataclasses
import functools
import io
import time
from collections.abc import AsyncIterator

import aiohttp
import polling
import pytest
from conftest import bearer
from test_gateway import token
from test_sales import ask, open_sale
from wsclient import Client

from gateway.moderation import MAX_MUTE_S
from inventory.keys import SaleKeys, active_sales_key
from live import reconcile
from live.auth import ANY_ROOM, Role
from live.server import Running, running
from live.settings import Settings, SettingsError

DAY_S = 86_400


until = functools.partial(polling.until, timeout_s=30.0, every_s=0.05)


@pytest.fixture(params=["sqlite", "postgresql"])
async def kept_a_minute(request: pytest.FixtureRequest, settings: Settings) -> AsyncIterator[Running]:
    """A server keeping settled sales a minute, on SQLite, then on PostgreSQL (reconcile runs
    with its settings, so on the same store)."""
    url = None if request.param == "sqlite" else request.getfixturevalue("database_url")
    async with running(dataclasses.replace(settings, sale_retention_s=60, database_url=url)) as srv:
        await srv.services.rooms.create("shop", host_id="host1", room_id="shop")
        yield srv


async def test_a_settled_sale_expires_from_redis_and_is_then_read_from_the_ledger(
    kept_a_minute: Running,
) -> None:
    srv = kept_a_minute
    redis, prefix = srv.services.redis, srv.services.settings.key_prefix
    host = srv.services.auth.mint("host1", ANY_ROOM, Role.HOST, 600)
    async with aiohttp.ClientSession(base_url=srv.url) as http:
        async with http.post(
            "/api/rooms/shop/products", json={"title": "茶叶", "price_cents": 1500}, headers=bearer(host)
        ) as resp:
            product = await resp.json()
        shop = {"room": "shop", "product": product["id"]}
        sale = await open_sale(http, host, shop, duration_s=2)
        buyer = await Client.connect(http, "shop", token(srv, "ann"))
        held = await ask(buyer, {"type": "reserve", "rid": "r1", "sale_id": sale["id"], "quantity": 1})
        done = await ask(buyer, {"type": "confirm", "rid": "c1", "hold_id": held["hold_id"]})
        assert done["type"] == "ack"
        keys = SaleKeys(prefix, sale["id"]).all()

        # it ends, has nothing held and its order is in the ledger: it leaves the active sales
        # and every key it has gets the retention
        async def retired() -> bool:
            return not await redis.sismember(active_sales_key(prefix), sale["id"])

        await until(retired)
        ttls = {key: await redis.pttl(key) for key in keys if await redis.exists(key)}
        named = SaleKeys(prefix, sale["id"])
        assert {named.sale, named.orders, named.mine} <= set(ttls)  # (mine: the buyer's hold)
        assert all(0 < ttl <= 60_000 for ttl in ttls.values()), ttls

        async def view() -> dict[str, object]:
            async with http.get(f"/api/sales/{sale['id']}", headers=bearer(host)) as resp:
                assert resp.status == 200, await resp.text()
                body: dict[str, object] = await resp.json()
                return body

        from_redis = await view()
        await redis.delete(*keys)  # the retention runs out
        from_ledger = await view()
        counters = ("phase", "total", "available", "held", "sold", "ends_at_ms", "price_cents")
        assert {k: from_ledger[k] for k in counters} == {k: from_redis[k] for k in counters}
        assert (from_ledger["phase"], from_ledger["sold"], from_ledger["available"]) == ("ended", 1, 4)
        async with http.get("/api/rooms/shop/sales", headers=bearer(host)) as resp:
            [listed] = (await resp.json())["sales"]
        assert (listed["id"], listed["phase"], listed["sold"]) == (sale["id"], "ended", 1)
        # a retired sale takes no more stock (and its record is left as it was)
        async with http.post(
            f"/api/sales/{sale['id']}/stock", json={"units": 3}, headers=bearer(host)
        ) as resp:
            assert resp.status == 409 and (await resp.json())["error"]["code"] == "already_ended"
        row = await srv.services.store.sale(sale["id"])
        assert row is not None and row.stock == 5
        # order reads come from the ledger anyway
        async with http.get(f"/api/orders/{held['hold_id']}", headers=bearer(host)) as resp:
            assert resp.status == 200

    # `live reconcile` finds it clean, and --repair does not bring its keys back
    for repair in (False, True):
        out = io.StringIO()
        code = await reconcile.run(srv.services.settings, sale["id"], repair, out)
        assert code == 0, out.getvalue()
        assert f"sale {sale['id']}: over, no longer in Redis; ledger 1 units of 5: clean" in out.getvalue()
    assert not await redis.exists(*keys)

    # nor does the sweeper, even if the sale were still counted active: it just leaves (and
    # whatever key was made meanwhile, the ledger consumer's stream say, expires too)
    await redis.sadd(active_sales_key(prefix), sale["id"])
    await until(retired)
    assert not await redis.exists(keys[0])
    for key in keys:
        ttl = await redis.pttl(key)
        assert ttl == -2 or 0 < ttl <= 60_000, key  # gone, or expiring


async def test_bans_and_mutes_are_kept_for_the_retention_after_the_last_one(
    server: Running, http: aiohttp.ClientSession
) -> None:
    await server.services.rooms.create("shop", host_id="host1", room_id="shop")
    keys = server.services.hub.bus.keys("shop")
    retention_ms = server.services.settings.ban_retention_s * 1000
    assert retention_ms == 30 * DAY_S * 1000  # the default
    host = await Client.connect(http, "shop", token(server, "host1", Role.HOST))
    await host.send({"type": "ban", "rid": "b1", "user_id": "troll"})
    await host.recv_type("user_banned")
    await host.send({"type": "mute", "rid": "m1", "user_id": "noisy", "duration_s": 3600})
    await host.recv_type("user_muted")
    redis = server.services.redis
    for key in (keys.banned, keys.mutes):
        assert retention_ms - 60_000 < await redis.pttl(key) <= retention_ms, key
    # each new ban or mute starts the retention again
    await redis.pexpire(keys.banned, 5_000)
    await redis.pexpire(keys.mutes, 5_000)
    await host.send({"type": "ban", "rid": "b2", "user_id": "troll2"})
    await host.recv_type("user_banned")
    await host.send({"type": "mute", "rid": "m2", "user_id": "noisy2", "duration_s": 60})
    await host.recv_type("user_muted")
    for key in (keys.banned, keys.mutes):
        assert retention_ms - 60_000 < await redis.pttl(key) <= retention_ms, key
    assert await redis.smembers(keys.banned) == {b"troll", b"troll2"}


async def test_a_mute_outlives_a_short_retention(server: Running) -> None:
    """However the bus is configured, a mute is kept at least until it ends."""
    bus = server.services.hub.bus
    short = dataclasses.replace(bus.config, ban_retention_s=60)
    bus.config = short
    until_ms = int(time.time() * 1000) + 7 * DAY_S * 1000
    await bus.mute("shop", "noisy", until_ms)
    assert await server.services.redis.pttl(bus.keys("shop").mutes) > 6 * DAY_S * 1000


def test_retention_settings_are_checked(settings: Settings) -> None:
    for bad in (
        {"sale_retention_s": 59},
        {"sale_retention_s": 11 * 365 * DAY_S},
        {"ban_retention_s": 29 * DAY_S},  # shorter than the longest mute
        {"sweep_idle_ms": 50},  # more often than the sweeps themselves
        {"sweep_idle_ms": 3_600_001},
    ):
        with pytest.raises(SettingsError):
            dataclasses.replace(settings, **bad)  # type: ignore[arg-type]
    ok = dataclasses.replace(settings, sale_retention_s=60, ban_retention_s=30 * DAY_S, sweep_idle_ms=100)
    assert ok.inventory_config().sweep_idle_ms == 100 and ok.gateway_config().ban_retention_s == 30 * DAY_S
    assert Settings.load(environ={"LIVE_SALE_RETENTION_S": "3600"}).sale_retention_s == 3600
    assert MAX_MUTE_S == 30 * DAY_S  # live/settings.py's floor for ban_retention_s
