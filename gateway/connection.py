"""One client's WebSocket: a thin asyncio protocol around its sans-I/O core.

``gateway.protocol.ConnectionCore`` decides everything (handshake and frames through the
websockets protocol, rate limits, backpressure, closing); this class feeds it what the socket
reads and the time, carries out its actions (writes, half-close, timers, pause/resume, the
hub's calls), and is what the hub and the room talk to: ``admit``, ``send``, ``send_priority``,
``send_batch``, ``close``, ``ping`` and a few read-only properties.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, cast

from websockets.http11 import Request

from gateway.admission import Admission
from gateway.close_codes import Close
from gateway.limits import TokenBucket
from gateway.messages import Framing, ProtocolError
from gateway.protocol import (
    Action,
    Authenticate,
    ConnectionCore,
    CountError,
    Handle,
    Handshake,
    Signal,
    Write,
)

if TYPE_CHECKING:
    from gateway.hub import Hub

log = logging.getLogger(__name__)

#: The core's actions that neither wait for the writes before them nor hold up those after.
_BESIDE_WRITES = (Signal.PAUSE_READING, Signal.RESUME_READING, Signal.FRAME_IN)
#: How long a closing connection may take to flush before it is cut.
CLOSE_TIMEOUT_S = 5.0


class Connection(asyncio.Protocol):
    # (asyncio.Protocol has empty slots: with these, a connection has no __dict__)
    __slots__ = (
        "_behind",
        "_core",
        "_corked",
        "_eof_written",
        "_expiry",
        "_handshake_timer",
        "_hard_bytes",
        "_open",
        "_running",
        "_soft_bytes",
        "_timers",
        "hub",
        "remote_ip",
        "transport",
    )

    def __init__(self, hub: Hub, remote_ip: str) -> None:
        self.hub = hub
        self.remote_ip = remote_ip
        self._core = ConnectionCore(hub.config, time.monotonic())
        # What the room's hot loops read, kept on this object: a fan-out to 10k members then
        # reads one object per member, not two (the core's copies are the truth: ``_sync``).
        self._hard_bytes = hub.config.send_buffer_hard_bytes
        self._soft_bytes = hub.config.send_buffer_soft_bytes
        self._open = False
        self._behind = False
        self.transport: asyncio.Transport | None = None
        self._timers: list[asyncio.TimerHandle] = []
        self._handshake_timer: asyncio.TimerHandle | None = None
        #: When the credential ends (``set_expiry``), in the hub's ``Expiries``.
        self._expiry: _Expiry | None = None
        #: The transport is half-closed: nothing more can be written.
        self._eof_written = False
        self._running = False
        #: Inside ``corked()``: the core's actions wait for the end of the block.
        self._corked = False

    # -- what the hub and the room read ---------------------------------------------------------

    @property
    def is_gone(self) -> bool:
        """The transport is closing or closed (the client left, or was answered and cut)."""
        return self.transport is None or self.transport.is_closing()

    @property
    def is_open(self) -> bool:
        """Upgraded and not closing: it gets room frames."""
        return self._open

    @property
    def admission(self) -> Admission | None:
        return self._core.admission

    @property
    def room_id(self) -> str:
        return self._core.room_id

    @property
    def user_id(self) -> str:
        return self._core.user_id

    @property
    def role(self) -> str:
        return self._core.role

    @property
    def is_staff(self) -> bool:
        return self._core.is_staff

    @property
    def framing(self) -> Framing:
        return self._core.framing

    @property
    def comments(self) -> TokenBucket:
        """This client's comment rate."""
        return self._core.comments

    @property
    def likes(self) -> TokenBucket:
        """This client's like rate."""
        return self._core.likes

    @property
    def buffered(self) -> int:
        """Bytes queued for the client and not yet sent."""
        return 0 if self.transport is None else self.transport.get_write_buffer_size()

    # -- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)
        loop = asyncio.get_running_loop()
        self._handshake_timer = loop.call_later(self.hub.config.handshake_timeout_s, self._handshake_timeout)
        self._timers.append(self._handshake_timer)

    def data_received(self, data: bytes) -> None:
        self._core.receive_data(data, time.monotonic())
        self._run()

    def eof_received(self) -> bool | None:
        self._core.receive_eof()
        self._run()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in self._timers:
            timer.cancel()
        if self._expiry is not None:
            self.hub.expiries.cancel(self._expiry)
            self._expiry = None
        self._core.connection_lost()
        self._run()
        self.hub.forget(self)

    # -- the hub's side -------------------------------------------------------------------------

    def admit(self, room_id: str, admission: Admission) -> None:
        """Who it is, before ``accept`` (frames sent right behind the request are handled as
        theirs), or after it with first-message auth (the handshake is over then)."""
        self._core.admit(room_id, admission)
        if self._core.open:
            self._handshake_done()

    def accept(self, request: Request, auth_by_message: bool = False) -> bool:
        """Complete the upgrade; False if the connection is closing, the request is not a
        valid WebSocket handshake, or the client broke the protocol while it waited.
        ``auth_by_message``: the first message says who it is (the hub's ``authenticate``),
        within what is left of the handshake timeout."""
        if self.transport is None or self.transport.is_closing():
            return False
        accepted = self._core.accept(request, time.monotonic(), auth_by_message)
        if accepted and not auth_by_message:
            self._handshake_done()
        self._run()
        return accepted

    def _handshake_done(self) -> None:
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._timers.remove(self._handshake_timer)
            self._handshake_timer = None

    def refuse_in_band(self, code: str, message: str, kind: Close, **fields: int) -> None:
        """Refuse a first-message auth: an ``error`` frame, then the close ``kind``."""
        self._core.refuse_in_band(code, message, kind, **fields)
        self._run()

    def joined(self) -> None:
        """The welcome is sent: handle the client's messages from now on."""
        self._core.joined(time.monotonic())
        self._run()

    def refuse(self, status: int, body: bytes) -> None:
        """Answer the handshake with an HTTP error and a JSON body, then close."""
        self._core.refuse(status, body)
        self._run()

    @contextlib.contextmanager
    def corked(self) -> Iterator[None]:
        """What the block sends goes out together, in one write: the 101, the welcome and
        the events a resuming client missed are one system call instead of one each (seven
        in a reconnect storm's resume), which is much of a handshake's cost."""
        self._corked = True
        try:
            yield
        finally:
            self._corked = False
            self._run()

    def set_expiry(self, delay_s: float) -> None:
        """Close with ``token_expired`` in ``delay_s`` (as a ``call_later`` would)."""
        expiries = self.hub.expiries
        if self._expiry is not None:
            expiries.cancel(self._expiry)
        self._expiry = expiries.add(self, delay_s)

    def send(self, message: dict[str, Any]) -> None:
        self._core.send(message)
        self._run()

    def send_error(self, exc: ProtocolError) -> None:
        self._core.send_error(exc)
        self._run()

    def send_priority(self, data: bytes) -> bool:
        """Write a priority frame (never dropped); past the hard limit the client is cut
        (4409). Whether it was written."""
        return Connection.send_priority_to((self,), data) == 1

    @staticmethod
    def send_priority_to(conns: Iterable[Connection], data: bytes) -> int:
        """``send_priority`` to many connections (a room's members): how many were written.
        The fan-out's hottest loop, so it runs here in one frame rather than as a call per
        member (which costs about a sixth of a priority event's fan-out)."""
        written = 0
        for conn in conns:
            transport = conn.transport
            if conn._open and transport is not None:
                transport.write(data)
                written += 1
                if transport.get_write_buffer_size() > conn._hard_bytes:
                    conn._core.slow_consumer()
                    conn._run()
        return written

    def send_batch(self, data: bytes, comments: int, now: float) -> bool:
        """Write a droppable chat/likes batch frame (carrying ``comments`` comments) unless
        this client is behind; whether it was written. The room's hot loop, like
        ``send_priority``: the common case (not behind, under the soft limit) is inlined."""
        transport = self.transport
        if not self._open or transport is None:
            return False
        buffered = transport.get_write_buffer_size()
        if not self._behind and buffered <= self._soft_bytes:
            transport.write(data)
            return True
        allowed = self._core.batch_allowed(buffered, comments, now)
        self._run()  # the lagged message (or the cut)
        return allowed and self._write(data)

    def ping(self) -> None:
        """Send a keep-alive ping; close a client that has been silent for two intervals."""
        if self.transport is not None:
            self._core.ping(time.monotonic())
            self._run()

    def close(self, kind: Close, **fields: int) -> None:
        """Start the closing handshake (``fields``: extra fields of the reason, ``retry_ms``);
        the connection ends when the client answers, or is cut after CLOSE_TIMEOUT_S."""
        if self.transport is None or self.transport.is_closing():
            return
        self._core.close(kind, **fields)
        self._run()

    def abort(self) -> None:
        """Cut the connection now (a shutdown that waited long enough)."""
        if self.transport is not None:
            self.transport.abort()

    # -- carrying out the core's actions --------------------------------------------------------

    def _run(self) -> None:
        """Carry out the core's actions, in order (called after every call into the core).
        Not re-entered: an action that calls back into the connection (the hub answering a
        command) queues its own, done next. Writes in a row go out as one, also with counts
        and reading's pause and resume between them."""
        self._sync()
        if self._running or self._corked:
            return
        self._running = True
        try:
            core = self._core
            writes: list[bytes] = []
            frames = 0
            while (action := core.next_action()) is not None:
                self._sync()
                if type(action) is Write:
                    writes.append(action.data)
                    frames += action.message
                    continue
                if type(action) is CountError or action in _BESIDE_WRITES:
                    # nothing a write must wait for, or come after: the writes around it go
                    # out as one (the 101, then the pause until the welcome, then the welcome)
                    self._do(action)
                    continue
                if writes:
                    self._write_out(writes, frames)
                    writes, frames = [], 0
                self._do(action)
            if writes:
                self._write_out(writes, frames)
        finally:
            self._running = False
            self._sync()

    def _write_out(self, writes: list[bytes], frames: int) -> None:
        if self._write(writes[0] if len(writes) == 1 else b"".join(writes)) and frames:
            self.hub.metrics.frames_out(frames)

    def _sync(self) -> None:
        core = self._core
        self._open = core.open
        self._behind = core.behind_since is not None

    def _do(self, action: Action) -> None:
        match action:
            case Handle(command):
                self.hub.handle(self, command)
            case Handshake(request):
                self.hub.start_handshake(self, request)
            case Authenticate(command):
                self.hub.authenticate(self, command)
            case CountError(kind):
                self.hub.count_error(kind)
            case Signal.LEFT:
                self.hub.leave(self)
            case Signal.FRAME_IN:
                self.hub.metrics.frames_in(1)
            case Signal():
                self._signal(action)

    def _signal(self, signal: Signal) -> None:
        transport = self.transport
        if transport is None:
            return
        if signal is Signal.START_CLOSE_TIMER:
            self._timers.append(asyncio.get_running_loop().call_later(CLOSE_TIMEOUT_S, transport.abort))
        elif signal is Signal.ABORT:
            transport.abort()
        elif transport.is_closing():
            return
        elif signal is Signal.CLOSE:
            transport.close()
        elif signal is Signal.WRITE_EOF:
            self._eof_written = True
            _write_eof(transport)
        elif signal is Signal.PAUSE_READING:
            transport.pause_reading()
        elif signal is Signal.RESUME_READING and not transport.is_reading():
            transport.resume_reading()

    def _write(self, data: bytes) -> bool:
        """Every write but the room's inlined ones: everything queued counts toward
        send_buffer_hard_bytes. False if nothing could be written, or the client was cut."""
        transport = self.transport
        if transport is None or transport.is_closing() or self._eof_written:
            return False
        transport.write(data)
        if not self._core.wrote(transport.get_write_buffer_size()):
            self._run()
            return False
        return True

    def _handshake_timeout(self) -> None:
        self._core.handshake_timeout()
        self._run()


