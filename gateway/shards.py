"""Room channels on the Redis node that owns them, and kept there through failovers.

On a single Redis every channel is on one connection. On a Redis Cluster a shard channel
(SSUBSCRIBE) must be subscribed on the master that owns its slot, so each such node gets its
own pub/sub connection (a ``_Link``), and a channel moves when its slot does:

- the node tells us: Redis 7 / Valkey push ``sunsubscribe`` for a channel whose slot this node
  no longer serves (a failover made it a replica, or the slot was resharded away);
- the connection dies (the master was killed), or stops answering the link's PINGs;
- SSUBSCRIBE is refused with MOVED / CLUSTERDOWN (our slot map is stale, or the cluster has no
  master for the slot yet).

Each of these marks the channel *lost*; one loop re-reads the cluster's slot map and
subscribes it again on the slot's owner, with bounded backoff, as long as it is wanted. Events
published meanwhile are not on pub/sub for us: ``on_resubscribed`` tells the owner (the hub),
which reads them back from the room's history stream. Nothing here reconnects silently: a link
is a plain connection, not redis-py's PubSub (which re-subscribes by itself on reconnect and
so would hide the gap).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError, ResponseError

from gateway.ports import Supervisor

log = logging.getLogger(__name__)

#: How long a (S)SUBSCRIBE may wait for the node's confirmation.
SUBSCRIBE_TIMEOUT_S = 5.0
#: An idle link sends a PING this often; one unanswered for LINK_DEAD_S is a dead link.
LINK_PING_S = 2.0
LINK_DEAD_S = 6.0
#: Re-subscribing lost channels: the first retry after this, doubling up to the cap.
RETRY_FIRST_S = 0.05
RETRY_MAX_S = 2.0
#: Tries of a first subscribe before the caller is told (the loop keeps trying after that).
SUBSCRIBE_TRIES = 3

RedisClient = aioredis.Redis | RedisCluster
OnMessage = Callable[[str, bytes], None]
OnChannels = Callable[[list[str]], None]


class LinkLost(RedisError):
    """A link's connection died, or stopped answering."""


class _Link:
    """One pub/sub connection to one node, and the channels subscribed on it."""

    def __init__(self, name: str, connection: AbstractConnection, sharded: bool, owner: Subscriptions):
        self.name = name
        self.connection = connection
        self.owner = owner
        self.subscribe_cmd = "SSUBSCRIBE" if sharded else "SUBSCRIBE"
        self.unsubscribe_cmd = "SUNSUBSCRIBE" if sharded else "UNSUBSCRIBE"
        #: Channels the node has confirmed (and not taken back).
        self.channels: set[str] = set()
        #: (S)SUBSCRIBEs and (S)UNSUBSCRIBEs sent and not answered yet, in order: the node
        #: answers in that order, error replies (MOVED) included, so an error is the oldest's.
        self._pending: deque[tuple[str, str, asyncio.Future[None] | None]] = deque()
        self.alive = True
        self.task: asyncio.Task[None] | None = None

    async def subscribe(self, channel: str) -> None:
        if not self.alive:
            raise LinkLost(f"pub/sub link to {self.name} is down")
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # (an answer nobody waits for any more, after a timeout, is still retrieved)
        waiter.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._pending.append(("subscribe", channel, waiter))
        try:
            await self.connection.send_command(self.subscribe_cmd, channel)
            await asyncio.wait_for(asyncio.shield(waiter), SUBSCRIBE_TIMEOUT_S)
        except ResponseError:  # refused (MOVED, CLUSTERDOWN): the link itself is fine
            raise
        except (TimeoutError, OSError, RedisError) as exc:
            self.fail(exc)
            raise LinkLost(f"subscribing on {self.name} failed: {exc!r}") from exc

    async def unsubscribe(self, channel: str) -> None:
        # Forgotten first: the node's confirmation then reads as "not ours", as it should.
        self.channels.discard(channel)
        if self.alive:
            try:
                self._pending.append(("unsubscribe", channel, None))
                await self.connection.send_command(self.unsubscribe_cmd, channel)
            except (OSError, RedisError) as exc:
                self.fail(exc)

    async def read(self) -> None:
        """Read the link until it dies; every channel on it is then lost."""
        loop = asyncio.get_running_loop()
        last_heard = loop.time()
        pinged = False
        try:
            while True:
                reply: Any
                try:
                    reply = await self.connection.read_response(
                        timeout=LINK_PING_S, push_request=True, disconnect_on_error=False
                    )
                except ResponseError as exc:  # an answer (MOVED, say), not a broken link
                    reply = exc
                now = loop.time()
                if reply is None:
                    if now - last_heard > LINK_DEAD_S:
                        raise LinkLost(f"{self.name} did not answer PING for {LINK_DEAD_S:g} s")
                    if not pinged:
                        await self.connection.send_command("PING")
                        pinged = True
                    continue
                last_heard, pinged = now, False
                self._on_reply(reply)
        except (TimeoutError, OSError, RedisError) as exc:
            self.fail(exc)
        except Exception as exc:  # a bug reading a reply: logged; the channels are placed again
            log.exception("pub/sub link failed", extra={"node": self.name})
            self.fail(exc)

    def _on_reply(self, reply: Any) -> None:
        if isinstance(reply, ResponseError):
            self._refused(reply)
            return
        if not isinstance(reply, list) or not reply:
            return
        kind = _text(reply[0]).lower()
        if kind in ("smessage", "message") and len(reply) == 3:
            self.owner.on_message(_text(reply[1]), reply[2])
        elif kind in ("ssubscribe", "subscribe"):
            channel = _text(reply[1])
            if self._pending and self._pending[0][:2] == ("subscribe", channel):
                _, _, waiter = self._pending.popleft()
                self.channels.add(channel)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
        elif kind in ("sunsubscribe", "unsubscribe"):
            channel = _text(reply[1])
            if self._pending and self._pending[0][:2] == ("unsubscribe", channel):
                self._pending.popleft()  # the answer to ours
            elif channel in self.channels:
                # Not asked for: the node no longer serves the channel's slot.
                self.channels.discard(channel)
                self.owner.lost([channel], f"{self.name} dropped it (slot moved)")
        # "pong": only proves the link is alive (counted by read)

    def _refused(self, error: ResponseError) -> None:
        if not self._pending:
            # An error out of turn (nothing sent to pin it on): a state we do not know, so the
            # link is dropped and its channels placed again.
            raise error
        kind, channel, waiter = self._pending.popleft()
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        log.info(f"{kind} refused", extra={"node": self.name, "channel": channel, "error": str(error)})

    def fail(self, exc: BaseException) -> None:
        if not self.alive:
            return
        self.alive = False
        while self._pending:
            _, _, waiter = self._pending.popleft()
            if waiter is not None and not waiter.done():
                waiter.set_exception(LinkLost(f"pub/sub link to {self.name} lost: {exc!r}"))
        lost, self.channels = list(self.channels), set()
        self.owner.link_failed(self, lost, repr(exc))


