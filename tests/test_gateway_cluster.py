"""The gateway on several nodes: in-process ``live serve`` instances (each its own data dir,
Redis client and port, as separate machines would be) sharing one Valkey cluster (or one
Redis), viewers over real WebSockets.

- every host message reaches every viewer on every node, once, in seq order, for rooms whose
  slots are on different masters; presence counts the viewers of all nodes;
- the same across a CLUSTER FAILOVER of the room's master and a SIGKILL of it (a replica
  promoted), without viewers reconnecting: each node subscribes the room again on the new
  master and catches up from the room's history;
- the comment lane's fan-out budget bounds what a node receives from a room's chat, however
  many chatters on however many nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import polling
import pytest
import redis.asyncio as aioredis
from cluster import ValkeyCluster
from conftest import SECRET
from redis.exceptions import RedisError
from wsclient import JSON, MSGPACK, Client

from gateway import messages
from gateway.keys import RoomKeys
from live.auth import Role
from live.server import Running, running
from live.settings import Settings

until = functools.partial(polling.until, timeout_s=30.0, every_s=0.05)


@dataclasses.dataclass
class Node:
    server: Running
    http: aiohttp.ClientSession

    def token(self, user: str, room: str, role: Role = Role.VIEWER) -> str:
        return self.server.services.auth.mint(user, room, role, 600)

    async def connect(self, user: str, room: str, role: Role = Role.VIEWER, framing: str = JSON) -> Client:
        return await Client.connect(self.http, room, self.token(user, room, role), framing)


@contextlib.asynccontextmanager
async def nodes(tmp_path: Path, redis_url: str, count: int, **overrides: Any) -> AsyncIterator[list[Node]]:
    """``count`` nodes on one Redis (or cluster), one key prefix, one signing secret."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    # a host here says more a second than a person would: not the message rate limit's business
    overrides = {"message_rate_per_s": 1000.0, "message_burst": 1000, **overrides}
    async with contextlib.AsyncExitStack() as stack:
        started = []
        for index in range(count):
            settings = Settings(
                data_dir=tmp_path / f"node{index}",
                redis_url=redis_url,
                key_prefix=prefix,
                secret=SECRET,
                port=0,
                node_name=f"{prefix}-n{index}",
                **overrides,
            )
            server = await stack.enter_async_context(running(settings))
            http = await stack.enter_async_context(aiohttp.ClientSession(base_url=server.url))
            started.append(Node(server, http))
        yield started


def rooms_on_different_masters(cluster: ValkeyCluster, prefix_probe: str, count: int) -> list[str]:
    """Room ids whose channels hash to ``count`` different masters."""
    chosen: dict[int, str] = {}
    for index in range(1000):
        room = f"r{index}"
        master = cluster.master_of(RoomKeys(prefix_probe, room).channel)
        chosen.setdefault(master, room)
        if len(chosen) == count:
            return list(chosen.values())
    raise AssertionError(f"no {count} rooms on different masters in 1000 tries")


async def create_room(node: Node, room: str) -> None:
    await node.server.services.rooms.create(f"room {room}", host_id="host", room_id=room)


