"""The gateway's Redis side: room events in order across processes, history, room state.

Every room event goes through ``publish.lua``, which numbers it (per-room ``seq``), appends it
to the room's history stream and publishes it, atomically; every process with viewers in the
room receives it from pub/sub in that order. Sharded pub/sub (SPUBLISH/SSUBSCRIBE, Redis >= 7)
is used where the server has it, so a Redis Cluster sends a room's events only to the shard
that owns the room.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from redis.asyncio.cluster import RedisCluster

from gateway.commands import STAFF
from gateway.config import GatewayConfig
from gateway.keys import RoomKeys
from gateway.ports import Supervisor
from gateway.shards import RedisClient, Subscriptions
from gateway.shared_reads import SharedReads

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

Event = tuple[int, dict[str, Any]]
EventHandler = Callable[[str, list[tuple[int, dict[str, Any]]]], None]


def _script(name: str) -> str:
    return resources.files("gateway").joinpath("lua", name).read_text()


def now_ms() -> int:
    return int(time.time() * 1000)


async def server_major(redis: RedisClient) -> int:
    """The Redis major version (of any one node, on a cluster: they run one version)."""
    if isinstance(redis, RedisCluster):
        info = await redis.info("server", target_nodes=RedisCluster.RANDOM)
    else:
        info = await redis.info("server")
    if "redis_version" not in info and info:  # a cluster's answer may be per node
        info = next(iter(info.values()))
    return int(str(info.get("redis_version", "0")).split(".")[0])


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
        redis: RedisClient,
        config: GatewayConfig,
        on_events: EventHandler,
        supervisor: Supervisor,
        on_lost: Callable[[list[str]], None] | None = None,
        on_resubscribed: Callable[[list[str]], None] | None = None,
    ):
        self.redis = redis
        self.config = config
        self.supervisor = supervisor
        self._on_events = on_events
        self._on_lost = on_lost
        self._on_resubscribed = on_resubscribed
        self._publish = redis.register_script(_script("publish.lua"))
        self._likes = redis.register_script(_script("likes.lua"))
        self._channels: dict[str, str] = {}  # channel -> room id
        #: Comments past their room's fan-out budget, shown on this node only (since start).
        self.kept_local = 0
        self.subscriptions = Subscriptions(
            redis, False, self._on_message, self._lost, self._resubscribed, supervisor, "gateway-bus-reader"
        )
        # What every joining viewer reads, shared by the viewers of a room who join at once.
        self._snapshots = SharedReads(self._read_snapshots)
        self._bans = SharedReads(self._read_bans)

    @property
    def _sharded(self) -> bool:
        """SSUBSCRIBE/SPUBLISH (Redis >= 7), or plain pub/sub (decided at start)."""
        return self.subscriptions.sharded

    @_sharded.setter
    def _sharded(self, sharded: bool) -> None:
        self.subscriptions.sharded = sharded

    def keys(self, room_id: str) -> RoomKeys:
        return RoomKeys(self.config.key_prefix, room_id)

    async def start(self) -> None:
        self._sharded = await server_major(self.redis) >= 7
        self.subscriptions.start()

    async def close(self) -> None:
        await self.subscriptions.close()

    # -- subscriptions ------------------------------------------------------------------------

    async def subscribe(self, room_id: str) -> None:
        """Subscribe to a room's events (on the node that owns the room's slot, on a cluster);
        returns once Redis has acknowledged it. If the subscription is lost later (a failover,
        a resharding, a dropped connection), it is made again on whichever node serves the room
        then, and ``on_resubscribed`` is told, so the room can be caught up from its history."""
        channel = self.keys(room_id).channel
        self._channels[channel] = room_id
        await self.subscriptions.subscribe(channel)

    async def unsubscribe(self, room_id: str) -> None:
        channel = self.keys(room_id).channel
        if self._channels.pop(channel, None) is None:
            return
        await self.subscriptions.unsubscribe(channel)

    def _lost(self, channels: list[str]) -> None:
        rooms = [self._channels[c] for c in channels if c in self._channels]
        if rooms and self._on_lost is not None:
            self._on_lost(rooms)

    def _resubscribed(self, channels: list[str]) -> None:
        rooms = [self._channels[c] for c in channels if c in self._channels]
        if rooms and self._on_resubscribed is not None:
            self._on_resubscribed(rooms)

    def _on_message(self, channel: str, data: bytes) -> None:
        room_id = self._channels.get(channel)
        if room_id is None:
            return
        try:
            events = parse_events(data)
        except ValueError:
            log.error("unreadable event on the bus", extra={"channel": channel})
            return
        self._on_events(room_id, events)

    # -- writes -------------------------------------------------------------------------------

    async def publish(self, room_id: str, events: list[tuple[str, dict[str, Any]]]) -> list[int | str]:
        """Append and publish events ``(user id or "", message)``; returns each one's seq, or
        the reason it was refused ("banned", "muted", "slow_mode"). A viewer's comment past the
        room's fan-out budget is admitted but not published: it is handed to this process's
        own handler here (its sender's node shows it), and its seq returned like any other."""
        k = self.keys(room_id)
        args: list[Any] = [
            k.channel,
            "SPUBLISH" if self._sharded else "PUBLISH",
            self.config.history_size,
            self.config.chat_history_size,
            self.config.history_ttl_s * 1000,
            now_ms(),
            self.config.comment_fanout_per_s,
        ]
        for user_id, message in events:
            budgeted = bool(user_id) and message.get("role") not in STAFF
            # encoded here, before the call: a message that cannot be sent fails alone, and
            # nothing has reached Redis when it does
            args += [user_id.encode(), b"1" if budgeted else b"", _dumps(message).encode()]
        keys = [k.seq, k.history, k.state, k.mutes, k.banned, k.slow, k.chat, k.fanout]
        replies = await self._publish(keys=keys, args=args)
        results: list[int | str] = []
        kept_here: list[tuple[int, dict[str, Any]]] = []
        for (_, message), reply in zip(events, replies, strict=True):
            if not isinstance(reply, int):
                results.append(reply.decode())
            elif reply < 0:  # past the budget: for this node's viewers only
                kept_here.append((-reply, message))
                results.append(-reply)
            else:
                results.append(reply)
        if kept_here:
            self.kept_local += len(kept_here)
            self._on_events(room_id, kept_here)
        return results

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

    async def add_likes(self, room_id: str, count: int, follow_up_of: int = 0) -> tuple[int, int]:
        """Add ``count`` likes (>= 0) to the room's total; the total is published at most once
        per ``likes_gauge_interval_ms`` room-wide (likes.lua). Returns the total and 0 if this
        caller's likes are published, else the ms until a publish is due: then call again with
        ``count=0, follow_up_of=total`` (it publishes unless another publish covered them)."""
        k = self.keys(room_id)
        channel_cmd = "SPUBLISH" if self._sharded else "PUBLISH"
        interval_ms = self.config.likes_gauge_interval_ms
        args: list[str | int] = [k.channel, channel_cmd, count, interval_ms, follow_up_of]
        total, wait_ms = await self._likes(keys=[k.state], args=args)
        return int(total), int(wait_ms)

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
        return await self._bans(room_id, user_id)

    async def _read_bans(self, room_id: str, user_ids: list[str]) -> list[bool]:
        """Whether each of these users is banned from the room: one command for all of them."""
        found = await self.redis.smismember(self.keys(room_id).banned, user_ids)
        return [bool(x) for x in found]

    async def forget_comment(self, room_id: str, seq: int) -> None:
        """Drop a comment from the recent-chat stream (new viewers will not see it)."""
        await self.redis.xdel(self.keys(room_id).chat, f"{seq}-0")

    # -- reads --------------------------------------------------------------------------------

    async def snapshot(self, room_id: str, last_seq: int | None) -> Snapshot:
        """The room as a viewer joining it now first sees it, and, resuming after
        ``last_seq``, what it missed. The viewers of a room who join at once share one read
        (gateway/shared_reads.py); its state and comments are theirs to read, not to change."""
        if last_seq is not None and last_seq >= MAX_SEQ:
            # Past any seq the room can have, like any last_seq past the room's: a fresh
            # snapshot (and not a stream id Redis can read: XRANGE would fail every time).
            last_seq = None
        return await self._snapshots(room_id, last_seq)

    async def _read_snapshots(self, room_id: str, last_seqs: list[int | None]) -> list[Snapshot]:
        """One read of the room for the viewers joining it together: its seq, state and recent
        chat, and its history after the earliest ``last_seq`` among those resuming."""
        k = self.keys(room_id)
        resuming = [s for s in last_seqs if s is not None]
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(k.seq)
            pipe.hgetall(k.state)
            pipe.xrevrange(k.chat, "+", "-", count=self.config.welcome_comments)
            if resuming:
                pipe.xrange(k.history, f"{min(resuming) + 1}-0", "+")
            replies = await pipe.execute()
        seq = int(replies[0] or 0)
        state = {a.decode(): b.decode() for a, b in replies[1].items()}
        cleared = int(state.get("cleared_seq", "0"))
        comments = []
        for entry_id, fields in reversed(replies[2]):
            entry_seq = _entry_seq(entry_id)
            if entry_seq > cleared:
                comments.append({**json.loads(fields[b"e"]), "id": entry_seq, "seq": entry_seq})
        history = [(_entry_seq(i), json.loads(f[b"e"])) for i, f in replies[3]] if resuming else []
        floor = int(state.get("history_floor", "0"))
        snapshots = []
        for last_seq in last_seqs:
            snapshot = Snapshot(seq, state, comments)
            if last_seq is not None and floor <= last_seq <= seq:
                snapshot.missed = [(s, event) for s, event in history if s > last_seq]
            snapshots.append(snapshot)
        return snapshots

    async def history_after(self, room_id: str, after: int) -> tuple[int, list[Event] | None]:
        """The room's seq now, and its non-chat events after seq ``after``, oldest first (None
        when the history no longer reaches back that far): what a process that may have
        missed some (its subscription was lost and made again) replays."""
        k = self.keys(room_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(k.seq)
            pipe.hget(k.state, "history_floor")
            pipe.xrange(k.history, f"{min(after, MAX_SEQ - 1) + 1}-0", "+")
            seq_raw, floor_raw, entries = await pipe.execute()
        seq, floor = int(seq_raw or 0), int(floor_raw or 0)
        if after < floor:
            return seq, None
        return seq, [(_entry_seq(i), json.loads(f[b"e"])) for i, f in entries]

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
