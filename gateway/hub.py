"""The gateway of one process: admits connections, runs the rooms, talks to Redis.

Journey of a comment: client frame -> ``handle`` (checks, rate limit) -> outbox -> one
``publish.lua`` call per room for everything that queued meanwhile -> Redis pub/sub -> every
process's ``on_events`` -> the room's pending chat -> the next tick's batch frame.
A host message takes the same path to Redis, and is written to members as soon as it arrives.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from websockets.http11 import Request

from gateway import close_codes
from gateway.bus import DIRECT, GAUGE, MAX_SEQ, Bus, now_ms
from gateway.config import GatewayConfig
from gateway.connection import Connection
from gateway.messages import APP_COMMANDS, MODERATION, Command, ProtocolError
from gateway.room import WRITE_CHUNK, Room
from gateway.words import BannedWords
from shared.aio import Supervisor, stop_tasks

log = logging.getLogger(__name__)

PATH_PREFIX = "/ws/rooms/"
STAFF_ROLES = frozenset({"host", "moderator"})
#: An empty room stays subscribed this long, so a reconnect storm does not churn Redis.
EMPTY_ROOM_LINGER_S = 5.0
MAX_MUTE_S = 30 * 86_400
MAX_SLOW_MODE_S = 3600


class Refused(Exception):
    """A handshake the server turns down, with an HTTP status and an error code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Admission:
    """Who may join a room, as the application decided."""

    user_id: str
    role: str
    #: The room as the welcome shows it (id, title, host_id, and whatever the app adds).
    room: dict[str, Any]
    #: Seconds since the epoch when the credential ends, or None.
    expires_at: float | None = None
    #: Admitted without a token (a room open to anonymous viewers).
    anonymous: bool = False


@dataclass(frozen=True)
class Caller:
    """Who sent an application command, and from where."""

    room_id: str
    user_id: str
    role: str
    remote_ip: str
    anonymous: bool


class Directory(Protocol):
    """What the gateway asks the application (live/)."""

    async def admit(self, room_id: str, token: str | None) -> Admission:
        """Who this is, or raise Refused."""

    async def product(self, room_id: str, product_id: str) -> dict[str, Any] | None:
        """A product of the room, as pinned cards show it, or None."""

    async def may_moderate(self, room_id: str, user_id: str) -> bool:
        """Whether hosts and moderators may mute or ban this user in this room (False for the
        room's host: nobody locks a room's host out of their own room)."""

    async def command(self, caller: Caller, command: Command) -> dict[str, Any]:
        """Carry out an application command (``APP_COMMANDS``): the fields of its ack, or
        raise ProtocolError."""


class Metrics(Protocol):
    def frames_in(self, n: int) -> None: ...
    def frames_out(self, n: int) -> None: ...
    def error(self, kind: str) -> None: ...
    def gauges(self, connections: int, rooms: int) -> None: ...


@dataclass
class _Queued:
    conn: Connection
    rid: str | None
    user_id: str
    message: dict[str, Any]