class Viewer:
    """A viewer that records every host message it is sent (by seq), until stopped."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.host_messages: list[tuple[int, str]] = []
        self.onlines: list[int] = []
        self.closed: str | None = None
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            try:
                message = await self.client.recv(timeout=60)
            except (ConnectionError, TimeoutError) as exc:
                self.closed = repr(exc)
                return
            if message["type"] == "host_message":
                self.host_messages.append((int(message["seq"]), str(message["text"])))
            elif message["type"] == "batch" and message.get("online") is not None:
                self.onlines.append(int(message["online"]))

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.client.close()


async def host_says(host: Client, texts: list[str]) -> list[tuple[int, str]]:
    """Send host messages one by one; returns (seq, text) of each acknowledged one, its seq as
    the host itself was sent it (a refusal — ``unavailable`` mid-failover — is not an error:
    that message was not published). Texts are unique."""
    seen: dict[str, int] = {}

    async def answer_to(rid: str) -> dict[str, Any]:
        deadline = time.monotonic() + 30
        while True:
            assert time.monotonic() < deadline, f"no answer to {rid}"
            message = await host.recv(timeout=30)
            if message["type"] == "host_message":
                seen[str(message["text"])] = int(message["seq"])
            elif message.get("rid") == rid:
                return message
            assert message.get("code") != "rate_limited", message  # (answered without a rid)

    acked = []
    for index, text in enumerate(texts):
        rid = f"h{index}-{uuid.uuid4().hex[:6]}"
        await host.send({"type": "host_message", "text": text, "rid": rid})
        answer = await answer_to(rid)
        if answer["type"] == "ack":
            acked.append(text)
        else:
            assert answer["type"] == "error" and answer["code"] == "unavailable", answer
    deadline = time.monotonic() + 30
    while not set(acked) <= set(seen):
        assert time.monotonic() < deadline, f"the host never saw {sorted(set(acked) - set(seen))}"
        message = await host.recv(timeout=30)
        if message["type"] == "host_message":
            seen[str(message["text"])] = int(message["seq"])
    return [(seen[text], text) for text in acked]


def assert_got_all_in_order(viewer: Viewer, acked: list[tuple[int, str]]) -> None:
    seqs = [seq for seq, _ in viewer.host_messages]
    assert seqs == sorted(set(seqs)), f"out of order or duplicated: {seqs}"
    assert set(acked) <= set(viewer.host_messages), (
        f"missing {sorted(set(acked) - set(viewer.host_messages))}; closed: {viewer.closed}"
    )


# -- one Redis: the catch-up path without a cluster --------------------------------------------------


async def test_a_lost_pub_sub_connection_loses_no_host_message(tmp_path: Path, redis_url: str) -> None:
    """Single Redis: the pub/sub connections are killed mid-stream; each node subscribes again
    and reads the gap back from the room's history: viewers get every host message in order."""
    async with nodes(tmp_path, redis_url, 2) as (a, b):
        await create_room(a, "shop")
        host = await a.connect("host", "shop", Role.HOST)
        viewers = [Viewer(await node.connect(f"v{i}", "shop")) for i, node in enumerate((a, b, b))]
        acked = await host_says(host, [f"before {i}" for i in range(5)])
        admin = aioredis.Redis.from_url(redis_url)
        try:
            killed = await admin.client_kill_filter(_type="pubsub")
            assert killed >= 2  # (one per node at least; other tests' buses may share the server)
            acked += await host_says(host, [f"after {i}" for i in range(20)])
        finally:
            await admin.aclose()
        for viewer in viewers:
            await until(lambda v=viewer: set(acked) <= set(v.host_messages))  # type: ignore[misc]
            assert_got_all_in_order(viewer, acked)
            assert viewer.closed is None
        assert all(n.server.services.hub.bus.subscriptions.resubscribes >= 1 for n in (a, b))
        for viewer in viewers:
            await viewer.stop()


async def lose_pub_sub(redis_url: str) -> None:
    """Kill every pub/sub connection of the server: each node subscribes again and catches up."""
    admin = aioredis.Redis.from_url(redis_url)
    try:
        assert await admin.client_kill_filter(_type="pubsub") >= 1
    finally:
        await admin.aclose()


