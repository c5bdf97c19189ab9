"""A bug somewhere behind the gateway costs the one request or event it touched, never the
connection, the room or the server: each is answered or logged, and the rest goes on."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from conftest import bearer
from wsclient import Client

from gateway.bus import DIRECT
from live.auth import Role
from live.server import Running


def token(server: Running, user: str, role: Role = Role.VIEWER) -> str:
    return server.services.auth.mint(user, "shop", role, 600)


async def test_a_bug_behind_the_handshake_is_a_500_with_a_code(
    server: Running, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    await server.services.rooms.create("show", host_id="host1", room_id="shop")
    admissions = server.services.hub.admissions

    async def broken(room_id: str, token: str | None) -> Any:
        raise RuntimeError("a bug in the directory")

    monkeypatch.setattr(admissions.directory, "admit", broken)
    headers = {**bearer(token(server, "fan")), "Upgrade": "websocket"}
    async with http.get("/ws/rooms/shop", headers=headers) as response:
        assert response.status == 500
        assert (await response.json())["error"]["code"] == "internal"
    monkeypatch.undo()
    viewer = await Client.connect(http, "shop", token(server, "fan"))  # the next one is let in
    await viewer.close()


async def test_a_bad_event_and_a_failed_tick_cost_nothing_else(
    server: Running, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    await server.services.rooms.create("show", host_id="host1", room_id="shop")
    hub = server.services.hub
    host = await Client.connect(http, "shop", token(server, "host1", Role.HOST))
    viewer = await Client.connect(http, "shop", token(server, "fan"))
    # an event no code path can read (a bug upstream): logged, and the next one still goes out
    hub.on_events("shop", [(DIRECT, {"no": "recipient"})])
    room = hub.rooms["shop"]

    async def broken_flush() -> int:
        raise RuntimeError("a bug in a tick")

    monkeypatch.setattr(room, "flush", broken_flush)
    await viewer.send({"type": "comment", "text": "hi", "rid": "c1"})
    await viewer.recv_until(lambda m: m.get("rid") == "c1", timeout=10)
    ticks = hub.config.tick_ms / 1000
    await asyncio.sleep(3 * ticks)  # a few ticks fail on this room (logged, each)
    monkeypatch.undo()
    await host.send({"type": "host_message", "text": "still here", "rid": "h1"})
    said = await viewer.recv_until(lambda m: m["type"] == "host_message", timeout=10)
    assert said["text"] == "still here"
    await host.close()
    await viewer.close()
