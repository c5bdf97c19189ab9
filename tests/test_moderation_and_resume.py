"""Moderation (mute, ban, delete, slow mode, clear, pin) and resume after a reconnect."""

from __future__ import annotations

import dataclasses
import json

import aiohttp
import pytest
from conftest import bearer
from test_gateway import token
from wsclient import Client

from gateway import close_codes
from live.auth import Role
from live.server import Running, running
from live.settings import Settings


@pytest.fixture
async def room(server: Running) -> str:
    await server.services.rooms.create("room", host_id="host1", room_id="shop")
    return "shop"


async def test_moderation_actions_fan_out_and_take_effect(
    server: Running, http: aiohttp.ClientSession, room: str
) -> None:
    host = await Client.connect(http, room, token(server, "host1", Role.HOST))
    mod = await Client.connect(http, room, token(server, "mod", Role.MODERATOR))
    troll = await Client.connect(http, room, token(server, "troll"))
    fan = await Client.connect(http, room, token(server, "fan"))

    await troll.send({"type": "comment", "text": "buy elsewhere", "rid": "t1"})
    comment_id = (await troll.recv_type("ack"))["seq"]
    await mod.send({"type": "delete_comment", "comment_id": comment_id, "rid": "d"})
    assert (await mod.recv_type("ack"))["of"] == "delete_comment"
    for c in (host, fan, troll):
        deleted = await c.recv_type("comment_deleted")
        assert deleted["comment_id"] == comment_id and deleted["by"] == "mod"

    await mod.send({"type": "mute", "user_id": "troll", "duration_s": 60})
    muted = await fan.recv_type("user_muted")
    assert muted["user_id"] == "troll" and muted["until_ms"] > muted["ts_ms"]
    await troll.send({"type": "comment", "text": "let me talk", "rid": "t2"})
    refused = await troll.recv_type("error")
    assert (refused["code"], refused["rid"]) == ("muted", "t2")

    await host.send({"type": "slow_mode", "interval_s": 30})
    assert (await fan.recv_type("slow_mode"))["interval_s"] == 30
    await fan.send({"type": "comment", "text": "one", "rid": "f1"})
    assert (await fan.recv_type("ack"))["rid"] == "f1"
    await fan.send({"type": "comment", "text": "two", "rid": "f2"})
    assert (await fan.recv_type("error"))["code"] == "slow_mode"
    await host.send({"type": "slow_mode", "interval_s": 0})

    await host.send({"type": "clear_chat"})
    await fan.recv_type("chat_cleared")
    late = await Client.connect(http, room, token(server, "late"))
    assert late.welcome["comments"] == [] and late.welcome["slow_mode_s"] == 0

    await mod.send({"type": "ban", "user_id": "troll"})
    assert (await fan.recv_type("user_banned"))["user_id"] == "troll"
    code, reason = await troll.closed()
    assert code == close_codes.BANNED and json.loads(reason)["code"] == "banned"
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await Client.connect(http, room, token(server, "troll"))
    assert info.value.status == 403


async def test_pinning_a_product(server: Running, http: aiohttp.ClientSession, room: str) -> None:
    host_token = token(server, "host1", Role.HOST)
    async with http.post(
        f"/api/rooms/{room}/products", json={"title": "绿茶", "price_cents": 1999}, headers=bearer(host_token)
    ) as resp:
        product = await resp.json()
    host = await Client.connect(http, room, host_token)
    viewer = await Client.connect(http, room, token(server, "v"))
    await host.send({"type": "pin_product", "product_id": "nope", "rid": "x"})
    assert (await host.recv_type("error"))["code"] == "product_not_found"
    await host.send({"type": "pin_product", "product_id": product["id"]})
    pinned = await viewer.recv_type("product_pinned")
    assert pinned["product"] == product
    newcomer = await Client.connect(http, room, token(server, "n"))
    assert newcomer.welcome["pinned"] == product
    await host.send({"type": "unpin_product"})
    await viewer.recv_type("product_unpinned")
    assert (await Client.connect(http, room, token(server, "m"))).welcome["pinned"] is None


async def test_welcome_shows_recent_comments(server: Running, http: aiohttp.ClientSession, room: str) -> None:
    chatty = await Client.connect(http, room, token(server, "chatty"))
    for i in range(3):
        await chatty.send({"type": "comment", "text": f"hello {i}", "rid": str(i)})
        await chatty.recv_type("ack")
    late = await Client.connect(http, room, token(server, "late"))
    assert [c["text"] for c in late.welcome["comments"]] == ["hello 0", "hello 1", "hello 2"]
    assert all(c["user_id"] == "chatty" and c["id"] == c["seq"] for c in late.welcome["comments"])


async def test_resume_after_reconnect(server: Running, http: aiohttp.ClientSession, room: str) -> None:
    host = await Client.connect(http, room, token(server, "host1", Role.HOST))
    viewer = await Client.connect(http, room, token(server, "v"))
    await host.send({"type": "host_message", "text": "before"})
    last_seq = (await viewer.recv_type("host_message"))["seq"]
    await viewer.close()
    for i in range(3):
        await host.send({"type": "host_message", "text": f"missed {i}"})
        await host.recv_type("host_message")
    again = await Client.connect(http, room, token(server, "v"), last_seq=last_seq)
    assert again.welcome["resumed"] is True
    missed = [await again.recv_type("host_message") for _ in range(3)]
    assert [m["text"] for m in missed] == ["missed 0", "missed 1", "missed 2"]
    assert [m["seq"] for m in missed] == sorted(m["seq"] for m in missed)
    assert missed[0]["seq"] > last_seq
    await host.send({"type": "host_message", "text": "live again"})
    assert (await again.recv_type("host_message"))["text"] == "live again"


async def test_resume_too_old_gives_a_fresh_snapshot(settings: Settings) -> None:
    async with running(dataclasses.replace(settings, history_size=10)) as srv:
        await srv.services.rooms.create("r", host_id="host1", room_id="shop")
        async with aiohttp.ClientSession(base_url=srv.url) as http:
            host = await Client.connect(http, "shop", token(srv, "host1", Role.HOST))
            for i in range(15):
                await host.send({"type": "host_message", "text": f"m{i}"})
                await host.recv_type("host_message")
            old = await Client.connect(http, "shop", token(srv, "v"), last_seq=1)
            assert old.welcome["resumed"] is False and old.welcome["seq"] == 15
            recent = await Client.connect(http, "shop", token(srv, "v"), last_seq=12)
            assert recent.welcome["resumed"] is True
            assert [(await recent.recv_type("host_message"))["text"] for _ in range(3)] == [
                "m12",
                "m13",
                "m14",
            ]
            future = await Client.connect(http, "shop", token(srv, "v"), last_seq=99)
            assert future.welcome["resumed"] is False
