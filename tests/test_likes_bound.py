"""A room's likes total reaches every node at most once per ``likes_gauge_interval_ms``,
room-wide, however many nodes add likes, and no total is lost: real Redis, real servers, real
sockets. (Without the bound, P nodes each publishing every tick make every node receive P
gauges a tick.)"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from polling import until
from wsclient import Client

from gateway.bus import GAUGE, Bus
from gateway.config import GatewayConfig
from live.auth import Role
from live.redis_client import connect
from live.server import Running, running
from live.settings import Settings
from live.supervisor import Supervisor

Heard = list[tuple[int, dict[str, Any]]]


@contextlib.asynccontextmanager
async def likes_bus(redis_url: str, prefix: str, interval_ms: int, heard: Heard) -> AsyncIterator[Bus]:
    redis = connect(redis_url)
    supervisor = Supervisor()
    config = GatewayConfig(key_prefix=prefix, likes_gauge_interval_ms=interval_ms)
    bus = Bus(redis, config, lambda room, events: heard.extend(events), supervisor)
    await bus.start()
    try:
        await bus.subscribe("shop")
        yield bus
    finally:
        await bus.close()
        await supervisor.stop()
        await redis.aclose()


def totals(heard: Heard) -> list[int]:
    return [int(m["total"]) for seq, m in heard if seq == GAUGE and m.get("type") == "likes"]


async def test_adds_within_the_interval_are_counted_not_published_and_a_follow_up_covers_them(
    redis_url: str,
) -> None:
    """An interval of a minute: the first add publishes, the next ones (from two buses) are
    counted but held back, each told how long until a publish is due; a follow-up before it is
    due publishes nothing, and one covered by a publish since publishes nothing either."""
    prefix = f"t{uuid.uuid4().hex[:12]}"
    heard_a: Heard = []
    heard_b: Heard = []
    async with (
        likes_bus(redis_url, prefix, 60_000, heard_a) as a,
        likes_bus(redis_url, prefix, 60_000, heard_b) as b,
    ):
        assert await a.add_likes("shop", 3) == (3, 0)
        total, wait_ms = await b.add_likes("shop", 4)
        assert total == 7 and 0 < wait_ms <= 60_000
        total, wait_ms = await a.add_likes("shop", 5)
        assert total == 12 and 0 < wait_ms <= 60_000
        follow_up = await b.add_likes("shop", 0, follow_up_of=7)
        assert follow_up[0] == 12 and follow_up[1] > 0  # not due yet: nothing published
        await until(lambda: totals(heard_a) == [3] and totals(heard_b) == [3])
        # a publish is due once the interval has passed (made so here: the last publish moved
        # back by the interval); b's follow-up then publishes the current total, and a's
        # follow-up, covered by it, publishes nothing more
        state = a.keys("shop").state
        published_ms = int(await a.redis.hget(state, "likes_published_ms"))
        await a.redis.hset(state, "likes_published_ms", published_ms - 60_000)
        assert await b.add_likes("shop", 0, follow_up_of=7) == (12, 0)
        assert await a.add_likes("shop", 0, follow_up_of=12) == (12, 0)
        await until(lambda: totals(heard_a) == [3, 12] and totals(heard_b) == [3, 12])
        assert int(await a.redis.hget(state, "likes")) == 12
        # a counter reset (the likes field gone): the new total is not taken as covered by the
        # larger old one, its follow-up publishes it once due
        await a.redis.hdel(state, "likes")
        total, wait_ms = await a.add_likes("shop", 2)
        assert total == 2 and wait_ms > 0
        published_ms = int(await a.redis.hget(state, "likes_published_ms"))
        await a.redis.hset(state, "likes_published_ms", published_ms - 60_000)
        assert await a.add_likes("shop", 0, follow_up_of=2) == (2, 0)
        await until(lambda: totals(heard_a) == [3, 12, 2])


async def test_an_interval_of_zero_publishes_every_add(redis_url: str) -> None:
    heard: Heard = []
    async with likes_bus(redis_url, f"t{uuid.uuid4().hex[:12]}", 0, heard) as bus:
        for n in range(1, 6):
            assert await bus.add_likes("shop", 1) == (n, 0)
        await until(lambda: totals(heard) == [1, 2, 3, 4, 5])


# -- whole servers ------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def servers(settings: Settings, count: int, **overrides: Any) -> AsyncIterator[list[Running]]:
    """``count`` servers on one Redis and key prefix, each its own node (name, data dir)."""
    async with contextlib.AsyncExitStack() as stack:
        started = []
        for index in range(count):
            node = dataclasses.replace(
                settings,
                data_dir=settings.data_dir / f"node{index}",
                node_name=f"likes-{uuid.uuid4().hex[:8]}-n{index}",
                **overrides,
            )
            started.append(await stack.enter_async_context(running(node)))
        yield started


class Watcher:
    """A viewer that keeps liking (``count`` each time) and records every likes total it sees."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.seen: list[int] = [int(client.welcome["likes"])]
        self.sent = 0
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            message = await self.client.recv(timeout=60)
            if message["type"] == "batch" and message.get("likes") is not None:
                self.seen.append(int(message["likes"]))

    async def like(self, count: int) -> None:
        await self.client.send({"type": "like", "count": count})
        self.sent += count