@dataclass
class Hub:
    config: GatewayConfig
    redis: aioredis.Redis
    directory: Directory
    metrics: Metrics
    node_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    #: Keeps the hub's loops (and its bus reader) running; /readyz asks it what is down.
    supervisor: Supervisor = field(default_factory=Supervisor)

    def __post_init__(self) -> None:
        self.bus = Bus(self.redis, self.config, self.on_events, self.supervisor)
        self.words = BannedWords(self.config.banned_words)
        self.rooms: dict[str, Room] = {}
        self.connections: set[Connection] = set()
        self.open_count = 0
        self.per_ip: Counter[str] = Counter()
        self._outbox: dict[str, list[_Queued]] = {}
        self._outbox_ready = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops = ["gateway-tick", "gateway-publish", "gateway-presence", "gateway-ping"]
        self._linger: dict[str, asyncio.TimerHandle] = {}

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        await self.bus.start()
        loops = (self._tick_loop, self._publish_loop, self._presence_loop, self._ping_loop)
        for name, loop in zip(self._loops, loops, strict=True):
            self.supervisor.start(name, loop)

    async def close_all(self, code: int, reason: str, timeout_s: float = 2.0) -> None:
        """Close every connection, waiting up to ``timeout_s`` for clients to answer."""
        for conn in list(self.connections):
            conn.close(code, reason)
        deadline = time.monotonic() + timeout_s
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()

    async def stop(self) -> None:
        await self.supervisor.stop(self._loops)
        await stop_tasks(self._tasks)
        if self.rooms:
            await self.bus.report_presence(self.node_id, dict.fromkeys(self.rooms, 0))
        await self.bus.close()

    def connection(self, remote_ip: str) -> Connection:
        conn = Connection(self, remote_ip)
        self.connections.add(conn)
        return conn

    def forget(self, conn: Connection) -> None:
        """The connection is gone (called once, from connection_lost)."""
        self._release(conn)
        self.connections.discard(conn)

    def _reserve(self, conn: Connection) -> None:
        """Count a connection against the limits from the start of its handshake, so a burst
        of concurrent handshakes cannot overshoot them."""
        conn.counted = True
        self.open_count += 1
        self.per_ip[conn.remote_ip] += 1

    def _release(self, conn: Connection) -> None:
        if not conn.counted:
            return
        conn.counted = False
        self.open_count -= 1
        self.per_ip[conn.remote_ip] -= 1
        if self.per_ip[conn.remote_ip] <= 0:
            del self.per_ip[conn.remote_ip]

    # -- handshake ----------------------------------------------------------------------------

    def start_handshake(self, conn: Connection, request: Request) -> None:
        self._spawn(self._handshake(conn, request))

    async def _handshake(self, conn: Connection, request: Request) -> None:
        try:
            if self.open_count >= self.config.max_connections:
                raise Refused(503, "server_full", "this server is full; try another or later")
            if self.per_ip[conn.remote_ip] >= self.config.max_connections_per_ip:
                raise Refused(429, "too_many_connections", "too many connections from this address")
            self._reserve(conn)
            room_id, token, last_seq = _parse_target(request)
            admission = await self.directory.admit(room_id, token)
            if await self.bus.is_banned(room_id, admission.user_id):
                raise Refused(403, "banned", "you are banned from this room")
        except Refused as exc:
            self._release(conn)
            self.count_error(exc.code)
            conn.refuse(exc.status, _error_body(exc.code, exc.message))
            return
        except (RedisError, OSError) as exc:
            self._release(conn)
            log.warning("handshake failed on a backend", extra={"error": repr(exc)})
            self.count_error("unavailable")
            conn.refuse(503, _error_body("unavailable", "a backend is unavailable; retry"))
            return
        except Exception:  # a bug: this handshake gets an answer, and nobody else notices
            self._release(conn)
            log.exception("handshake failed")
            self.count_error("internal")
            conn.refuse(500, _error_body("internal", "internal server error"))
            return
        # who it is, before accept(): frames sent right behind the request are handled in it
        conn.admission = admission
        conn.room_id, conn.user_id = room_id, admission.user_id
        conn.is_staff = admission.role in STAFF_ROLES
        if conn.transport is None or conn.transport.is_closing() or not conn.accept(request):
            self._release(conn)
            self.count_error("bad_handshake")
            return
        if admission.expires_at is not None:
            conn.set_expiry(admission.expires_at - time.time())
        await self._join(conn, admission, last_seq)

    async def _join(self, conn: Connection, admission: Admission, last_seq: int | None) -> None:
        room = self.rooms.get(conn.room_id)
        if room is None:
            room = self.rooms[conn.room_id] = Room(conn.room_id, self.config)
        linger = self._linger.pop(room.id, None)
        if linger is not None:
            linger.cancel()
        try:
            await self.bus.subscribe(room.id)
            snap = await self.bus.snapshot(room.id, last_seq)
        except (RedisError, OSError) as exc:
            log.warning("join failed on Redis", extra={"room": room.id, "error": repr(exc)})
            conn.close(close_codes.GOING_AWAY, '{"code":"unavailable","retry_ms":1000}')
            return
        if not conn.open:
            return
        state = snap.state
        conn.send(
            {
                "type": "welcome",
                "v": 1,
                "server_time_ms": now_ms(),
                "seq": snap.seq,
                "resumed": snap.missed is not None,
                "room": admission.room,
                "user": {"id": admission.user_id, "role": admission.role},
                "online": max(room.online, len(room) + 1),
                "likes": int(state.get("likes", "0")),
                "pinned": json.loads(state["pinned"]) if "pinned" in state else None,
                "slow_mode_s": int(state.get("slow_mode_s", "0")),
                "comments": snap.comments,
            }
        )
        seen = snap.seq
        for seq, message in snap.missed or ():
            conn.send({**message, "seq": seq})
            seen = max(seen, seq)
        for message in room.events_after(seen):
            conn.send(message)
        room.add(conn)
        conn.joined()
        self._gauges()

    def leave(self, conn: Connection) -> None:
        """The connection is no longer open (called once, by the connection)."""
        self._release(conn)
        room = self.rooms.get(conn.room_id)
        if room is not None:
            room.remove(conn)
            if not len(room) and room.id not in self._linger:
                loop = asyncio.get_running_loop()
                self._linger[room.id] = loop.call_later(EMPTY_ROOM_LINGER_S, self._drop_room, room.id)
        self._gauges()

    def _drop_room(self, room_id: str) -> None:
        self._linger.pop(room_id, None)
        room = self.rooms.get(room_id)
        if room is None or len(room):
            return
        del self.rooms[room_id]
        self._spawn(self._release_room(room_id))

    async def _release_room(self, room_id: str) -> None:
        await self.bus.unsubscribe(room_id)
        await self.bus.report_presence(self.node_id, {room_id: 0})

    # -- client commands ----------------------------------------------------------------------

    def handle(self, conn: Connection, command: Command) -> None:
        kind = command.type
        if kind == "ping":
            pong: dict[str, Any] = {"type": "pong", "server_time_ms": now_ms()}
            if command.rid is not None:
                pong["rid"] = command.rid
            conn.send(pong)
        elif kind == "comment":
            self._comment(conn, command)
        elif kind == "like":
            self._like(conn, command)
        elif kind in MODERATION:
            if not conn.is_staff:
                conn.send_error(
                    ProtocolError("forbidden", f"only hosts and moderators may send {kind}", command.rid)
                )
            else:
                self._in_order(conn, self._moderate(conn, command))
        elif kind in APP_COMMANDS:
            self._in_order(conn, self._app_command(conn, command))

    def _in_order(self, conn: Connection, then: Coroutine[Any, Any, None]) -> None:
        """Run a client's command after its previous one: its commands take effect in order."""
        previous = conn.last_command
        if previous is None or previous.done():
            conn.last_command = self._spawn(then)  # the common case: nothing to wait for
        else:
            conn.last_command = self._spawn(self._after(previous, then))

    async def _app_command(self, conn: Connection, command: Command) -> None:
        assert conn.admission is not None
        caller = Caller(
            conn.room_id, conn.user_id, conn.admission.role, conn.remote_ip, conn.admission.anonymous
        )
        try:
            fields = await self.directory.command(caller, command)
        except ProtocolError as exc:
            exc.rid = command.rid
            conn.send_error(exc)
            return
        except (RedisError, OSError) as exc:
            log.warning("command failed on a backend", extra={"type": command.type, "error": repr(exc)})
            conn.send_error(ProtocolError("unavailable", "a backend is unavailable; retry", command.rid))
            return
        except Exception:  # a bug in the application: the client still gets an answer
            log.exception("command failed", extra={"type": command.type})
            conn.send_error(ProtocolError("internal", "internal server error", command.rid))
            return
        conn.send({**fields, "type": "ack", "rid": command.rid, "of": command.type})

    def _comment(self, conn: Connection, command: Command) -> None:
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
        assert conn.admission is not None
        message = {
            "type": "comment",
            "user_id": conn.user_id,
            "role": conn.admission.role,
            "text": text,
            "ts_ms": now_ms(),
        }
        self._outbox.setdefault(conn.room_id, []).append(_Queued(conn, command.rid, conn.user_id, message))
        self._outbox_ready.set()

    def _like(self, conn: Connection, command: Command) -> None:
        count = command.fields.get("count", 1)
        if not 1 <= count <= 1000:
            conn.send_error(ProtocolError("invalid_field", "'count' must be 1 to 1000", command.rid))
            return
        room = self.rooms.get(conn.room_id)
        if room is not None:
            room.local_likes += conn.likes.take_up_to(count)

    @staticmethod
    async def _after(previous: asyncio.Task[Any], then: Coroutine[Any, Any, None]) -> None:
        try:
            if not previous.done():
                await asyncio.wait([previous])
        except asyncio.CancelledError:
            then.close()  # stopping: the queued command is dropped, not left un-awaited
            raise
        await then

    async def _moderate(self, conn: Connection, command: Command) -> None:
        assert conn.admission is not None
        f, room_id, rid = command.fields, conn.room_id, command.rid
        at = now_ms()
        by = {"by": conn.user_id, "ts_ms": at}
        try:
            match command.type:
                case "host_message":
                    text = f["text"].strip()
                    limit = self.config.max_host_message_chars
                    if not 0 < len(text) <= limit:
                        raise ProtocolError("invalid_field", f"'text' must be 1 to {limit} characters", rid)
                    await self.bus.publish_one(
                        room_id,
                        {"type": "host_message", "role": conn.admission.role, "text": text, **by},
                    )
                case "pin_product":
                    product = await self.directory.product(room_id, f["product_id"])
                    if product is None:
                        raise ProtocolError("product_not_found", "no such product in this room", rid)
                    await self.bus.set_state(room_id, pinned=json.dumps(product, ensure_ascii=False))
                    await self.bus.publish_one(room_id, {"type": "product_pinned", "product": product, **by})
                case "unpin_product":
                    await self.bus.clear_state(room_id, "pinned")
                    await self.bus.publish_one(room_id, {"type": "product_unpinned", **by})
                case "mute":
                    if not 0 < f["duration_s"] <= MAX_MUTE_S:
                        raise ProtocolError("invalid_field", f"'duration_s' must be 1 to {MAX_MUTE_S}", rid)
                    await self._check_target(room_id, f["user_id"], rid)
                    until = at + f["duration_s"] * 1000  # (the event says: ts_ms + duration)
                    await self.bus.mute(room_id, f["user_id"], until)
                    await self.bus.publish_one(
                        room_id,
                        {"type": "user_muted", "user_id": f["user_id"], "until_ms": until, **by},
                    )
                case "ban":
                    await self._check_target(room_id, f["user_id"], rid)
                    await self.bus.ban(room_id, f["user_id"])
                    await self.bus.publish_one(
                        room_id, {"type": "user_banned", "user_id": f["user_id"], **by}
                    )
                case "unmute" | "unban":
                    if conn.admission.role != "host" and f["user_id"] == conn.user_id:
                        # a host's decision about a moderator is not the moderator's to undo
                        raise ProtocolError("forbidden", f"only a host may {command.type} you", rid)
                    lift = self.bus.unmute if command.type == "unmute" else self.bus.unban
                    if await lift(room_id, f["user_id"]):  # (nothing to announce otherwise)
                        event = "user_unmuted" if command.type == "unmute" else "user_unbanned"
                        await self.bus.publish_one(room_id, {"type": event, "user_id": f["user_id"], **by})
                case "delete_comment":
                    if f["comment_id"] <= 0:
                        raise ProtocolError("invalid_field", "'comment_id' must be a comment's id", rid)
                    await self.bus.forget_comment(room_id, f["comment_id"])
                    await self.bus.publish_one(
                        room_id, {"type": "comment_deleted", "comment_id": f["comment_id"], **by}
                    )
                case "slow_mode":
                    if not 0 <= f["interval_s"] <= MAX_SLOW_MODE_S:
                        raise ProtocolError(
                            "invalid_field", f"'interval_s' must be 0 to {MAX_SLOW_MODE_S}", rid
                        )
                    await self.bus.set_state(room_id, slow_mode_s=f["interval_s"])
                    await self.bus.publish_one(
                        room_id, {"type": "slow_mode", "interval_s": f["interval_s"], **by}
                    )
                case "clear_chat":
                    seq = await self.bus.publish_one(room_id, {"type": "chat_cleared", **by})
                    await self.bus.set_state(room_id, cleared_seq=seq)
        except ProtocolError as exc:
            conn.send_error(exc)
            return
        except (RedisError, OSError) as exc:
            log.warning("moderation failed on Redis", extra={"room": room_id, "error": repr(exc)})
            conn.send_error(ProtocolError("unavailable", "the room store is unavailable; retry", rid))
            return
        except Exception:  # a bug: the sender still gets an answer
            log.exception("moderation failed", extra={"room": room_id, "type": command.type})
            conn.send_error(ProtocolError("internal", "internal server error", rid))
            return
        conn.send({"type": "ack", "rid": rid, "of": command.type})

    async def _check_target(self, room_id: str, user_id: str, rid: str | None) -> None:
        """Refuse (before anything changes) to mute or ban someone nobody may: the host."""
        if not await self.directory.may_moderate(room_id, user_id):
            raise ProtocolError("protected_user", "the room's host cannot be muted or banned", rid)

    # -- events from Redis --------------------------------------------------------------------

    def on_events(self, room_id: str, events: list[tuple[int, dict[str, Any]]]) -> None:
        room = self.rooms.get(room_id)
        if room is None:
            return
        for seq, message in events:
            try:
                self._on_event(room, seq, message)
            except Exception:  # one bad event (a bug upstream) must not cost the others, or the reader
                log.exception("room event not delivered", extra={"room": room_id, "seq": seq})

    def _on_event(self, room: Room, seq: int, message: dict[str, Any]) -> None:
        if seq == DIRECT:
            for conn in room.of_user(message["to"]):
                conn.send(message["message"])
            return
        if seq == GAUGE and "gauge" in message:
            room.set_gauge(message["gauge"], message["message"])
            return
        kind = message.get("type")
        if kind == "comment":
            room.add_comment(seq, message)
            return
        if kind == "likes":
            room.set_likes(int(message["total"]))
            return
        if kind == "comment_deleted":
            room.forget_comment(int(message["comment_id"]))
        elif kind == "chat_cleared":
            room.clear_comments()
        self.metrics.frames_out(room.deliver(seq, message))
        if kind == "user_banned":
            self._kick(room, str(message["user_id"]))

    def _kick(self, room: Room, user_id: str) -> None:
        for conn in list(room.of_user(user_id)):
            conn.close(close_codes.BANNED, '{"code":"banned"}')

    async def publish_event(self, room_id: str, message: dict[str, Any]) -> int:
        """Send an application event (a sale starting, say) to a room's priority lane."""
        return await self.bus.publish_one(room_id, message)

    async def publish_gauge(self, room_id: str, key: str, message: dict[str, Any]) -> None:
        """Send the latest value of something to a room's chat lane (a sale's stock left, say):
        written at the next tick, only the latest per key, skipped for a lagging client, not
        numbered."""
        await self.bus.publish_gauge(room_id, key, message)

    async def send_to_user(self, room_id: str, user_id: str, message: dict[str, Any]) -> None:
        """Send a message to one user's connections to a room, on whichever process they are
        (an order's status, say). Not numbered, not kept for resume."""
        await self.bus.publish_direct(room_id, user_id, message)

    # -- periodic work ------------------------------------------------------------------------

    async def _tick_loop(self) -> None:
        """A round of batches at most every tick_ms: each round starts a whole tick after the
        previous one started, never sooner, so a late round (a stall, a slow round) is not
        caught up on with rounds in quick succession. Room.flush paces each member too."""
        period = self.config.tick_ms / 1000
        started = time.monotonic()
        while True:
            # (a loop, not one sleep: a timer may fire a little early, uvloop's by up to a ms)
            while (left := started + period - time.monotonic()) > 0:
                await asyncio.sleep(left)
            started = time.monotonic()
            likes = {}
            for room in list(self.rooms.values()):
                if room.local_likes:
                    likes[room.id], room.local_likes = room.local_likes, 0
                try:
                    self.metrics.frames_out(await room.flush())
                except Exception:  # one room's bad round must not stop every room's chat
                    log.exception("tick failed for a room", extra={"room": room.id})
            if likes:
                self._spawn(self._publish_likes(likes))

    async def _publish_likes(self, likes: dict[str, int]) -> None:
        for room_id, count in likes.items():
            try:
                await self.bus.add_likes(room_id, count)
            except (RedisError, OSError) as exc:
                log.warning("likes lost on Redis", extra={"room": room_id, "error": repr(exc)})
            except Exception:  # a bug: this room's likes are lost, not the other rooms'
                log.exception("likes not published", extra={"room": room_id})

    async def _publish_loop(self) -> None:
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
        for q, result in zip(queued, results, strict=True):
            if isinstance(result, int):
                if q.rid is not None:
                    q.conn.send({"type": "ack", "rid": q.rid, "of": "comment", "seq": result})
            else:
                q.conn.send_error(ProtocolError(result, _REFUSALS.get(result, result), q.rid))

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

    async def _presence_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            if not self.rooms:
                continue
            counts = {room_id: len(room) for room_id, room in self.rooms.items()}
            try:
                totals = await self.bus.report_presence(self.node_id, counts)
            except (RedisError, OSError) as exc:
                log.warning("presence not reported", extra={"error": repr(exc)})
                continue
            except Exception:  # a bug: logged, and tried again next second
                log.exception("presence not reported")
                continue
            for room_id, total in totals.items():
                room = self.rooms.get(room_id)
                if room is not None:
                    room.set_online(total)

    async def _ping_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.ping_interval_s)
            conns = list(self.connections)
            for start in range(0, len(conns), WRITE_CHUNK):
                # in chunks, like the tick: a priority event waits for one chunk at most
                await asyncio.sleep(0)
                for conn in conns[start : start + WRITE_CHUNK]:
                    conn.ping()

    # -- bookkeeping --------------------------------------------------------------------------

    def count_error(self, kind: str) -> None:
        self.metrics.error(kind)

    def _gauges(self) -> None:
        self.metrics.gauges(self.open_count, sum(1 for r in self.rooms.values() if len(r)))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("gateway task failed", exc_info=task.exception())


