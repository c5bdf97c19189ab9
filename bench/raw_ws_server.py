"""The raw baseline of bench/flash_sale.py's part (r): the least an asyncio server can do per
request over WebSocket, to measure live's reservations against.

    python bench/raw_ws_server.py --port P [--workers N]

Per connection: the HTTP upgrade (the subprotocol the client offers first is accepted), then
for every client frame: find its end in the buffer, unmask it (websockets' C ``apply_mask``),
decode the body (MessagePack or JSON, by the subprotocol), answer a small ack with the request's
rid, encoded the same way, in one unmasked server frame and one ``transport.write``. No Redis,
no auth, no rate limits, no tasks, no metrics: nothing a server could leave out. Close frames
are answered and pings ponged, so the buyers' clients behave as they do against live.

On uvloop, as ``live serve`` runs; ``--workers`` processes share the port (SO_REUSEPORT).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import socket
import struct
import sys
from typing import Any

import msgpack
import uvloop
from websockets.speedups import apply_mask  # type: ignore[import-not-found]

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_HEADER = 16 * 1024


class RawWebSocket(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.upgraded = False
        self.json = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.upgraded and not self._upgrade():
            return
        self._frames()

    def _upgrade(self) -> bool:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_HEADER:
                self._abort()
            return False
        head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        del self.buffer[: end + 4]
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        key = headers.get("sec-websocket-key")
        if key is None:
            self._abort()
            return False
        accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
        offered = [p.strip() for p in headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
        protocol = offered[0] if offered else ""
        self.json = protocol.endswith(".json")
        lines = [
            "HTTP/1.1 101 Switching Protocols",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Accept: {accept}",
        ]
        if protocol:
            lines.append(f"Sec-WebSocket-Protocol: {protocol}")
        assert self.transport is not None
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.upgraded = True
        return True

    def _frames(self) -> None:
        buffer = self.buffer
        while len(buffer) >= 2:
            first, second = buffer[0], buffer[1]
            length = second & 0x7F
            start = 2
            if length == 126:
                if len(buffer) < 4:
                    return
                (length,) = struct.unpack_from("!H", buffer, 2)
                start = 4
            elif length == 127:
                if len(buffer) < 10:
                    return
                (length,) = struct.unpack_from("!Q", buffer, 2)
                start = 10
            if not second & 0x80:  # clients must mask
                self._abort()
                return
            end = start + 4 + length
            if len(buffer) < end:
                return
            mask = bytes(buffer[start : start + 4])
            payload = apply_mask(bytes(buffer[start + 4 : end]), mask)
            del buffer[:end]
            self._frame(first & 0x0F, payload)

    def _frame(self, opcode: int, payload: bytes) -> None:
        assert self.transport is not None
        if opcode == 0x8:  # close: answer it, then end the connection
            self.transport.write(b"\x88\x02\x03\xe8")
            self.transport.close()
        elif opcode == 0x9:
            self.transport.write(header(0xA, len(payload)) + payload)
        elif opcode in (0x1, 0x2):
            message: Any = json.loads(payload) if self.json else msgpack.unpackb(payload, raw=False)
            rid = message.get("rid") if isinstance(message, dict) else None
            # shaped like live's reservation ack (docs/protocol.md), so the reply costs the same
            reply = {
                "type": "ack", "rid": rid, "hold_id": "h_0123456789abcdef", "sale_id": message.get("sale_id"),
                "quantity": 1, "expires_at_ms": 1_767_225_600_000,
            }  # fmt: skip
            body = json.dumps(reply, separators=(",", ":")).encode() if self.json else msgpack.packb(reply)
            self.transport.write(header(0x1 if self.json else 0x2, len(body)) + body)

    def _abort(self) -> None:
        assert self.transport is not None
        self.transport.abort()


def header(opcode: int, length: int) -> bytes:
    if length < 126:
        return bytes((0x80 | opcode, length))
    if length < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 126, length)
    return struct.pack("!BBQ", 0x80 | opcode, 127, length)


async def serve(port: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(4096)
    server = await asyncio.get_running_loop().create_server(RawWebSocket, sock=sock)
    async with server:
        await server.serve_forever()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--workers", type=int, default=1)
    args = p.parse_args()
    for _ in range(args.workers - 1):
        if os.fork() == 0:
            break
    try:
        uvloop.run(serve(args.port))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