@pytest.mark.parametrize("interval_ms", [100, 250])
async def test_likes_from_every_node_reach_each_node_once_an_interval_and_the_last_total_arrives(
    settings: Settings, interval_ms: int
) -> None:
    """Three nodes, four viewers on each liking every 25 ms for about a second (each node has
    likes every tick: without the bound, every node would receive about three gauges a tick):
    each node's bus receives at most one likes total per interval of the burst (+2), every
    like is in the room's total, and every viewer's last total is that total."""
    overrides = {
        "tick_ms": 20,
        "likes_gauge_interval_ms": interval_ms,
        "message_rate_per_s": 10_000.0,
        "message_burst": 10_000,
    }
    async with servers(settings, 3, **overrides) as nodes:
        await nodes[0].services.rooms.create("likes room", host_id="host", room_id="shop")
        heard: list[Heard] = [[] for _ in nodes]
        for node, log in zip(nodes, heard, strict=True):
            bus = node.services.hub.bus
            original = bus._on_events

            def counting(room: str, events: Heard, original: Any = original, log: Heard = log) -> None:
                log.extend(events)
                original(room, events)

            bus._on_events = counting
        async with contextlib.AsyncExitStack() as stack:
            watchers = []
            for index, node in enumerate(nodes):
                http = await stack.enter_async_context(aiohttp.ClientSession(base_url=node.url))
                for v in range(4):
                    token = node.services.auth.mint(f"n{index}-v{v}", "shop", Role.VIEWER, 600)
                    watchers.append(Watcher(await Client.connect(http, "shop", token)))
            redis = nodes[0].services.hub.bus.redis
            state = nodes[0].services.hub.bus.keys("shop").state
            seconds, ms = await redis.time()
            started_ms = seconds * 1000 + ms // 1000
            # about a second: 40 rounds, each at least 25 ms apart, one like per viewer each (at
            # most 40 a second: under likes_per_s, 50, so none is capped and the total is known)
            for _ in range(40):
                await asyncio.gather(*(w.like(1) for w in watchers))
                await asyncio.sleep(0.025)
            expected = sum(w.sent for w in watchers)
            await until(_total_is(redis, state, expected))
            # every viewer ends at the true total (the burst's last likes were held back by the
            # interval on most nodes: their follow-ups publish them)
            await until(lambda: all(w.seen[-1] == expected for w in watchers))
            received = [len(totals(log)) for log in heard]  # counted before the clock is read
            seconds, ms = await redis.time()
            duration_ms = seconds * 1000 + ms // 1000 - started_ms
            # publishes at least an interval apart (of the shard's clock, read in whole ms: +1
            # for that rounding) within the burst
            bound = math.ceil(duration_ms / interval_ms) + 2
            assert all(0 < n <= bound for n in received), (received, bound, duration_ms)
            # each node heard one stream of totals, rising, ending at the true total
            for log in heard:
                assert totals(log) == sorted(totals(log)) and totals(log)[-1] == expected
            for w in watchers:
                assert w.seen == sorted(w.seen), w.seen  # a viewer's total never goes back
                w.reader.cancel()


def _total_is(redis: Any, state: str, expected: int) -> Any:
    async def check() -> bool:
        return int(await redis.hget(state, "likes") or 0) == expected

    return check