_REFUSALS = {
    "banned": "you are banned from this room",
    "muted": "you are muted in this room for now",
    "slow_mode": "slow mode is on: wait before commenting again",
    "unavailable": "the room store is unavailable; retry",
    "internal": "internal server error",
}


def _parse_target(request: Request) -> tuple[str, str | None, int | None]:
    """Room id, token and last_seq from the upgrade request."""
    url = urlsplit(request.path)
    if not url.path.startswith(PATH_PREFIX):
        raise Refused(404, "not_found", "WebSocket endpoints are /ws/rooms/{room}")
    room_id = unquote(url.path[len(PATH_PREFIX) :])
    if not room_id or "/" in room_id or len(room_id) > 64:
        raise Refused(404, "room_not_found", "no such room")
    query = parse_qs(url.query)
    token = query.get("token", [None])[0]
    header = request.headers.get("Authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Refused(401, "token_invalid", "the Authorization header must be 'Bearer <token>'")
        token = value.strip()
    last_seq = None
    if "last_seq" in query:
        raw = query["last_seq"][0]
        if not (raw.isascii() and raw.isdigit()):
            raise Refused(400, "invalid_field", "last_seq must be a non-negative integer")
        # Any length is a number; past 20 digits it is past any seq (and int() refuses
        # thousands of digits): Bus.snapshot gives anything past the room's seq a fresh start.
        last_seq = int(raw) if len(raw) <= 20 else MAX_SEQ
    return room_id, token, last_seq


def _error_body(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()
