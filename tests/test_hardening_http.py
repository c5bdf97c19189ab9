"""HTTP hardening (issue 11): connection timeouts and per-address caps at the front door,
malformed requests, the Server header, text that cannot be UTF-8, strict URL checks, caps on
rooms, products and sales per host or room, and the paginated room list. Real sockets,
real Redis, real SQLite."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import re
from collections.abc import AsyncIterator

import aiohttp
import pytest
from conftest import bearer

from live.auth import ANY_ROOM, Role
from live.server import Running, running
from live.settings import Settings

#: Generous: a loaded 2-core machine runs several suites at once.
WAIT_S = 20.0


def port_of(server: Running) -> int:
    return int(server.url.rsplit(":", 1)[1])


async def connect(
    server: Running, source: str = "127.0.0.1"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port_of(server), local_addr=(source, 0))


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP response with a Content-Length, leaving the connection open."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT_S)
    lines = head.decode("latin-1").split("\r\n")
    headers = {
        k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)
    }
    body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), WAIT_S)
    return int(lines[0].split()[1]), headers, body


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection (fails if it never does)."""
    return await asyncio.wait_for(reader.read(), WAIT_S)


def error_code(body: bytes) -> str:
    answer = json.loads(body)
    assert set(answer) == {"error"} and set(answer["error"]) == {"code", "message"}
    return str(answer["error"]["code"])


def request(path: str = "/healthz", method: str = "GET", extra: str = "", body: bytes = b"") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: test\r\n{extra}"
    if body or method == "POST":
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


@contextlib.asynccontextmanager
async def serving(settings: Settings, **changes: object) -> AsyncIterator[Running]:
    async with running(dataclasses.replace(settings, **changes)) as server:
        yield server


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


async def metrics_text(server: Running) -> str:
    async with aiohttp.ClientSession() as http, http.get(server.url + "/metrics") as resp:
        return await resp.text()


# -- timeouts -------------------------------------------------------------------------------


async def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout(settings: Settings) -> None:
    async with serving(settings, http_idle_timeout_s=0.5) as server:
        reader, writer = await connect(server)
        writer.write(request())
        status, headers, _ = await read_response(reader)
        assert status == 200 and headers.get("connection", "").lower() != "close"
        writer.write(request())  # still open for a second request within the timeout
        assert (await read_response(reader))[0] == 200
        assert await until_closed(reader) == b""  # then idle: the server closes it
        writer.close()


async def test_a_half_sent_next_request_is_closed_after_the_idle_timeout(settings: Settings) -> None:
    async with serving(settings, http_idle_timeout_s=0.5) as server:
        reader, writer = await connect(server)
        writer.write(request())
        assert (await read_response(reader))[0] == 200
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: te")  # and never the rest
        assert await until_closed(reader) == b""
        writer.close()


@pytest.mark.parametrize("with_token", [True, False])
async def test_a_body_that_never_arrives_is_cut_with_a_408(settings: Settings, with_token: bool) -> None:
    async with serving(settings, http_body_timeout_s=0.5) as server:
        token = server.services.auth.mint("h", ANY_ROOM, Role.HOST, 60)
        auth = f"Authorization: Bearer {token}\r\n" if with_token else ""
        reader, writer = await connect(server)
        # 100 bytes announced, 9 sent
        writer.write(f"POST /api/rooms HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 100\r\n\r\n".encode())
        writer.write(b'{"title":')
        answer = await until_closed(reader)  # a 408, then the close
        writer.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 ") and error_code(body) == "body_timeout"
        async with aiohttp.ClientSession() as http, http.get(server.url + "/readyz") as resp:
            assert resp.status == 200


# -- per-address caps at the front door ---------------------------------------------------


