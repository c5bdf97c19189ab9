"""The insides of aiohttp and websockets that the server relies on, checked on the installed
versions.

pyproject.toml bounds both below their next major version; within it, a minor release may still
move an internal. Each check here exercises the library itself (not our wrappers, so it holds
whichever of our files uses the internal) and fails with a message naming the internal and the
files of ours that use it (found by searching the source), so an upgrade that moves one fails
here, loudly, instead of in production. ``test_every_import_of_the_libraries_is_covered`` fails
when a new import of aiohttp or websockets appears in the server's packages: add a check here.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import struct
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiohttp import web
from websockets.datastructures import Headers
from websockets.exceptions import NegotiationError
from websockets.frames import Frame, Opcode
from websockets.http11 import MAX_LINE_LENGTH, MAX_NUM_HEADERS, Request, Response
from websockets.protocol import Protocol, Side, State
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

ROOT = Path(__file__).resolve().parent.parent
#: The server's packages (loadtest/ only uses aiohttp's public client).
PACKAGES = ("live", "gateway", "inventory")

#: Every ``from <module> import <name>`` of aiohttp and websockets in PACKAGES that this file
#: checks, by module. A new one fails test_every_import_of_the_libraries_is_covered.
COVERED_IMPORTS = {
    "aiohttp": {"web"},
    "aiohttp.web": {"BaseRequest", "StreamResponse"},
    "aiohttp.abc": {"AbstractAccessLogger"},
    "aiohttp.web_protocol": {"RequestPayloadError"},
    "aiohttp.http_exceptions": {"HttpProcessingError"},
    "aiohttp.web_request": {"BaseRequest"},
    "websockets.datastructures": {"Headers"},
    "websockets.exceptions": {"NegotiationError"},
    "websockets.frames": {"Frame", "Opcode"},
    "websockets.http11": {"Request", "Response", "MAX_LINE_LENGTH", "MAX_NUM_HEADERS"},
    "websockets.protocol": {"Event", "Protocol", "Side", "State"},
    "websockets.server": {"ServerProtocol"},
    "websockets.typing": {"Subprotocol"},
    "websockets.speedups": {"apply_mask"},
    "websockets.utils": {"apply_mask"},
}

REQUEST = (
    b"GET /ws/rooms/r HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Protocol: live.v1.msgpack\r\n\r\n"
)


def users(*needles: str) -> str:
    """Our files (in PACKAGES) whose source contains any of ``needles``, for the messages."""
    found = sorted(
        str(path.relative_to(ROOT))
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if any(n in path.read_text(encoding="utf-8") for n in needles)
    )
    return ", ".join(found) or "(no file uses it any more: drop this check)"


def moved(internal: str, *needles: str) -> str:
    return (
        f"{internal} moved or changed in the installed version; used by {users(*needles)}. "
        "Adapt that code (and this check) or pin the library below this version."
    )


def masked(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A client frame (masked with the all-zero key: the payload stays readable)."""
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    head = struct.pack("!BB", first, 0x80 | n) if n < 126 else struct.pack("!BBH", first, 0x80 | 126, n)
    return head + b"\0\0\0\0" + payload


def handshake_protocol(
    select: Callable[[ServerProtocol, list[Subprotocol]], Subprotocol | None] | None = None,
) -> ServerProtocol:
    def first_offered(_: ServerProtocol, offered: list[Subprotocol]) -> Subprotocol | None:
        return offered[0] if offered else None

    return ServerProtocol(
        subprotocols=[Subprotocol("live.v1.json"), Subprotocol("live.v1.msgpack")],
        select_subprotocol=select or first_offered,
        max_size=1024,
    )


# -- websockets: the handshake protocol and the frame-level protocol after it ----------------------


