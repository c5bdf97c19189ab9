"""One port for everything: WebSocket upgrades under /ws/ go to the gateway, every other
request to the HTTP application (any asyncio protocol factory, e.g. aiohttp's ``web.Server``).

The front door reads only the request head (bounded in size and time), then hands the
connection and the bytes read so far to the protocol that serves it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

from gateway.hub import PATH_PREFIX, Hub

MAX_HEAD_BYTES = 16 * 1024


class FrontDoor(asyncio.Protocol):
    def __init__(self, hub: Hub, http: Callable[[], asyncio.Protocol]) -> None:
        self.hub = hub
        self.http = http
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(self.hub.config.handshake_timeout_s, self._too_slow)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_HEAD_BYTES:
                self._reject(b"431 Request Header Fields Too Large")
            return
        first_line = bytes(self.buffer[: self.buffer.find(b"\r\n")])
        parts = first_line.split(b" ")
        wants_gateway = len(parts) == 3 and parts[0] == b"GET" and parts[1].startswith(PATH_PREFIX.encode())
        self._hand_over(self.hub.connection(peer_ip(self.transport)) if wants_gateway else self.http())

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()

    def _hand_over(self, protocol: asyncio.Protocol) -> None:
        assert self.transport is not None
        if self.timer is not None:
            self.timer.cancel()
        hand_over(self.transport, protocol, bytes(self.buffer))
        self.buffer.clear()

    def _too_slow(self) -> None:
        self.hub.count_error("handshake_timeout")
        if self.transport is not None:
            self.transport.abort()

    def _reject(self, status: bytes) -> None:
        assert self.transport is not None
        self.hub.count_error("bad_request")
        self.transport.write(b"HTTP/1.1 " + status + b"\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
        self.transport.close()


def hand_over(transport: asyncio.Transport, protocol: asyncio.Protocol, received: bytes) -> None:
    """Make ``protocol`` the owner of a live connection, replaying what was read so far."""
    transport.set_protocol(protocol)
    protocol.connection_made(transport)
    if received:
        protocol.data_received(received)


def peer_ip(transport: asyncio.Transport | None) -> str:
    peer = transport.get_extra_info("peername") if transport is not None else None
    return str(peer[0]) if peer else "unknown"