async def test_members_resume_when_the_history_no_longer_reaches_back(tmp_path: Path, redis_url: str) -> None:
    """The gap cannot be read back (the history starts past what this node delivered): the
    members are closed with `unavailable`, to reconnect and resume from their `last_seq`."""
    async with nodes(tmp_path, redis_url, 1) as (a,):
        await create_room(a, "shop")
        host = await a.connect("host", "shop", Role.HOST)
        viewer = Viewer(await a.connect("v", "shop"))
        await host_says(host, [f"before {i}" for i in range(3)])
        await until(lambda: len(viewer.host_messages) == 3)
        keys = RoomKeys(a.server.services.settings.key_prefix, "shop")
        admin = aioredis.Redis.from_url(redis_url)
        try:
            await admin.hset(keys.state, "history_floor", 1000)  # as if trimmed far past us
        finally:
            await admin.aclose()
        await lose_pub_sub(redis_url)
        await until(lambda: viewer.closed is not None)
        assert "1001" in str(viewer.closed) and "unavailable" in str(viewer.closed)


async def test_a_room_whose_seq_went_back_is_followed_from_there(tmp_path: Path, redis_url: str) -> None:
    """A failover lost the room's last writes (its counter and history went back) while this
    node's subscription was down: the next events reuse those seqs and are delivered, not
    dropped as seen already."""
    async with nodes(tmp_path, redis_url, 1) as (a,):
        await create_room(a, "shop")
        host = await a.connect("host", "shop", Role.HOST)
        viewer = Viewer(await a.connect("v", "shop"))
        await host_says(host, [f"before {i}" for i in range(4)])
        await until(lambda: len(viewer.host_messages) == 4)
        keys = RoomKeys(a.server.services.settings.key_prefix, "shop")
        admin = aioredis.Redis.from_url(redis_url)
        try:
            first = viewer.host_messages[0][0]
            await admin.set(keys.seq, first)  # the promoted replica knew only the first event
            await admin.delete(keys.history)
        finally:
            await admin.aclose()
        await lose_pub_sub(redis_url)
        room = a.server.services.hub.rooms["shop"]
        await until(lambda: room.delivered_seq == first and not room.catching_up)  # caught up
        acked = await host_says(host, [f"after {i}" for i in range(3)])
        await until(lambda: {text for _, text in acked} <= {text for _, text in viewer.host_messages})
        assert [seq for seq, _ in acked] == [first + 1, first + 2, first + 3]
        assert viewer.closed is None
        await viewer.stop()


# -- a cluster ----------------------------------------------------------------------------------------


@pytest.mark.scaleout
async def test_host_messages_reach_viewers_on_every_node_in_order(
    tmp_path: Path, valkey_cluster: ValkeyCluster
) -> None:
    async with nodes(tmp_path, valkey_cluster.url, 3) as cluster_nodes:
        prefix = cluster_nodes[0].server.services.settings.key_prefix
        rooms = rooms_on_different_masters(valkey_cluster, prefix, 3)
        for room in rooms:
            await create_room(cluster_nodes[0], room)
        by_room: dict[str, list[Viewer]] = {}
        for room in rooms:
            by_room[room] = [
                Viewer(await node.connect(f"{room}-v{n}-{i}", room, framing=MSGPACK if i else JSON))
                for n, node in enumerate(cluster_nodes)
                for i in range(2)
            ]
        hosts = {
            room: await cluster_nodes[i % 3].connect("host", room, Role.HOST) for i, room in enumerate(rooms)
        }
        sent = await asyncio.gather(*(host_says(hosts[r], [f"{r} m{i}" for i in range(30)]) for r in rooms))
        for room, acked in zip(rooms, sent, strict=True):
            assert len(acked) == 30  # no failover here: nothing refused
            for viewer in by_room[room]:
                await until(lambda v=viewer, a=acked: set(a) <= set(v.host_messages))  # type: ignore[misc]
                assert_got_all_in_order(viewer, acked)
                # presence: 6 viewers and the host, over three nodes
                await until(lambda v=viewer: bool(v.onlines) and v.onlines[-1] == 7)  # type: ignore[misc]
        # each node reads each room from the room's master, not from one connection for all
        for node in cluster_nodes:
            placed = {
                node.server.services.hub.bus.subscriptions.node_of(RoomKeys(prefix, r).channel) for r in rooms
            }
            assert len(placed) == 3, placed
        for viewers in by_room.values():
            for viewer in viewers:
                await viewer.stop()


