"""A minimal WebSocket client (RFC 6455) as a plain asyncio protocol, for load generation.

Why not the websockets or aiohttp clients: a harness process holds up to ~10,000 viewers that
each receive ~10 frames a second, on a machine it shares with the server. A reader task per
connection costs a task wake-up per frame; here frames are cut in ``data_received`` and handed
to a plain callback, so a frame costs a few microseconds and the harness stays out of the way
of what it measures.

Limits, fine for a load generator: no extensions, no fragmented messages, the handshake's
Sec-WebSocket-Accept is not checked, and server frames are taken as unmasked (RFC 6455 5.1).
Only this module touches sockets; what a frame means is the caller's business.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

#: (connection, payload of a text or binary frame, monotonic time the bytes arrived)
OnFrame = Callable[["WsConnection", bytes, float], None]


class HandshakeError(ConnectionError):
    """The server answered the upgrade with something other than 101."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"handshake refused: HTTP {status} {body[:200]}")
        self.status = status
        self.body = body


def _mask(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    if not n:
        return b""
    keys = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(keys, "big")).to_bytes(n, "big")


def client_frame(opcode: int, payload: bytes) -> bytes:
    """One final frame, masked as a client must."""
    n = len(payload)
    first = 0x80 | opcode
    if n < 126:
        header = struct.pack("!BB", first, 0x80 | n)
    elif n < 1 << 16:
        header = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, n)
    key = os.urandom(4)
    return header + key + _mask(payload, key)


class WsConnection(asyncio.Protocol):
    """One client connection. ``on_frame`` gets every text/binary payload; pings are answered
    here; a close frame is echoed and records ``close_code``. With ``discard`` an open
    connection does not even cut frames: it only keeps the socket drained (so the server never
    sees a slow consumer) and counts bytes, for the benchmarks' 10,000 passive viewers."""

    def __init__(self, on_frame: OnFrame, binary: bool, discard: bool = False) -> None:
        loop = asyncio.get_running_loop()
        self.on_frame = on_frame
        self.discard = discard
        self.opcode = OP_BINARY if binary else OP_TEXT
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()
        self.is_open = False
        self.close_code: int | None = None
        self.closing = False
        self.bytes_in = 0
        self._buf = bytearray()

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.bytes_in += len(data)
        if self.is_open and (self.discard or (not self._buf and self._one_frame(data))):
            return
        self._buf += data
        if not self.is_open and not self._handshake():
            return
        self._parse(time.monotonic())

    def connection_lost(self, exc: Exception | None) -> None:
        self.is_open = False
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"connection lost in the handshake: {exc!r}"))
        if not self.lost.done():
            self.lost.set_result(None)

    # -- frames -------------------------------------------------------------------------------

    def _handshake(self) -> bool:
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(self._buf[:end])
        del self._buf[: end + 4]
        status_line = head.split(b"\r\n", 1)[0].decode(errors="replace")
        parts = status_line.split(" ", 2)
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        if self.opened.done():
            # connect() gave up (its timeout cancelled this) as the answer arrived: nobody waits
            assert self.transport is not None
            self.transport.abort()
            return False
        if status != 101:
            # The JSON error body may still be arriving; what came with the head is enough.
            self.opened.set_exception(HandshakeError(status, self._buf.decode(errors="replace")))
            assert self.transport is not None
            self.transport.close()
            return False
        self.is_open = True
        self.opened.set_result(None)
        if self.discard:
            self._buf.clear()
            return False
        return True

    def _one_frame(self, data: bytes) -> bool:
        """The common case, one whole data frame in one read, without copying it around;
        False leaves anything else to ``_parse``."""
        size = len(data)
        if size < 2 or data[0] & 0x0F not in (OP_TEXT, OP_BINARY):
            return False
        length = data[1] & 0x7F
        start = 2
        if length == 126:
            if size < 4:
                return False
            length = (data[2] << 8) | data[3]
            start = 4
        elif length == 127:
            return False
        if start + length != size:
            return False
        self.on_frame(self, data[start:], time.monotonic())
        return True

    def _parse(self, now: float) -> None:
        buf = self._buf
        size = len(buf)
        pos = 0
        while size - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            length = b1 & 0x7F
            start = pos + 2
            if length == 126:
                if size - pos < 4:
                    break
                length = (buf[pos + 2] << 8) | buf[pos + 3]
                start = pos + 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                start = pos + 10
            end = start + length
            if end > size:
                break
            payload = bytes(buf[start:end])
            pos = end
            opcode = b0 & 0x0F
            if opcode in (OP_TEXT, OP_BINARY):
                self.on_frame(self, payload, now)
            elif opcode == OP_PING:
                self.send_frame(OP_PONG, payload)
            elif opcode == OP_CLOSE:
                self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                if not self.closing:
                    self.send_frame(OP_CLOSE, payload[:2])
                assert self.transport is not None
                self.transport.close()
                break
        if pos:
            del buf[:pos]

    def send_frame(self, opcode: int, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(client_frame(opcode, payload))

    def send(self, payload: bytes) -> bool:
        """Send one message in the connection's framing; False if the connection is gone."""
        if self.transport is None or self.transport.is_closing() or not self.is_open:
            return False
        self.transport.write(client_frame(self.opcode, payload))
        return True

    async def close(self, code: int = 1000, timeout_s: float = 2.0) -> None:
        """Close politely: send a close frame, wait for the server's, then drop the socket."""
        if self.transport is None or self.transport.is_closing():
            return
        self.closing = True
        self.transport.write(client_frame(OP_CLOSE, struct.pack("!H", code)))
        try:
            await asyncio.wait_for(asyncio.shield(self.lost), timeout_s)
        except TimeoutError:
            self.transport.abort()


@dataclass(frozen=True)
class Endpoint:
    """Where to connect: ws://host:port/path, optionally from a given source address."""

    host: str
    port: int
    path: str
    source: str | None = None


async def connect(
    endpoint: Endpoint,
    on_frame: OnFrame,
    *,
    subprotocol: str | None,
    token: str | None = None,
    timeout_s: float = 30.0,
    discard: bool = False,
) -> WsConnection:
    """Open a WebSocket; returns once the server answered 101 (raises HandshakeError, OSError
    or TimeoutError otherwise). ``subprotocol`` None offers none (the server's default
    framing); ``discard``: see WsConnection."""
    loop = asyncio.get_running_loop()
    binary = subprotocol is not None and subprotocol.endswith("msgpack")
    local = (endpoint.source, 0) if endpoint.source else None
    transport, conn = await asyncio.wait_for(
        loop.create_connection(
            lambda: WsConnection(on_frame, binary, discard), endpoint.host, endpoint.port, local_addr=local
        ),
        timeout_s,
    )
    key = base64.b64encode(os.urandom(16)).decode()
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    offer = f"Sec-WebSocket-Protocol: {subprotocol}\r\n" if subprotocol else ""
    transport.write(
        (
            f"GET {endpoint.path} HTTP/1.1\r\nHost: {endpoint.host}:{endpoint.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"{offer}{auth}\r\n"
        ).encode()
    )
    try:
        await asyncio.wait_for(conn.opened, timeout_s)
    except BaseException:
        transport.abort()
        raise
    return conn