async def test_connections_still_sending_their_head_are_capped_per_address(settings: Settings) -> None:
    async with serving(settings, max_pending_connections_per_ip=3) as server:
        silent = [await connect(server) for _ in range(3)]  # connected, nothing sent
        reader, writer = await connect(server)
        writer.write(request())
        answer = await until_closed(reader)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 429 ") and error_code(body) == "too_many_connections"
        # another address is served meanwhile
        other_reader, other_writer = await connect(server, "127.0.0.2")
        other_writer.write(request())
        assert (await read_response(other_reader))[0] == 200
        other_writer.close()
        # the silent ones finish their requests: served; their slots free up
        for r, w in silent:
            w.write(request())
            assert (await read_response(r))[0] == 200
        reader, writer = await connect(server)
        writer.write(request())
        assert (await read_response(reader))[0] == 200
        for _, w in [*silent, (reader, writer)]:
            w.close()
        text = await metrics_text(server)
        assert metric(text, 'live_errors_total{kind="too_many_connections"}') == 1


async def test_open_http_connections_are_capped_per_address_and_in_all(settings: Settings) -> None:
    async with serving(settings, max_http_connections_per_ip=2, max_http_connections=3) as server:
        kept = []
        for _ in range(2):  # two idle keep-alive connections from 127.0.0.1
            reader, writer = await connect(server)
            writer.write(request())
            assert (await read_response(reader))[0] == 200
            kept.append((reader, writer))
        reader, writer = await connect(server)
        writer.write(request())
        answer = await until_closed(reader)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 429 ") and error_code(body) == "too_many_connections"
        # 127.0.0.2 still gets one: the third in all
        reader2, writer2 = await connect(server, "127.0.0.2")
        writer2.write(request())
        assert (await read_response(reader2))[0] == 200
        # a fourth in all, from a third address, finds the server full
        reader3, writer3 = await connect(server, "127.0.0.3")
        writer3.write(request())
        head, _, body = (await until_closed(reader3)).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503 ") and error_code(body) == "server_busy"
        # one keep-alive of 127.0.0.1 closes: its slot is given back
        kept[0][1].close()
        await kept[0][1].wait_closed()
        for _ in range(int(WAIT_S / 0.05)):
            reader, writer = await connect(server)
            writer.write(request())
            status = int((await asyncio.wait_for(reader.readline(), WAIT_S)).split()[1])
            writer.close()
            if status == 200:
                break
            await asyncio.sleep(0.05)
        assert status == 200
        for _, w in [*kept[1:], (reader2, writer2)]:
            w.close()


# -- malformed requests and the Server header ---------------------------------------------


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",  # no Host
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n",  # TLS on the HTTP port
        b"GET /\x00\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /api/rooms HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
async def test_a_malformed_request_is_one_warning_line_and_counted(
    server: Running, caplog: pytest.LogCaptureFixture, garbage: bytes
) -> None:
    before = metric(await metrics_text(server), 'live_errors_total{kind="bad_request"}')
    caplog.set_level(logging.DEBUG)
    caplog.clear()
    reader, writer = await connect(server)
    writer.write(garbage)
    answer = await until_closed(reader)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split()[1] == b"400" and error_code(body) == "bad_request", answer
    assert b"\r\nServer: live\r\n" in head
    loud = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not loud, [(r.name, r.getMessage()) for r in loud]
    assert [r.levelname for r in caplog.records if r.getMessage() == "bad http request"] == ["WARNING"]
    after = metric(await metrics_text(server), 'live_errors_total{kind="bad_request"}')
    assert after == before + 1


async def test_responses_name_no_versions(server: Running, http: aiohttp.ClientSession) -> None:
    for path in ("/healthz", "/nope", "/console", "/static/style.css"):
        async with http.get(path) as resp:
            assert resp.headers["Server"] == "live", path
    async with http.post("/api/rooms", data=b"{") as resp:
        assert resp.status == 401 and resp.headers["Server"] == "live"


