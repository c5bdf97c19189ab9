"""One client's WebSocket: a thin asyncio protocol around the sans-I/O ``websockets`` protocol.

``websockets.server.ServerProtocol`` parses the handshake and the client's frames (masking,
UTF-8, control frames, size limit); this class feeds it bytes, hands decoded commands to the
hub, and writes. Fan-out frames are written straight to the transport as prebuilt bytes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from websockets.datastructures import Headers
from websockets.exceptions import NegotiationError
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import Protocol, Side, State
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from gateway import close_codes, messages
from gateway.frames import PING, close_frame
from gateway.limits import TokenBucket
from gateway.messages import Framing, ProtocolError

if TYPE_CHECKING:
    from gateway.hub import Admission, Hub

log = logging.getLogger(__name__)

#: How long a closing connection may take to flush before it is cut.
CLOSE_TIMEOUT_S = 5.0
#: Frames kept from a client that talks before its welcome (the rest are dropped).
MAX_HELD_FRAMES = 16


def _select_subprotocol(_: ServerProtocol, offered: Sequence[Subprotocol]) -> Subprotocol | None:
    """Our preferred framing among those offered; none offered means JSON (browsers often
    offer none); only unknown ones offered fails the handshake (400)."""
    for name in messages.SUBPROTOCOLS:
        if name in offered:
            return Subprotocol(name)
    if offered:
        raise NegotiationError(
            f"unsupported subprotocol; this server speaks {', '.join(messages.SUBPROTOCOLS)}"
        )
    return None


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


class Connection(asyncio.Protocol):
    def __init__(self, hub: Hub, remote_ip: str) -> None:
        self.hub = hub
        self.remote_ip = remote_ip
        config = hub.config
        self.handshake = ServerProtocol(
            subprotocols=[Subprotocol(s) for s in messages.SUBPROTOCOLS],
            select_subprotocol=_select_subprotocol,
            max_size=config.max_frame_bytes,
        )
        #: The protocol in use: the handshake's until the upgrade, then a lighter one for frames.
        self.ws: Protocol = self.handshake
        self.transport: asyncio.Transport | None = None
        self.framing = Framing.JSON
        self.admission: Admission | None = None
        self.room_id = ""
        self.user_id = ""
        self.is_staff = False
        self.open = False
        #: Counted against the connection limits (from the start of the handshake).
        self.counted = False
        self.last_seen = time.monotonic()
        self.dropped_comments = 0
        self.dropped_frames = 0
        self.behind_since: float | None = None
        self.messages = TokenBucket(config.message_burst, config.message_rate_per_s)
        self.comments = TokenBucket(config.comment_burst, config.comment_rate_per_s)
        self.likes = TokenBucket(config.likes_per_s, config.likes_per_s)
        #: Refusals for flooding a client may have before it is closed (1008); they are
        #: forgiven over flood_window_s, so a client that is only now and then too fast stays.
        self.strikes = TokenBucket(config.message_burst, config.message_burst / config.flood_window_s)
        #: The last of this client's commands that run asynchronously (see Hub.handle).
        self.last_command: asyncio.Task[None] | None = None
        self._timers: list[asyncio.TimerHandle] = []
        self._cutoff = False
        #: The write side is half-closed: nothing more can be written.
        self._eof_written = False
        self._joined = False
        self._held_frames: list[Frame] = []

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)
        loop = asyncio.get_running_loop()
        self._handshake_timer = loop.call_later(self.hub.config.handshake_timeout_s, self._handshake_timeout)
        self._timers.append(self._handshake_timer)

    def data_received(self, data: bytes) -> None:
        self.last_seen = time.monotonic()
        self.ws.receive_data(data)
        for event in self.ws.events_received():
            if isinstance(event, Request):
                self.hub.start_handshake(self, event)
            elif isinstance(event, Frame):
                if self._joined:
                    self._on_frame(event)
                elif len(self._held_frames) < MAX_HELD_FRAMES:
                    self._held_frames.append(event)  # sent before its welcome: handled once joined
        self._flush_protocol()

    def eof_received(self) -> bool | None:
        self.ws.receive_eof()
        self._flush_protocol()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in self._timers:
            timer.cancel()
        if self.open:
            self.open = False
            self.hub.leave(self)
        self.hub.forget(self)

    # -- handshake ----------------------------------------------------------------------------

    def accept(self, request: Request) -> bool:
        """Complete the upgrade; False if the request is not a valid WebSocket handshake, or
        the client broke the protocol while it waited (a frame too big before the upgrade)."""
        if self._eof_written:
            return False
        handshake = self.handshake
        response = handshake.accept(request)
        handshake.send_response(response)
        self._flush_protocol()
        if response.status_code != 101:
            return False
        if handshake.subprotocol == Framing.MSGPACK.value:
            self.framing = Framing.MSGPACK
        # The handshake protocol keeps the request and response (headers: a few KiB) for the
        # life of the connection; a fresh frame-level protocol keeps nothing of them.
        leftover = bytes(handshake.reader.buffer)
        self.ws = Protocol(Side.SERVER, state=State.OPEN, max_size=self.hub.config.max_frame_bytes)
        del self.handshake
        self._handshake_timer.cancel()
        self._timers.remove(self._handshake_timer)
        self.open = True
        # Nothing the client sends is handled before its welcome is out: frames that came
        # right behind the request are held, and reading pauses until joined().
        if self.transport is not None:
            self.transport.pause_reading()
        if leftover:
            self.data_received(leftover)
        return True

    def joined(self) -> None:
        """The welcome is sent: handle the client's messages from now on."""
        self._joined = True
        held, self._held_frames = self._held_frames, []
        for frame in held:
            self._on_frame(frame)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def refuse(self, status: int, body: bytes) -> None:
        """Answer the handshake with an HTTP error and a JSON body, then close."""
        reason = {
            400: "Bad Request",
            401: "Unauthorized",
            403: "Forbidden",
            404: "Not Found",
            429: "Too Many Requests",
            503: "Service Unavailable",
        }.get(status, "Error")
        headers = Headers(
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                ("Connection", "close"),
            ]
        )
        self.handshake.send_response(Response(status, reason, headers, body))
        self._flush_protocol()
        if self.transport is not None:
            self.transport.close()

    def _handshake_timeout(self) -> None:
        if not self.open and self.transport is not None:
            self.hub.count_error("handshake_timeout")
            self.transport.abort()

    def set_expiry(self, delay_s: float) -> None:
        loop = asyncio.get_running_loop()
        self._timers.append(
            loop.call_later(
                max(0.0, delay_s),
                self.close,
                close_codes.TOKEN_EXPIRED,
                '{"code":"token_expired"}',
            )
        )

    # -- frames in ----------------------------------------------------------------------------

    def _on_frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.PING or frame.opcode is Opcode.PONG:
            # websockets has queued the pong already (its bytes count toward the send buffer,
            # see _flush_protocol); control frames share the message rate, so a ping flood is
            # a flood like any other, also while the connection is closing.
            if not self.messages.take():
                self._too_fast(None)
            return
        if not self.open or frame.opcode is Opcode.CLOSE:
            return  # websockets answers a close; the connection is ending
        self.hub.metrics.frames_in(1)
        if frame.opcode is Opcode.CONT or not frame.fin:
            self.close(close_codes.UNSUPPORTED, '{"code":"fragmented"}')
            return
        data = bytes(frame.data)
        if frame.opcode is Opcode.TEXT and not _is_utf8(data):
            # RFC 6455 8.1: a text frame that is not UTF-8 fails the connection (1007).
            self.hub.count_error("invalid_utf8")
            self._fail(close_codes.INVALID_DATA, "invalid UTF-8")
            return
        if not self.messages.take():
            self._too_fast(ProtocolError("rate_limited", "too many messages; slow down"))
            return
        try:
            command = messages.decode(self.framing, int(frame.opcode), data)
        except ProtocolError as exc:
            self.send_error(exc)
            return
        self.hub.handle(self, command)

    def _too_fast(self, refusal: ProtocolError | None) -> None:
        """A frame over the message rate: refused (told with ``refusal``, for a message), or,
        past the flood tolerance, the connection is failed (1008)."""
        if self.strikes.take():
            if refusal is not None:
                self.send_error(refusal)
            return
        if self.ws.state is State.CLOSED or self._eof_written:
            return  # failed already
        self.hub.count_error("flood")
        # Fail rather than close: nothing more the client sends is read or answered (no
        # pongs for the rest of a ping flood), and the close frame still goes out.
        self._fail(close_codes.POLICY, '{"code":"flood"}')

    # -- frames out ---------------------------------------------------------------------------

    def write(self, data: bytes) -> bool:
        """Queue bytes for the client: every write of this connection goes through here
        (protocol frames, pongs and close frames included; the room fan-out inlines the same
        check), so everything queued counts toward send_buffer_hard_bytes. Past it the client
        is closed (4409). False if nothing could be written."""
        transport = self.transport
        if transport is None or transport.is_closing() or self._eof_written:
            return False
        transport.write(data)
        if transport.get_write_buffer_size() > self.hub.config.send_buffer_hard_bytes:
            self.close_slow()
            return False
        return True

    def send(self, message: dict[str, Any]) -> None:
        if self.open and self.write(messages.frame(self.framing, message)):
            self.hub.metrics.frames_out(1)

    def send_error(self, exc: ProtocolError) -> None:
        self.hub.count_error(exc.code)
        self.send(messages.error(exc.code, exc.message, exc.rid, exc.data))

    def write_droppable(self, data: bytes, comments: int, now: float) -> int:
        """Write a chat/likes batch unless this client is behind; returns frames written."""
        transport = self.transport
        if not self.open or transport is None:
            return 0
        if transport.get_write_buffer_size() > self.hub.config.send_buffer_soft_bytes:
            self.dropped_comments += comments
            self.dropped_frames += 1
            if self.behind_since is None:
                self.behind_since = now
            elif now - self.behind_since > self.hub.config.slow_grace_s:
                self.close_slow()
            return 0
        if self.behind_since is not None:
            self.behind_since = None
            lagged = {
                "type": "lagged",
                "dropped_frames": self.dropped_frames,
                "dropped_comments": self.dropped_comments,
            }
            self.dropped_comments = self.dropped_frames = 0
            self.send(lagged)
        return 1 if self.write(data) else 0

    def ping(self) -> None:
        """Send a keep-alive ping; close a client that has been silent for two intervals."""
        if not self.open or self.transport is None:
            return
        if time.monotonic() - self.last_seen > 2 * self.hub.config.ping_interval_s:
            self.hub.count_error("idle_timeout")
            self.close(close_codes.IDLE_TIMEOUT, '{"code":"idle_timeout"}')
        else:
            self.write(PING)

    # -- closing ------------------------------------------------------------------------------

    def close(self, code: int, reason: str = "") -> None:
        """Start the closing handshake; the connection ends when the client answers, or is cut
        after CLOSE_TIMEOUT_S."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.open:
            self.open = False
            self.hub.leave(self)
        if self.ws.state is State.OPEN:
            self.ws.send_close(code, reason)
            self._flush_protocol()
        else:
            transport.close()

    def _fail(self, code: int, reason: str) -> None:
        """Fail the connection (RFC 6455 7.1.7): send a close frame, half-close, and discard
        whatever else the client sends until it closes (or CLOSE_TIMEOUT_S)."""
        if self.open:
            self.open = False
            self.hub.leave(self)
        if self.ws.state is State.OPEN or self.ws.state is State.CLOSING:
            self.ws.fail(code, reason)  # closing already: no second close frame, just the EOF
        self._flush_protocol()

    def close_slow(self) -> None:
        self.hub.count_error("slow_consumer")
        transport = self.transport
        if transport is not None and not transport.is_closing():
            if self.open:
                self.open = False
                self.hub.leave(self)
            # The buffer is full: the close frame would wait behind it, so cut now.
            if not self._eof_written:
                transport.write(close_frame(close_codes.SLOW_CONSUMER, '{"code":"slow_consumer"}'))
            transport.abort()

    def _flush_protocol(self) -> None:
        transport = self.transport
        if transport is None:
            return
        if self.open and self.ws.state is not State.OPEN:
            # closing (either side, or a protocol failure): no more room frames after this
            self.open = False
            self.hub.leave(self)
        for chunk in self.ws.data_to_send():
            if chunk:
                if not self.write(chunk):
                    return  # closed meanwhile (past the hard limit, say)
            elif not transport.is_closing() and not self._eof_written:
                # The protocol is done sending. Half-close rather than close: closing a socket
                # with unread input sends a TCP reset, which can destroy the close frame before
                # the client reads it (a 1009 for a frame too big arrives with the frame's rest
                # still unread). The protocol discards what comes in until the client's EOF.
                self._eof_written = True
                _write_eof(transport)
        if self.ws.state is State.CLOSED and not transport.is_closing():
            transport.close()
        elif self.ws.close_expected() and not self._cutoff:
            # We sent (or answered) a close: give the client CLOSE_TIMEOUT_S to end it, and
            # read meanwhile even before the welcome (the protocol discards or holds it).
            self._cutoff = True
            self._timers.append(asyncio.get_running_loop().call_later(CLOSE_TIMEOUT_S, transport.abort))
            if not transport.is_closing() and not transport.is_reading():
                transport.resume_reading()


def _write_eof(transport: asyncio.Transport) -> None:
    """Half-close the connection where the transport can (not TLS), else close it."""
    if transport.can_write_eof():
        try:
            transport.write_eof()
            return
        except (OSError, RuntimeError):  # uvloop raises RuntimeError on a closing stream
            pass
    transport.close()
