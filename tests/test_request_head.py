"""The upgrade request's head parsed without websockets' parser (gateway/request_head.py): it
takes the plain heads real clients send, and whatever it takes, websockets' own parser reads
the same way; the rest it leaves to websockets."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from test_connection_core import CONFIG, Peer
from websockets.http11 import Request
from websockets.server import ServerProtocol

from gateway.protocol import ConnectionCore, Handshake
from gateway.request_head import parse_request


def websockets_reads(head: bytes) -> Request | None:
    protocol = ServerProtocol()
    protocol.receive_data(head)
    events = [e for e in protocol.events_received() if isinstance(e, Request)]
    return events[0] if events else None


def same(a: Request, b: Request) -> bool:
    return (a.method, a.path, a.protocol, list(a.headers.raw_items())) == (
        b.method,
        b.path,
        b.protocol,
        list(b.headers.raw_items()),
    )


BROWSER = (
    b"GET /ws/rooms/shop?auth=message HTTP/1.1\r\nHost: live.example:8080\r\nConnection: Upgrade\r\n"
    b"Pragma: no-cache\r\nCache-Control: no-cache\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) "
    b"AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36\r\nUpgrade: websocket\r\n"
    b"Origin: https://live.example\r\nSec-WebSocket-Version: 13\r\nAccept-Encoding: gzip, deflate, br\r\n"
    b"Accept-Language: zh-CN,zh;q=0.9\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    b"Sec-WebSocket-Protocol: live.v1.msgpack, live.v1.json\r\n\r\n"
)


def test_the_heads_real_clients_send_are_parsed_here_as_websockets_parses_them() -> None:
    peer_head = Peer().out()  # websockets' own client
    for head in (BROWSER, peer_head):
        quick = parse_request(head)
        assert quick is not None
        reference = websockets_reads(head)
        assert reference is not None and same(quick, reference)


def test_a_head_split_across_reads_goes_to_websockets_and_is_handshaken_all_the_same() -> None:
    for chunks in ([BROWSER], [BROWSER[:40], BROWSER[40:]]):
        core = ConnectionCore(CONFIG, 0.0)
        for chunk in chunks:
            core.receive_data(chunk, 0.0)
        [handshake] = [a for a in core.actions() if isinstance(a, Handshake)]
        assert core._head_fed is (len(chunks) > 1)  # whole: parsed here; split: by websockets
        assert handshake.request.path == "/ws/rooms/shop?auth=message"
        assert handshake.request.headers["Sec-WebSocket-Protocol"] == "live.v1.msgpack, live.v1.json"


_token = st.text(alphabet="-!#$%&'*+.^_`|~0123456789abcdefXYZ", min_size=1, max_size=12)
_plain_value = st.text(alphabet="abc XYZ019;=,/-\t", max_size=16).map(str.encode)
_odd_value = st.binary(max_size=12) | st.sampled_from([b"a\nb", b"a\rb", b"\x80\xff", b"\x00", b"5"])
_header = st.tuples(
    _token | st.sampled_from(["Content-Length", "Transfer-Encoding", "Bad Name", ""]), _plain_value
)
_odd_header = st.tuples(_token | st.sampled_from(["Content-Length", "Transfer-Encoding"]), _odd_value)
_request_lines = st.tuples(
    st.sampled_from([b"GET", b"POST", b"get", b""]),
    st.sampled_from(
        [b"/ws/rooms/r", b"/ws/rooms/r?token=t", b"/ws/rooms/\xe4\xb8\xad", b"/a b", b"/a\nb", b"/x\r"]
    )
    | st.binary(max_size=8),
    st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2", b"http/1.1"]),
)


@settings(max_examples=1000, deadline=None)
@given(
    request_line=_request_lines,
    headers=st.lists(_header, max_size=6),
    odd=st.none() | st.tuples(st.integers(0, 6), _odd_header),
    bare_lf=st.none() | st.integers(0, 6),
)
def test_whatever_it_parses_websockets_parses_the_same(
    request_line: tuple[bytes, bytes, bytes],
    headers: list[tuple[str, bytes]],
    odd: tuple[int, tuple[str, bytes]] | None,
    bare_lf: int | None,
) -> None:
    """Mostly well-formed heads, each with at most one odd header and one bare LF for a CRLF."""
    if odd is not None:
        headers.insert(odd[0], odd[1])
    lines = [b" ".join(request_line)] + [name.encode() + b":" + value for name, value in headers]
    ends = [b"\r\n"] * len(lines)
    if bare_lf is not None and bare_lf < len(ends):
        ends[bare_lf] = b"\n"
    head = b"".join(line + end for line, end in zip(lines, ends, strict=True)) + b"\r\n"
    quick = parse_request(head)
    if quick is not None:
        reference = websockets_reads(head)
        assert reference is not None and same(quick, reference), (head, quick, reference)
