"""The raw fan-out baseline, from shared/peer-bench/fanout_raw_server.py.

    python fanout_raw_server.py PORT M

websockets does the handshakes; on "go", one pre-encoded frame is written with
``transport.write`` to every connection, M times (yielding to the loop between messages):
about the least work per delivery a Python asyncio server can do.
"""

from __future__ import annotations

import asyncio
import json
import struct
import sys

import uvloop
from websockets.asyncio.server import serve

# the peer-bench payload, byte for byte (\uff1f, \uff01: full-width question and exclamation marks)
PAYLOAD = json.dumps({"t": "comment", "user": "viewer123", "text": "这个多少钱\uff1f好看\uff01" * 3}).encode()


def frame(payload: bytes) -> bytes:
    n = len(payload)
    header = bytes([0x81, n]) if n < 126 else bytes([0x81, 126]) + struct.pack("!H", n)
    return header + payload


FRAME = frame(PAYLOAD)


async def main(port: int, m: int) -> None:
    conns: set = set()

    async def handler(ws):
        conns.add(ws)
        try:
            async for msg in ws:
                if msg == "go":
                    for _ in range(m):
                        for c in conns:
                            c.transport.write(FRAME)
                        await asyncio.sleep(0)
        finally:
            conns.discard(ws)

    async with serve(handler, "127.0.0.1", port, compression=None):
        await asyncio.Future()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]), int(sys.argv[2])))