def test_the_request_is_parsed_from_its_head_alone_in_any_pieces() -> None:
    """The gateway feeds the handshake's ServerProtocol only the request head (up to its blank
    line, split across reads however the socket split it) and keeps what follows for the
    frame-level protocol: the Request event must come from the head alone, and nothing be
    left unparsed (gateway/protocol.py's ``_request_part``)."""
    ws = handshake_protocol()
    internal = "websockets.server.ServerProtocol parsing a request head fed in pieces"
    for i in range(0, len(REQUEST), 7):
        ws.receive_data(REQUEST[i : i + 7])
    events = ws.events_received()
    assert [type(e) for e in events] == [Request], moved(internal, "ServerProtocol(")
    assert ws.state is State.CONNECTING, moved(internal, "ServerProtocol(")
    assert REQUEST.endswith(b"\r\n\r\n")


def test_a_handshake_protocol_that_parsed_nothing_accepts_a_request_parsed_elsewhere() -> None:
    """A head that came whole is parsed by gateway/request_head.py into websockets' Request,
    with websockets' line and header limits; the handshake protocol, fed nothing, accepts it
    (or answers a refusal) as if it had parsed it."""
    from gateway.request_head import parse_request

    internal = "websockets.http11.MAX_LINE_LENGTH / MAX_NUM_HEADERS (ints)"
    assert isinstance(MAX_LINE_LENGTH, int) and isinstance(MAX_NUM_HEADERS, int), moved(internal, "MAX_")
    request = parse_request(REQUEST)
    assert request is not None
    ws = handshake_protocol()
    response = ws.accept(request)
    internal = "websockets.server.ServerProtocol.accept(request) without a parsed request"
    assert response.status_code == 101, moved(internal, "parse_request(")
    ws.send_response(response)
    assert ws.state is State.OPEN, moved(internal, "parse_request(")
    assert b"".join(ws.data_to_send()).startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    refused = handshake_protocol()
    refused.send_response(Response(403, "Forbidden", Headers([("Content-Length", "0")]), b""))
    assert b"".join(refused.data_to_send()).startswith(b"HTTP/1.1 403 Forbidden\r\n")


def test_the_handshake_accepts_with_the_selected_subprotocol_and_refuses_on_negotiation_error() -> None:
    ws = handshake_protocol()
    ws.receive_data(REQUEST)
    (request,) = ws.events_received()
    assert isinstance(request, Request)
    response = ws.accept(request)
    internal = "websockets.server.ServerProtocol.accept / .subprotocol / select_subprotocol"
    assert response.status_code == 101, moved(internal, "ServerProtocol(")
    assert ws.subprotocol == "live.v1.msgpack", moved(internal, "handshake.subprotocol")

    def refuse(_: ServerProtocol, offered: list[Subprotocol]) -> Subprotocol | None:
        raise NegotiationError("unsupported subprotocol")

    ws = handshake_protocol(refuse)
    ws.receive_data(REQUEST)
    (request,) = ws.events_received()
    assert isinstance(request, Request)
    refused = ws.accept(request)
    assert refused.status_code == 400, moved(
        "websockets.exceptions.NegotiationError from select_subprotocol -> HTTP 400", "NegotiationError"
    )


def test_a_refusal_response_goes_out_as_given() -> None:
    """The gateway answers a refused handshake with its own status, headers and JSON body."""
    ws = handshake_protocol()
    ws.receive_data(REQUEST)
    ws.events_received()
    body = b'{"error":{"code":"room_full"}}'
    headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    ws.send_response(Response(503, "Service Unavailable", headers, body))
    out = b"".join(ws.data_to_send())
    internal = "websockets.server.ServerProtocol.send_response(Response(status, reason, Headers, body))"
    assert out.startswith(b"HTTP/1.1 503 Service Unavailable\r\n"), moved(internal, "send_response(")
    assert out.endswith(b"\r\n\r\n" + body), moved(internal, "send_response(")


