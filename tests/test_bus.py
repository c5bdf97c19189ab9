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

from gateway.bus import PRESENCE_STALE_MS, Bus, now_ms, parse_events
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
    # the link's reader sees the loss and the bus subscribes again (the hub then catches up from
    # the history: tests/test_gateway_cluster.py); events published before it has are not heard
    # here (pub/sub keeps nothing): publish until one is
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


async def test_comments_past_the_rooms_fanout_budget_stay_on_the_senders_node(redis_url: str) -> None:
    """One publish.lua call runs within one second of the server's clock: of 8 viewer comments
    with a budget of 3, 3 are published and 5 only handed to this process; a moderator's
    comment and a host event are never held back. Every comment gets its seq."""
    redis = connect(redis_url)
    supervisor = Supervisor()
    heard: Events = []
    config = GatewayConfig(key_prefix=f"t{uuid.uuid4().hex[:12]}", comment_fanout_per_s=3)
    bus = Bus(redis, config, lambda room, events: heard.append((room, events)), supervisor)
    await bus.start()
    listener = redis.pubsub()
    try:
        await bus.subscribe("shop")
        await listener.ssubscribe(bus.keys("shop").channel)
        comments = [(f"u{i}", {"type": "comment", "role": "viewer", "text": f"c{i}"}) for i in range(8)]
        staff = ("mod", {"type": "comment", "role": "moderator", "text": "from staff"})
        host = ("", {"type": "host_message", "text": "from the host"})
        results = await bus.publish("shop", [*comments, staff, host])
        assert all(isinstance(r, int) for r in results) and len(set(results)) == 10
        published: list[str] = []
        while "from the host" not in published:
            message = await listener.get_message(timeout=5.0)
            assert message is not None, f"nothing more on the channel after {published}"
            if message["type"] == "smessage":
                published += [str(m.get("text")) for _, m in parse_events(message["data"])]
        assert published == ["c0", "c1", "c2", "from staff", "from the host"]
        assert bus.kept_local == 5
        await until(lambda: sorted(texts(heard)) == sorted(m["text"] for _, m in [*comments, staff, host]))
    finally:
        await listener.aclose()
        await bus.close()
        await supervisor.stop()
        await redis.aclose()


async def test_a_lost_subscription_is_reported_lost_then_made_again(bus: Bus) -> None:
    lost: list[list[str]] = []
    again: list[list[str]] = []
    bus._on_lost, bus._on_resubscribed = lost.append, again.append
    await bus.subscribe("shop")
    assert await bus.redis.client_kill_filter(_type="pubsub") >= 1
    await until(lambda: again == [["shop"]])
    assert lost == [["shop"]]  # told before it was made again: what came between is held
    assert bus.subscriptions.resubscribes == 1
