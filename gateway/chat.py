"""The chat lane's commands: comments and likes, from a client's frame to Redis.

A comment is checked here (length, banned words, the sender's comment rate), queued in the
process's outbox, and published with every other comment of its room that queued while the
previous call ran: one ``publish.lua`` call per room, which refuses per comment (bans, mutes,
slow mode) and holds back what is past the room's fan-out budget (``comment_fanout_per_s``:
those reach this process's members only, see ``Bus.publish``). Each sender is answered, the
ack carrying the comment's seq. Likes are only counted here, per room; the hub's tick hands
the sums to ``publish_likes``, which adds them and publishes the room's total at most once per
``likes_gauge_interval_ms`` room-wide (with a follow-up for a total held back).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from gateway import messages
from gateway.bus import Bus, now_ms
from gateway.commands import Registry, Sender
from gateway.config import GatewayConfig
from gateway.messages import Command, Field, ProtocolError
from gateway.room import Room
from gateway.words import BannedWords

if TYPE_CHECKING:
    from gateway.connection import Connection

log = logging.getLogger(__name__)

#: The chat commands and their fields.
CHAT_COMMANDS: dict[str, dict[str, Field]] = {
    "comment": {"text": Field(str)},
    "like": {"count": Field(int, required=False)},
}
MAX_LIKES_PER_MESSAGE = 1000
#: What a sender is told when publish.lua (or the call) refuses their comment, by code.
REFUSALS = {
    "banned": "you are banned from this room",
    "muted": "you are muted in this room for now",
    "slow_mode": "slow mode is on: wait before commenting again",
    "unavailable": "the room store is unavailable; retry",
    "internal": "internal server error",
}


@dataclass
class _Queued:
    conn: Connection
    rid: str | None
    user_id: str
    message: dict[str, Any]
    text: str


@dataclass(frozen=True)
class Posted:
    """A comment publish.lua admitted (so its sender was not banned nor muted): what the app's
    comment observers are told (live/ enters a lucky draw's keyword comments, say)."""

    room_id: str
    user_id: str
    role: str
    remote_ip: str
    anonymous: bool
    text: str


#: Told of each room's admitted comments, once per publish round; runs on the event loop and
#: must not block (queue the work). Its exceptions are logged, never the comments' answers.
CommentObserver = Callable[[list[Posted]], None]


class Chat:
    def __init__(self, bus: Bus, config: GatewayConfig, rooms: dict[str, Room]) -> None:
        self.bus = bus
        self.config = config
        self.words = BannedWords(config.banned_words)
        #: The hub's rooms of this process (likes are summed on them).
        self._rooms = rooms
        self._outbox: dict[str, list[_Queued]] = {}
        self._outbox_ready = asyncio.Event()
        #: Per room: (when, by time.monotonic(), the total this process added is due to be
        #: published, that total): its add was held back by likes.lua's interval.
        self._likes_follow_ups: dict[str, tuple[float, int]] = {}
        #: The app's observers of admitted comments (``Hub.observe_comments``).
        self.observers: list[CommentObserver] = []

    def register(self, commands: Registry[Sender]) -> None:
        commands.register("comment", self.comment, CHAT_COMMANDS["comment"])
        commands.register("like", self.like, CHAT_COMMANDS["like"])

    def comment(self, sender: Sender, command: Command) -> None:
        conn = sender.conn
        text = command.fields["text"].strip()
        limit = self.config.max_comment_chars
        error = None
        if not text:
            error = ProtocolError("invalid_field", "a comment needs some text", command.rid)
        elif len(text) > limit:
            error = ProtocolError(
                "comment_too_long", f"a comment has at most {limit} characters", command.rid
            )
        elif self.words.found_in(text):
            error = ProtocolError("banned_words", "the comment contains words not allowed here", command.rid)
        elif not conn.comments.take():
            error = ProtocolError("rate_limited", "too many comments; wait a moment", command.rid)
        if error is not None:
            conn.send_error(error)
            return
        message = messages.comment(sender.user_id, sender.role, text, now_ms())
        queued = _Queued(conn, command.rid, sender.user_id, message, text)
        self._outbox.setdefault(sender.room_id, []).append(queued)
        self._outbox_ready.set()

    def like(self, sender: Sender, command: Command) -> None:
        count = command.fields.get("count", 1)
        if not 1 <= count <= MAX_LIKES_PER_MESSAGE:
            limit = MAX_LIKES_PER_MESSAGE
            sender.conn.send_error(
                ProtocolError("invalid_field", f"'count' must be 1 to {limit}", command.rid)
            )
            return
        room = self._rooms.get(sender.room_id)
        if room is not None:
            room.local_likes += sender.conn.likes.take_up_to(count)

    # -- publishing ---------------------------------------------------------------------------

    async def publish_loop(self) -> None:
        """Publish queued comments: whatever queued while the last call ran goes in the next."""
        while True:
            if not self._outbox:  # (a restarted loop may find comments queued already)
                self._outbox_ready.clear()
                await self._outbox_ready.wait()
            self._outbox_ready.clear()
            outbox, self._outbox = self._outbox, {}
            rooms = list(outbox)
            done = await asyncio.gather(
                *(self._publish_comments(r, outbox[r]) for r in rooms), return_exceptions=True
            )
            for room_id, result in zip(rooms, done, strict=True):
                if isinstance(result, Exception):  # a bug answering them: this room's, not the loop's
                    log.error("comments not answered", extra={"room": room_id}, exc_info=result)

    def likes_follow_ups_due(self) -> bool:
        """Whether a room's total this process added waits for its follow-up publish."""
        now = time.monotonic()
        return any(due <= now for due, _ in self._likes_follow_ups.values())

    async def publish_likes(self, likes: dict[str, int]) -> None:
        """Add each room's likes of the last tick (one likes.lua call per room), and make the
        follow-ups that are due. likes.lua publishes a room's total at most once per
        ``likes_gauge_interval_ms`` room-wide; when this process's add was not published, it
        keeps a follow-up (the total it got, and when a publish is due) and calls again then,
        from the first tick past it: the last likes of a burst reach every node at most
        ``likes_gauge_interval_ms`` + ``tick_ms`` (+ a Redis round trip) after they were added,
        unless another add or publish covered them sooner. A new add of the room replaces
        the follow-up (its total is larger: publishing it covers the earlier one too)."""
        now = time.monotonic()
        due = [r for r, (at, _) in self._likes_follow_ups.items() if at <= now and r not in likes]
        for room_id in [*likes, *due]:
            count = likes.get(room_id, 0)
            pending = self._likes_follow_ups.pop(room_id, None)
            try:
                total, wait_ms = await self.bus.add_likes(
                    room_id, count, follow_up_of=pending[1] if pending and not count else 0
                )
            except (RedisError, OSError) as exc:
                log.warning("likes lost on Redis", extra={"room": room_id, "error": repr(exc)})
                if pending is not None:  # the earlier total is still added: publish it later
                    self._follow_up(room_id, self.config.likes_gauge_interval_ms, pending[1])
                continue
            except Exception:  # a bug: this room's likes are lost, not the other rooms'
                log.exception("likes not published", extra={"room": room_id})
                continue
            if wait_ms > 0:
                self._follow_up(room_id, wait_ms, total)

    def _follow_up(self, room_id: str, wait_ms: int, total: int) -> None:
        # A concurrent round (a slow Redis: rounds overlap) may have left one: keep the larger
        # total, whose publish covers both.
        current = self._likes_follow_ups.get(room_id)
        if current is None or current[1] < total:
            self._likes_follow_ups[room_id] = (time.monotonic() + wait_ms / 1000, total)

    async def _publish_comments(self, room_id: str, queued: list[_Queued]) -> None:
        """Publish a room's queued comments in one call and answer each sender. One comment's
        failure is its own refusal, never its batch-mates': on an unexpected error (a bug, a
        message that cannot be encoded) the comments are tried again one at a time, and only
        the one that fails alone is refused (``internal``). Bus.publish encodes everything
        before it calls Redis, so such an error means nothing of the batch was published."""
        try:
            results = await self._publish_batch(room_id, queued)
        except Exception:
            log.exception("comments not published", extra={"room": room_id, "comments": len(queued)})
            results = ["internal"]
            if len(queued) > 1:
                results = [await self._publish_alone(room_id, q) for q in queued]
        posted: list[Posted] = []
        for q, result in zip(queued, results, strict=True):
            if isinstance(result, int):
                if q.rid is not None:
                    q.conn.send(messages.ack("comment", q.rid, {"seq": result}))
                posted.append(self._posted(room_id, q))
            else:
                q.conn.send_error(ProtocolError(result, REFUSALS.get(result, result), q.rid))
        if posted:
            self._tell_observers(posted)

    @staticmethod
    def _posted(room_id: str, q: _Queued) -> Posted:
        admission = q.conn.admission
        anonymous = admission is None or admission.anonymous
        return Posted(room_id, q.user_id, q.conn.role, q.conn.remote_ip, anonymous, q.text)

    def _tell_observers(self, posted: list[Posted]) -> None:
        for observer in self.observers:
            try:
                observer(posted)
            except Exception:  # the app's bug: logged; the comments were published and answered
                log.exception("a comment observer failed", extra={"room": posted[0].room_id})

    async def _publish_batch(self, room_id: str, queued: list[_Queued]) -> list[int | str]:
        try:
            return await self.bus.publish(room_id, [(q.user_id, q.message) for q in queued])
        except (RedisError, OSError) as exc:
            log.warning("comments not published", extra={"room": room_id, "error": repr(exc)})
            return ["unavailable"] * len(queued)

    async def _publish_alone(self, room_id: str, q: _Queued) -> int | str:
        try:
            (result,) = await self._publish_batch(room_id, [q])
        except Exception:
            log.exception("comment not published", extra={"room": room_id, "user": q.user_id})
            return "internal"
        return result