def test_a_frame_level_protocol_can_start_open() -> None:
    """After the upgrade the gateway drops the handshake protocol for
    ``Protocol(Side.SERVER, state=State.OPEN, max_size=...)``; websockets answers pings itself."""
    internal = "websockets.protocol.Protocol(Side.SERVER, state=State.OPEN, max_size=N)"
    try:
        ws = Protocol(Side.SERVER, state=State.OPEN, max_size=16)
    except TypeError as exc:
        pytest.fail(f"{moved(internal, 'state=State.OPEN')} ({exc})")
    ws.receive_data(masked(Opcode.TEXT, b"hello") + masked(Opcode.PING, b"p"))
    events = ws.events_received()
    assert [(e.opcode, e.data) for e in events if isinstance(e, Frame)] == [
        (Opcode.TEXT, b"hello"),
        (Opcode.PING, b"p"),
    ], moved(internal, "state=State.OPEN")
    assert ws.data_to_send() == [b"\x8a\x01p"], moved("websockets answering a ping with a pong", "PING")
    ws.receive_data(masked(Opcode.BINARY, b"x" * 17))  # over max_size: 1009
    out = ws.data_to_send()
    assert out[0][:4] == b"\x88" + bytes([len(out[0]) - 2]) + struct.pack("!H", 1009), moved(
        internal + " failing a frame over max_size with 1009", "max_size="
    )


def test_websockets_unmasks_as_the_fast_path_expects() -> None:
    """gateway/protocol.py's fast path unmasks with websockets' own ``apply_mask`` (the C one of
    ``websockets.speedups``, else ``websockets.utils``') and hands websockets' parser only whole
    frames, so it always starts at a frame boundary."""
    from websockets.speedups import apply_mask as fast_mask  # type: ignore[attr-defined]
    from websockets.utils import apply_mask as slow_mask

    data, mask = bytes(range(37)), b"\x01\x80\x7f\xff"
    xored = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    for apply_mask in (fast_mask, slow_mask):
        assert apply_mask(data, mask) == xored, moved(f"{apply_mask.__module__}.apply_mask(data, mask)", "")
    ws = Protocol(Side.SERVER, state=State.OPEN, max_size=16)
    ws.receive_data(masked(Opcode.PING, b"p"))
    ws.receive_data(masked(Opcode.TEXT, b"after"))
    assert [e.data for e in ws.events_received() if isinstance(e, Frame)] == [b"p", b"after"]


def test_closing_states_and_the_end_of_output() -> None:
    """The gateway's flush: close frames from ``send_close`` / ``fail``, ``b""`` in
    ``data_to_send()`` meaning "half-close now", ``close_expected()``, and the states."""
    needles = ("send_close(", ".fail(", "close_expected(", "data_to_send(")
    assert [s.name for s in State] == ["CONNECTING", "OPEN", "CLOSING", "CLOSED"], moved(
        "websockets.protocol.State", "State."
    )
    ws = Protocol(Side.SERVER, state=State.OPEN)
    ws.send_close(4001, "bye")
    internal = "websockets.protocol.Protocol.send_close / close_expected / state"
    assert ws.state is State.CLOSING, moved(internal, *needles)
    assert ws.data_to_send() == [b"\x88\x05" + struct.pack("!H", 4001) + b"bye"], moved(internal, *needles)
    assert ws.close_expected(), moved(internal, *needles)

    ws = Protocol(Side.SERVER, state=State.OPEN)
    ws.fail(1008, "flood")
    internal = "websockets.protocol.Protocol.fail (close frame, then b'' for EOF)"
    assert ws.data_to_send() == [b"\x88\x07" + struct.pack("!H", 1008) + b"flood", b""], moved(
        internal, *needles
    )
    assert ws.close_expected(), moved(internal, *needles)
    ws.receive_data(masked(Opcode.TEXT, b"ignored"))  # discarded after a failure
    assert not ws.events_received(), moved(internal + ": input discarded after failing", *needles)
    ws.receive_eof()
    assert ws.state is State.CLOSED, moved("websockets.protocol.Protocol reaching CLOSED at EOF", *needles)


# -- aiohttp: our RequestHandler, and taking a connection away from it --------------------------


class Recorder(web.RequestHandler):
    """Like live/http_server.py's HttpProtocol: records what handle_error is given."""

    errors: list[tuple[int, BaseException | None, int]]

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        Recorder.errors.append((status, exc, request.writer.output_size))
        response = web.Response(status=status, text="ours")
        response.force_close()
        return response