# -- text that cannot be UTF-8, and strict patterns ----------------------------------------


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (b'{"title": "\\ud800"}', "'title'"),
        (b'{"title": "ok \\udfff x"}', "'title'"),
        (b'{"title": "ok", "id": "\\udc00"}', "'id'"),
        (b'{"title": "ok", "extra": {"list": [1, "\\ud83d"]}}', "'extra.list[1]'"),
        (b'{"title": "ok", "\\ud800": 1}', "'\\ud800'"),
    ],
)
async def test_a_lone_surrogate_in_a_body_is_an_invalid_field(
    http: aiohttp.ClientSession, host_token: str, body: bytes, named: str
) -> None:
    async with http.post("/api/rooms", data=body, headers=bearer(host_token)) as resp:
        assert resp.status == 400
        answer = await resp.json()
    assert answer["error"]["code"] == "invalid_field" and named in answer["error"]["message"]
    async with http.get("/api/rooms", headers=bearer(host_token)) as resp:
        assert (await resp.json())["rooms"] == []  # nothing was created


async def test_a_surrogate_pair_is_text_and_deep_nesting_is_bad_json(
    http: aiohttp.ClientSession, host_token: str
) -> None:
    async with http.post(
        "/api/rooms", data=b'{"title": "\\ud83d\\ude00"}', headers=bearer(host_token)
    ) as resp:
        assert resp.status == 201 and (await resp.json())["title"] == "\U0001f600"
    async with http.post("/api/rooms", data=b"[" * 50_000, headers=bearer(host_token)) as resp:
        assert resp.status == 400 and (await resp.json())["error"]["code"] == "bad_json"


async def test_a_token_that_is_not_utf8_is_token_invalid(server: Running) -> None:
    reader, writer = await connect(server)
    writer.write(b"GET /api/rooms HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xed\xa0\x80\r\n\r\n")
    status, _, body = await read_response(reader)
    writer.close()
    assert status == 401 and error_code(body) == "token_invalid"


@pytest.mark.parametrize(
    "url",
    ["https://img.example/t.png\n", "https://img.example/t.png\r\n", "http://a b", "ftp://x", "https://"],
)
async def test_image_url_must_be_a_whole_url(http: aiohttp.ClientSession, host_token: str, url: str) -> None:
    auth = bearer(host_token)
    async with http.post("/api/rooms", json={"title": "r", "id": "r1"}, headers=auth) as resp:
        assert resp.status == 201
    product = {"title": "t", "price_cents": 1, "image_url": url}
    async with http.post("/api/rooms/r1/products", json=product, headers=auth) as resp:
        assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_field"
    product["image_url"] = "https://img.example/t.png"
    async with http.post("/api/rooms/r1/products", json=product, headers=auth) as resp:
        assert resp.status == 201


# -- caps on rooms, products and sales -----------------------------------------------------


async def _post(
    http: aiohttp.ClientSession, path: str, token: str, body: object
) -> tuple[int, dict[str, object]]:
    async with http.post(path, json=body, headers=bearer(token)) as resp:
        return resp.status, await resp.json()


async def test_rooms_per_host_are_capped_even_when_created_at_once(settings: Settings) -> None:
    async with serving(settings, max_rooms_per_host=3) as server, aiohttp.ClientSession(server.url) as http:
        host = server.services.auth.mint("h1", ANY_ROOM, Role.HOST, 60)
        answers = await asyncio.gather(
            *(_post(http, "/api/rooms", host, {"title": f"r{i}"}) for i in range(10))
        )
        assert sorted(status for status, _ in answers) == [201] * 3 + [409] * 7
        refused = next(body for status, body in answers if status == 409)
        assert refused["error"]["code"] == "limit_exceeded"  # type: ignore[index]
        assert len(await server.services.store.rooms()) == 3
        other = server.services.auth.mint("h2", ANY_ROOM, Role.HOST, 60)
        assert (await _post(http, "/api/rooms", other, {"title": "theirs"}))[0] == 201


