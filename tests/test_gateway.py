"""The room WebSocket end to end: real server, real Redis, real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis
from wsclient import JSON, MSGPACK, Client

from gateway import close_codes
from live.auth import Role
from live.server import Running, running
from live.settings import Settings


@pytest.fixture
async def room(server: Running) -> str:
    await server.services.rooms.create("直播 room", host_id="host1", room_id="shop")
    return "shop"


def token(server: Running, user: str, role: Role = Role.VIEWER, room: str = "shop", ttl: int = 600) -> str:
    return server.services.auth.mint(user, room, role, ttl)


@pytest.mark.parametrize("framing", [JSON, MSGPACK])
async def test_welcome_and_ping(
    server: Running, http: aiohttp.ClientSession, room: str, framing: str
) -> None:
    alice = await Client.connect(http, room, token(server, "alice"), framing)
    w = alice.welcome
    assert w["v"] == 1 and w["resumed"] is False and w["seq"] == 0
    assert w["room"] == {
        "id": "shop",
        "title": "直播 room",
        "host_id": "host1",
        "sales": [],
        "auctions": [],
        "draws": [],
        "questions": [],
        "polls": [],
    }
    assert w["user"] == {"id": "alice", "role": "viewer"}
    assert (w["online"], w["likes"], w["pinned"], w["slow_mode_s"], w["comments"]) == (1, 0, None, 0, [])
    await alice.send({"type": "ping", "rid": "p1"})
    pong = await alice.recv()
    assert pong["type"] == "pong" and pong["rid"] == "p1" and pong["server_time_ms"] > 0


async def test_chat_host_messages_and_likes_reach_everyone(
    server: Running, http: aiohttp.ClientSession, room: str
) -> None:
    host = await Client.connect(http, room, token(server, "host1", Role.HOST))
    viewers = [
        await Client.connect(http, room, token(server, f"v{i}"), JSON if i % 2 else MSGPACK)
        for i in range(20)
    ]
    await viewers[0].send({"type": "comment", "text": "多少钱? how much?", "rid": "c1"})
    ack = await viewers[0].recv_type("ack")
    assert ack["rid"] == "c1" and ack["seq"] >= 1
    await host.send({"type": "host_message", "text": "99元 today only", "rid": "h1"})
    for client in [host, *viewers]:
        seen: dict[str, dict[str, object]] = {}
        while len(seen) < 2:  # the host message may overtake the chat batch
            m = await client.recv_until(lambda m: m["type"] == "host_message" or bool(m.get("comments")))
            seen[m["type"]] = m
        comment = seen["batch"]["comments"][0]  # type: ignore[index]
        assert (comment["text"], comment["user_id"]) == ("多少钱? how much?", "v0")
        msg = seen["host_message"]
        assert (msg["text"], msg["by"], msg["role"]) == ("99元 today only", "host1", "host")
    for v in viewers[:10]:
        await v.send({"type": "like", "count": 3})
    for client in viewers:
        await client.recv_until(lambda m: m["type"] == "batch" and m.get("likes") == 30)


async def test_events_arrive_in_room_order(server: Running, http: aiohttp.ClientSession, room: str) -> None:
    host = await Client.connect(http, room, token(server, "host1", Role.HOST))
    viewer = await Client.connect(http, room, token(server, "v"), MSGPACK)
    for i in range(40):
        await host.send({"type": "host_message", "text": f"m{i}"})
    got = [await viewer.recv_type("host_message") for _ in range(40)]
    assert [m["text"] for m in got] == [f"m{i}" for i in range(40)]
    seqs = [m["seq"] for m in got]
    assert seqs == sorted(seqs) and len(set(seqs)) == 40


@pytest.fixture
async def slow_server(settings: Settings) -> AsyncIterator[Running]:
    """Long ticks and a small per-tick cap, so batching is easy to observe."""
    slow = dataclasses.replace(settings, tick_ms=400, comments_per_tick=3, comment_burst=10)
    async with running(slow) as srv:
        await srv.services.rooms.create("storm", host_id="host1", room_id="shop")
        yield srv


async def test_host_messages_overtake_chat(slow_server: Running) -> None:
    async with aiohttp.ClientSession(base_url=slow_server.url) as http:
        host = await Client.connect(http, "shop", token(slow_server, "host1", Role.HOST))
        viewer = await Client.connect(http, "shop", token(slow_server, "v"))
        await viewer.send({"type": "comment", "text": "first", "rid": "c1"})
        ack = await viewer.recv_type("ack")  # the comment is published and waits for the 400 ms tick
        await host.send({"type": "host_message", "text": "second, but urgent"})
        seen: list[dict[str, object]] = []
        while not any(m["type"] == "batch" for m in seen):
            seen.append(await viewer.recv_until(lambda m: m["type"] in ("host_message", "batch"), 10))
        kinds = [m["type"] for m in seen]
        assert kinds.index("host_message") < kinds.index("batch")
        assert seen[0]["seq"] > ack["seq"]  # it was the later event


async def test_a_storm_is_sampled_for_viewers_and_complete_for_hosts(slow_server: Running) -> None:
    async with aiohttp.ClientSession(base_url=slow_server.url) as http:
        host = await Client.connect(http, "shop", token(slow_server, "host1", Role.HOST))
        viewer = await Client.connect(http, "shop", token(slow_server, "watcher"))
        senders = [await Client.connect(http, "shop", token(slow_server, f"s{i}")) for i in range(10)]
        for s in senders:
            for j in range(8):
                await s.send({"type": "comment", "text": f"{j} 抢!"})
        host_seen = viewer_shown = viewer_skipped = 0
        while host_seen < 80:  # in as many ticks as it takes
            m = await host.recv_type("batch", timeout=10)
            host_seen += len(m["comments"])
            assert "skipped" not in m
        while viewer_shown + viewer_skipped < 80:
            m = await viewer.recv_type("batch", timeout=10)
            assert len(m["comments"]) <= 3
            viewer_shown += len(m["comments"])
            viewer_skipped += m.get("skipped", 0)
        # a bounded wait, as what it checks is that nothing more comes: no comment twice
        for m in [*await host.collect(0.5), *await viewer.collect(0.5)]:
            assert m["type"] != "batch" or not (m.get("comments") or m.get("skipped")), m
        assert host_seen == 80
        assert viewer_shown + viewer_skipped == 80 and viewer_skipped > 0


async def test_hostile_frames_get_typed_errors(
    server: Running, http: aiohttp.ClientSession, room: str
) -> None:
    viewer = await Client.connect(http, room, token(server, "mallory"))
    cases: list[tuple[str | bytes, str]] = [
        ("{not json", "bad_json"),
        ("[1,2]", "bad_message"),
        ('{"type": 7}', "bad_message"),
        ('{"type": "explode"}', "unknown_type"),
        ('{"type": "comment"}', "missing_field"),
        ('{"type": "comment", "text": 5}', "invalid_field"),
        ('{"type": "like", "count": "9"}', "invalid_field"),
        ('{"type": "like", "count": true}', "invalid_field"),
        ('{"type": "like", "count": -4}', "invalid_field"),
        ('{"type": "ping", "rid": 12}', "invalid_field"),
        ('{"type": "comment", "text": "' + "长" * 201 + '"}', "comment_too_long"),
        ('{"type": "comment", "text": "   "}', "invalid_field"),
        ('{"type": "host_message", "text": "I am the host now"}', "forbidden"),
        ('{"type": "ban", "user_id": "host1"}', "forbidden"),
        ('{"type": "pin_product", "product_id": "p"}', "forbidden"),
        (b"\x93\x01\x02\x03", "wrong_framing"),
    ]
    for raw, code in cases:
        if isinstance(raw, bytes):
            await viewer.ws.send_bytes(raw)
        else:
            await viewer.ws.send_str(raw)
        reply = await viewer.recv_type("error")
        assert reply["code"] == code, (raw, reply)
        assert reply["message"]
    async with http.get("/metrics") as resp:
        text = await resp.text()
    assert 'live_errors_total{kind="forbidden"} 3.0' in text
    assert 'live_errors_total{kind="bad_json"} 1.0' in text


async def test_msgpack_errors(server: Running, http: aiohttp.ClientSession, room: str) -> None:
    app = await Client.connect(http, room, token(server, "app"), MSGPACK)
    await app.ws.send_bytes(b"\xc1garbage")
    assert (await app.recv_type("error"))["code"] == "bad_msgpack"
    await app.ws.send_str('{"type": "ping"}')
    assert (await app.recv_type("error"))["code"] == "wrong_framing"
    await app.ws.send_bytes(b"\x81\xa4type\xc4\x04ping")  # type as bytes, not str
    assert (await app.recv_type("error"))["code"] == "bad_message"


async def test_banned_words_in_chinese_and_english(tmp_path: Path, settings: Settings) -> None:
    words = tmp_path / "words.txt"
    words.write_text("# banned\n代购\nscam\nbuy followers\n", encoding="utf-8")
    configured = dataclasses.replace(settings, banned_words_file=words, comment_burst=20)
    async with running(configured) as srv, aiohttp.ClientSession(base_url=srv.url) as http:
        await srv.services.rooms.create("r", host_id="h", room_id="shop")
        v = await Client.connect(http, "shop", token(srv, "v"))
        for text, refused in [
            ("找代 购加微信", True),
            ("SCAM alert", True),
            ("ｓｃａｍ", True),  # noqa: RUF001 - full-width letters on purpose
            ("Buy-Followers here", True),
            ("scampi are tasty", False),
            ("好看! nice", False),
        ]:
            await v.send({"type": "comment", "text": text, "rid": "r"})
            reply = await v.recv_until(lambda m: m["type"] in ("ack", "error"))
            assert (reply["type"] == "error" and reply["code"] == "banned_words") == refused, text


async def test_flooding_is_rate_limited_then_closed(
    server: Running, http: aiohttp.ClientSession, room: str
) -> None:
    v = await Client.connect(http, room, token(server, "flood"))
    for _ in range(10):
        await v.send({"type": "comment", "text": "spam"})
    # the comment burst is 5: one of the next answers refuses a comment as rate_limited
    await v.recv_until(lambda m: m["type"] == "error" and m.get("code") == "rate_limited", 10)
    for _ in range(200):
        await v.send({"type": "ping"})
    code, reason = await v.closed()
    assert code == close_codes.POLICY and json.loads(reason)["code"] == "flood"


async def test_protocol_violations_close_with_standard_codes(
    server: Running, http: aiohttp.ClientSession, room: str
) -> None:
    big = await Client.connect(http, room, token(server, "a"))
    await big.ws.send_str("x" * (server.services.settings.max_frame_bytes + 1))
    assert (await big.closed())[0] == 1009
    # invalid UTF-8 in a text frame, sent raw (aiohttp's client would not)
    raw = await raw_upgrade(server, f"/ws/rooms/{room}?token={token(server, 'b')}")
    raw.sendall(bytes([0x81, 0x82, 0, 0, 0, 0, 0xFF, 0xFE]))  # masked text frame, bad UTF-8
    assert 1007 in await read_close_codes(raw)
    raw.close()


async def test_handshake_refusals(server: Running, http: aiohttp.ClientSession, room: str) -> None:
    upgrade = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    cases = [
        (f"/ws/rooms/{room}", 401, "token_missing"),
        (f"/ws/rooms/{room}?token=forged.token.value", 401, "token_invalid"),
        (f"/ws/rooms/{room}?token={token(server, 'x', ttl=-60)}", 401, "token_expired"),
        (f"/ws/rooms/{room}?token={token(server, 'x', room='other')}", 403, "wrong_room"),
        (f"/ws/rooms/nowhere?token={token(server, 'x', room='*')}", 404, "room_not_found"),
        (f"/ws/rooms/{room}?token={token(server, 'x')}&last_seq=abc", 400, "invalid_field"),
    ]
    for path, status, code in cases:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await http.ws_connect(path)
        assert info.value.status == status, path
        async with http.get(path, headers=upgrade) as resp:
            assert resp.status == status
            assert (await resp.json())["error"]["code"] == code


async def test_anonymous_viewers_where_allowed(server: Running, http: aiohttp.ClientSession) -> None:
    await server.services.rooms.create("open", host_id="h", room_id="open", allow_anonymous=True)
    anon = await Client.connect(http, "open")
    assert anon.welcome["user"]["role"] == "viewer" and anon.welcome["user"]["id"].startswith("anon_")


async def test_connection_limits_and_handshake_timeout(settings: Settings) -> None:
    limited = dataclasses.replace(settings, max_connections_per_ip=2, handshake_timeout_s=0.5)
    async with running(limited) as srv, aiohttp.ClientSession(base_url=srv.url) as http:
        await srv.services.rooms.create("r", host_id="h", room_id="shop")
        keep = [await Client.connect(http, "shop", token(srv, f"u{i}")) for i in range(2)]
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await Client.connect(http, "shop", token(srv, "u3"))
        assert info.value.status == 429
        await keep[0].close()
        await connect_once_free(http, token(srv, "u4"))  # a slot is free again
        # a client that connects and says nothing is cut after the handshake timeout
        port = int(srv.url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(10), 3) == b""
        writer.close()


async def test_a_handshake_the_server_cannot_answer_in_time_is_told_to_retry(
    settings: Settings, redis_url: str
) -> None:
    """A storm or a stalled Redis holds admissions past ``handshake_timeout_s``: the client
    has sent all it had to, so it gets an answer it can act on (503, or upgraded an
    ``unavailable`` error and the close 1001 with ``retry_ms``), never a silent cut."""
    quick = dataclasses.replace(settings, handshake_timeout_s=0.5)
    async with running(quick) as srv, aiohttp.ClientSession(base_url=srv.url) as http:
        await srv.services.rooms.create("r", host_id="h", room_id="shop")
        redis = Redis.from_url(redis_url)
        try:
            await redis.execute_command("CLIENT", "PAUSE", "1500", "ALL")
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await Client.connect(http, "shop", token(srv, "u1"))
            assert info.value.status == 503
            late = await Client.connect(http, "shop", auth={"token": token(srv, "u2")}, welcome=False)
            refusal = await late.recv()
            assert (refusal["type"], refusal["code"]) == ("error", "unavailable")
            code, reason = await late.closed()
            assert code == close_codes.GOING_AWAY
            assert json.loads(reason) == {"code": "unavailable", "retry_ms": close_codes.UNAVAILABLE_RETRY_MS}
        finally:
            await redis.aclose()
        # Redis answers again: so does the server, to the same clients
        await asyncio.sleep(1.2)
        for user in ("u1", "u2"):
            viewer = await Client.connect(http, "shop", token(srv, user))
            assert viewer.welcome["user"]["id"] == user
            await viewer.close()
        # counted as what they were (the late admissions' failed upgrades are no bad handshakes)
        async with http.get("/metrics") as resp:
            counts = {
                line.split('"')[1]: float(line.rsplit(" ", 1)[1])
                for line in (await resp.text()).splitlines()
                if line.startswith("live_errors_total{")
            }
        assert counts.get("handshake_timeout", 0) >= 2 and counts.get("bad_handshake", 0) == 0, counts


async def connect_once_free(http: aiohttp.ClientSession, user_token: str, timeout: float = 10.0) -> Client:
    """Connect as soon as the server has released a closed connection's slot (429 until then)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            return await Client.connect(http, "shop", user_token)
        except aiohttp.WSServerHandshakeError as exc:
            assert exc.status == 429 and asyncio.get_running_loop().time() < deadline, exc
            await asyncio.sleep(0.02)