async def _stream_through(tmp_path: Path, cluster: ValkeyCluster, disrupt: Callable[[str], Any]) -> None:
    """Two nodes, viewers on both; the host streams; ``disrupt(channel)`` runs mid-stream."""
    async with nodes(tmp_path, cluster.url, 2) as (a, b):
        prefix = a.server.services.settings.key_prefix
        await create_room(a, "shop")
        channel = RoomKeys(prefix, "shop").channel
        host = await a.connect("host", "shop", Role.HOST)
        viewers = [Viewer(await node.connect(f"v{i}", "shop")) for i, node in enumerate((a, a, b, b))]
        acked = await host_says(host, [f"before {i}" for i in range(10)])
        old_master = cluster.master_of(channel)
        stream = asyncio.create_task(host_says(host, [f"during {i}" for i in range(60)]))
        # and the app's own events from the other node, back to back: some land on the new
        # master before the nodes have subscribed there (the gap the catch-up fills)
        disrupted = asyncio.Event()
        burst = asyncio.create_task(_publish_until(b, "shop", disrupted))
        await asyncio.sleep(0)  # (the stream is under way while the cluster changes)
        await disrupt(channel)
        disrupted.set()
        acked += await stream
        acked += await burst
        assert cluster.master_of(channel) != old_master
        acked += await host_says(host, [f"after {i}" for i in range(10)])
        assert len({seq for seq, _ in acked}) == len(acked)
        for viewer in viewers:
            await until(lambda v=viewer: set(acked) <= set(v.host_messages))  # type: ignore[misc]
            assert_got_all_in_order(viewer, acked)
            assert viewer.closed is None  # nobody had to reconnect
        for node in (a, b):
            assert node.server.services.hub.bus.subscriptions.resubscribes >= 1
            assert (
                node.server.services.hub.bus.subscriptions.node_of(channel)
                == f"127.0.0.1:{cluster.master_of(channel)}"
            )
        for viewer in viewers:
            await viewer.stop()


async def _publish_until(node: Node, room: str, disrupted: asyncio.Event) -> list[tuple[int, str]]:
    """Publish events back to back until ``disrupted`` and 200 more; returns those that were
    published (a Redis error mid-failover: that one was not)."""
    hub = node.server.services.hub
    published: list[tuple[int, str]] = []
    after = 0
    for index in range(100_000):  # (bounded: a failover that never ends fails the test here)
        text = f"event {index}"
        try:
            seq = await hub.publish_event(room, messages.host_message("host", text, by="app", ts_ms=0))
        except (RedisError, OSError):
            await asyncio.sleep(0.01)
            continue
        published.append((seq, text))
        if disrupted.is_set():
            after += 1
            if after >= 200:
                return published
    raise AssertionError("the cluster change never ended")


@pytest.mark.scaleout
async def test_viewers_get_every_host_message_across_a_failover(
    tmp_path: Path, fresh_valkey_cluster: ValkeyCluster
) -> None:
    await _stream_through(tmp_path, fresh_valkey_cluster, fresh_valkey_cluster.failover_async)


@pytest.mark.scaleout
async def test_viewers_get_every_host_message_when_the_master_is_killed(
    tmp_path: Path, fresh_valkey_cluster: ValkeyCluster
) -> None:
    await _stream_through(tmp_path, fresh_valkey_cluster, fresh_valkey_cluster.kill_master_of_async)


# -- the comment lane's fan-out budget ---------------------------------------------------------------