class Subscriptions:
    """The room channels this process listens to, each on the node that serves it."""

    def __init__(
        self,
        redis: RedisClient,
        sharded: bool,
        on_message: OnMessage,
        on_lost: OnChannels,
        on_resubscribed: OnChannels,
        supervisor: Supervisor,
        loop_name: str = "gateway-bus-subscriptions",
    ) -> None:
        self.redis = redis
        self.sharded = sharded
        self.on_message = on_message
        self._on_lost = on_lost
        self._on_resubscribed = on_resubscribed
        self.supervisor = supervisor
        self.loop_name = loop_name
        self._wanted: set[str] = set()
        self._placed: dict[str, _Link] = {}
        self._links: dict[str, _Link] = {}
        self._lost: set[str] = set()
        self._lost_ready = asyncio.Event()
        self._placing: dict[str, asyncio.Task[None]] = {}
        self._closed = False
        self._closing: set[asyncio.Task[None]] = set()
        #: Channels placed again after a loss, since start (for tests and metrics).
        self.resubscribes = 0

    @property
    def is_cluster(self) -> bool:
        return isinstance(self.redis, RedisCluster)

    def start(self) -> None:
        self.supervisor.start(self.loop_name, self._replace_lost)

    async def close(self) -> None:
        self._closed = True
        await self.supervisor.stop([self.loop_name])
        tasks = [t for t in self._placing.values() if not t.done()]
        for task in tasks:
            task.cancel()
        links, self._links = list(self._links.values()), {}
        for link in links:
            link.alive = False
            if link.task is not None:
                link.task.cancel()
        readers = [link.task for link in links if link.task is not None]
        await asyncio.gather(*tasks, *readers, return_exceptions=True)
        for link in links:
            await link.connection.disconnect()

    def node_of(self, channel: str) -> str | None:
        """The node a channel is subscribed on now (None while it is not)."""
        link = self._placed.get(channel)
        return link.name if link is not None else None

    # -- what the bus asks --------------------------------------------------------------------

    async def subscribe(self, channel: str) -> None:
        """Listen to a channel; returns once its node confirmed it. Raises RedisError if that
        failed a few times (the channel stays wanted: the loop keeps placing it)."""
        self._wanted.add(channel)
        if channel in self._placed:
            return
        task = self._placing.get(channel)
        if task is None or task.done():
            task = self._placing[channel] = asyncio.create_task(self._first_place(channel))
        await asyncio.shield(task)

    async def unsubscribe(self, channel: str) -> None:
        self._wanted.discard(channel)
        self._lost.discard(channel)
        link = self._placed.pop(channel, None)
        if link is not None:
            await link.unsubscribe(channel)

    # -- placing ------------------------------------------------------------------------------

    async def _first_place(self, channel: str) -> None:
        delay = RETRY_FIRST_S
        for attempt in range(SUBSCRIBE_TRIES):
            try:
                await self._place(channel, refresh=attempt > 0)
                return
            except (RedisError, OSError) as exc:
                if attempt == SUBSCRIBE_TRIES - 1:
                    self.lost([channel], repr(exc))
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)

    async def _place(self, channel: str, refresh: bool) -> None:
        if refresh:
            await self._refresh_slots()
        link = await self._link_for(channel)
        await link.subscribe(channel)
        if channel not in self._wanted:  # given up meanwhile
            await link.unsubscribe(channel)
        elif link.alive:  # (a link that died right after has marked the channel lost)
            self._placed[channel] = link

    async def _refresh_slots(self) -> None:
        if isinstance(self.redis, RedisCluster):
            await self.redis.nodes_manager.initialize()

    async def _link_for(self, channel: str) -> _Link:
        if isinstance(self.redis, RedisCluster):
            node = self.redis.get_node_from_key(channel)  # SlotNotCoveredError is a RedisError
            if node is None:
                raise LinkLost(f"no node serves {channel}")
            name = node.name
            connection_class: type[AbstractConnection] = node.connection_class
            kwargs = dict(node.connection_kwargs)
        else:
            pool = self.redis.connection_pool
            name = "redis"
            connection_class = pool.connection_class
            kwargs = dict(pool.connection_kwargs)
        link = self._links.get(name)
        if link is not None and link.alive:
            return link
        # A pub/sub connection of its own: RESP2 replies, and no health check of redis-py's
        # (that would read our pub/sub stream inside a send); the link PINGs by itself.
        kwargs.update(protocol=2, health_check_interval=0)
        kwargs.pop("maint_notifications_config", None)
        kwargs.pop("oss_cluster_maint_notifications_handler", None)
        connection = connection_class(**kwargs)
        await connection.connect()  # type: ignore[no-untyped-call]
        link = _Link(name, connection, self.sharded, self)
        self._links[name] = link
        link.task = asyncio.create_task(link.read())
        return link

    def lost(self, channels: list[str], why: str) -> None:
        wanted = [c for c in channels if c in self._wanted]
        for channel in wanted:
            self._placed.pop(channel, None)
            self._lost.add(channel)
        if wanted and not self._closed:
            # told now, before anything is subscribed again: whatever is heard after the new
            # subscription must wait for the catch-up of what was missed before it
            self._on_lost(wanted)
            log.warning("pub/sub channels lost; placing them again", extra={"count": len(wanted), "why": why})
            self._lost_ready.set()

    def link_failed(self, link: _Link, channels: list[str], why: str) -> None:
        if self._links.get(link.name) is link:
            del self._links[link.name]
        closing = asyncio.get_running_loop().create_task(link.connection.disconnect())
        self._closing.add(closing)  # (held until done: a task nobody references may be collected)
        closing.add_done_callback(self._closing.discard)
        self.lost(channels, f"link to {link.name} lost: {why}")

    async def _replace_lost(self) -> None:
        """The loop: place lost channels again on whoever serves them now, then tell the hub."""
        delay = RETRY_FIRST_S
        while True:
            if not self._lost:
                self._lost_ready.clear()
                await self._lost_ready.wait()
                delay = RETRY_FIRST_S
            batch, self._lost = self._lost, set()
            try:
                await self._refresh_slots()
            except (RedisError, OSError) as exc:  # the cluster is mid-failover: try again soon
                log.info("slot map not refreshed", extra={"error": repr(exc)})
            placed: list[str] = []
            for channel in batch:
                if channel not in self._wanted or channel in self._placed:
                    continue
                try:
                    await self._place(channel, refresh=False)
                except (RedisError, OSError) as exc:
                    log.info("channel not placed yet", extra={"channel": channel, "error": repr(exc)})
                    self._lost.add(channel)
                    continue
                placed.append(channel)
            if placed:
                log.info("pub/sub channels placed again", extra={"count": len(placed)})
                self.resubscribes += len(placed)
                self._on_resubscribed(placed)
            if self._lost:
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
