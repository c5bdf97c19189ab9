"""The room WebSocket: handshake auth, welcome, errors, expiry and shutdown close codes."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from gateway import close_codes
from live.auth import Role
from live.server import Running, running
from live.settings import Settings


async def make_room(server: Running, room_id: str, anonymous: bool = False) -> None:
    await server.services.rooms.create(
        "直播 room", host_id="h", room_id=room_id, allow_anonymous=anonymous
    )


async def test_welcome_ping_and_error_frames(server: Running, http: aiohttp.ClientSession) -> None:
    await make_room(server, "shop")
    token = server.services.auth.mint("alice", "shop", Role.VIEWER, 60)
    async with http.ws_connect(f"/ws/rooms/shop?token={token}") as ws:
        welcome = await ws.receive_json()
        assert welcome["type"] == "welcome" and welcome["v"] == 1
        assert welcome["room"] == {"id": "shop", "title": "直播 room", "host_id": "h"}
        assert welcome["user"] == {"id": "alice", "role": "viewer"}
        assert welcome["online"] == 1 and welcome["server_time_ms"] > 1_700_000_000_000
        await ws.send_json({"type": "ping"})
        assert (await ws.receive_json())["type"] == "pong"
        for raw, code in [
            ("{oops", "bad_json"),
            ("[]", "bad_message"),
            ('{"type": "launch_rockets"}', "unknown_type"),
        ]:
            await ws.send_str(raw)
            frame = await ws.receive_json()
            assert (frame["type"], frame["code"]) == ("error", code)
        await ws.send_bytes(b"\x81")
        assert (await ws.receive_json())["code"] == "unsupported_framing"
        assert server.services.hub.online("shop") == 1
        async with http.get("/metrics") as resp:
            text = await resp.text()
        assert "live_connections 1.0" in text and "live_rooms_active 1.0" in text
        assert 'live_errors_total{kind="bad_json"} 1.0' in text
        assert "live_frames_in_total 5.0" in text
    await asyncio.sleep(0.05)
    assert server.services.hub.online("shop") == 0
    assert server.services.metrics.connections._value.get() == 0


async def test_header_token_works_too(server: Running, http: aiohttp.ClientSession) -> None:
    await make_room(server, "shop")
    token = server.services.auth.mint("app-user", "shop", Role.VIEWER, 60)
    async with http.ws_connect(
        "/ws/rooms/shop", headers={"Authorization": f"Bearer {token}"}
    ) as ws:
        assert (await ws.receive_json())["user"]["id"] == "app-user"


async def test_handshake_refusals(server: Running, http: aiohttp.ClientSession) -> None:
    await make_room(server, "shop")
    auth = server.services.auth
    cases = [
        ("/ws/rooms/shop", 401),  # no token, room not anonymous
        ("/ws/rooms/shop?token=garbage", 401),
        (f"/ws/rooms/shop?token={auth.mint('x', 'other', Role.VIEWER, 60)}", 403),
        (f"/ws/rooms/ghost?token={auth.mint('x', '*', Role.VIEWER, 60)}", 404),
    ]
    for path, status in cases:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await http.ws_connect(path)
        assert info.value.status == status, path


async def test_anonymous_viewers_where_the_room_allows(
    server: Running, http: aiohttp.ClientSession
) -> None:
    await make_room(server, "open", anonymous=True)
    async with http.ws_connect("/ws/rooms/open") as ws:
        welcome = await ws.receive_json()
        assert welcome["user"]["role"] == "viewer" and welcome["user"]["id"].startswith("anon_")


async def test_oversized_frame_closes_with_1009(
    server: Running, http: aiohttp.ClientSession
) -> None:
    await make_room(server, "shop")
    token = server.services.auth.mint("a", "shop", Role.VIEWER, 60)
    async with http.ws_connect(f"/ws/rooms/shop?token={token}") as ws:
        await ws.receive_json()
        await ws.send_str("x" * (server.services.settings.max_frame_bytes + 1))
        msg = await ws.receive()
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert ws.close_code == 1009


async def test_expired_token_closes_the_connection(
    server: Running, http: aiohttp.ClientSession
) -> None:
    await make_room(server, "shop")
    # past its exp but inside the verifier's 5 s leeway: accepted, then closed at once
    token = server.services.auth.mint("a", "shop", Role.VIEWER, -4)
    async with http.ws_connect(f"/ws/rooms/shop?token={token}") as ws:
        await ws.receive_json()
        msg = await ws.receive(timeout=5)
        assert msg.type is aiohttp.WSMsgType.CLOSE
        assert msg.data == close_codes.TOKEN_EXPIRED
        assert json.loads(msg.extra)["code"] == "token_expired"


async def test_shutdown_closes_sockets_with_1001_and_a_hint(settings: Settings) -> None:
    async with running(settings) as srv:
        await make_room(srv, "shop")
        token = srv.services.auth.mint("a", "shop", Role.VIEWER, 60)
        session = aiohttp.ClientSession(base_url=srv.url)
        sockets = [await session.ws_connect(f"/ws/rooms/shop?token={token}") for _ in range(3)]
        for ws in sockets:
            await ws.receive_json()
        assert srv.services.hub.connection_count == 3
    # leaving `running` shut the server down
    for ws in sockets:
        msg = await ws.receive(timeout=5)
        assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == close_codes.GOING_AWAY
        assert json.loads(msg.extra) == {"code": "shutdown", "retry_ms": 1000}
    await session.close()