@pytest.mark.scaleout
async def test_a_rooms_comment_fanout_is_bounded_whatever_the_chatters(
    tmp_path: Path, valkey_cluster: ValkeyCluster
) -> None:
    """Three nodes, 15 chatters each, a budget of 10 comments a second: what any node receives
    of the room's chat over pub/sub is at most 10 per second of the shard's clock; every
    comment is still acknowledged, and shown on its sender's node (its moderator sees it);
    host messages are never held back."""
    budget = 10
    async with nodes(
        tmp_path, valkey_cluster.url, 3, comment_fanout_per_s=budget, comment_burst=5
    ) as all_nodes:
        prefix = all_nodes[0].server.services.settings.key_prefix
        await create_room(all_nodes[0], "shop")
        keys = RoomKeys(prefix, "shop")
        # what a node's bus receives: a pub/sub subscriber of our own on the room's master
        owner = valkey_cluster.master_of(keys.channel)
        probe = aioredis.Redis(host="127.0.0.1", port=owner)
        listener = probe.pubsub()
        await listener.ssubscribe(keys.channel)
        heard_lines: list[str] = []

        async def listen() -> None:
            while True:
                message = await listener.get_message(timeout=1.0)
                if message is not None and message["type"] == "smessage":
                    heard_lines.extend(message["data"].decode().split("\n"))

        listening = asyncio.create_task(listen())
        mods = [
            Viewer(await node.connect(f"mod{n}", "shop", Role.MODERATOR)) for n, node in enumerate(all_nodes)
        ]
        mod_comments: list[list[str]] = [[] for _ in all_nodes]
        for index, mod in enumerate(mods):
            mod.task.cancel()
            mod.task = asyncio.create_task(_collect_comments(mod.client, mod_comments[index]))
        chatters = [
            (n, await node.connect(f"c{n}-{i}", "shop"))
            for n, node in enumerate(all_nodes)
            for i in range(15)
        ]
        host = await all_nodes[0].connect("host", "shop", Role.HOST)
        # the budget counts seconds of the room's master's clock: read it around the burst
        started = int((await probe.time())[0])
        acked: list[tuple[int, str]] = []  # (node, text)
        for burst in range(5):  # each chatter's burst allowance: 5 comments
            results = await asyncio.gather(
                *(_comment(client, f"n{n} {cid} b{burst}") for cid, (n, client) in enumerate(chatters))
            )
            acked += [(n, text) for (n, _), text in zip(chatters, results, strict=True) if text is not None]
        host_acked = await host_says(host, ["still first class"])
        ended = int((await probe.time())[0])
        assert len(acked) == 5 * 45  # every comment accepted
        await until(lambda: any("still first class" in line for line in heard_lines))
        fanned = [line for line in heard_lines if '"type":"comment"' in line]
        seconds = ended - started + 1
        assert 0 < len(fanned) <= budget * seconds, (len(fanned), seconds)
        # the rest was kept on its sender's node: each node's moderator sees its own chatters'
        # comments, all of them, and of the others' only what was fanned out
        fanned_texts = {_text_of(line) for line in fanned}
        for n in range(3):
            mine = {text for node, text in acked if node == n}
            await until(lambda n=n, mine=mine: mine <= set(mod_comments[n]))  # type: ignore[misc]
            others = set(mod_comments[n]) - mine
            assert others <= fanned_texts
        local = sum(node.server.services.hub.bus.kept_local for node in all_nodes)
        assert local + len(fanned) == len(acked)
        assert host_acked and host_acked[0][1] == "still first class"
        listening.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listening
        await listener.aclose()
        await probe.aclose()
        for mod in mods:
            await mod.stop()


async def _comment(client: Client, text: str) -> str | None:
    rid = uuid.uuid4().hex[:8]
    await client.send({"type": "comment", "text": text, "rid": rid})
    answer = await client.recv_until(lambda m: m.get("rid") == rid, timeout=30)
    return text if answer["type"] == "ack" else None


async def _collect_comments(client: Client, into: list[str]) -> None:
    while True:
        message = await client.recv(timeout=120)
        if message["type"] == "batch":
            into.extend(str(c["text"]) for c in message.get("comments", ()))


def _text_of(line: str) -> str:
    _, _, payload = line.partition("|")
    return str(json.loads(payload)["text"])
