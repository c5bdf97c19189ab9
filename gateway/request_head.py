"""The upgrade request's head, parsed the way websockets parses it, without its parser.

websockets reads a request head line by line through generator-based coroutines, about a tenth
of a live handshake's CPU. A head that came whole in one read and is plainly well formed is
parsed here instead, into the same ``Request``; anything else (a head split across reads, a line
too long, a character out of place, a body) is left to websockets (None), which answers it as it
always has. tests/test_request_head.py holds this to websockets' own parser.
"""

from __future__ import annotations

import re

from websockets.datastructures import Headers
from websockets.http11 import MAX_LINE_LENGTH, MAX_NUM_HEADERS, Request

# RFC 9110: a header name is a token; a value is visible characters, spaces, tabs and obs-text
# (websockets' own patterns).
_TOKEN = re.compile(rb"[-!#$%&\'*+.^_`|~0-9a-zA-Z]+")
_VALUE = re.compile(rb"[\x09\x20-\x7e\x80-\xff]*")
_PROTOCOLS = (b"HTTP/1.1", b"HTTP/1.0")


def parse_request(head: bytes) -> Request | None:
    """``head``: a request line and headers, ending in the blank line."""
    lines = head.split(b"\r\n")
    if len(lines) < 3 or lines[-1] or lines[-2] or len(lines) - 3 > MAX_NUM_HEADERS:
        return None
    del lines[-2:]
    request_line = lines[0]
    parts = request_line.split(b" ", 2)
    if len(parts) != 3 or parts[2] not in _PROTOCOLS or b"\n" in request_line:
        return None
    if len(request_line) + 2 > MAX_LINE_LENGTH or not request_line.isascii():
        return None
    headers = Headers()
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        value = value.strip(b" \t")
        if (
            not colon
            or len(line) + 2 > MAX_LINE_LENGTH
            or not _TOKEN.fullmatch(name)
            or not _VALUE.fullmatch(value)
        ):
            return None
        headers[name.decode()] = value.decode("iso-8859-1")
    if "Transfer-Encoding" in headers or not set(headers.get_all("Content-Length")) <= {"0"}:
        return None
    method, path, protocol = (part.decode() for part in parts)
    return Request(path, headers, method, protocol)
