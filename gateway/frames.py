"""Server-to-client WebSocket frames, built once and written as bytes to every viewer.

Server frames are never masked (RFC 6455 5.1) and we never compress, so one frame's bytes are
the same for every connection of a framing: the fan-out writes them without touching them.
"""

from __future__ import annotations

import struct

OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9


def encode_frame(opcode: int, payload: bytes) -> bytes:
    """One final, unmasked frame."""
    first = 0x80 | opcode
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", first, length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", first, 126, length)
    else:
        header = struct.pack("!BBQ", first, 127, length)
    return header + payload


#: Longest close reason: a control frame's payload is at most 125 bytes, 2 of them the code.
MAX_CLOSE_REASON = 123


def close_frame(code: int, reason: str = "") -> bytes:
    # Cut at a character boundary: a reason that is not UTF-8 fails the client's close (1007).
    data = reason.encode(errors="replace")[:MAX_CLOSE_REASON].decode(errors="ignore").encode()
    return encode_frame(OP_CLOSE, struct.pack("!H", code) + data)


PING = encode_frame(OP_PING, b"")
