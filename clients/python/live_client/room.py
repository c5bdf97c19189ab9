"""``RoomClient``: one room's WebSocket (docs/protocol.md) that stays up.

It connects (JSON or MessagePack framing), keeps the welcome snapshot, yields typed events,
and reconnects by itself: exponential backoff with jitter, at least the ``retry_ms`` of a 1001
close, resuming with ``last_seq`` and dropping events it has already delivered. It stops with a
typed exception on what retrying cannot fix (a 4401, 4403 or 4404 close: the error its reason's
code names, such as :class:`TokenExpired` or :class:`Banned`; a handshake refused with
401/403/404).

It authenticates with its first message by default (docs/protocol.md "First-message auth": it
connects with ``?auth=message`` and sends ``{"type": "auth", "token": ..., "last_seq"?: N}``
before anything else, so the token is in no URL and no header); ``auth="header"`` sends it as
``Authorization: Bearer`` instead. A refused first message comes as an ``error`` frame and a
4401/4403/4404 close: raised as the error they name, never retried.

Commands are methods with typed results and typed errors. Every command carries a ``rid``.
Commands that the server decides once per ``rid`` (buying, bids, payments, claims, entries,
votes, questions) are sent again with the same ``rid`` after a reconnect when their answer was
lost with the connection, so a purchase happens once however the network behaves; a refusal is
never sent again. A command that is not safe to send twice (a comment, a host command) whose
connection dropped before its answer raises :class:`ConnectionLost`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import secrets
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import msgpack
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Subprotocol

from live_client.errors import (
    ERRORS,
    Banned,
    Closed,
    ConnectionLost,
    Forbidden,
    LiveError,
    NotFound,
    RequestTimeout,
    RoomNotFound,
    TokenExpired,
    Unauthorized,
    error_from,
)
from live_client.events import CommentBatch, Event, Lagged, Reconnected, parse_event
from live_client.models import (
    Bid,
    Cancelled,
    Coupon,
    Hold,
    Order,
    Prize,
    Question,
    Team,
    Vote,
    Welcome,
    build,
)

log = logging.getLogger(__name__)

Framing = Literal["json", "msgpack"]
#: How the token is sent: ``message`` (the first message, after ``?auth=message``) or
#: ``header`` (``Authorization: Bearer``).
Auth = Literal["message", "header"]
AUTH_MODES: tuple[str, ...] = ("message", "header")
#: Close codes retrying cannot fix: the error a close's reason code names (of the base class
#: here; otherwise the default): 4401 token, 4403 not allowed in, 4404 no such room.
_FINAL_CLOSES: dict[int, tuple[type[LiveError], type[LiveError]]] = {
    4401: (TokenExpired, Unauthorized),
    4403: (Banned, Forbidden),
    4404: (RoomNotFound, NotFound),
}
SUBPROTOCOLS: dict[str, str] = {"json": "live.v1.json", "msgpack": "live.v1.msgpack"}
#: Handshake refusals that retrying cannot fix: the client stops with their error.
_FINAL_STATUSES = frozenset({400, 401, 403, 404})
#: A 1008 (flood) close: wait at least this long before connecting again.
_FLOOD_BACKOFF_S = 10.0
#: How many comment ids are remembered to drop comments seen before a reconnect.
_SEEN_COMMENTS = 2000
_MAX_INT = 2**63 - 1


@dataclass
class Stats:
    """What the connection went through (read it from ``room.stats``)."""

    #: Connections made after the first one.
    reconnects: int = 0
    #: Priority events dropped because they were delivered before (a resume replays from the
    #: ``last_seq`` sent), and comments dropped because they were shown before.
    duplicates_dropped: int = 0
    #: Sums of the ``lagged`` messages: chat frames and comments skipped for this client.
    lagged_frames: int = 0
    lagged_comments: int = 0
    #: Sum of the batches' ``skipped``: comments sampled away (a viewer sees at most
    #: ``comments_per_tick`` a tick).
    skipped_comments: int = 0
    #: Commands sent again with their rid after a connection dropped before their answer.
    resent: int = 0
    #: The last close code and reason from the server (``None`` before any).
    last_close_code: int | None = None
    last_close_reason: str = ""
    #: Connection attempts that failed before a WebSocket was open (refused, timed out, not a
    #: WebSocket answer), and the last one's error: each is retried after the backoff.
    failed_connects: int = 0
    last_connect_error: str = ""


@dataclass
class _Pending:
    message: dict[str, Any]
    future: asyncio.Future[dict[str, Any]]
    resend: bool
    #: The connection it was last written to (None: not written yet).
    sent_on: int | None = None


class _End:
    pass


_END = _End()


# -- argument checks ------------------------------------------------------------------------------


def _int(name: str, value: object, lo: int, hi: int = _MAX_INT) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be {lo} to {hi}, not {value}")
    return value


def _text(name: str, value: object, max_chars: int | None = None) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"{name} must not be empty")
    if max_chars is not None and len(value.strip()) > max_chars:
        raise ValueError(f"{name} must be at most {max_chars} characters")
    return value


def _id(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    if not value:
        raise ValueError(f"{name} must not be empty")
    return value


def _rid(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"rid must be a str, not {type(value).__name__}")
    if not 1 <= len(value) <= 64:
        raise ValueError("rid must be 1 to 64 characters")
    return value


def room_url(base: str, room: str) -> str:
    """The WebSocket URL of ``room`` on a server (``http://host:port`` or ``ws://host:port``)."""
    parts = urlsplit(base)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = parts.path.rstrip("/") + "/ws/rooms/" + quote(room, safe="")
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


class RoomClient:
    """One room, over one WebSocket at a time. Use it as ``async with RoomClient(...) as room``.

    ``url``: the room's WebSocket URL (``ws://host:port/ws/rooms/ROOM``), or the server's base
    URL with ``room=``. ``token``: a JWT, or None for a room that admits anonymous viewers.
    ``auth``: ``"message"`` (the default) sends it in the first message (with ``last_seq``
    when resuming); ``"header"`` sends it as ``Authorization: Bearer`` (and ``last_seq`` in
    the query), for servers without first-message auth.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        room: str | None = None,
        framing: Framing = "msgpack",
        auth: Auth = "message",
        request_timeout_s: float = 30.0,
        connect_timeout_s: float = 30.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 10.0,
    ) -> None:
        if framing not in SUBPROTOCOLS:
            raise ValueError(f"framing must be 'json' or 'msgpack', not {framing!r}")
        if auth not in AUTH_MODES:
            raise ValueError(f"auth must be 'message' or 'header', not {auth!r}")
        if room is not None:
            url = room_url(url, _id("room", room))
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss"):
            raise ValueError(f"not a ws:// or wss:// URL: {url!r}")
        self.url = url
        self.framing: Framing = framing
        self.auth: Auth = auth
        self.request_timeout_s = request_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self._token = token
        self._binary = framing == "msgpack"
        self._welcome: Welcome | None = None
        #: The highest room ``seq`` delivered: sent as ``last_seq`` on a reconnect.
        self.last_seq: int | None = None
        self.stats = Stats()
        self._offset_ms = 0.0
        self._events: asyncio.Queue[Event | _End] = asyncio.Queue()
        self._pending: dict[str, _Pending] = {}
        self._seen_comments: OrderedDict[int, None] = OrderedDict()
        self._rid_prefix = secrets.token_hex(4)
        self._rid_next = 0
        self._ws: ClientConnection | None = None
        self._conn = 0
        self._live = False
        self._live_event = asyncio.Event()
        self._closing = False
        self._failure: LiveError | None = None
        self._first: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> RoomClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        """Connect and wait for the welcome (retrying network failures for up to
        ``connect_timeout_s``); raises the typed error of a refused handshake."""
        if self._task is not None:
            raise RuntimeError("this RoomClient is connected already")
        self._first = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run(), name=f"live-client {self.url}")
        try:
            await asyncio.wait_for(asyncio.shield(self._first), self.connect_timeout_s)
        except TimeoutError:
            await self.close()
            raise RequestTimeout(
                "timeout", f"no welcome from {self.url} in {self.connect_timeout_s:g} s"
            ) from None
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Close the connection and stop reconnecting; pending commands raise :class:`Closed`."""
        self._closing = True
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2)
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self._finish(None)

    @property
    def welcome(self) -> Welcome:
        """The latest welcome snapshot (the first one until a reconnect)."""
        if self._welcome is None:
            raise RuntimeError("not connected yet")
        return self._welcome

    @property
    def connected(self) -> bool:
        """True while a connection is open and welcomed."""
        return self._live

    def now_ms(self) -> int:
        """The server's clock now (estimated from the welcome and pongs), ms since the epoch."""
        return int(time.time() * 1000 + self._offset_ms)

    # -- events ---------------------------------------------------------------------------------

    def __aiter__(self) -> RoomClient:
        return self

    async def __anext__(self) -> Event:
        item = await self._events.get()
        if isinstance(item, _End):
            self._events.put_nowait(item)  # every later call ends too
            if self._failure is not None:
                raise self._failure
            raise StopAsyncIteration
        return item

    async def next_event(self, timeout_s: float | None = None) -> Event:
        """The next event (``TimeoutError`` after ``timeout_s``); raises like ``async for``."""
        try:
            return await asyncio.wait_for(self.__anext__(), timeout_s)
        except StopAsyncIteration:
            raise Closed("closed", "the client is closed") from None

    # -- the connection loop --------------------------------------------------------------------

    def _connect_url(self) -> str:
        """The URL to connect to: with ``?auth=message`` (``last_seq`` then goes in the auth
        message), or with the header, ``?last_seq=`` when resuming."""
        if self.auth == "header" and self.last_seq is None:
            return self.url
        parts = urlsplit(self.url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        if self.auth == "message":
            query = [(k, v) for k, v in query if k != "auth"]
            query.append(("auth", "message"))
        else:
            query = [(k, v) for k, v in query if k != "last_seq"]
            query.append(("last_seq", str(self.resume_from())))
        return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))

    def _auth_message(self) -> dict[str, Any]:
        """The first message of ``auth="message"``: the token (left out for a guest) and, when
        resuming, ``last_seq`` (it replaces a ``?last_seq=`` of the URL)."""
        message: dict[str, Any] = {"type": "auth"}
        if self._token is not None:
            message["token"] = self._token
        if self.last_seq is not None:
            message["last_seq"] = self.resume_from()
        return message

    def resume_from(self) -> int:
        """The ``last_seq`` a reconnect asks to resume after (the highest ``seq`` delivered)."""
        return self.last_seq or 0

    async def _run(self) -> None:
        attempt = 0
        try:
            while not self._closing:
                hint_s: float | None = None
                use_header = self.auth == "header" and self._token
                headers = {"Authorization": f"Bearer {self._token}"} if use_header else {}
                try:
                    ws = await connect(
                        self._connect_url(),
                        subprotocols=[Subprotocol(SUBPROTOCOLS[self.framing])],
                        additional_headers=headers,
                        open_timeout=10,
                        compression=None,
                        max_size=2**22,
                    )
                except InvalidStatus as exc:
                    error = self._refusal(exc)
                    if error.status in _FINAL_STATUSES:
                        raise error from None
                except (OSError, TimeoutError, InvalidHandshake) as exc:  # retried after the backoff
                    self.stats.failed_connects += 1
                    self.stats.last_connect_error = repr(exc)
                    log.debug("connecting failed; retrying", extra={"error": repr(exc)})
                else:
                    welcomed, refused = await self._serve(ws)
                    if welcomed:
                        attempt = 0
                    hint_s = self._after_close(ws, refused)
                if self._closing:
                    break
                attempt += 1
                await asyncio.sleep(self._delay_s(attempt, hint_s))
        except LiveError as error:
            self._finish(error)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug here: stop loudly rather than spin
            log.exception("live-client's connection task failed; the client stops", extra={"url": self.url})
            self._finish(LiveError("internal", f"live-client failed: {exc!r}"))
            raise

    def _refusal(self, exc: InvalidStatus) -> LiveError:
        status = exc.response.status_code
        body = exc.response.body or b""
        try:
            obj = json.loads(body)
            err = obj.get("error") if isinstance(obj, dict) else None
        except ValueError:
            err = None
        if isinstance(err, dict):
            return error_from(err, status)
        return error_from({"code": f"http_{status}", "message": body.decode(errors="replace")[:500]}, status)

    def _delay_s(self, attempt: int, hint_s: float | None) -> float:
        backoff: float = min(self.backoff_max_s, self.backoff_initial_s * 2.0 ** min(attempt - 1, 16))
        delay = backoff * (0.5 + random.random() / 2)  # jitter: many clients do not come back at once
        if hint_s is not None:
            delay = max(delay, hint_s * (1 + random.random() / 2))  # at least the hint, plus jitter
        return delay

    def _after_close(self, ws: ClientConnection, refused: dict[str, Any] | None = None) -> float | None:
        """What the close code says: raises for the final ones, else the least wait (s).
        ``refused``: the ``error`` frame (no ``rid``) that came before the welcome, the refusal
        of a first-message auth; its code is the error when the close's reason names none, and
        a refusal retrying cannot fix (a token, access, no such room) stops the client even if
        its close was lost."""
        code = ws.close_code
        reason = ws.close_reason or ""
        self.stats.last_close_code = code
        self.stats.last_close_reason = reason
        try:
            fields = json.loads(reason) if reason else {}
        except ValueError:
            fields = {}
        if not isinstance(fields, dict):
            fields = {}
        message = f"the server closed the connection ({code} {reason})"
        final = _FINAL_CLOSES.get(code) if code is not None else None
        refused_code = str(refused.get("code")) if refused is not None else None
        refused_kind = ERRORS.get(refused_code) if refused_code is not None else None
        if final is None and refused_kind is not None:  # the close was lost: the frame decides
            final = next((f for f in _FINAL_CLOSES.values() if issubclass(refused_kind, f[1])), None)
        if final is not None:  # what retrying cannot fix: the reason's code names the error
            default, base = final
            reason_code = fields.get("code")
            if not reason_code and refused_kind is not None and issubclass(refused_kind, base):
                reason_code = refused_code
            reason_code = str(reason_code or default.codes[0])
            kind = ERRORS.get(reason_code, default)
            data = fields
            if refused is not None:  # the refusal's own words and fields
                data = {k: v for k, v in refused.items() if k not in ("type", "code", "message", "rid")}
                data.update(fields)
                if isinstance(refused.get("message"), str) and refused["message"]:
                    message = f"{refused['message']} ({code} {reason})"
            raise (kind if issubclass(kind, base) else default)(reason_code, message, data)
        if code == 1008:
            return _FLOOD_BACKOFF_S
        retry_ms = fields.get("retry_ms")
        if isinstance(retry_ms, int | float) and not isinstance(retry_ms, bool) and retry_ms >= 0:
            return float(retry_ms) / 1000
        return None

    async def _serve(self, ws: ClientConnection) -> tuple[bool, dict[str, Any] | None]:
        """Read one connection until it closes: whether it got as far as the welcome, and the
        ``error`` frame without a ``rid`` that came before the welcome (a refused auth)."""
        self._conn += 1
        conn = self._conn
        self._ws = ws
        welcomed = False
        refused: dict[str, Any] | None = None
        try:
            if self.auth == "message":
                await ws.send(self._encode(self._auth_message()))
            async for raw in ws:
                message = self._decode(raw)
                if message is None:
                    continue
                if not welcomed and message.get("type") == "error" and message.get("rid") is None:
                    refused = message
                    continue
                if message.get("type") == "welcome":
                    welcomed = True
                    await self._on_welcome(message, conn)
                else:
                    self._on_message(message)
        except ConnectionClosed:
            pass
        finally:
            self._ws = None
            self._live = False
            self._live_event.clear()
            self._lost(conn)
            if ws.close_code is None:  # cancelled mid-read: do not leave the socket open
                with contextlib.suppress(Exception):
                    await asyncio.shield(ws.close())
        return welcomed, refused

    def _decode(self, raw: str | bytes) -> dict[str, Any] | None:
        try:
            message = json.loads(raw) if isinstance(raw, str) else msgpack.unpackb(raw, raw=False)
        except (ValueError, msgpack.UnpackException):
            return None
        return message if isinstance(message, dict) and isinstance(message.get("type"), str) else None

    def _encode(self, message: Mapping[str, Any]) -> str | bytes:
        if self._binary:
            packed: bytes = msgpack.packb(message, use_bin_type=True)
            return packed
        return json.dumps(message, ensure_ascii=False, separators=(",", ":"))

    async def _on_welcome(self, message: dict[str, Any], conn: int) -> None:
        welcome = build(Welcome, message)
        first = self._welcome is None
        self._welcome = welcome
        self._offset_ms = welcome.server_time_ms - time.time() * 1000 if welcome.server_time_ms else 0.0
        # Resumed: the missed events follow, oldest first, and move last_seq on. Not resumed:
        # the welcome is a fresh snapshot and its seq is where we stand.
        if not welcome.resumed or self.last_seq is None:
            self.last_seq = welcome.seq
        fresh = [c for c in welcome.comments if not self._seen(c.id)]
        if not first:
            self.stats.reconnects += 1
            self._events.put_nowait(
                Reconnected(type="reconnected", data=message, welcome=welcome, resumed=welcome.resumed)
            )
            if fresh:  # comments made while we were away, as one batch
                data = {"type": "batch", "comments": [c.data for c in fresh]}
                self._events.put_nowait(CommentBatch(type="batch", data=data, comments=fresh))
        # Commands waiting for this connection: never sent, or sent on one that dropped before
        # their answer (those are the ones safe to send again, with the same rid).
        while True:
            todo = [p for p in self._pending.values() if p.sent_on != conn and not p.future.done()]
            if not todo:
                break
            for pending in todo:
                if pending.sent_on is not None:
                    self.stats.resent += 1
                pending.sent_on = conn
                await self._write(pending)
            if self._ws is None:
                return
        self._live = True
        self._live_event.set()
        if first and self._first is not None and not self._first.done():
            self._first.set_result(None)

    def _seen(self, comment_id: int) -> bool:
        if comment_id in self._seen_comments:
            return True
        self._seen_comments[comment_id] = None
        while len(self._seen_comments) > _SEEN_COMMENTS:
            self._seen_comments.popitem(last=False)
        return False

    def _on_message(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind in ("ack", "error", "pong"):
            if kind == "pong" and isinstance(message.get("server_time_ms"), int):
                self._offset_ms = message["server_time_ms"] - time.time() * 1000
            pending = self._pending.get(str(message.get("rid")))
            if pending is not None and not pending.future.done():
                if kind == "error":
                    pending.future.set_exception(error_from(message))
                else:
                    pending.future.set_result(message)
            return
        seq = message.get("seq")
        if kind != "batch" and isinstance(seq, int) and not isinstance(seq, bool):
            if self.last_seq is not None and seq <= self.last_seq:
                self.stats.duplicates_dropped += 1
                return
            self.last_seq = seq
        event = parse_event(message)
        if isinstance(event, CommentBatch):
            self.stats.skipped_comments += event.skipped
            comments = [c for c in event.comments if not self._seen(c.id)]
            if len(comments) != len(event.comments):
                self.stats.duplicates_dropped += len(event.comments) - len(comments)
                if not comments and event.likes is None and event.online is None:
                    return
                event = CommentBatch(
                    type=event.type,
                    data=event.data,
                    ts_ms=event.ts_ms,
                    comments=comments,
                    skipped=event.skipped,
                    likes=event.likes,
                    online=event.online,
                )
        elif isinstance(event, Lagged):
            self.stats.lagged_frames += event.dropped_frames
            self.stats.lagged_comments += event.dropped_comments
        self._events.put_nowait(event)

    def _lost(self, conn: int) -> None:
        """The connection ``conn`` dropped: what was sent on it and is unsafe to send again
        raises ConnectionLost; the rest waits for the next connection."""
        for rid, pending in list(self._pending.items()):
            if pending.sent_on == conn and not pending.resend and not pending.future.done():
                pending.future.set_exception(
                    ConnectionLost(
                        "connection_lost",
                        f"the connection dropped before the answer to {pending.message['type']!r}",
                        {"rid": rid},
                    )
                )

    def _finish(self, error: LiveError | None) -> None:
        if self._failure is None and error is not None:
            self._failure = error
        end = self._failure or Closed("closed", "the client is closed")
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(end)
        if self._first is not None and not self._first.done():
            self._first.set_exception(end)
        self._live = False
        self._closing = True
        self._events.put_nowait(_END)

    async def _write(self, pending: _Pending) -> None:
        ws = self._ws
        if ws is None:
            pending.sent_on = None
            return
        try:
            await ws.send(self._encode(pending.message))
        except ConnectionClosed:
            pending.sent_on = None  # not written: it goes on the next connection

    # -- commands -------------------------------------------------------------------------------

    def _new_rid(self) -> str:
        self._rid_next += 1
        return f"{self._rid_prefix}.{self._rid_next}"

    async def request(
        self,
        type: str,
        fields: Mapping[str, Any] | None = None,
        *,
        resend: bool = False,
        rid: str | None = None,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        """Send any command with a ``rid``; its ``ack`` (or ``pong``), or its error raised as
        the typed :class:`LiveError`. ``resend``: the server decides it once per ``rid``, so
        it is sent again (same rid) when the connection drops before the answer; else such a
        drop raises :class:`ConnectionLost`."""
        if self._failure is not None:
            raise self._failure
        if self._closing or self._task is None:
            raise Closed("closed", "the client is not connected")
        rid = _rid(rid) or self._new_rid()
        if rid in self._pending:
            raise ValueError(f"rid {rid!r} is in use by a command still waiting for its answer")
        message = {**(fields or {}), "type": type, "rid": rid}
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        pending = _Pending(message, future, resend)
        self._pending[rid] = pending
        try:
            if self._live:
                pending.sent_on = self._conn
                await self._write(pending)
            timeout = self.request_timeout_s if timeout_s is None else timeout_s
            try:
                return await asyncio.wait_for(future, timeout)
            except TimeoutError:
                raise RequestTimeout(
                    "timeout", f"no answer to {type!r} in {timeout:g} s", {"rid": rid}
                ) from None
        finally:
            self._pending.pop(rid, None)

    async def ping(self) -> int:
        """Round trip to the server; its clock (``server_time_ms``)."""
        reply = await self.request("ping", resend=True)
        return int(reply.get("server_time_ms", 0))

    async def comment(self, text: str) -> int:
        """Post a comment; its id (the room ``seq`` it got). Not sent twice: a dropped
        connection before the ack raises :class:`ConnectionLost`."""
        reply = await self.request("comment", {"text": _text("text", text)})
        return int(reply.get("seq", 0))

    async def like(self, count: int = 1) -> None:
        """Add likes (1-1000). Likes are never acked: this returns once they are written (or
        dropped, if the connection is down: likes are a gauge, not a record)."""
        message = {"type": "like", "count": _int("count", count, 1, 1000)}
        ws = self._ws
        if self._live and ws is not None:
            with contextlib.suppress(ConnectionClosed):
                await ws.send(self._encode(message))

    # buying (docs/protocol.md "Buying"): each decided once per rid, so sent again after a
    # lost answer

    async def reserve(self, sale_id: str, quantity: int = 1, *, rid: str | None = None) -> Hold:
        """Hold ``quantity`` units of a sale. Raises :class:`SoldOut`, :class:`LimitReached`,
        :class:`InsufficientStock`, :class:`NotStarted`, :class:`SaleOver`, ... A new attempt
        after a refusal is a new call (a new rid: the same rid gets the same decision)."""
        fields = {"sale_id": _id("sale_id", sale_id), "quantity": _int("quantity", quantity, 1, 1_000_000)}
        return build(Hold, await self.request("reserve", fields, resend=True, rid=rid))

    async def confirm(self, hold_id: str, coupon_id: str | None = None, *, rid: str | None = None) -> Order:
        """Pay for a hold; the order. Confirming again returns the same order, never charged twice."""
        fields: dict[str, Any] = {"hold_id": _id("hold_id", hold_id)}
        if coupon_id is not None:
            fields["coupon_id"] = _id("coupon_id", coupon_id)
        reply = await self.request("confirm", fields, resend=True, rid=rid)
        return build(Order, reply.get("order") or {})

    async def cancel(self, hold_id: str, *, rid: str | None = None) -> Cancelled:
        """Give a hold's units back. (Sent again after a lost answer, a cancel that took effect
        the first time raises :class:`HoldNotFound`.)"""
        reply = await self.request("cancel", {"hold_id": _id("hold_id", hold_id)}, resend=True, rid=rid)
        return build(Cancelled, reply)

    async def open_team(self, sale_id: str, quantity: int = 1, *, rid: str | None = None) -> Team:
        """Open a group buy (pays the group price); share the team's ``code``."""
        fields = {"sale_id": _id("sale_id", sale_id), "quantity": _int("quantity", quantity, 1, 1_000_000)}
        return build(Team, await self.request("open_team", fields, resend=True, rid=rid))

    async def join_team(self, sale_id: str, code: str, quantity: int = 1, *, rid: str | None = None) -> Team:
        fields = {
            "sale_id": _id("sale_id", sale_id),
            "code": _id("code", code),
            "quantity": _int("quantity", quantity, 1, 1_000_000),
        }
        return build(Team, await self.request("join_team", fields, resend=True, rid=rid))

    async def claim_coupon(self, sale_id: str, batch_id: str) -> Coupon:
        """Claim a coupon of a dropped batch (claiming again returns the same coupon)."""
        fields = {"sale_id": _id("sale_id", sale_id), "batch_id": _id("batch_id", batch_id)}
        return build(Coupon, await self.request("claim_coupon", fields, resend=True))

    # auctions, draws, polls, Q&A

    async def bid(self, auction_id: str, amount_cents: int, *, rid: str | None = None) -> Bid:
        """Bid (integer cents, 1 to 10^12). Raises :class:`BidTooLow` (``min_bid_cents``),
        :class:`AuctionOver`, :class:`OwnAuction`, ..."""
        fields = {
            "auction_id": _id("auction_id", auction_id),
            "amount_cents": _int("amount_cents", amount_cents, 1, 10**12),
        }
        return build(Bid, await self.request("bid", fields, resend=True, rid=rid))

    async def pay_auction(self, auction_id: str) -> Order:
        """Pay for an auction offered to you; paying again returns the same order."""
        reply = await self.request("pay_auction", {"auction_id": _id("auction_id", auction_id)}, resend=True)
        return build(Order, reply.get("order") or {})

    async def enter_draw(self, draw_id: str) -> bool:
        """Enter a lucky draw (entering again counts once)."""
        reply = await self.request("enter_draw", {"draw_id": _id("draw_id", draw_id)}, resend=True)
        return bool(reply.get("entered", True))

    async def claim_prize(self, draw_id: str) -> Prize:
        """Claim what you won in a draw (claiming again returns the same)."""
        return build(
            Prize, await self.request("claim_prize", {"draw_id": _id("draw_id", draw_id)}, resend=True)
        )

    async def vote(self, poll_id: str, option: int) -> Vote:
        """Vote for option ``option`` (its index) of a poll; voting is idempotent per user."""
        fields = {"poll_id": _id("poll_id", poll_id), "option": _int("option", option, 0, 1000)}
        return build(Vote, await self.request("vote", fields, resend=True))

    async def ask(self, text: str) -> Question:
        """Ask the host a question (the same rid names the same question)."""
        reply = await self.request("ask", {"text": _text("text", text)}, resend=True)
        return build(Question, reply.get("question") or {})

    async def upvote(self, question_id: str) -> int:
        """Upvote a question (once per user); its upvotes."""
        reply = await self.request("upvote", {"question_id": _id("question_id", question_id)}, resend=True)
        return int(reply.get("upvotes", 0))

    # hosts and moderators (acked; not sent twice)

    async def host_message(self, text: str) -> dict[str, Any]:
        return await self.request("host_message", {"text": _text("text", text)})

    async def pin_product(self, product_id: str) -> dict[str, Any]:
        return await self.request("pin_product", {"product_id": _id("product_id", product_id)})

    async def unpin_product(self) -> dict[str, Any]:
        return await self.request("unpin_product")

    async def mute(self, user_id: str, duration_s: int) -> None:
        """Refuse a user's comments for ``duration_s`` (1 s to 30 days)."""
        duration = _int("duration_s", duration_s, 1, 30 * 86400)
        await self.request("mute", {"user_id": _id("user_id", user_id), "duration_s": duration})

    async def unmute(self, user_id: str) -> None:
        await self.request("unmute", {"user_id": _id("user_id", user_id)})

    async def ban(self, user_id: str) -> None:
        """Ban a user from the room: their sockets close (4403), their handshakes are refused."""
        await self.request("ban", {"user_id": _id("user_id", user_id)})

    async def unban(self, user_id: str) -> None:
        await self.request("unban", {"user_id": _id("user_id", user_id)})

    async def delete_comment(self, comment_id: int) -> None:
        """Delete a comment (its id: the ``seq`` its ack and its batch gave it)."""
        await self.request("delete_comment", {"comment_id": _int("comment_id", comment_id, 1)})

    async def slow_mode(self, interval_s: int) -> None:
        """At most one comment per user per ``interval_s`` (0-3600; 0 turns it off)."""
        await self.request("slow_mode", {"interval_s": _int("interval_s", interval_s, 0, 3600)})

    async def clear_chat(self) -> None:
        await self.request("clear_chat")

    async def answer_question(self, question_id: str) -> Question:
        """Mark a question answered (it leaves the queue, unpinned); the question now."""
        return await self._staff_question("answer_question", question_id)

    async def pin_question(self, question_id: str) -> Question:
        """Pin a question for everyone (the one pinned before is unpinned)."""
        return await self._staff_question("pin_question", question_id)

    async def unpin_question(self, question_id: str) -> Question:
        return await self._staff_question("unpin_question", question_id)

    async def dismiss_question(self, question_id: str) -> Question:
        """Take a question out of the queue without answering it."""
        return await self._staff_question("dismiss_question", question_id)

    async def _staff_question(self, type: str, question_id: str) -> Question:
        # idempotent on the server (answering twice is question_closed, not a second answer),
        # but a refusal after a resend would hide the first success: not sent twice
        reply = await self.request(type, {"question_id": _id("question_id", question_id)})
        return build(Question, reply.get("question") or {})
