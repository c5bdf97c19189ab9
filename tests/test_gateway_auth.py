"""First-message auth (``?auth=message``, then ``{"type": "auth", "token": ...}``) and its typed
refusals, end to end: real server, real Redis, real sockets (docs/protocol.md, Connecting)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import struct
from typing import Any

import aiohttp
import msgpack
import pytest
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


async def refused(client: Client) -> tuple[dict[str, Any], int | None, dict[str, Any]]:
    """The error frame a refused first-message auth gets, and the close behind it."""
    error = await client.recv()
    code, reason = await client.closed()
    return error, code, json.loads(reason)


@pytest.mark.parametrize("framing", [JSON, MSGPACK])
async def test_the_welcome_is_the_same_as_with_a_token_in_the_url(
    server: Running, http: aiohttp.ClientSession, room: str, framing: str
) -> None:
    old = await Client.connect(http, room, token(server, "alice"), framing)
    new = await Client.connect(http, room, framing=framing, auth={"token": token(server, "alice")})
    assert new.welcome["user"] == {"id": "alice", "role": "viewer"}
    ignore = {"server_time_ms", "online"}
    assert {k: v for k, v in new.welcome.items() if k not in ignore} == {
        k: v for k, v in old.welcome.items() if k not in ignore
    }
    await new.send({"type": "comment", "text": "hi", "rid": "c1"})
    assert (await new.recv_type("ack"))["rid"] == "c1"
    host = await Client.connect(
        http, room, framing=framing, auth={"token": token(server, "host1", Role.HOST)}
    )
    assert host.welcome["user"] == {"id": "host1", "role": "host"}


@pytest.mark.parametrize("where", ["query", "message"])
async def test_resume_with_last_seq_in_the_query_or_the_message(
    server: Running, http: aiohttp.ClientSession, room: str, where: str
) -> None:
    host = await Client.connect(http, room, token(server, "host1", Role.HOST))
    viewer = await Client.connect(http, room, token(server, "v"))
    await host.send({"type": "host_message", "text": "one"})
    last_seq = (await viewer.recv_type("host_message"))["seq"]
    await viewer.close()
    await host.send({"type": "host_message", "text": "two"})
    await host.recv_type("host_message")
    auth: dict[str, Any] = {"token": token(server, "v")}
    if where == "message":
        auth["last_seq"] = last_seq
        # the message's last_seq replaces the query's
        again = await Client.connect(http, room, last_seq=0, auth=auth)
    else:
        again = await Client.connect(http, room, last_seq=last_seq, auth=auth)
    assert again.welcome["resumed"] is True
    missed = await again.recv_type("host_message")
    assert missed["text"] == "two" and missed["seq"] > last_seq
    # a last_seq past the room's (however large) is a fresh start, as in the query
    fresh = await Client.connect(http, room, auth={"token": token(server, "v"), "last_seq": 10**30})
    assert fresh.welcome["resumed"] is False


@pytest.mark.parametrize("framing", [JSON, MSGPACK])
async def test_a_refused_first_message_auth_gets_a_typed_error_then_the_close(
    server: Running, http: aiohttp.ClientSession, room: str, framing: str
) -> None:
    await server.services.rooms.create("other", host_id="h2", room_id="other")
    mod = await Client.connect(http, room, token(server, "host1", Role.HOST))
    await mod.send({"type": "ban", "user_id": "troll", "rid": "b1"})
    await mod.recv_type("ack")
    cases: list[tuple[str, dict[str, Any], str, int, str]] = [
        ("shop", {"token": "not.a.jwt"}, "token_invalid", 4401, "token_invalid"),
        ("shop", {"token": token(server, "late", ttl=-60)}, "token_expired", 4401, "token_expired"),
        ("shop", {"token": token(server, "bob", room="other")}, "wrong_room", 4403, "wrong_room"),
        ("shop", {"token": token(server, "troll")}, "banned", 4403, "banned"),
        ("shop", {}, "token_missing", 4401, "token_missing"),  # a guest in a sign-in room
        ("shop", {"token": None}, "token_missing", 4401, "token_missing"),
        ("shop", {"token": 7}, "invalid_field", 4401, "token_missing"),
        ("shop", {"token": token(server, "v"), "last_seq": -1}, "invalid_field", 4401, "token_missing"),
        ("shop", {"token": token(server, "v"), "last_seq": "3"}, "invalid_field", 4401, "token_missing"),
        ("nowhere", {"token": token(server, "v", room="*")}, "room_not_found", 4404, "room_not_found"),
    ]
    for room_id, auth, code, close, reason in cases:
        client = await Client.connect(http, room_id, framing=framing, auth=auth, welcome=False)
        error, got_close, got_reason = await refused(client)
        assert error["type"] == "error" and error["code"] == code and error["message"], (auth, error)
        assert (got_close, got_reason) == (close, {"code": reason}), auth


@pytest.mark.parametrize("framing", [JSON, MSGPACK])
async def test_a_first_message_that_is_not_auth_is_refused(
    server: Running, http: aiohttp.ClientSession, room: str, framing: str
) -> None:
    packed = framing == MSGPACK
    frames: list[tuple[str | bytes, str]] = [
        (json.dumps({"type": "comment", "text": "hi"}), "token_missing"),
        (json.dumps({"type": "ping", "rid": "p"}), "token_missing"),
        ("{nope", "bad_json"),
        (json.dumps([1, 2]), "bad_message"),
        (json.dumps({"type": "auth", "token": "\ud800"}), "invalid_field"),
    ]
    if packed:
        frames = [
            (msgpack.packb({"type": "comment", "text": "hi"}), "token_missing"),
            (b"\xc1", "bad_msgpack"),
            (b"\x82\xa4type\xa4auth\xa5token\xa1\xff", "invalid_field"),  # not UTF-8
            (msgpack.packb({"type": "auth", "token": "ÿ"}), "token_invalid"),
            ("a text frame", "wrong_framing"),
        ]
    else:
        frames.append((b"binary", "wrong_framing"))
    for data, code in frames:
        ws = await http.ws_connect(f"/ws/rooms/{room}", params={"auth": "message"}, protocols=(framing,))
        if isinstance(data, bytes):
            await ws.send_bytes(data)
        else:
            await ws.send_str(data)
        error, close, reason = await refused(Client(ws))
        assert error["type"] == "error" and error["code"] == code, (data, error)
        expected = "token_invalid" if code == "token_invalid" else "token_missing"
        assert (close, reason) == (4401, {"code": expected}), data


async def test_guest_rooms_work_with_and_without_the_auth_message(
    server: Running, http: aiohttp.ClientSession
) -> None:
    await server.services.rooms.create("open", host_id="h", room_id="open", allow_anonymous=True)
    today = await Client.connect(http, "open")  # no token, no flag: a guest's welcome at once
    assert today.welcome["user"]["id"].startswith("anon_")
    guest = await Client.connect(http, "open", auth={})  # an auth message without a token
    assert guest.welcome["user"]["id"].startswith("anon_") and guest.welcome["user"]["role"] == "viewer"
    await guest.send({"type": "reserve", "sale_id": "s", "quantity": 1, "rid": "r1"})
    assert (await guest.recv_type("error"))["code"] == "login_required"
    signed = await Client.connect(
        http, "open", auth={"token": server.services.auth.mint("ann", "open", Role.VIEWER, 60)}
    )
    assert signed.welcome["user"] == {"id": "ann", "role": "viewer"}


async def test_old_clients_keep_working_and_a_token_in_the_request_wins(
    server: Running, http: aiohttp.ClientSession, room: str
) -> None:
    # ?token= with the flag: admitted at once from the request (no first message awaited)
    both = await Client.connect(http, room, token(server, "a"), auth=None)
    assert both.welcome["user"]["id"] == "a"
    ws = await http.ws_connect(
        f"/ws/rooms/{room}", params={"auth": "message", "token": token(server, "b")}, protocols=(JSON,)
    )
    assert json.loads((await ws.receive(timeout=5)).data)["user"]["id"] == "b"
    await ws.close()
    ws = await http.ws_connect(
        f"/ws/rooms/{room}",
        params={"auth": "message"},
        headers={"Authorization": f"Bearer {token(server, 'c')}"},
        protocols=(JSON,),
    )
    assert json.loads((await ws.receive(timeout=5)).data)["user"]["id"] == "c"
    await ws.close()
    # without a token and without the flag, a sign-in room still refuses with HTTP 401
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await http.ws_connect(f"/ws/rooms/{room}")
    assert info.value.status == 401


async def test_messages_right_behind_the_auth_message_are_handled_after_the_welcome(
    server: Running, room: str
) -> None:
    """A raw client writes the upgrade, the auth message and a comment in one go."""
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    request = (
        f"GET /ws/rooms/{room}?auth=message HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    auth = json.dumps({"type": "auth", "token": token(server, "fast")}).encode()
    comment = json.dumps({"type": "comment", "text": "first!", "rid": "c1"}).encode()
    writer.write(request + masked(auth) + masked(comment))
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    first, second = await read_text(reader), await read_text(reader)
    assert first["type"] == "welcome" and first["user"]["id"] == "fast"
    assert second["type"] == "ack" and second["rid"] == "c1"
    writer.close()


def masked(payload: bytes) -> bytes:
    """A client's text frame (payloads under 126 bytes... or up to 64 KiB)."""
    mask = b"\x01\x02\x03\x04"
    n = len(payload)
    header = bytes([0x81, 0x80 | n]) if n < 126 else bytes([0x81, 0x80 | 126]) + struct.pack("!H", n)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def read_text(reader: asyncio.StreamReader) -> dict[str, Any]:
    first, second = await reader.readexactly(2)
    assert first == 0x81, first
    n = second & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", await reader.readexactly(2))
    elif n == 127:
        (n,) = struct.unpack("!Q", await reader.readexactly(8))
    return dict(json.loads(await reader.readexactly(n)))