def _write_eof(transport: asyncio.Transport) -> None:
    """Half-close the connection where the transport can (not TLS), else close it."""
    if transport.can_write_eof():
        try:
            transport.write_eof()
            return
        except (OSError, RuntimeError):  # uvloop raises RuntimeError on a closing stream
            pass
    transport.close()


class _Expiry:
    """One connection's place in ``Expiries`` (``conn`` None once cancelled or due)."""

    __slots__ = ("at", "conn")

    def __init__(self, at: float, conn: Connection) -> None:
        self.at = at
        self.conn: Connection | None = conn

    def __lt__(self, other: _Expiry) -> bool:
        return self.at < other.at


class Expiries:
    """When the connections' credentials end, with one loop timer for them all (set for the
    earliest) rather than one each: a timer handle costs about half a KiB per connection
    (docs/benchmarks.md, section 3). Each connection is closed at its deadline, as its own
    ``call_later`` would have. A cancelled entry stays in the heap until it comes up, or until
    cancelled ones are most of it (then the heap is rebuilt without them)."""

    __slots__ = ("_at", "_handle", "_heap", "_live")

    def __init__(self) -> None:
        self._heap: list[_Expiry] = []
        self._live = 0
        self._handle: asyncio.TimerHandle | None = None
        self._at = float("inf")

    def __len__(self) -> int:
        return self._live

    def add(self, conn: Connection, delay_s: float) -> _Expiry:
        loop = asyncio.get_running_loop()
        entry = _Expiry(loop.time() + max(0.0, delay_s), conn)
        heapq.heappush(self._heap, entry)
        self._live += 1
        self._arm(loop)
        return entry

    def cancel(self, entry: _Expiry) -> None:
        if entry.conn is None:
            return
        entry.conn = None
        self._live -= 1
        if not self._live:
            self._heap.clear()
            self._disarm()
        elif len(self._heap) > 2 * self._live + 64:
            self._heap = [e for e in self._heap if e.conn is not None]
            heapq.heapify(self._heap)

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        first = self._heap[0].at
        if first < self._at:
            self._disarm()
            self._handle = loop.call_at(first, self._fire, first)
            self._at = first

    def _disarm(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._at = float("inf")

    def _fire(self, at: float) -> None:
        self._handle = None
        self._at = float("inf")
        loop = asyncio.get_running_loop()
        # every entry the timer was set for is due, though the loop may run it a little early
        due = max(at, loop.time())
        heap = self._heap
        while heap and heap[0].at <= due:
            entry = heapq.heappop(heap)
            conn = entry.conn
            if conn is not None:
                entry.conn = None
                self._live -= 1
                conn._expiry = None
                conn.close(Close.TOKEN_EXPIRED)
        if heap:
            self._arm(loop)
