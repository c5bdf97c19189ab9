"""The gateway when its Redis goes away mid-show: every request still gets a typed answer
(`unavailable`), nothing hangs, and the server still stops cleanly."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from pathlib import Path

import aiohttp
from conftest import bearer
from wsclient import Client

from gateway import close_codes
from live.auth import Role
from live.redis_server import EmbeddedRedis, find_redis_server
from live.server import running
from live.settings import Settings


async def test_a_lost_redis_gets_every_viewer_a_typed_answer(tmp_path: Path, settings: Settings) -> None:
    redis = EmbeddedRedis(tmp_path / "redis", find_redis_server(os.environ.get("LIVE_REDIS_SERVER")))
    redis.start()
    try:
        own = dataclasses.replace(settings, redis_url=redis.url, data_dir=tmp_path / "data")
        async with running(own) as server, aiohttp.ClientSession(base_url=server.url) as http:
            auth = server.services.auth
            await server.services.rooms.create("show", host_id="host1", room_id="shop")

            def token(user: str, role: Role = Role.VIEWER) -> str:
                return auth.mint(user, "shop", role, 600)

            viewer = await Client.connect(http, "shop", token("fan"))
            redis.stop()  # Redis is gone (a crash, a network cut)

            await viewer.send({"type": "comment", "text": "hello?", "rid": "c1"})
            answer = await viewer.recv_until(lambda m: m.get("rid") == "c1", timeout=30)
            assert (answer["type"], answer["code"]) == ("error", "unavailable")
            await viewer.send({"type": "like", "count": 2})  # counted locally, lost on Redis: logged
            await asyncio.sleep(0.5)  # (a few ticks try to add them)

            # a new viewer is refused with a reason, not left hanging
            async with http.get(
                "/ws/rooms/shop", headers={**bearer(token("late")), "Upgrade": "websocket"}
            ) as response:
                assert response.status == 503, await response.text()
                assert (await response.json())["error"]["code"] == "unavailable"
            await viewer.send({"type": "ping", "rid": "p1"})
            ping = await viewer.recv_until(lambda m: m.get("rid") == "p1", timeout=30)
            assert ping["type"] == "pong"  # the connection itself is fine
            await viewer.close()
    finally:
        redis.stop()


async def test_a_join_whose_reads_fail_is_answered_and_the_next_one_works(settings: Settings) -> None:
    """The admission passed, but the room's snapshot fails on Redis (here a key of the wrong
    type, a real Redis error): a handshake not upgraded yet gets 503 `unavailable`, a
    first-message auth the close 1001 with `retry_ms`; once Redis reads again, both join."""
    async with running(settings) as server, aiohttp.ClientSession(base_url=server.url) as http:
        await server.services.rooms.create("show", host_id="host1", room_id="shop")
        bus = server.services.hub.bus
        chat_key = bus.keys("shop").chat
        await bus.redis.set(chat_key, "not a stream")

        def token(user: str) -> str:
            return server.services.auth.mint(user, "shop", Role.VIEWER, 600)

        async with http.get(
            "/ws/rooms/shop", headers={**bearer(token("a")), "Upgrade": "websocket"}
        ) as response:
            assert response.status == 503
            assert (await response.json())["error"]["code"] == "unavailable"
        late = await Client.connect(http, "shop", auth={"token": token("b")}, welcome=False)
        code, reason = await late.closed()
        assert code == close_codes.GOING_AWAY
        assert json.loads(reason) == {"code": "unavailable", "retry_ms": close_codes.UNAVAILABLE_RETRY_MS}

        await bus.redis.delete(chat_key)
        for user in ("a", "b"):
            viewer = await Client.connect(http, "shop", token(user))
            assert viewer.welcome["user"]["id"] == user
            await viewer.close()
