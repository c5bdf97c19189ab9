"""The gateway of one process: admits connections, runs the rooms, talks to Redis.

Journey of a comment: client frame -> ``handle`` (the registry's field and role checks:
gateway/commands.py) -> ``Chat.comment`` (text checks, rate limit) -> outbox -> one
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
from collections.abc import Coroutine
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

from redis.exceptions import RedisError
from websockets.http11 import Request

from gateway import close_codes, messages
from gateway.admission import Admission, Admissions, Admitted, Refused, auth_fields, unavailable
from gateway.bus import DIRECT, GAUGE, Bus, Snapshot, now_ms
from gateway.chat import Chat, CommentObserver
from gateway.close_codes import Close
from gateway.commands import Registry, Reply, Sender
from gateway.config import GatewayConfig
from gateway.connection import Connection, Expiries
from gateway.messages import Command, ProtocolError
from gateway.moderation import Moderation
from gateway.ports import Supervisor
from gateway.room import WRITE_CHUNK, Room
from gateway.shards import RedisClient

log = logging.getLogger(__name__)

#: An empty room stays subscribed this long, so a reconnect storm does not churn Redis.
EMPTY_ROOM_LINGER_S = 5.0
#: Reads of a room's history a catch-up tries before it gives up and has members resume.
CATCH_UP_TRIES = 5


class Directory(Protocol):
    """What the gateway asks the application (live/)."""

    async def admit(self, room_id: str, token: str | None) -> Admission:
        """Who this is, or raise Refused."""

    async def product(self, room_id: str, product_id: str) -> dict[str, Any] | None:
        """A product of the room, as pinned cards show it, or None."""

    async def may_moderate(self, room_id: str, user_id: str) -> bool:
        """Whether hosts and moderators may mute or ban this user in this room (False for the
        room's host: nobody locks a room's host out of their own room)."""


class Metrics(Protocol):
    def frames_in(self, n: int) -> None: ...
    def frames_out(self, n: int) -> None: ...
    def error(self, kind: str) -> None: ...
    def gauges(self, connections: int, rooms: int) -> None: ...


@dataclass
class Hub:
    config: GatewayConfig
    redis: RedisClient
    directory: Directory
    metrics: Metrics
    #: Keeps the hub's loops (and its bus reader) running; /readyz asks it what is down.
    supervisor: Supervisor
    node_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    def __post_init__(self) -> None:
        self.bus = Bus(
            self.redis, self.config, self.on_events, self.supervisor, self._lost, self._resubscribed
        )
        self.rooms: dict[str, Room] = {}
        self.connections: set[Connection] = set()
        #: When the connections' credentials end: one loop timer for them all.
        self.expiries = Expiries()
        #: The handshakes, and the connections counted against the limits.
        self.admissions = Admissions(self.config, self.directory, self.bus)
        #: Comments and likes: checked, queued, published per room.
        self.chat = Chat(self.bus, self.config, self.rooms)
        self._tasks: set[asyncio.Task[Any]] = set()
        #: Each connection's last command that runs as a task: the next waits for it.
        self._last_command: dict[Connection, asyncio.Task[None]] = {}
        self._loops = ["gateway-tick", "gateway-publish", "gateway-presence", "gateway-ping"]
        self._linger: dict[str, asyncio.TimerHandle] = {}
        #: First-message auth: upgraded connections whose first message has not been admitted.
        self._pending_auth: dict[Connection, Admitted] = {}

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        await self.bus.start()
        loops = (self._tick_loop, self.chat.publish_loop, self._presence_loop, self._ping_loop)
        for name, loop in zip(self._loops, loops, strict=True):
            self.supervisor.start(name, loop)

    async def close_all(self, kind: Close, timeout_s: float = 2.0, **fields: int) -> None:
        """Close every connection (``fields``: the reason's extra fields, ``retry_ms``), waiting
        up to ``timeout_s`` for clients to answer."""
        for conn in list(self.connections):
            conn.close(kind, **fields)
        deadline = time.monotonic() + timeout_s
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for conn in list(self.connections):
            conn.abort()

    async def stop(self) -> None:
        await self.supervisor.stop(self._loops)
        await self.supervisor.cancel(self._tasks)
        if self.rooms:
            try:
                await self.bus.report_presence(self.node_id, dict.fromkeys(self.rooms, 0))
            except (RedisError, OSError) as exc:  # stopping goes on: the entries go stale by age
                log.warning("presence not cleared at stop", extra={"error": repr(exc)})
        await self.bus.close()

    def connection(self, remote_ip: str) -> Connection:
        conn = Connection(self, remote_ip)
        self.connections.add(conn)
        return conn

    def forget(self, conn: Connection) -> None:
        """The connection is gone (called once, from connection_lost)."""
        self.admissions.release(conn)
        self.connections.discard(conn)
        self._pending_auth.pop(conn, None)
        self._last_command.pop(conn, None)

    @property
    def open_count(self) -> int:
        """Connections counted against the limits (handshakes under way included)."""
        return self.admissions.open_count

    # -- handshake ----------------------------------------------------------------------------

    def start_handshake(self, conn: Connection, request: Request) -> None:
        self._spawn(self._handshake(conn, request))

    async def _handshake(self, conn: Connection, request: Request) -> None:
        admitted = await self.admissions.check(conn, conn.remote_ip, request)
        if isinstance(admitted, Refused):
            self.count_error(admitted.code)
            conn.refuse(admitted.status, admitted.body)
            return
        admission = admitted.admission
        if admission is None:  # first-message auth: upgrade now, admit on the first message
            self._pending_auth[conn] = admitted  # (accept may hand over a pipelined one)
            if not conn.accept(request, auth_by_message=True):
                self._pending_auth.pop(conn, None)
                self.admissions.release(conn)
                self.count_error("bad_handshake")
            return
        # who it is, before accept(): frames sent right behind the request are handled in it
        conn.admit(admitted.room_id, admission)
        await self._join(conn, admission, admitted.last_seq, request)

    def authenticate(self, conn: Connection, command: Command) -> None:
        """A first-message auth's first message (decoded): admit it, or refuse it in band."""
        self._spawn(self._authenticate(conn, command))

    async def _authenticate(self, conn: Connection, command: Command) -> None:
        pending = self._pending_auth.pop(conn, None)
        if pending is None or not conn.is_open:
            return
        try:
            token, last_seq = auth_fields(command, pending.last_seq)
        except ProtocolError as exc:
            conn.refuse_in_band(exc.code, exc.message, Close.TOKEN_MISSING)
            return
        admission = await self.admissions.admit(pending.room_id, token)
        if isinstance(admission, Refused):
            kind = close_codes.refusal(admission.code)
            retry = {"retry_ms": close_codes.UNAVAILABLE_RETRY_MS} if kind is Close.UNAVAILABLE else {}
            conn.refuse_in_band(admission.code, admission.message, kind, **retry)
            return
        if not conn.is_open:
            return
        conn.admit(pending.room_id, admission)
        if admission.expires_at is not None:
            conn.set_expiry(admission.expires_at - time.time())
        await self._join(conn, admission, last_seq)

    async def _join(
        self, conn: Connection, admission: Admission, last_seq: int | None, request: Request | None = None
    ) -> None:
        """Join the room: its subscription and snapshot, then the welcome and what a resuming
        client missed. ``request``: a handshake not upgraded yet, upgraded here once the reads
        are in (a Redis that fails them gets a 503), its 101 and welcome in one write."""
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
            if request is None:
                conn.close(Close.UNAVAILABLE, retry_ms=close_codes.UNAVAILABLE_RETRY_MS)
            else:
                refusal = unavailable()
                self.admissions.release(conn)
                self.count_error(refusal.code)
                conn.refuse(refusal.status, refusal.body)
            return
        if room.joined_seq is None:
            room.joined_seq = snap.seq
        with conn.corked():
            if request is not None:
                if not conn.accept(request):
                    self.admissions.release(conn)
                    if not conn.is_gone:  # (not a client that left, or one timed out, meanwhile)
                        self.count_error("bad_handshake")
                    return
                if admission.expires_at is not None:
                    conn.set_expiry(admission.expires_at - time.time())
            if not conn.is_open:
                return
            self._welcome(conn, room, admission, snap)
            room.add(conn)
            conn.joined()
        self._gauges()

    def _welcome(self, conn: Connection, room: Room, admission: Admission, snap: Snapshot) -> None:
        """The welcome, the events a resuming client missed, and those the room has had since
        the snapshot."""
        state = snap.state
        conn.send(
            messages.welcome(
                server_time_ms=now_ms(),
                seq=snap.seq,
                resumed=snap.missed is not None,
                room=admission.room,
                user_id=admission.user_id,
                role=admission.role,
                online=max(room.online, len(room) + 1),
                likes=int(state.get("likes", "0")),
                pinned=json.loads(state["pinned"]) if "pinned" in state else None,
                slow_mode_s=int(state.get("slow_mode_s", "0")),
                comments=snap.comments,
                you=admission.you,
            )
        )
        seen = snap.seq
        for seq, message in snap.missed or ():
            conn.send({**message, "seq": seq})
            seen = max(seen, seq)
        for message in room.events_after(seen):
            conn.send(message)

    def leave(self, conn: Connection) -> None:
        """The connection is no longer open (called once, by the connection)."""
        self.admissions.release(conn)
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

    @cached_property
    def commands(self) -> Registry[Sender]:
        """What clients may send: the gateway's own commands, and the app's (which it
        registers before the hub starts: live/commands.py)."""
        commands: Registry[Sender] = Registry()
        commands.register("ping", self._ping)
        self.chat.register(commands)
        Moderation(self.bus, self.directory, self.config).register(commands)
        return commands

    def handle(self, conn: Connection, command: Command) -> None:
        """A decoded command: checked against the registry (its fields, then the sender's role),
        then run by its handler."""
        admission = conn.admission
        assert admission is not None
        sender = Sender(conn.room_id, conn.user_id, admission.role, conn.remote_ip, admission.anonymous, conn)
        try:
            command = messages.check(command, self.commands)
            spec = self.commands[command.type]
            self.commands.allow(spec, sender, command.rid)
        except ProtocolError as exc:
            conn.send_error(exc)
            return
        work = spec.handler(sender, command)
        if work is not None:
            self._in_order(conn, command, work)

    def _in_order(self, conn: Connection, command: Command, work: Coroutine[Any, Any, Reply]) -> None:
        """Run a client's command after its previous one: its commands take effect in order."""
        answer = self._answer(conn, command, work)
        previous = self._last_command.get(conn)
        if previous is None or previous.done():
            task = self._spawn(answer)  # the common case: nothing to wait for
        else:
            task = self._spawn(self._after(previous, answer))
        # a task cancelled before it ran (the hub stopping) never awaited ``work``
        task.add_done_callback(lambda _: work.close())
        self._last_command[conn] = task

    async def _answer(self, conn: Connection, command: Command, work: Coroutine[Any, Any, Reply]) -> None:
        """Await a command's handler and answer the sender: its ack, or its refusal."""
        try:
            fields = await work
        except ProtocolError as exc:
            exc.rid = command.rid
            conn.send_error(exc)
            return
        except (RedisError, OSError) as exc:
            log.warning("command failed on a backend", extra={"type": command.type, "error": repr(exc)})
            conn.send_error(ProtocolError("unavailable", "a backend is unavailable; retry", command.rid))
            return
        except Exception:  # a bug in a handler (the app's, say): the client still gets an answer
            log.exception("command failed", extra={"type": command.type})
            conn.send_error(ProtocolError("internal", "internal server error", command.rid))
            return
        conn.send(messages.ack(command.type, command.rid, fields))

    @staticmethod
    async def _after(previous: asyncio.Task[Any], then: Coroutine[Any, Any, None]) -> None:
        try:
            if not previous.done():
                await asyncio.wait([previous])
        except asyncio.CancelledError:
            then.close()  # stopping: the queued command is dropped, not left un-awaited
            raise
        await then

    def _ping(self, sender: Sender, command: Command) -> None:
        sender.conn.send(messages.pong(now_ms(), command.rid))

    # -- events from Redis --------------------------------------------------------------------

    def on_events(self, room_id: str, events: list[tuple[int, dict[str, Any]]]) -> None:
        room = self.rooms.get(room_id)
        if room is None:
            return
        if room.held is not None:  # a catch-up is reading the history: these go after it
            room.held.extend(events)
            return
        self._apply(room, events)

    def _apply(self, room: Room, events: list[tuple[int, dict[str, Any]]]) -> None:
        for seq, message in events:
            try:
                self._on_event(room, seq, message)
            except Exception:  # one bad event (a bug upstream) must not cost the others, or the reader
                log.exception("room event not delivered", extra={"room": room.id, "seq": seq})

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
        if room.delivered_seq is not None and seq <= room.delivered_seq:
            return  # delivered already (heard on pub/sub and read back by a catch-up)
        if kind == "comment_deleted":
            room.forget_comment(int(message["comment_id"]))
        elif kind == "chat_cleared":
            room.clear_comments()
        self.metrics.frames_out(room.deliver(seq, message))
        if kind == "user_banned":
            self._kick(room, str(message["user_id"]))

    def _kick(self, room: Room, user_id: str) -> None:
        for conn in list(room.of_user(user_id)):
            conn.close(Close.BANNED)

    # -- catching up after a lost subscription -----------------------------------------------

    def _lost(self, room_ids: list[str]) -> None:
        """The bus lost these rooms' subscriptions: from now on, until the catch-up, what pub/sub
        brings is held (it follows a gap)."""
        for room_id in room_ids:
            room = self.rooms.get(room_id)
            if room is not None:
                room.subscription_lost = True
                if room.held is None:
                    room.held = []

    def _resubscribed(self, room_ids: list[str]) -> None:
        """The bus subscribed these rooms again (a failover, a resharding, a lost connection):
        what was published meanwhile never reached this process over pub/sub."""
        for room_id in room_ids:
            room = self.rooms.get(room_id)
            if room is None:
                continue
            room.subscription_lost = False
            if room.held is None:
                room.held = []
            if room.catching_up:
                room.catch_up_again = True
            else:
                room.catching_up = True
                self._spawn(self._catch_up(room))

    async def _catch_up(self, room: Room) -> None:
        """Replay the room's history after the last event delivered here, then what pub/sub
        brought meanwhile (held), in seq order, each event once: members see no gap and no
        duplicate. If the history no longer reaches back (or Redis will not answer), members
        are closed with ``unavailable``: they reconnect and resume with their ``last_seq``."""
        try:
            while True:
                room.catch_up_again = False
                after = room.delivered_seq if room.delivered_seq is not None else room.joined_seq
                if after is None:  # never joined: nothing delivered, nothing to make up for
                    break
                replay = await self._read_history(room, after)
                if replay is None:
                    log.warning("room not caught up: history gone; members resume", extra={"room": room.id})
                    for conn in list(room.members()):
                        conn.close(Close.UNAVAILABLE, retry_ms=close_codes.UNAVAILABLE_RETRY_MS)
                    room.delivered_seq = None
                    room.joined_seq = None
                    break
                self._apply(room, replay)
                if not room.catch_up_again:
                    break
        finally:
            room.catching_up = False
            if not room.subscription_lost:  # (lost again: the next catch-up applies them)
                held, room.held = room.held or [], None
                self._apply(room, held)

    async def _read_history(self, room: Room, after: int) -> list[tuple[int, dict[str, Any]]] | None:
        delay = 0.1
        for attempt in range(CATCH_UP_TRIES):
            try:
                seq, events = await self.bus.history_after(room.id, after)
            except (RedisError, OSError) as exc:
                log.warning("catch-up read failed", extra={"room": room.id, "error": repr(exc)})
                if attempt == CATCH_UP_TRIES - 1:
                    return None
                await asyncio.sleep(delay)
                delay *= 2
                continue
            if seq < after:
                # The room's counter went back: a promoted replica had not received the last
                # writes of its failed master. Later events reuse those seqs; let them through.
                log.warning("room seq went back after a failover", extra={"room": room.id, "seq": seq})
                room.delivered_seq = seq
            return events
        return None

    def observe_comments(self, observer: CommentObserver) -> None:
        """Tell ``observer`` of every comment admitted from this process's connections."""
        self.chat.observers.append(observer)

    def present_users(self, room_id: str) -> set[str]:
        """The users with a connection to the room on this process."""
        room = self.rooms.get(room_id)
        return set() if room is None else {conn.user_id for conn in room.members()}

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
            if likes or self.chat.likes_follow_ups_due():
                self._spawn(self.chat.publish_likes(likes))

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