async def test_products_per_room_are_capped(settings: Settings) -> None:
    async with (
        serving(settings, max_products_per_room=2) as server,
        aiohttp.ClientSession(server.url) as http,
    ):
        host = server.services.auth.mint("h1", ANY_ROOM, Role.HOST, 60)
        for room in ("a", "b"):
            assert (await _post(http, "/api/rooms", host, {"title": room, "id": room}))[0] == 201
        for _ in range(2):
            assert (await _post(http, "/api/rooms/a/products", host, {"title": "t", "price_cents": 1}))[
                0
            ] == 201
        status, body = await _post(http, "/api/rooms/a/products", host, {"title": "t", "price_cents": 1})
        assert status == 409 and body["error"]["code"] == "limit_exceeded"  # type: ignore[index]
        assert len(await server.services.rooms.products("a")) == 2
        assert (await _post(http, "/api/rooms/b/products", host, {"title": "t", "price_cents": 1}))[0] == 201


async def test_active_sales_per_room_are_capped_and_a_refusal_changes_nothing(settings: Settings) -> None:
    async with (
        serving(settings, max_active_sales_per_room=2) as server,
        aiohttp.ClientSession(server.url) as http,
    ):
        host = server.services.auth.mint("h1", ANY_ROOM, Role.HOST, 60)
        assert (await _post(http, "/api/rooms", host, {"title": "r", "id": "r"}))[0] == 201
        _, product = await _post(http, "/api/rooms/r/products", host, {"title": "t", "price_cents": 100})
        sale = {"product_id": product["id"], "stock": 5}
        opened = [await _post(http, "/api/rooms/r/sales", host, sale) for _ in range(2)]
        assert [status for status, _ in opened] == [201, 201]
        inventory = server.services.inventory
        active_before = set(await inventory.active_sales())
        status, body = await _post(http, "/api/rooms/r/sales", host, {**sale, "starts_in_s": 3600})
        assert status == 409 and body["error"]["code"] == "limit_exceeded"  # type: ignore[index]
        assert len(await server.services.store.sales("r")) == 2
        assert set(await inventory.active_sales()) == active_before
        # a stopped sale no longer counts
        assert (await _post(http, f"/api/sales/{opened[0][1]['id']}/stop", host, {}))[0] == 200
        assert (await _post(http, "/api/rooms/r/sales", host, sale))[0] == 201


# -- the room list, page by page -----------------------------------------------------------


async def test_rooms_are_listed_in_pages_with_a_forward_cursor(
    server: Running, http: aiohttp.ClientSession
) -> None:
    host = server.services.auth.mint("h1", ANY_ROOM, Role.HOST, 60)
    ids = [f"room{i}" for i in range(5)]
    for room in ids:
        assert (await _post(http, "/api/rooms", host, {"title": room, "id": room}))[0] == 201

    async def page(query: str, token: str = host) -> tuple[int, dict[str, object]]:
        async with http.get("/api/rooms" + query, headers=bearer(token)) as resp:
            return resp.status, await resp.json()

    status, everything = await page("")
    assert status == 200 and [r["id"] for r in everything["rooms"]] == ids  # type: ignore[attr-defined, index]
    assert everything["more"] is False
    seen, cursor, more = [], "", True
    while more:
        _, answer = await page(f"?limit=2&after={cursor}")
        seen += [r["id"] for r in answer["rooms"]]  # type: ignore[attr-defined, index]
        cursor, more = str(answer["cursor"]), bool(answer["more"])
    assert seen == ids and cursor == "room4"
    assert (await page(f"?after={cursor}"))[1]["rooms"] == []  # nothing new yet
    assert (await _post(http, "/api/rooms", host, {"title": "late", "id": "late"}))[0] == 201
    assert [r["id"] for r in (await page(f"?after={cursor}"))[1]["rooms"]] == ["late"]  # type: ignore[attr-defined, index]
    for bad in ("?limit=0", "?limit=10001", "?limit=x", "?after=ghost", "?after=a%20b"):
        status, answer = await page(bad)
        assert status == 400 and answer["error"]["code"] == "invalid_field", bad  # type: ignore[index]
    one_room = server.services.auth.mint("m", "room3", Role.MODERATOR, 60)
    assert [r["id"] for r in (await page("", one_room))[1]["rooms"]] == ["room3"]  # type: ignore[attr-defined, index]
