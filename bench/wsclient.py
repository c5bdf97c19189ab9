"""A minimal WebSocket client (RFC 6455) as a plain asyncio protocol, for load generation.

Why not aiohttp here: the storm has 10,000 viewers each receiving ~10 frames a second on a
2-core machine shared with the server, and a reader task per connection (aiohttp) costs a
task wake-up per frame. This protocol parses frames in ``data_received`` and calls a plain
function, and a connection in ``discard`` mode does not even parse: it only keeps the socket
drained (so the server never sees it as a slow consumer) and counts bytes.

Limits, fine for a benchmark against our own servers: no extensions, no fragmented messages,
the handshake's Sec-WebSocket-Accept is not checked, and frames from the server are assumed
unmasked (RFC 6455 5.1).
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import time
from collections.abc import Callable
from typing import Any

OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

#: (client, opcode, payload, monotonic time the bytes arrived)
OnMessage = Callable[["Client", int, bytes, float], None]


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


PING_FRAME = client_frame(OP_PING, b"")


class Client(asyncio.Protocol):
    def __init__(self, on_message: OnMessage | None = None, discard: bool = False) -> None:
        loop = asyncio.get_running_loop()
        self.on_message = on_message
        self.discard = discard
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()
        self.is_open = False
        self.close_code: int | None = None
        self.bytes_in = 0
        #: Free for the caller: per-connection state.
        self.state: Any = None
        self._buf = bytearray()

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.bytes_in += len(data)
        if self.is_open and self.discard:
            return
        self._buf += data
        if not self.is_open:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self._buf[:end])
            del self._buf[: end + 4]
            if not head.startswith(b"HTTP/1.1 101"):
                status = head.split(b"\r\n", 1)[0].decode(errors="replace")
                self.opened.set_exception(ConnectionError(f"handshake refused: {status}"))
                assert self.transport is not None
                self.transport.close()
                return
            self.is_open = True
            self.opened.set_result(None)
            if self.discard:
                self._buf.clear()
                return
        self._parse(time.monotonic())

    def connection_lost(self, exc: Exception | None) -> None:
        self.is_open = False
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"connection lost in the handshake: {exc!r}"))
        if not self.lost.done():
            self.lost.set_result(None)

    # -- frames -------------------------------------------------------------------------------

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
                if self.on_message is not None:
                    self.on_message(self, opcode, payload, now)
            elif opcode == OP_PING:
                self.send_frame(OP_PONG, payload)
            elif opcode == OP_CLOSE:
                self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                self.send_frame(OP_CLOSE, payload[:2])
                assert self.transport is not None
                self.transport.close()
                break
        if pos:
            del buf[:pos]

    def send_frame(self, opcode: int, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(client_frame(opcode, payload))

    def send_text(self, text: str) -> None:
        self.send_frame(OP_TEXT, text.encode())

    def ping(self) -> None:
        """A keep-alive: the server counts any client frame as a sign of life."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(PING_FRAME)

    def close(self, code: int = 1000) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(client_frame(OP_CLOSE, struct.pack("!H", code)))
            self.transport.close()


async def connect(
    port: int,
    path: str,
    on_message: OnMessage | None = None,
    discard: bool = False,
    host: str = "127.0.0.1",
    timeout_s: float = 30.0,
    subprotocol: str | None = None,
) -> Client:
    """Open a WebSocket to ws://host:port/path (offering ``subprotocol``, if given); returns
    once the server answered 101."""
    loop = asyncio.get_running_loop()
    transport, client = await loop.create_connection(lambda: Client(on_message, discard), host, port)
    key = base64.b64encode(os.urandom(16)).decode()
    transport.write(
        (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            + (f"Sec-WebSocket-Protocol: {subprotocol}\r\n" if subprotocol else "")
            + "\r\n"
        ).encode()
    )
    try:
        await asyncio.wait_for(client.opened, timeout_s)
    except BaseException:
        transport.abort()
        raise
    return client
