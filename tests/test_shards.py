"""gateway/shards.py against a real Redis: channels subscribed, heard, dropped, and placed again
when their link stops answering (the cluster's failovers are in test_gateway_cluster.py)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import polling
import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway import shards
from gateway.shards import Subscriptions
from live.redis_client import connect
from live.supervisor import Supervisor

until = functools.partial(polling.until, timeout_s=20.0, every_s=0.02)


@dataclass
class Heard:
    messages: list[tuple[str, bytes]] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    back: list[str] = field(default_factory=list)


def listening(client: aioredis.Redis) -> tuple[Subscriptions, Heard]:
    """Subscriptions on ``client``, started, recording what they hear and lose."""
    heard = Heard()
    subs = Subscriptions(
        client,
        sharded=True,
        on_message=lambda channel, data: heard.messages.append((channel, data)),
        on_lost=heard.lost.extend,
        on_resubscribed=heard.back.extend,
        supervisor=Supervisor(),
    )
    subs.start()
    return subs, heard


@pytest.fixture
async def subscriptions(redis_url: str) -> AsyncIterator[tuple[Subscriptions, Heard, aioredis.Redis]]:
    client = connect(redis_url)
    subs, heard = listening(client)
    yield subs, heard, client
    await subs.close()
    await client.aclose()


def channel(name: str) -> str:
    return f"t-shards:{{{name}}}:{id(name)}"


async def test_a_channel_is_heard_until_it_is_dropped(
    subscriptions: tuple[Subscriptions, Heard, aioredis.Redis],
) -> None:
    subs, heard, client = subscriptions
    one, other = channel("one"), channel("other")
    await subs.subscribe(one)
    await subs.subscribe(one)  # (again: already placed)
    await subs.subscribe(other)
    assert subs.node_of(one) == "redis"
    await client.spublish(one, "a")
    await until(lambda: (one, b"a") in heard.messages)
    await subs.unsubscribe(one)
    assert subs.node_of(one) is None
    await client.spublish(one, "b")
    await client.spublish(other, "barrier")  # one connection, in order: "b" would be before it
    await until(lambda: (other, b"barrier") in heard.messages)
    assert (one, b"b") not in heard.messages
    assert heard.lost == heard.back == []


async def test_an_idle_link_is_kept_alive_by_its_pings(
    subscriptions: tuple[Subscriptions, Heard, aioredis.Redis], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shards, "LINK_PING_S", 0.05)
    monkeypatch.setattr(shards, "LINK_DEAD_S", 2.0)
    subs, heard, client = subscriptions
    quiet = channel("quiet")
    await subs.subscribe(quiet)
    await asyncio.sleep(0.5)  # ten pings' worth of silence
    await client.spublish(quiet, "still here")
    await until(lambda: (quiet, b"still here") in heard.messages)
    assert heard.lost == []


async def test_a_link_that_stops_answering_is_dropped_and_its_channels_placed_again(
    subscriptions: tuple[Subscriptions, Heard, aioredis.Redis], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shards, "LINK_PING_S", 0.05)
    monkeypatch.setattr(shards, "LINK_DEAD_S", 0.3)
    subs, heard, client = subscriptions
    stalled = channel("stalled")
    await subs.subscribe(stalled)
    await client.execute_command("CLIENT", "PAUSE", "1000", "ALL")  # the node answers nobody
    await until(lambda: heard.lost == [stalled])
    await until(lambda: heard.back == [stalled])  # once it answers again
    assert subs.node_of(stalled) == "redis" and subs.resubscribes == 1
    await client.spublish(stalled, "after")
    await until(lambda: (stalled, b"after") in heard.messages)


async def test_a_channel_no_node_will_take_is_refused_and_kept_wanted() -> None:
    """Nothing listens where the client points: the first subscribe fails after its tries with
    a RedisError, the channel is reported lost (the loop keeps placing it), and dropping it ends
    that."""
    client = connect("redis://127.0.0.1:9/0")  # (the discard port: nothing answers there)
    subs, heard = listening(client)
    nowhere = channel("nowhere")
    try:
        with pytest.raises(RedisError):
            await subs.subscribe(nowhere)
        assert heard.lost == [nowhere] and subs.node_of(nowhere) is None
        await asyncio.sleep(0.2)  # the loop tries again, and fails again, without giving up
        assert heard.back == []
        await subs.unsubscribe(nowhere)
    finally:
        await subs.close()
        await client.aclose()


async def test_a_channel_dropped_as_its_link_dies_is_not_placed_again(
    subscriptions: tuple[Subscriptions, Heard, aioredis.Redis],
) -> None:
    subs, heard, client = subscriptions
    going, staying = channel("going"), channel("staying")
    await subs.subscribe(going)
    await subs.subscribe(staying)
    assert await client.client_kill_filter(_type="pubsub") >= 1
    await subs.unsubscribe(going)  # while its link dies (before or after the reader sees it)
    await until(lambda: staying in heard.back)
    await asyncio.sleep(0.1)
    assert going not in heard.back and subs.node_of(going) is None
    await client.spublish(going, "unheard")
    await client.spublish(staying, "heard")
    await until(lambda: (staying, b"heard") in heard.messages)
    assert (going, b"unheard") not in heard.messages
