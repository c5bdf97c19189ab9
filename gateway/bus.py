"""The gateway's Redis side: room events in order across processes, history, room state.

Every room event goes through ``publish.lua``, which numbers it (per-room ``seq``), appends it
to the room's history stream and publishes it, atomically; every process with viewers in the
room receives it from pub/sub in that order. Sharded pub/sub (SPUBLISH/SSUBSCRIBE, Redis >= 7)
is used where the server has it, so a Redis Cluster sends a room's events only to the shard
that owns the room.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.config import GatewayConfig
from gateway.keys import RoomKeys
from gateway.ports import Supervisor

log = logging.getLogger(__name__)

#: A presence entry older than this belongs to a dead process and is not counted.
PRESENCE_STALE_MS = 5_000

#: Room seqs are Redis integers (INCR), so never above this.
MAX_SEQ = 2**63 - 1

#: The seq of a message for one user (``publish_direct``): {"to": user id, "message": ...}.
DIRECT = -1
#: The seq of a gauge (``publish_gauge``, and the likes counter's total from likes.lua):
#: a latest value, not numbered, written at the next tick.
GAUGE = 0

EventHandler = Callable[[str, list[tuple[int, dict[str, Any]]]], None]


def _script(name: str) -> str:
    return resources.files("gateway").joinpath("lua", name).read_text()


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Snapshot:
    """A room as a new connection first sees it."""

    seq: int
    state: dict[str, str]
    comments: list[dict[str, Any]]
    #: Events after the client's ``last_seq`` (resume), oldest first; None when the history
    #: no longer reaches back that far and the client must start from this snapshot.
    missed: list[tuple[int, dict[str, Any]]] | None = field(default=None)


class Bus:
    def __init__(
        self,
        redis: aioredis.Redis,
        config: GatewayConfig,
        on_events: EventHandler,
        supervisor: Supervisor,
    ):
        self.redis = redis
        self.config = config
        self.supervisor = supervisor
        self._on_events = on_events
        self._publish = redis.register_script(_script("publish.lua"))
        self._likes = redis.register_script(_script("likes.lua"))
        self._pubsub = redis.pubsub()
        self._sharded = False
        self._channels: dict[str, str] = {}  # channel -> room id
        self._subscribed: dict[str, asyncio.Event] = {}
        self._has_channels = asyncio.Event()

    def keys(self, room_id: str) -> RoomKeys:
        return RoomKeys(self.config.key_prefix, room_id)

    async def start(self) -> None:
        info = await self.redis.info("server")
        major = int(str(info.get("redis_version", "0")).split(".")[0])
        self._sharded = major >= 7
        self.supervisor.start("gateway-bus-reader", self._read)

    async def close(self) -> None:
        await self.supervisor.stop(["gateway-bus-reader"])
        await self._pubsub.aclose()  # type: ignore[no-untyped-call]

    # -- subscriptions ------------------------------------------------------------------------

    async def subscribe(self, room_id: str) -> None:
        """Subscribe to a room's events; returns once Redis has acknowledged it."""
        channel = self.keys(room_id).channel
        if channel not in self._subscribed:
            self._subscribed[channel] = asyncio.Event()
            self._channels[channel] = room_id
            if self._sharded:
                await self._pubsub.ssubscribe(channel)
            else:
                await self._pubsub.subscribe(channel)
            self._has_channels.set()
        await self._subscribed[channel].wait()

    async def unsubscribe(self, room_id: str) -> None:
        channel = self.keys(room_id).channel
        if self._subscribed.pop(channel, None) is None:
            return
        self._channels.pop(channel, None)
        if self._sharded:
            await self._pubsub.sunsubscribe(channel)
        else:
            await self._pubsub.unsubscribe(channel)

    async def _read(self) -> None:
        while True:
            if not self._channels:
                self._has_channels.clear()
                await self._has_channels.wait()
            try:
                message = await self._pubsub.get_message(timeout=1.0)
            except (RedisError, OSError) as exc:
                log.warning("pub/sub connection lost; reconnecting", extra={"error": repr(exc)})
                await asyncio.sleep(0.5)
                continue
            if message is not None:
                self._dispatch(message)

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        channel = message["channel"]
        channel = channel.decode() if isinstance(channel, bytes) else channel
        if kind in ("subscribe", "ssubscribe"):
            subscribed = self._subscribed.get(channel)
            if subscribed is not None:
                subscribed.set()
            return
        room_id = self._channels.get(channel)
        if kind not in ("message", "smessage") or room_id is None:
            return
        try:
            events = parse_events(message["data"])
        except ValueError:
            log.error("unreadable event on the bus", extra={"channel": channel})
            return
        self._on_events(room_id, events)

    # -- writes -------------------------------------------------------------------------------

    async def publish(self, room_id: str, events: list[tuple[str, dict[str, Any]]]) -> list[int | str]:
        """Append and publish events ``(user id or "", message)``; returns each one's seq, or
        the reason it was refused ("banned", "muted", "slow_mode")."""
        k = self.keys(room_id)
        args: list[Any] = [
            k.channel,
            "SPUBLISH" if self._sharded else "PUBLISH",
            self.config.history_size,
            self.config.chat_history_size,
            self.config.history_ttl_s * 1000,
            now_ms(),
        ]
        for user_id, message in events:
            # encoded here, before the call: a message that cannot be sent fails alone, and
            # nothing has reached Redis when it does
            args += [user_id.encode(), _dumps(message).encode()]
        keys = [k.seq, k.history, k.state, k.mutes, k.banned, k.slow, k.chat]
        results = await self._publish(keys=keys, args=args)
        return [r if isinstance(r, int) else r.decode() for r in results]

    async def publish_one(self, room_id: str, message: dict[str, Any]) -> int:
        (seq,) = await self.publish(room_id, [("", message)])
        assert isinstance(seq, int)
        return seq

    async def publish_direct(self, room_id: str, user_id: str, message: dict[str, Any]) -> None:
        """Publish, outside the room's sequence, a message for one user's connections."""
        await self._publish_raw(room_id, f"{DIRECT}|" + _dumps({"to": user_id, "message": message}))

    async def publish_gauge(self, room_id: str, key: str, message: dict[str, Any]) -> None:
        """Publish the latest value of a gauge: {"gauge": key, "message": ...}."""
        await self._publish_raw(room_id, f"{GAUGE}|" + _dumps({"gauge": key, "message": message}))

    async def _publish_raw(self, room_id: str, payload: str) -> None:
        channel = self.keys(room_id).channel
        if self._sharded:
            await self.redis.spublish(channel, payload)
        else:
            await self.redis.publish(channel, payload)

    async def add_likes(self, room_id: str, count: int) -> int:
        k = self.keys(room_id)
        channel_cmd = "SPUBLISH" if self._sharded else "PUBLISH"
        total: int = await self._likes(keys=[k.state], args=[k.channel, channel_cmd, count])
        return total

    async def set_state(self, room_id: str, **fields: str | int) -> None:
        mapping: dict[Any, Any] = dict(fields)
        await self.redis.hset(self.keys(room_id).state, mapping=mapping)

    async def clear_state(self, room_id: str, name: str) -> None:
        await self.redis.hdel(self.keys(room_id).state, name)

    async def mute(self, room_id: str, user_id: str, until_ms: int) -> None:
        """Mute until ``until_ms``. The room's mutes are kept ``ban_retention_s`` after its
        last mute (at least the longest mute: no mute is forgotten before it ends)."""
        k = self.keys(room_id)
        keep_ms = max(self.config.ban_retention_s * 1000, until_ms - now_ms())
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(k.mutes, user_id, until_ms)
            pipe.pexpire(k.mutes, keep_ms)
            await pipe.execute()

    async def ban(self, room_id: str, user_id: str) -> None:
        """Ban from the room. The room's bans are kept ``ban_retention_s`` after its last ban,
        then forgotten (the set would otherwise stay in Redis for ever)."""
        k = self.keys(room_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.sadd(k.banned, user_id)
            pipe.pexpire(k.banned, self.config.ban_retention_s * 1000)
            await pipe.execute()

    async def unban(self, room_id: str, user_id: str) -> bool:
        """Lift a ban; False if the user was not banned."""
        return bool(await self.redis.srem(self.keys(room_id).banned, user_id))

    async def unmute(self, room_id: str, user_id: str) -> bool:
        """Lift a mute; False if the user was not muted (or the mute had run out)."""
        k = self.keys(room_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hget(k.mutes, user_id)
            pipe.hdel(k.mutes, user_id)
            until, _ = await pipe.execute()
        return until is not None and int(until) > now_ms()

    async def is_banned(self, room_id: str, user_id: str) -> bool:
        return bool(await self.redis.sismember(self.keys(room_id).banned, user_id))

    async def forget_comment(self, room_id: str, seq: int) -> None:
        """Drop a comment from the recent-chat stream (new viewers will not see it)."""
        await self.redis.xdel(self.keys(room_id).chat, f"{seq}-0")

    # -- reads --------------------------------------------------------------------------------

    async def snapshot(self, room_id: str, last_seq: int | None) -> Snapshot:
        k = self.keys(room_id)
        if last_seq is not None and last_seq >= MAX_SEQ:
            # Past any seq the room can have, like any last_seq past the room's: a fresh
            # snapshot (and not a stream id Redis can read: XRANGE would fail every time).
            last_seq = None
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(k.seq)
            pipe.hgetall(k.state)
            pipe.xrevrange(k.chat, "+", "-", count=self.config.welcome_comments)
            if last_seq is not None:
                pipe.xrange(k.history, f"{last_seq + 1}-0", "+")
            replies = await pipe.execute()
        seq = int(replies[0] or 0)
        state = {a.decode(): b.decode() for a, b in replies[1].items()}
        cleared = int(state.get("cleared_seq", "0"))
        comments = []
        for entry_id, fields in reversed(replies[2]):
            entry_seq = _entry_seq(entry_id)
            if entry_seq > cleared:
                comments.append({**json.loads(fields[b"e"]), "id": entry_seq, "seq": entry_seq})
        snapshot = Snapshot(seq, state, comments)
        floor = int(state.get("history_floor", "0"))
        if last_seq is not None and floor <= last_seq <= seq:
            snapshot.missed = [(_entry_seq(i), json.loads(f[b"e"])) for i, f in replies[3]]
        return snapshot

    async def report_presence(self, node_id: str, counts: dict[str, int]) -> dict[str, int]:
        """Record this process's viewers per room; returns each room's global count."""
        stamp = now_ms()
        async with self.redis.pipeline(transaction=False) as pipe:
            for room_id, count in counts.items():
                k = self.keys(room_id)
                if count:
                    pipe.hset(k.presence, node_id, f"{count}|{stamp}")
                else:
                    pipe.hdel(k.presence, node_id)
                pipe.pexpire(k.presence, PRESENCE_STALE_MS * 2)
                pipe.hgetall(k.presence)
            replies = await pipe.execute()
        totals = {}
        for room_id, entries in zip(counts, replies[2::3], strict=True):
            total = 0
            for value in entries.values():
                count, _, updated = value.decode().partition("|")
                try:
                    if stamp - int(updated) < PRESENCE_STALE_MS:
                        total += int(count)
                except ValueError:  # not ours (a stray write): one entry, not the whole report
                    continue
            totals[room_id] = total
        return totals


def parse_events(data: bytes | str) -> list[tuple[int, dict[str, Any]]]:
    text = data.decode() if isinstance(data, bytes) else data
    events = []
    for line in text.split("\n"):
        seq, _, payload = line.partition("|")
        events.append((int(seq), json.loads(payload)))
    return events


def _entry_seq(entry_id: bytes) -> int:
    return int(entry_id.split(b"-", 1)[0])


def _dumps(message: dict[str, Any]) -> str:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"))
