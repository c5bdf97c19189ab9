"""One room's members in this process, and its fan-out.

Two lanes. Priority events (host messages, pins, moderation, sales) are encoded once per
framing and written to every member at once; they are never dropped. Chat and likes wait for
the room's tick, which writes one ``batch`` frame per member (never two to one member less
than ``tick_ms`` apart, however late a round was): viewers get at most
``comments_per_tick`` comments (a sample, plus how many were skipped), hosts and moderators get
all. Nothing here awaits a client: a write only appends to that client's transport buffer, and
a client whose buffer is past the soft limit is skipped for batches (and told how many
comments it missed when it catches up).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from gateway import messages
from gateway.config import GatewayConfig
from gateway.connection import Connection
from gateway.messages import Framing

#: Priority events kept in memory, to hand to a connection that joins while they pass.
RECENT_EVENTS = 128
#: Batch frames written between two looks at the event loop (about 5 ms of sends).
WRITE_CHUNK = 500


class Room:
    def __init__(self, room_id: str, config: GatewayConfig) -> None:
        self.id = room_id
        self.config = config
        self.viewers: dict[Framing, set[Connection]] = {f: set() for f in Framing}
        self.staff: dict[Framing, set[Connection]] = {f: set() for f in Framing}
        self.pending_comments: list[dict[str, Any]] = []
        self.likes_total: int | None = None  # set when changed since the last tick
        self.online: int = 0
        self._online_changed = False
        self.recent: deque[tuple[int, dict[str, Any]]] = deque(maxlen=RECENT_EVENTS)
        self.local_likes = 0  # likes from this process's members, not yet published
        self._by_user: dict[str, set[Connection]] = {}
        #: Latest value per gauge key (a sale's stock, say), written at the next tick.
        self.gauges: dict[str, dict[str, Any]] = {}
        #: When each member's last batch frame was written (time.monotonic(), taken just after
        #: the write): no member gets two batches less than a tick apart, whatever the rounds do.
        self._batch_at: dict[Connection, float] = {}
        #: The highest seq of a priority event delivered here (None: none yet), and the room's
        #: seq when this process first joined it: a catch-up after a lost subscription replays
        #: the history after the first (else the second), and drops what was delivered already.
        self.delivered_seq: int | None = None
        self.joined_seq: int | None = None
        #: From a lost subscription to the end of its catch-up: the events heard on pub/sub
        #: meanwhile (on the new subscription), applied after what the history gives back.
        self.held: list[tuple[int, dict[str, Any]]] | None = None
        #: The subscription is lost (not made again yet); a catch-up is running; it was made
        #: again while a catch-up ran (which then goes round once more).
        self.subscription_lost = False
        self.catching_up = False
        self.catch_up_again = False

    def __len__(self) -> int:
        return sum(len(s) for s in self.viewers.values()) + sum(len(s) for s in self.staff.values())

    def members(self) -> Iterator[Connection]:
        for group in (self.viewers, self.staff):
            for conns in group.values():
                yield from conns

    def add(self, conn: Connection) -> None:
        (self.staff if conn.is_staff else self.viewers)[conn.framing].add(conn)
        self._by_user.setdefault(conn.user_id, set()).add(conn)

    def remove(self, conn: Connection) -> None:
        (self.staff if conn.is_staff else self.viewers)[conn.framing].discard(conn)
        self._batch_at.pop(conn, None)
        mine = self._by_user.get(conn.user_id)
        if mine is not None:
            mine.discard(conn)
            if not mine:
                del self._by_user[conn.user_id]

    def of_user(self, user_id: str) -> set[Connection]:
        """The user's connections to this room on this process."""
        return self._by_user.get(user_id, set())

    # -- priority lane ------------------------------------------------------------------------

    def deliver(self, seq: int, message: dict[str, Any]) -> int:
        """Write a priority event to every member now; returns frames written."""
        message = {**message, "seq": seq}
        self.recent.append((seq, message))
        self.delivered_seq = seq if self.delivered_seq is None else max(self.delivered_seq, seq)
        written = 0
        for framing in Framing:
            members = [*self.viewers[framing], *self.staff[framing]]
            if not members:
                continue
            # a priority frame is written whatever the backlog
            written += Connection.send_priority_to(members, data=messages.frame(framing, message))
        return written

    def events_after(self, seq: int) -> list[dict[str, Any]]:
        return [m for s, m in self.recent if s > seq]

    def forget_comment(self, seq: int) -> None:
        self.pending_comments = [c for c in self.pending_comments if c["id"] != seq]

    def clear_comments(self) -> None:
        self.pending_comments = []

    # -- chat lane ----------------------------------------------------------------------------

    def add_comment(self, seq: int, message: dict[str, Any]) -> None:
        self.pending_comments.append({**message, "id": seq, "seq": seq})

    def set_likes(self, total: int) -> None:
        if self.likes_total is None or total > self.likes_total:
            self.likes_total = total

    def set_gauge(self, key: str, message: dict[str, Any]) -> None:
        self.gauges[key] = message

    def set_online(self, online: int) -> None:
        if online != self.online:
            self.online = online
            self._online_changed = True

    async def flush(self) -> int:
        """The tick: one batch frame per member with the chat and likes since the last one, and
        the gauges that changed. Returns frames written. Writing to a big room takes a while (a
        send per member), so it is done in chunks, and priority events are written between
        them."""
        comments, self.pending_comments = self.pending_comments, []
        likes, self.likes_total = self.likes_total, None
        online_changed, self._online_changed = self._online_changed, False
        gauges, self.gauges = list(self.gauges.values()), {}
        viewers_get: list[dict[str, Any]] = []
        staff_get: list[dict[str, Any]] = []
        if comments or likes is not None or online_changed:
            ts_ms = int(time.time() * 1000)
            online = self.online if online_changed else None
            full = messages.batch(ts_ms, comments, likes=likes, online=online)
            cap = self.config.comments_per_tick
            sampled = full
            if len(comments) > cap:
                keep = sorted(random.sample(range(len(comments)), cap))
                sampled = messages.batch(
                    ts_ms,
                    [comments[i] for i in keep],
                    likes=likes,
                    online=online,
                    skipped=len(comments) - cap,
                )
            viewers_get.append(sampled)
            staff_get.append(full)
        if not viewers_get and not gauges:
            return 0
        viewers_get += gauges
        staff_get += gauges
        now = time.monotonic()
        written = 0
        for framing in Framing:
            for group, batch in ((self.viewers, viewers_get), (self.staff, staff_get)):
                members = list(group[framing])
                if members:
                    for message in batch:
                        written += await self._write_round(members, framing, message, now)
        return written

    async def _write_round(
        self, members: list[Connection], framing: Framing, message: dict[str, Any], now: float
    ) -> int:
        """Write one droppable frame to members, in chunks. A ``batch`` frame is paced per
        member: one whose last batch went out less than a tick ago (written late in the last
        round, early in this one, or the rounds came close after a stall) gets this one once
        the tick has passed, at the end of the round."""
        data = messages.frame(framing, message)
        count = len(message.get("comments", ()))
        paced = message.get("type") == "batch"
        period = self.config.tick_ms / 1000
        batch_at = self._batch_at
        never = float("-inf")
        written = 0
        while members:
            early: list[Connection] = []
            for start in range(0, len(members), WRITE_CHUNK):
                if start:
                    # Let a priority event that arrived meanwhile go out before the rest.
                    await asyncio.sleep(0)
                chunk_at = time.monotonic()  # no later than any write of this chunk
                done: list[Connection] = []
                for conn in members[start : start + WRITE_CHUNK]:
                    if paced and chunk_at - batch_at.get(conn, never) < period:
                        early.append(conn)
                        continue
                    if not conn.send_batch(data, count, now):
                        continue  # closed, or behind: dropped (and counted) for it
                    written += 1
                    done.append(conn)
                if paced and done:
                    batch_at.update(dict.fromkeys(done, time.monotonic()))  # no earlier than any write
            if not early:
                break
            due = min(batch_at.get(conn, never) for conn in early) + period
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            members = early
        return written