async def test_a_connection_that_never_authenticates_is_cut_at_the_handshake_timeout(
    settings: Settings,
) -> None:
    quick = dataclasses.replace(settings, handshake_timeout_s=0.5)
    async with running(quick) as srv, aiohttp.ClientSession(base_url=srv.url) as http:
        await srv.services.rooms.create("r", host_id="h", room_id="shop")
        ws = await http.ws_connect("/ws/rooms/shop", params={"auth": "message"}, protocols=(JSON,))
        await ws.ping()  # a control frame is not the first message
        started = asyncio.get_running_loop().time()
        msg = await ws.receive(timeout=5)
        assert msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.ERROR)
        assert asyncio.get_running_loop().time() - started < 3
        # one that authenticates in time stays, past the timeout
        client = await Client.connect(http, "shop", auth={"token": token(srv, "ok")})
        await asyncio.sleep(0.8)
        await client.send({"type": "ping", "rid": "p"})
        assert (await client.recv_type("pong"))["rid"] == "p"
        # and the slot of the one cut is free again
        assert srv.services.hub.open_count == 1


async def test_an_expired_token_in_the_auth_message_closes_like_one_in_the_url(
    server: Running, http: aiohttp.ClientSession, room: str
) -> None:
    # past exp but inside the verifier's 5 s leeway: admitted, then closed at once
    client = await Client.connect(http, room, auth={"token": token(server, "late", ttl=-4)}, welcome=False)
    code, reason = await client.closed()
    assert code == close_codes.TOKEN_EXPIRED and json.loads(reason) == {"code": "token_expired"}