async def test_expired_token_closes_the_socket(
    server: Running, http: aiohttp.ClientSession, room: str
) -> None:
    # past exp but inside the verifier's 5 s leeway: admitted, then closed at once
    v = await Client.connect(http, room, token(server, "late", ttl=-4), welcome=False)
    code, reason = await v.closed()
    assert code == close_codes.TOKEN_EXPIRED and json.loads(reason) == {"code": "token_expired"}


async def test_shutdown_closes_sockets_with_1001_and_a_hint(settings: Settings) -> None:
    async with running(settings) as srv:
        await srv.services.rooms.create("r", host_id="h", room_id="shop")
        http = aiohttp.ClientSession(base_url=srv.url)
        clients = [await Client.connect(http, "shop", token(srv, f"u{i}")) for i in range(3)]
    for c in clients:
        code, reason = await c.closed()
        assert code == close_codes.GOING_AWAY
        assert json.loads(reason) == {"code": "shutdown", "retry_ms": 1000}
    await http.close()


# -- raw sockets, for what a polite client library would not do -----------------------------


async def raw_upgrade(
    server: Running, path: str, rcvbuf: int | None = None, settle_s: float = 10.0
) -> socket.socket:
    """A socket that completed the WebSocket handshake and got its welcome (waiting up to
    ``settle_s`` for it: 0 leaves the answer on its way), all still unread: it reads only
    when told."""
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, (host, int(port)))
    await loop.sock_sendall(
        sock,
        f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode(),
    )
    if settle_s:
        await _until_welcomed(sock, settle_s)
    return sock