class Echo(asyncio.Protocol):
    """What a connection is handed over to (the gateway, in live)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(b"taken\n")

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(b"echo " + data)


@pytest.fixture
async def served() -> AsyncIterator[tuple[int, web.Server, list[web.RequestHandler]]]:
    """An aiohttp application served the way live/server.py serves it: the AppRunner's
    ``web.Server`` as the manager of our own RequestHandler subclass, on our own listener."""
    taken: list[web.RequestHandler] = []

    async def take_over(request: web.Request) -> web.StreamResponse:
        # what live/http_api.py's websocket_on_reused_connection does
        protocol, transport = request.protocol, request.transport
        assert transport is not None
        taken.append(protocol)
        protocol.transport = None
        protocol.connection_lost(None)
        echo = Echo()
        transport.set_protocol(echo)
        echo.connection_made(transport)
        raise asyncio.CancelledError

    async def header(request: web.Request) -> web.Response:
        return web.Response(text=ascii(request.headers.get("Authorization", "")))

    app = web.Application()
    app.router.add_get("/take", take_over)
    app.router.add_get("/header", header)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    manager = runner.server
    assert manager is not None, moved("aiohttp.web.AppRunner.server", "runner.server")
    Recorder.errors = []
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: Recorder(manager, loop=loop, keepalive_timeout=5.0), "127.0.0.1", 0
    )
    try:
        yield server.sockets[0].getsockname()[1], manager, taken
    finally:
        server.close()
        await runner.cleanup()


async def exchange(
    port: int, data: bytes, until: bytes
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    got = await asyncio.wait_for(reader.readuntil(until), 30)
    return reader, writer, got


async def read_until(reader: asyncio.StreamReader, until: bytes, failure: str) -> bytes:
    """What the server sent up to ``until``; a closed or silent connection fails with ``failure``."""
    try:
        return await asyncio.wait_for(reader.readuntil(until), 30)
    except (asyncio.IncompleteReadError, TimeoutError, ConnectionError) as exc:
        pytest.fail(f"{failure} ({exc!r})")


def test_request_handler_takes_the_options_live_gives_it() -> None:
    init = inspect.signature(web.RequestHandler.__init__).parameters
    internal = "aiohttp.web.RequestHandler.__init__(manager, *, loop, keepalive_timeout, access_log_class)"
    for name in ("manager", "loop", "keepalive_timeout", "access_log_class"):
        assert name in init, moved(internal, "web.RequestHandler", "RequestHandler options")
    handle_error = list(inspect.signature(web.RequestHandler.handle_error).parameters)
    assert handle_error == ["self", "request", "status", "exc", "message"], moved(
        "aiohttp.web.RequestHandler.handle_error(request, status, exc, message)", "def handle_error"
    )
    assert callable(getattr(web.RequestHandler, "close", None)), moved(
        "aiohttp.web.RequestHandler.close()", "request.protocol.close()"
    )


def test_the_internal_modules_still_export_what_we_import() -> None:
    from aiohttp import http_exceptions, web_protocol, web_request
    from aiohttp.streams import StreamReader

    assert issubclass(web_protocol.RequestPayloadError, Exception), moved(
        "aiohttp.web_protocol.RequestPayloadError", "RequestPayloadError"
    )
    assert "message" in inspect.signature(http_exceptions.HttpProcessingError).parameters, moved(
        "aiohttp.http_exceptions.HttpProcessingError(message=...)", "HttpProcessingError"
    )
    assert web_request.BaseRequest is web.BaseRequest, moved("aiohttp.web_request.BaseRequest", "BaseRequest")
    assert callable(getattr(StreamReader, "feed_eof", None)), moved(
        "aiohttp StreamReader.feed_eof (request.content)", "content.feed_eof"
    )


async def test_a_malformed_request_reaches_handle_error_as_an_http_processing_error(
    served: tuple[int, web.Server, list[web.RequestHandler]],
) -> None:
    from aiohttp.http_exceptions import HttpProcessingError

    port, _, _ = served
    _, writer, head = await exchange(port, b"NOT A REQUEST\r\n\r\n", b"\r\n\r\n")
    writer.close()
    internal = "aiohttp calling RequestHandler.handle_error(request, 400, HttpProcessingError)"
    assert head.split(b"\r\n", 1)[0].endswith(b" 400 Bad Request"), moved(internal, "HttpProcessingError")
    assert b"Content-Length: 4\r\n" in head, moved(
        internal + ": our response (ours) goes out", "handle_error"
    )
    assert Recorder.errors, moved(internal, "HttpProcessingError")
    status, exc, output_size = Recorder.errors[0]
    assert status == 400 and isinstance(exc, HttpProcessingError), moved(internal, "HttpProcessingError")
    assert isinstance(exc.message, str) and exc.message, moved(
        "aiohttp HttpProcessingError.message", "exc.message"
    )
    assert output_size == 0, moved("aiohttp request.writer.output_size", "writer.output_size")


async def test_a_keep_alive_connection_can_be_taken_away_from_aiohttp(
    served: tuple[int, web.Server, list[web.RequestHandler]],
) -> None:
    """live/http_api.py clears the RequestHandler's transport and calls its connection_lost:
    aiohttp must then forget the connection (not in its manager's connections, so a shutdown
    does not close it) without closing it, and write nothing more to it."""
    port, manager, taken = served
    reader, writer, first = await exchange(port, b"GET /header HTTP/1.1\r\nHost: x\r\n\r\n", b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200"), first
    writer.write(b"GET /take HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
    internal = "taking a connection from aiohttp (RequestHandler.transport = None; connection_lost(None))"
    needles = ("protocol.transport = None",)
    rest = await read_until(reader, b"taken\n", moved(internal, *needles))
    assert rest.endswith(b"taken\n") and b"HTTP/1.1" not in rest.split(b"\r\n\r\n", 1)[-1], moved(
        internal, *needles
    )
    writer.write(b"hello\n")
    echoed = await read_until(reader, b"hello\n", moved(internal + ": the socket stays open", *needles))
    assert echoed == b"echo hello\n", moved(internal + ": the socket stays open and ours", *needles)
    assert taken and taken[0] not in manager.connections, moved(
        internal + ": aiohttp's Server must forget it", *needles
    )
    await asyncio.sleep(0.2)  # anything aiohttp might still write would arrive now
    writer.write(b"again\n")
    failure = moved(internal + ": aiohttp wrote to the connection after giving it up", *needles)
    assert await read_until(reader, b"again\n", failure) == b"echo again\n", failure
    writer.close()


async def test_non_utf8_header_bytes_come_as_lone_surrogates(
    served: tuple[int, web.Server, list[web.RequestHandler]],
) -> None:
    """live/http_api.py's bearer_token refuses a header that is not UTF-8 by finding the lone
    surrogates aiohttp decodes such bytes to."""
    port, _, _ = served
    request = b"GET /header HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\r\nConnection: close\r\n\r\n"
    reader, writer, head = await exchange(port, request, b"\r\n\r\n")
    body = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    assert head.startswith(b"HTTP/1.1 200"), head
    assert body == ascii("Bearer \udcff").encode(), moved(
        f"aiohttp decoding header bytes with surrogateescape (got {body!r})", "lone surrogates"
    )


# -- new uses ---------------------------------------------------------------------------------------


def test_every_import_of_the_libraries_is_covered() -> None:
    found: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    if node.module.split(".")[0] in ("aiohttp", "websockets"):
                        found.setdefault(node.module, set()).update(a.name for a in node.names)
                elif isinstance(node, ast.Import):
                    for alias in node.names:
                        if alias.name.split(".")[0] in ("aiohttp", "websockets"):
                            found.setdefault(alias.name, set()).add("*")
    new = {m: names - COVERED_IMPORTS.get(m, set()) for m, names in found.items()}
    new = {m: names for m, names in new.items() if names}
    assert not new, (
        f"new imports of aiohttp/websockets in {', '.join(PACKAGES)}: {new}; if they are internals "
        "(not in the library's documented API), add a check of them to this file, then add them to "
        "COVERED_IMPORTS"
    )