def test_every_refusal_code_has_its_close_in_one_table() -> None:
    from gateway.close_codes import Close, refusal

    assert refusal("token_missing") is Close.TOKEN_MISSING and Close.TOKEN_MISSING.code == 4401
    assert refusal("token_expired").code == refusal("token_invalid").code == 4401
    assert refusal("wrong_room").code == refusal("banned").code == 4403
    assert refusal("room_not_found").code == 4404
    assert refusal("unavailable") is Close.UNAVAILABLE
    assert refusal("something new") is Close.INTERNAL and Close.INTERNAL.code == 1011


@pytest.mark.parametrize("query", ["?auth=message", "?token={token}"])
async def test_an_admitted_upgrade_that_is_no_websocket_handshake_is_refused_and_frees_its_slot(
    server: Running, room: str, query: str
) -> None:
    """The request passes the admission (a token, or first-message auth) but is no valid
    WebSocket handshake (an old Sec-WebSocket-Version): answered with a refusal, counted as
    bad_handshake, and its connection slot is free again."""
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    path = f"/ws/rooms/{room}" + query.format(token=token(server, "old"))
    before = server.services.hub.admissions.open_count
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        (
            f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n"
        ).encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 4"), head
    writer.close()
    metrics = server.services.metrics.registry.get_sample_value(
        "live_errors_total", {"kind": "bad_handshake"}
    )
    assert metrics is not None and metrics >= 1
    assert server.services.hub.admissions.open_count == before
    async with aiohttp.ClientSession(base_url=server.url) as http:  # and the server goes on
        fine = await Client.connect(http, room, token(server, "new"))
        assert fine.welcome["user"]["id"] == "new"
        await fine.close()
