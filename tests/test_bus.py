"""The gateway's Bus on its own, against the suite's real Redis: the paths a whole server in
the other tests never takes (plain pub/sub for a Redis older than 7, a pub/sub connection
lost, an unreadable event, presence entries of dead or foreign writers)."""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import polling
import pytest

from gateway.bus import PRESENCE_STALE_MS, Bus, now_ms
from gateway.config import GatewayConfig
from live.redis_client import connect
from live.supervisor import Supervisor

Events = list[tuple[str, list[tuple[int, dict[str, Any]]]]]


@pytest.fixture
def heard() -> Events:
    return []


@pytest.fixture
async def bus(redis_url: str, heard: Events) -> AsyncIterator[Bus]:
    redis = connect(redis_url)
    supervisor = Supervisor()
    config = GatewayConfig(key_prefix=f"t{uuid.uuid4().hex[:12]}")
    bus = Bus(redis, config, lambda room, events: heard.append((room, events)), supervisor)
    await bus.start()
    yield bus
    await bus.close()
    await supervisor.stop()
    await redis.aclose()


until = functools.partial(polling.until, timeout_s=10.0, every_s=0.02)


def texts(heard: Events) -> list[str]:
    return [str(message.get("text")) for _, events in heard for _, message in events]


async def test_plain_pub_sub_where_redis_has_no_sharded_channels(bus: Bus, heard: Events) -> None:
    bus._sharded = False  # as start() decides on a Redis 6 server
    await bus.subscribe("shop")
    seq = await bus.publish_one("shop", {"type": "host_message", "text": "hello"})
    await bus.publish_gauge("shop", "stock", {"type": "stock", "available": 3})
    await until(lambda: len(heard) == 2)
    assert heard == [
        ("shop", [(seq, {"type": "host_message", "text": "hello"})]),
        ("shop", [(0, {"gauge": "stock", "message": {"type": "stock", "available": 3}})]),  # seq 0
    ]
    await bus.unsubscribe("shop")
    await bus.publish_one("shop", {"type": "host_message", "text": "after"})
    await bus.subscribe("other")  # a round trip on the pub/sub connection: "after" would be in
    await bus.publish_one("other", {"type": "host_message", "text": "elsewhere"})
    await until(lambda: "elsewhere" in texts(heard))
    assert "after" not in texts(heard)


async def test_unsubscribing_a_room_never_subscribed_is_a_no_op(bus: Bus, heard: Events) -> None:
    await bus.unsubscribe("nowhere")
    await bus.subscribe("shop")
    await bus.publish_one("shop", {"type": "host_message", "text": "still here"})
    await until(lambda: texts(heard) == ["still here"])


async def test_an_unreadable_event_is_skipped_and_the_next_one_heard(bus: Bus, heard: Events) -> None:
    await bus.subscribe("shop")
    channel = bus.keys("shop").channel
    await bus.redis.spublish(channel, "not|json")
    await bus.redis.spublish(channel, "x|{}")  # not a seq
    await bus.publish_one("shop", {"type": "host_message", "text": "fine"})
    await until(lambda: texts(heard) == ["fine"])
    assert len(heard) == 1


async def test_a_lost_pub_sub_connection_is_made_again(bus: Bus, heard: Events) -> None:
    await bus.subscribe("shop")
    # the only pub/sub client of this test's process on the session's Redis is the bus's
    killed = await bus.redis.client_kill_filter(_type="pubsub")
    assert killed >= 1
    # the reader logs the loss, waits, and redis-py subscribes again on the next read; events
    # published before it has are not heard (pub/sub keeps nothing): publish until one is
    deadline = time.monotonic() + 20
    while not heard:
        assert time.monotonic() < deadline, "the bus never heard the room again"
        await bus.publish_one("shop", {"type": "host_message", "text": "again"})
        await asyncio.sleep(0.1)
    assert set(texts(heard)) == {"again"}
    assert not bus.supervisor.down()  # type: ignore[attr-defined]


async def test_presence_counts_only_live_entries(bus: Bus) -> None:
    presence = bus.keys("shop").presence
    stale = now_ms() - PRESENCE_STALE_MS - 1_000
    await bus.redis.hset(presence, mapping={"dead-node": f"50|{stale}", "stray": "not a count"})
    assert await bus.report_presence("me", {"shop": 3}) == {"shop": 3}
    fresh = now_ms()
    await bus.redis.hset(presence, "other-node", f"4|{fresh}")
    assert await bus.report_presence("me", {"shop": 2, "empty": 0}) == {"shop": 6, "empty": 0}
    assert await bus.redis.hget(presence, "me") is not None
    assert await bus.report_presence("me", {"shop": 0}) == {"shop": 4}
    assert await bus.redis.hget(presence, "me") is None  # a node with nobody leaves the hash
