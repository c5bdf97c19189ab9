"""One port for everything: WebSocket upgrades under /ws/ go to the gateway, every other
request to the HTTP application (any asyncio protocol factory, e.g. aiohttp's ``web.Server``).

The front door reads only the request head (bounded in size and time), then hands the
connection and the bytes read so far to the protocol that serves it. Every TCP connection
arrives here first, so here is where connections are capped per address before anyone parses
them: those still sending their request head, and HTTP ones (keep-alive included) for as long
as they stay open. WebSockets are capped by the gateway (``GatewayConfig.max_connections*``).
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import cast

from gateway.admission import PATH_PREFIX
from gateway.hub import Hub

MAX_HEAD_BYTES = 16 * 1024

#: A connection refused on arrival waits this long at most for its request, then gets the
#: refusal: closing a socket with unread data in it sends a TCP reset, and the client would
#: see a reset instead of the answer.
REFUSAL_WAIT_S = 1.0


@dataclass(frozen=True)
class FrontLimits:
    #: Connections from one address that have not yet sent their whole request head.
    max_pending_per_ip: int = 1000
    #: Open HTTP (non-WebSocket) connections, keep-alive ones included: in all, and from one
    #: address.
    max_http: int = 2000
    max_http_per_ip: int = 100


class Gate:
    """The counts behind FrontLimits, shared by every connection of one listening server."""

    def __init__(self, limits: FrontLimits) -> None:
        self.limits = limits
        self.pending: Counter[str] = Counter()
        self.http: Counter[str] = Counter()
        self.http_total = 0

    def http_refusal(self, ip: str) -> tuple[int, str, str] | None:
        if self.http_total >= self.limits.max_http:
            return 503, "server_busy", "this server has too many HTTP connections; retry shortly"
        if self.http[ip] >= self.limits.max_http_per_ip:
            return 429, "too_many_connections", "too many HTTP connections from this address"
        return None


def _drop(counter: Counter[str], key: str) -> None:
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]


class FrontDoor(asyncio.Protocol):
    def __init__(self, hub: Hub, http: Callable[[], asyncio.Protocol], gate: Gate | None = None) -> None:
        self.hub = hub
        self.http = http
        self.gate = gate or Gate(FrontLimits())
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.ip = "unknown"
        #: Counted in gate.pending (from arrival until hand-over or close).
        self.pending = False
        #: The answer for a connection refused on arrival, sent once its request comes.
        self.refusal: tuple[int, str, str] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)
        self.ip = peer_ip(self.transport)
        loop = asyncio.get_running_loop()
        if self.gate.pending[self.ip] >= self.gate.limits.max_pending_per_ip:
            self.refusal = (429, "too_many_connections", "too many connections from this address")
            self.timer = loop.call_later(REFUSAL_WAIT_S, self._refuse, *self.refusal)
            return
        self.gate.pending[self.ip] += 1
        self.pending = True
        self.timer = loop.call_later(self.hub.config.handshake_timeout_s, self._too_slow)

    def data_received(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return  # refused: whatever else arrives is not read
        if self.refusal is not None:
            self._refuse(*self.refusal)
            return
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_HEAD_BYTES:
                self._refuse(431, "headers_too_large", f"the request head is over {MAX_HEAD_BYTES} bytes")
            return
        first_line = bytes(self.buffer[: self.buffer.find(b"\r\n")])
        parts = first_line.split(b" ")
        wants_gateway = len(parts) == 3 and parts[0] == b"GET" and parts[1].startswith(PATH_PREFIX.encode())
        if wants_gateway:
            self._hand_over(self.hub.connection(self.ip))
            return
        refusal = self.gate.http_refusal(self.ip)
        if refusal is not None:
            self._refuse(*refusal)
            return
        self._hand_over(HttpConnection(self.http(), self.gate, self.ip))

    def connection_lost(self, exc: Exception | None) -> None:
        self._leave()

    def _leave(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.pending:
            self.pending = False
            _drop(self.gate.pending, self.ip)

    def _hand_over(self, protocol: asyncio.Protocol) -> None:
        assert self.transport is not None
        self._leave()
        hand_over(self.transport, protocol, bytes(self.buffer))
        self.buffer.clear()

    def _too_slow(self) -> None:
        self.hub.count_error("handshake_timeout")
        if self.transport is not None:
            self.transport.abort()

    def _refuse(self, status: int, code: str, message: str) -> None:
        """Answer with a JSON error and close (once: nothing more is read after)."""
        self._leave()
        self.refusal = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self.hub.count_error(code)
        body = json.dumps({"error": {"code": code, "message": message}}).encode()
        head = (
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        transport.write(head.encode() + body)
        transport.close()


class HttpConnection(asyncio.Protocol):
    """The HTTP server's protocol for one connection, counted against the gate's HTTP limits
    from hand-over until it closes (or is handed on to the gateway, see ``hand_over``)."""

    def __init__(self, inner: asyncio.Protocol, gate: Gate, ip: str) -> None:
        self.inner = inner
        self.gate = gate
        self.ip = ip
        self.counted = True
        gate.http[ip] += 1
        gate.http_total += 1

    def release(self) -> None:
        if self.counted:
            self.counted = False
            _drop(self.gate.http, self.ip)
            self.gate.http_total -= 1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.release()
        self.inner.connection_lost(exc)


def hand_over(transport: asyncio.Transport, protocol: asyncio.Protocol, received: bytes) -> None:
    """Make ``protocol`` the owner of a live connection, replaying what was read so far."""
    previous = transport.get_protocol()
    if isinstance(previous, HttpConnection):  # a keep-alive connection turning WebSocket
        previous.release()
    transport.set_protocol(protocol)
    protocol.connection_made(transport)
    if received:
        protocol.data_received(received)


def peer_ip(transport: asyncio.Transport | None) -> str:
    peer = transport.get_extra_info("peername") if transport is not None else None
    return str(peer[0]) if peer else "unknown"