async def _until_welcomed(sock: socket.socket, timeout: float) -> None:
    """Wait until the response head and, after a 101, the first whole frame (the welcome) are
    in the socket's receive buffer, peeking, so the caller still reads them all."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            data = sock.recv(65536, socket.MSG_PEEK)
        except BlockingIOError:
            data = None
        if data is not None:
            head = data.find(b"\r\n\r\n") + 4
            if data == b"" or (head >= 4 and not data.startswith(b"HTTP/1.1 101")):
                return  # closed, or refused: the caller sees which
            if head >= 4 and _whole_frame(data[head:]):
                return
        assert asyncio.get_running_loop().time() < deadline, f"no welcome within {timeout} s"
        await asyncio.sleep(0.01)


def _whole_frame(data: bytes) -> bool:
    """Whether ``data`` starts with a whole (unmasked, server) frame."""
    if len(data) < 2:
        return False
    length, at = data[1] & 0x7F, 2
    if length >= 126:  # a 2- or 8-byte extended length follows
        at = 4 if length == 126 else 10
        if len(data) < at:
            return False
        length = int.from_bytes(data[2:at], "big")
    return len(data) >= at + length


async def read_close_codes(sock: socket.socket, timeout: float = 2.0) -> set[int]:
    """Read until EOF or ``timeout``; the codes of the close frames seen."""
    loop = asyncio.get_running_loop()
    data = b""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            while chunk := await loop.sock_recv(sock, 65536):
                data += chunk
    codes = set()
    at = data.find(b"\r\n\r\n") + 4
    while at + 2 <= len(data):
        opcode, length = data[at] & 0x0F, data[at + 1] & 0x7F
        at += 2
        if length == 126:
            length, at = int.from_bytes(data[at : at + 2], "big"), at + 2
        elif length == 127:
            length, at = int.from_bytes(data[at : at + 8], "big"), at + 8
        if opcode == 0x8 and length >= 2:
            codes.add(int.from_bytes(data[at : at + 2], "big"))
        at += length
    return codes


async def test_silent_clients_are_dropped(settings: Settings) -> None:
    async with running(dataclasses.replace(settings, ping_interval_s=0.2)) as srv:
        await srv.services.rooms.create("r", host_id="h", room_id="shop")
        silent = await raw_upgrade(srv, f"/ws/rooms/shop?token={token(srv, 'mute')}")  # never answers pings
        assert close_codes.IDLE_TIMEOUT in await read_close_codes(silent, timeout=3)
        silent.close()
        async with aiohttp.ClientSession(base_url=srv.url) as http:
            polite = await Client.connect(http, "shop", token(srv, "polite"))
            # reading, aiohttp answers the server's pings: a bounded wait, as what it checks
            # is that the polite client is not dropped in five ping intervals
            await polite.collect(1.0)
            await polite.send({"type": "ping"})
            assert (await polite.recv_type("pong"))["type"] == "pong"


async def test_a_flood_of_bad_connects_disturbs_nobody(server: Running, room: str) -> None:
    async with aiohttp.ClientSession(base_url=server.url, connector=aiohttp.TCPConnector(limit=0)) as http:
        viewer = await Client.connect(http, room, token(server, "calm"))

        async def bad(i: int) -> int:
            try:
                await http.ws_connect(f"/ws/rooms/{room}?token=forged{i}")
            except aiohttp.WSServerHandshakeError as exc:
                return exc.status
            return 101

        statuses = await asyncio.gather(*(bad(i) for i in range(300)))
        assert set(statuses) == {401}
        await viewer.send({"type": "ping", "rid": "still"})
        assert (await viewer.recv_type("pong"))["rid"] == "still"
        assert server.services.hub.open_count == 1


async def test_frames_sent_right_behind_the_handshake_wait_for_the_welcome(
    server: Running, room: str
) -> None:
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    ping = b'{"type":"ping"}'
    writer.write(
        f"GET /ws/rooms/{room}?token={token(server, 'eager')} HTTP/1.1\r\nHost: x\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        + bytes([0x81, 0x80 | len(ping), 0, 0, 0, 0])  # a masked text frame, zero mask
        + ping
    )
    await reader.readuntil(b"\r\n\r\n")
    kinds = []
    for _ in range(2):
        header = await reader.readexactly(2)
        length = header[1] & 0x7F
        if length == 126:
            length = int.from_bytes(await reader.readexactly(2), "big")
        kinds.append(json.loads(await reader.readexactly(length))["type"])
    assert kinds == ["welcome", "pong"]
    writer.close()


async def test_gauges_arrive_at_the_tick_latest_value_only(
    server: Running, http: aiohttp.ClientSession, room: str
) -> None:
    """An application gauge (a sale's stock left, say) rides the chat lane: values published
    within one tick reach a viewer as one frame, the latest, without a seq."""
    viewer = await Client.connect(http, room, token(server, "v"))
    hub = server.services.hub
    for n in range(50):
        await hub.publish_gauge(room, "g1", {"type": "gauge_test", "key": "g1", "n": n})
    await hub.publish_gauge(room, "g2", {"type": "gauge_test", "key": "g2", "n": 0})
    got: list[dict[str, Any]] = []
    while not ({("g1", 49), ("g2", 0)} <= {(m["key"], m["n"]) for m in got}):  # the latest of each
        got.append(await viewer.recv_type("gauge_test", timeout=10))
    # a bounded wait, as what it checks is that nothing more comes (the latest was the last)
    got += [m for m in await viewer.collect(0.3) if m["type"] == "gauge_test"]
    g1 = [m["n"] for m in got if m["key"] == "g1"]
    assert g1 == sorted(g1) and g1[-1] == 49  # in order, and the latest always arrives
    assert len(g1) < 50  # coalesced: 50 values in a few ticks
    assert [m["n"] for m in got if m["key"] == "g2"] == [0]
    assert all("seq" not in m for m in got)
