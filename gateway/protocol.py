"""The sans-I/O core of one client's WebSocket: bytes and events in, bytes and actions out.

Like websockets' own ``protocol.py`` (whose ``ServerProtocol`` parses the handshake and whose
``Protocol`` parses the frames after it), this does no I/O and reads no clock. The asyncio
adapter (``gateway/connection.py``) feeds it what the socket reads and the time, tells it the
bytes its transport holds where a decision depends on them (the send-buffer limits), and
carries out the actions it hands back, in order, through ``next_action()``.

It decides: frames held until the welcome, rate limits and flood strikes, what a fragmented,
non-UTF-8 or too-fast frame costs, the backpressure state (behind since when, what was
dropped, the ``lagged`` message once caught up, the soft and hard limits), closing, failing and
half-closing, and when a silent client is idle.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from websockets.datastructures import Headers
from websockets.exceptions import NegotiationError
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import Event, Protocol, Side, State
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

try:  # websockets' C unmasking, as its own parser uses it (the pure-Python one without it)
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover (a websockets built without its C extension)
    from websockets.utils import apply_mask

from gateway import messages
from gateway.admission import Admission, error_body
from gateway.close_codes import UNAVAILABLE_RETRY_MS, Close
from gateway.commands import STAFF
from gateway.config import GatewayConfig
from gateway.frames import PING, close_frame
from gateway.limits import TokenBucket
from gateway.messages import Command, Framing, ProtocolError
from gateway.request_head import parse_request

#: What a client waiting on a handshake the server took too long for is told.
SERVER_TOO_SLOW = "the server took too long to answer; retry"
#: Frames kept from a client that talks before its welcome (the rest are dropped).
MAX_HELD_FRAMES = 16
#: The frames of a message (the first of them is a first-message auth's).
_DATA = (Opcode.TEXT, Opcode.BINARY, Opcode.CONT)
#: What the fast path reads itself (``_read_frames``): whole, unfragmented text and binary
#: frames, and pings and pongs (handed to websockets, which answers pings), by first byte.
_FAST_DATA = {0x81: Opcode.TEXT, 0x82: Opcode.BINARY}
_FAST_CONTROL = (0x89, 0x8A)

#: An admission's room once its welcome is out (``ConnectionCore.joined``): nothing reads it.
_WELCOMED: dict[str, Any] = {}

_STATUS_PHRASES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    429: "Too Many Requests",
    503: "Service Unavailable",
}


class Signal(enum.Enum):
    """The actions that carry nothing but themselves."""

    #: Half-close the transport (or close it, where it cannot half-close).
    WRITE_EOF = enum.auto()
    CLOSE = enum.auto()
    #: Cut the connection now, whatever is still buffered.
    ABORT = enum.auto()
    PAUSE_READING = enum.auto()
    RESUME_READING = enum.auto()
    #: A close was sent or answered: abort if the client has not ended it in CLOSE_TIMEOUT_S.
    START_CLOSE_TIMER = enum.auto()
    #: The connection is no longer open: the hub takes it out of its room (once).
    LEFT = enum.auto()
    #: A client message frame arrived (for the metrics).
    FRAME_IN = enum.auto()


@dataclass(frozen=True, slots=True)
class Write:
    """Bytes for the transport."""

    data: bytes
    #: A server message (counted as a frame out); protocol frames (pongs, closes) are not.
    message: bool = False


@dataclass(frozen=True, slots=True)
class Handshake:
    """A complete upgrade request: the hub admits (``accept``) or refuses (``refuse``) it."""

    request: Request


@dataclass(frozen=True, slots=True)
class Handle:
    """A decoded client command, for the hub."""

    command: Command


@dataclass(frozen=True, slots=True)
class Authenticate:
    """First-message auth: the client's first message (decoded, not yet checked), for the hub
    to admit (``admit``) or refuse (``refuse_in_band``)."""

    command: Command


@dataclass(frozen=True, slots=True)
class CountError:
    """Something went wrong with this client (a metrics label)."""

    kind: str


Action = Signal | Write | Handshake | Handle | Authenticate | CountError


def select_subprotocol(_: ServerProtocol, offered: Sequence[Subprotocol]) -> Subprotocol | None:
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


class ConnectionCore:
    """One connection's protocol state. ``now`` is always ``time.monotonic()`` as the adapter
    read it."""

    # Slots, not a __dict__: its attributes are more than a shared-key instance dict holds
    # (30), so each connection would carry a dict of its own (1.5 KiB; docs/benchmarks.md 3).
    __slots__ = (
        "_actions",
        "_actions_at",
        "_behind_request",
        "_cutoff",
        "_events",
        "_events_at",
        "_fast",
        "_flush_due",
        "_handshake",
        "_head_fed",
        "_head_tail",
        "_held",
        "_now",
        "_pongs",
        "_unread",
        "_ws",
        "admission",
        "awaiting_auth_frame",
        "behind_since",
        "comments",
        "config",
        "dropped_comments",
        "dropped_frames",
        "eof_written",
        "framing",
        "hard_bytes",
        "is_joined",
        "is_staff",
        "last_seen",
        "likes",
        "messages",
        "open",
        "pending_auth",
        "room_id",
        "soft_bytes",
        "strikes",
        "transport_closing",
    )

    def __init__(self, config: GatewayConfig, now: float) -> None:
        self.config = config
        self.soft_bytes = config.send_buffer_soft_bytes
        self.hard_bytes = config.send_buffer_hard_bytes
        self._handshake: ServerProtocol | None = ServerProtocol(
            subprotocols=[Subprotocol(s) for s in messages.SUBPROTOCOLS],
            select_subprotocol=select_subprotocol,
            max_size=config.max_frame_bytes,
        )
        #: The protocol in use (``ws``): the handshake's until the upgrade, then a lighter one
        #: for frames, made when first needed (None until then).
        self._ws: Protocol | None = self._handshake
        #: Pongs for pings the fast path read while there is no frame-level protocol, with
        #: their ping: each goes out when its ping is handled (before the answers to what came
        #: after it), or at the next flush for a ping held before the welcome (None: none).
        self._pongs: list[tuple[Frame, bytes]] | None = None
        self.framing = Framing.JSON
        self.room_id = ""
        self.admission: Admission | None = None
        self.is_staff = False
        #: Upgraded and not closing: room frames and messages go out.
        self.open = False
        #: The welcome is out: frames are handled (before it, they are held).
        self.is_joined = False
        #: First-message auth: upgraded, and not yet admitted (the handshake timer still runs).
        self.pending_auth = False
        #: First-message auth: upgraded, and the first message has not come yet.
        self.awaiting_auth_frame = False
        self.last_seen = now
        self.dropped_comments = 0
        self.dropped_frames = 0
        self.behind_since: float | None = None
        self.messages = TokenBucket(config.message_burst, config.message_rate_per_s, now)
        self.comments = TokenBucket(config.comment_burst, config.comment_rate_per_s, now)
        self.likes = TokenBucket(config.likes_per_s, config.likes_per_s, now)
        #: Refusals for flooding a client may have before it is closed (1008); they are
        #: forgiven over flood_window_s, so a client that is only now and then too fast stays.
        self.strikes = TokenBucket(config.message_burst, config.message_burst / config.flood_window_s, now)
        #: The write side is (to be) half-closed: nothing more is written after what is queued.
        self.eof_written = False
        #: We closed or aborted the transport (or it is lost): nothing more goes out.
        self.transport_closing = False
        self._cutoff = False
        self._now = now
        self._held: list[Frame] = []
        #: Before the upgrade: the last bytes of the request head read so far (its end may be
        #: split across reads), then, once the head is complete, everything behind it, kept raw
        #: for the frame-level protocol (see ``receive_data``).
        self._head_tail = b""
        self._behind_request: bytearray | None = None
        #: Part of the head went to websockets' parser, which then parses all of it.
        self._head_fed = False
        #: Events parsed but not yet handled: handled one at a time as actions are taken, so
        #: whatever the hub does for one command (replies, a close) comes before the next.
        #: Both queues are lists read from ``_*_at`` on, emptied once all is read: an empty
        #: list holds no storage, where an empty deque keeps a 0.5 KiB block for good, and an
        #: idle connection's queues are empty (docs/benchmarks.md, section 3).
        self._events: list[Event | Signal] = []
        self._events_at = 0
        self._flush_due = False
        self._actions: list[Action] = []
        self._actions_at = 0
        #: After the upgrade, the frames of an open connection are read by ``_read_frames``
        #: (``_unread`` holds a frame not complete yet) until the first frame it leaves to
        #: websockets' own parser, which then reads everything.
        self._fast = False
        self._unread = bytearray()

    @property
    def ws(self) -> Protocol:
        """The websockets protocol. After the upgrade, the frame-level one is made when it is
        first needed: a fresh one is open with nothing to send, so until then none is needed,
        and an idle connection (whose pongs the fast path reads) never makes one (it costs
        about 1 KiB: docs/benchmarks.md, section 3)."""
        ws = self._ws
        if ws is None:
            ws = self._ws = Protocol(Side.SERVER, state=State.OPEN, max_size=self.config.max_frame_bytes)
            if self._pongs is not None:  # not sent yet: they go before anything it sends
                ws.writes.extend(pong for _, pong in self._pongs)
                self._pongs = None
        return ws

    # -- the adapter's side ---------------------------------------------------------------------

    def next_action(self) -> Action | None:
        """The next thing to do, or None when there is nothing more for now."""
        actions = self._actions
        while self._actions_at == len(actions):
            events = self._events
            if self._events_at < len(events):
                event = events[self._events_at]
                self._events_at += 1
                if self._events_at == len(events):
                    events.clear()
                    self._events_at = 0
                self._on_event(event)
            elif self._flush_due:
                self._flush_due = False
                self._flush()
            else:
                return None
        action = actions[self._actions_at]
        self._actions_at += 1
        if self._actions_at == len(actions):
            actions.clear()
            self._actions_at = 0
        return action

    def actions(self) -> list[Action]:
        """Every action due now, without carrying out any in between (tests, mostly)."""
        out = []
        while (action := self.next_action()) is not None:
            out.append(action)
        return out

    def receive_data(self, data: bytes, now: float) -> None:
        self.last_seen = self._now = now
        if self._handshake is not None:
            data = self._request_part(data)
            if not data:
                return
            if not self._head_fed and self._behind_request is not None:
                # the whole head in one read, as nearly always: parsed here if it is plain
                request = parse_request(data)
                if request is not None:
                    self._events.append(request)
                    self._flush_due = True
                    return
            self._head_fed = True
        if self._fast:
            self._unread += data
            self._read_frames()
        else:
            self._to_websockets(data)
        self._flush_due = True

    def receive_eof(self) -> None:
        self._leave_fast_path()  # a frame cut short by the EOF is websockets' to fail
        self.ws.receive_eof()
        self._flush_due = True

    def _to_websockets(self, data: bytes) -> None:
        self.ws.receive_data(data)
        self._events.extend(self.ws.events_received())

    def _read_frames(self) -> None:
        """The fast path of an open connection: parse the common frames here, without
        websockets' generator-based parser (the largest single cost of a small command).

        Only what needs no judgement is read here: a whole, unfragmented text or binary frame,
        masked, without reserved bits, within ``max_frame_bytes``. A ping or a pong goes to
        websockets as it is (the whole frame, so its parser always starts at a frame
        boundary), which answers the ping. Anything else (a close, a fragment, a frame that
        breaks the protocol, any frame once the connection is closing) and everything after it
        is websockets' to parse, as if the fast path had never been: the same events, the same
        failures, the same close codes."""
        buf = self._unread
        end = len(buf)
        pos = 0
        limit = self.config.max_frame_bytes
        leave = False
        while end - pos >= 2:
            first, second = buf[pos], buf[pos + 1]
            opcode = _FAST_DATA.get(first)
            length = second & 0x7F
            if (
                (self._ws is not None and self._ws.state is not State.OPEN)
                or (opcode is None and (first not in _FAST_CONTROL or length > 125))
                or not second & 0x80
            ):
                leave = True
                break
            at = pos + 2
            if length == 126:
                if end - at < 2:
                    break
                length = (buf[at] << 8) | buf[at + 1]
                at += 2
            elif length == 127:
                if end - at < 8:
                    break
                length = int.from_bytes(buf[at : at + 8], "big")
                at += 8
            if length > limit:
                leave = True  # websockets fails it: 1009
                break
            stop = at + 4 + length
            if stop > end:
                break  # the rest of this frame is still to come
            if opcode is None and self._ws is None:
                # A ping or a pong, and no protocol yet: what websockets would do with it (an
                # event, and for a ping its pong: out when the ping is handled) without one.
                mask = bytes(buf[at : at + 4])
                data = apply_mask(bytes(buf[at + 4 : stop]), mask)
                control = Frame(Opcode.PING if first == 0x89 else Opcode.PONG, data)
                if first == 0x89:
                    if self._pongs is None:
                        self._pongs = []
                    self._pongs.append((control, Frame(Opcode.PONG, data).serialize(mask=False)))
                self._events.append(control)
            elif opcode is None:
                self._to_websockets(bytes(buf[pos:stop]))
            else:
                mask = bytes(buf[at : at + 4])
                self._events.append(Frame(opcode, apply_mask(bytes(buf[at + 4 : stop]), mask)))
            pos = stop
        del buf[:pos]
        if leave:
            self._leave_fast_path()

    def _leave_fast_path(self) -> None:
        """From here on websockets parses everything, starting with what is unread."""
        if not self._fast:
            return
        self._fast = False
        rest, self._unread = bytes(self._unread), bytearray()
        if rest:
            self._to_websockets(rest)

    def _request_part(self, data: bytes) -> bytes:
        """Of bytes read before the upgrade, the part that belongs to the request head; the
        rest is kept raw until ``accept``. The handshake protocol must not parse what follows
        the head: it would take the frames it finds there, and a frame split across the
        upgrade would reach the frame-level protocol without the header it already parsed."""
        if self._behind_request is not None:
            self._behind_request += data
            if len(self._behind_request) > self.config.max_frame_bytes:
                # Enough kept for now: the kernel's buffers hold the rest until the welcome.
                self._actions.append(Signal.PAUSE_READING)
            return b""
        seen = self._head_tail + data
        end = seen.find(b"\r\n\r\n")
        if end < 0:
            self._head_tail = seen[-3:]
            return data
        cut = end + 4 - len(self._head_tail)
        self._head_tail = b""
        self._behind_request = bytearray(data[cut:])
        return data[:cut]

    def connection_lost(self) -> None:
        self.transport_closing = True
        self._leave()

    def handshake_timeout(self) -> None:
        """The handshake took too long (the adapter's timer, cancelled on upgrade, or with
        first-message auth once admitted). A client that has not sent its request head (or
        its auth message) is cut. One that has is waiting on the server (a slow backend, or a
        reconnect storm queued behind it): it is told to come back, with an HTTP 503, or
        upgraded, an ``unavailable`` error and the close 1001 with ``retry_ms``."""
        if self.transport_closing or not (self._handshake is not None or self.pending_auth):
            return
        self._actions.append(CountError("handshake_timeout"))
        if self._handshake is not None and self._behind_request is not None:
            self.refuse(503, error_body("unavailable", SERVER_TOO_SLOW))
        elif self.pending_auth and not self.awaiting_auth_frame:
            retry = UNAVAILABLE_RETRY_MS
            self.refuse_in_band("unavailable", SERVER_TOO_SLOW, Close.UNAVAILABLE, retry_ms=retry)
        else:
            self._abort()

    # -- the hub's side -------------------------------------------------------------------------

    @property
    def user_id(self) -> str:
        return "" if self.admission is None else self.admission.user_id

    @property
    def role(self) -> str:
        return "" if self.admission is None else self.admission.role

    def admit(self, room_id: str, admission: Admission) -> None:
        """Who this is (before ``accept``: frames pipelined behind the request are its)."""
        self.room_id = room_id
        self.admission = admission
        self.is_staff = admission.role in STAFF
        self.pending_auth = False

    def accept(self, request: Request, now: float, auth_by_message: bool = False) -> bool:
        """Complete the upgrade; False if the request is not a valid WebSocket handshake, or
        the client broke the protocol while it waited (a frame too big before the upgrade).
        ``auth_by_message``: not admitted yet; the first message is for the hub
        (``Authenticate``), and what follows it waits for the welcome."""
        handshake = self._handshake
        if handshake is None or self.eof_written or self.transport_closing:
            return False
        response = handshake.accept(request)
        handshake.send_response(response)
        self._flush()
        if response.status_code != 101:
            return False
        if handshake.subprotocol == Framing.MSGPACK.value:
            self.framing = Framing.MSGPACK
        # The handshake protocol keeps the request and response (headers: a few KiB) for the
        # life of the connection; a fresh frame-level protocol keeps nothing of them, and
        # parses what the client sent behind its request from the first byte.
        leftover = bytes(self._behind_request or b"")
        self._behind_request = None
        self._ws = None  # (the ``ws`` property makes it when first needed)
        self._handshake = None
        self._fast = True
        self.open = True
        if auth_by_message:
            # read on until the first message has come (then pause: _on_auth_frame)
            self.pending_auth = self.awaiting_auth_frame = True
        else:
            # Nothing the client sends is handled before its welcome is out: frames that came
            # right behind the request are held, and reading pauses until joined().
            self._actions.append(Signal.PAUSE_READING)
        if leftover:
            self.receive_data(leftover, now)
        return True

    def joined(self, now: float) -> None:
        """The welcome is sent: handle the client's messages from now on, held ones first."""
        self._now = now
        self.is_joined = True
        if self.admission is not None and (self.admission.room or self.admission.you is not None):
            # The room and the ``you`` are the welcome's (out now): what the connection keeps of
            # its admission from here on is who it is (a copy of each per connection, over
            # 1 KiB: docs/benchmarks.md, section 3).
            self.admission = replace(self.admission, room=_WELCOMED, you=None)
        held, self._held = self._held, []
        self._events.extend(held)
        self._events.append(Signal.RESUME_READING)  # once they are handled

    def refuse(self, status: int, body: bytes) -> None:
        """Answer the handshake with an HTTP error and a JSON body, then close."""
        if self._handshake is None or self.transport_closing:
            return
        headers = Headers(
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                ("Connection", "close"),
            ]
        )
        self._handshake.send_response(Response(status, _STATUS_PHRASES.get(status, "Error"), headers, body))
        self._flush()
        self._close_transport()

    def refuse_in_band(self, code: str, message: str, kind: Close, **fields: int) -> None:
        """Refuse a first-message auth: an ``error`` frame with the refusal's code and message,
        then the close ``kind`` (``fields``: the reason's extra fields, ``retry_ms``)."""
        self.pending_auth = False  # answered: the close's own timer ends it now
        self.send_error(ProtocolError(code, message))
        self.close(kind, **fields)

    def send(self, message: dict[str, Any]) -> None:
        if self.open:
            self._actions.append(Write(messages.frame(self.framing, message), message=True))

    def send_error(self, exc: ProtocolError) -> None:
        self._actions.append(CountError(exc.code))
        self.send(messages.error(exc.code, exc.message, exc.rid, exc.data))

    def batch_allowed(self, buffered: int, comments: int, now: float) -> bool:
        """Whether a droppable chat/likes batch may go out, the transport holding ``buffered``
        bytes. Past the soft limit it is dropped (and counted), and a client behind for longer
        than slow_grace_s is cut; one that caught up is told first what it missed."""
        if buffered > self.soft_bytes:
            self.dropped_comments += comments
            self.dropped_frames += 1
            if self.behind_since is None:
                self.behind_since = now
            elif now - self.behind_since > self.config.slow_grace_s:
                self.slow_consumer()
            return False
        if self.behind_since is not None:
            self.behind_since = None
            lagged = messages.lagged(self.dropped_frames, self.dropped_comments)
            self.dropped_comments = self.dropped_frames = 0
            self.send(lagged)
        return True

    def wrote(self, buffered: int) -> bool:
        """A write left ``buffered`` bytes in the transport: past the hard limit the client is
        cut (4409). Whether the connection may go on."""
        if buffered > self.hard_bytes:
            self.slow_consumer()
            return False
        return True

    def ping(self, now: float) -> None:
        """Send a keep-alive ping; close a client that has been silent for two intervals."""
        if not self.open:
            return
        if now - self.last_seen > 2 * self.config.ping_interval_s:
            self._actions.append(CountError("idle_timeout"))
            self.close(Close.IDLE_TIMEOUT)
        else:
            self._actions.append(Write(PING))

    def close(self, kind: Close, **fields: int) -> None:
        """Start the closing handshake; the connection ends when the client answers, or is cut
        after CLOSE_TIMEOUT_S."""
        if self.transport_closing:
            return
        self._leave()
        if self.ws.state is State.OPEN:
            self.ws.send_close(kind.code, kind.reason(**fields))
            self._flush()
        else:
            self._close_transport()

    def slow_consumer(self) -> None:
        """The client reads too slowly: cut it (4409). The buffer is full, so a close frame
        would wait behind it: it is written last, and the connection aborted."""
        if self.transport_closing:
            return  # cut already (the close frame's own write may be past the limit too)
        self._actions.append(CountError("slow_consumer"))
        self._leave()
        if not self.eof_written:
            kind = Close.SLOW_CONSUMER
            self._actions.append(Write(close_frame(kind.code, kind.reason())))
        self._abort()

    # -- frames in ------------------------------------------------------------------------------

    def _on_event(self, event: Event | Signal) -> None:
        if event is Signal.RESUME_READING:
            if not self.transport_closing:
                self._actions.append(event)
        elif isinstance(event, Request):
            self._actions.append(Handshake(event))
        elif not isinstance(event, Frame):
            return  # (a Response: only a client's protocol parses those)
        elif self.is_joined:
            self._on_frame(event)
        elif self.awaiting_auth_frame and event.opcode in _DATA:
            self._on_auth_frame(event)
        elif len(self._held) < MAX_HELD_FRAMES:
            self._held.append(event)  # sent before its welcome: handled once joined

    def _on_frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.PING or frame.opcode is Opcode.PONG:
            # The fast path's pong goes out now, in turn; websockets has queued its own already
            # (its bytes count toward the send buffer). Control frames share the message rate,
            # so a ping flood is a flood like any other, also while the connection is closing.
            if self._pongs and self._pongs[0][0] is frame:
                self._actions.append(Write(self._pongs.pop(0)[1]))
            if not self.messages.take(now=self._now):
                self._too_fast(None)
            return
        if not self.open or frame.opcode is Opcode.CLOSE:
            return  # websockets answers a close; the connection is ending
        self._actions.append(Signal.FRAME_IN)
        if frame.opcode is Opcode.CONT or not frame.fin:
            self.close(Close.FRAGMENTED)
            return
        data = bytes(frame.data)
        if frame.opcode is Opcode.TEXT and not _is_utf8(data):
            # RFC 6455 8.1: a text frame that is not UTF-8 fails the connection (1007).
            self._actions.append(CountError("invalid_utf8"))
            self._fail(Close.INVALID_UTF8)
            return
        if not self.messages.take(now=self._now):
            self._too_fast(ProtocolError("rate_limited", "too many messages; slow down"))
            return
        try:
            command = messages.decode(self.framing, int(frame.opcode), data)
        except ProtocolError as exc:
            self.send_error(exc)
            return
        self._actions.append(Handle(command))

    def _on_auth_frame(self, frame: Frame) -> None:
        """The first message of a first-message auth: decoded here, checked and admitted by the
        hub. Anything that is not even a message is refused at once, as no usable token."""
        self.awaiting_auth_frame = False
        self._actions.append(Signal.FRAME_IN)
        self._actions.append(Signal.PAUSE_READING)  # what follows waits for the welcome
        if frame.opcode is Opcode.CONT or not frame.fin:
            self.close(Close.FRAGMENTED)
            return
        data = bytes(frame.data)
        if frame.opcode is Opcode.TEXT and not _is_utf8(data):
            self._actions.append(CountError("invalid_utf8"))
            self._fail(Close.INVALID_UTF8)
            return
        try:
            command = messages.decode(self.framing, int(frame.opcode), data)
        except ProtocolError as exc:
            self.refuse_in_band(exc.code, exc.message, Close.TOKEN_MISSING)
            return
        self._actions.append(Authenticate(command))

    def _too_fast(self, refusal: ProtocolError | None) -> None:
        """A frame over the message rate: refused (told with ``refusal``, for a message), or,
        past the flood tolerance, the connection is failed (1008)."""
        if self.strikes.take(now=self._now):
            if refusal is not None:
                self.send_error(refusal)
            return
        if self.ws.state is State.CLOSED or self.eof_written:
            return  # failed already
        self._actions.append(CountError("flood"))
        # Fail rather than close: nothing more the client sends is read or answered (no
        # pongs for the rest of a ping flood), and the close frame still goes out.
        self._fail(Close.FLOOD)

    # -- closing --------------------------------------------------------------------------------

    def _fail(self, kind: Close) -> None:
        """Fail the connection (RFC 6455 7.1.7): send a close frame, half-close, and discard
        whatever else the client sends until it closes (or CLOSE_TIMEOUT_S)."""
        self._leave()
        if self.ws.state is State.OPEN or self.ws.state is State.CLOSING:
            self.ws.fail(kind.code, kind.reason())  # closing already: no second close frame
        self._flush()

    def _leave(self) -> None:
        if self.open:
            self.open = False
            self._actions.append(Signal.LEFT)

    def _close_transport(self) -> None:
        self.transport_closing = True
        self._actions.append(Signal.CLOSE)

    def _abort(self) -> None:
        self.transport_closing = True
        self._actions.append(Signal.ABORT)

    def _flush(self) -> None:
        """Queue what the websockets protocol has to send, and end the connection when it is
        done."""
        if self._ws is None:
            # No frame-level protocol yet (``ws``): open, nothing to send but pongs.
            pongs, self._pongs = self._pongs, None
            for _, pong in pongs or ():
                if self.transport_closing or self.eof_written:
                    break
                self._actions.append(Write(pong))
            return
        if self.open and self.ws.state is not State.OPEN:
            # closing (either side, or a protocol failure): no more room frames after this
            self._leave()
        for chunk in self.ws.data_to_send():
            if self.transport_closing or self.eof_written:
                break
            if chunk:
                self._actions.append(Write(chunk))
            else:
                # The protocol is done sending. Half-close rather than close: closing a socket
                # with unread input sends a TCP reset, which can destroy the close frame before
                # the client reads it (a 1009 for a frame too big arrives with the frame's rest
                # still unread). The protocol discards what comes in until the client's EOF.
                self.eof_written = True
                self._actions.append(Signal.WRITE_EOF)
        if self.ws.state is State.CLOSED and not self.transport_closing:
            self._close_transport()
        elif self.ws.close_expected() and not self._cutoff:
            # We sent (or answered) a close: give the client CLOSE_TIMEOUT_S to end it, and
            # read meanwhile even before the welcome (the protocol discards or holds it).
            self._cutoff = True
            self._actions.append(Signal.START_CLOSE_TIMER)
            if not self.transport_closing:
                self._actions.append(Signal.RESUME_READING)
