"""Moderation that cannot lock a host out, lifting bans and mutes, and resume with a last_seq
past anything the room can have (issue 11, items 6 and 12). Real server, Redis and sockets."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from test_gateway import token
from wsclient import Client

from gateway import close_codes
from live.auth import Role
from live.server import Running


@pytest.fixture
async def room(server: Running) -> str:
    await server.services.rooms.create("room", host_id="host1", room_id="shop")
    return "shop"


async def ask(client: Client, message: dict[str, Any]) -> dict[str, Any]:
    """Send a command and return its ack or error (matched by rid)."""
    await client.send(message)
    return await client.recv_until(lambda m: m.get("rid") == message["rid"] and m["type"] in ("ack", "error"))


async def acked(client: Client, message: dict[str, Any]) -> None:
    reply = await ask(client, message)
    assert reply["type"] == "ack", reply


async def next_priority(client: Client) -> dict[str, Any]:
    """The next priority event (anything with a seq that is not a batch)."""
    return await client.recv_until(lambda m: "seq" in m and m["type"] not in ("batch", "ack"))


async def test_a_moderator_cannot_mute_or_ban_the_host(
    server: Running, http: aiohttp.ClientSession, room: str
) -> None:
    host = await Client.connect(http, room, token(server, "host1", Role.HOST))
    mod = await Client.connect(http, room, token(server, "mod", Role.MODERATOR))
    fan = await Client.connect(http, room, token(server, "fan"))

    refused = await ask(mod, {"type": "ban", "user_id": "host1", "rid": "b"})
    assert (refused["type"], refused["code"]) == ("error", "protected_user")
    refused = await ask(mod, {"type": "mute", "user_id": "host1", "duration_s": 600, "rid": "m"})
    assert (refused["type"], refused["code"]) == ("error", "protected_user")
    # nor by a slip of a host's own hand
    refused = await ask(host, {"type": "ban", "user_id": "host1", "rid": "self"})
    assert refused["code"] == "protected_user"

    # Nothing changed: no ban recorded, no event, the host still in, talking and commenting.
    assert not await server.services.hub.bus.is_banned(room, "host1")
    await host.send({"type": "host_message", "text": "still here"})
    event = await next_priority(fan)
    assert (event["type"], event["text"]) == ("host_message", "still here")
    await acked(host, {"type": "comment", "text": "hello", "rid": "c1"})
    again = await Client.connect(http, room, token(server, "host1", Role.HOST))
    await acked(again, {"type": "comment", "text": "hi again", "rid": "c2"})

    # A host's ban of a viewer still works, of course.
    troll = await Client.connect(http, room, token(server, "troll"))
    await acked(mod, {"type": "ban", "user_id": "troll", "rid": "b2"})
    assert (await troll.closed())[0] == close_codes.BANNED


async def test_a_host_lifts_a_ban_and_a_mute(server: Running, http: aiohttp.ClientSession, room: str) -> None:
    host = await Client.connect(http, room, token(server, "host1", Role.HOST))
    fan = await Client.connect(http, room, token(server, "fan"))
    troll = await Client.connect(http, room, token(server, "troll"))

    await acked(host, {"type": "ban", "user_id": "troll", "rid": "b"})
    assert (await next_priority(fan))["type"] == "user_banned"
    assert (await troll.closed())[0] == close_codes.BANNED
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await Client.connect(http, room, token(server, "troll"))
    assert info.value.status == 403

    await acked(host, {"type": "unban", "user_id": "troll", "rid": "u"})
    lifted = await next_priority(fan)
    assert (lifted["type"], lifted["user_id"], lifted["by"]) == ("user_unbanned", "troll", "host1")
    assert lifted["ts_ms"] > 0
    troll = await Client.connect(http, room, token(server, "troll"))  # welcome again
    await acked(troll, {"type": "comment", "text": "sorry", "rid": "c1"})

    await acked(host, {"type": "mute", "user_id": "troll", "duration_s": 600, "rid": "m"})
    assert (await ask(troll, {"type": "comment", "text": "hey", "rid": "c2"}))["code"] == "muted"
    await acked(host, {"type": "unmute", "user_id": "troll", "rid": "um"})
    events = [await next_priority(fan) for _ in range(2)]
    assert [e["type"] for e in events] == ["user_muted", "user_unmuted"]
    assert (events[1]["user_id"], events[1]["by"]) == ("troll", "host1")
    await acked(troll, {"type": "comment", "text": "thanks", "rid": "c3"})

    # Lifting what is not there is acked and announces nothing: the next event is the host's.
    await acked(host, {"type": "unban", "user_id": "nobody", "rid": "u2"})
    await acked(host, {"type": "unmute", "user_id": "troll", "rid": "um2"})
    await host.send({"type": "host_message", "text": "next"})
    assert (await next_priority(fan))["type"] == "host_message"


async def test_who_may_lift_bans_and_mutes(server: Running, http: aiohttp.ClientSession, room: str) -> None:
    host = await Client.connect(http, room, token(server, "host1", Role.HOST))
    mod = await Client.connect(http, room, token(server, "mod", Role.MODERATOR))
    fan = await Client.connect(http, room, token(server, "fan"))

    # A moderator lifts a viewer's ban and mute.
    await acked(host, {"type": "ban", "user_id": "troll", "rid": "b"})
    await acked(mod, {"type": "unban", "user_id": "troll", "rid": "u"})
    await Client.connect(http, room, token(server, "troll"))
    await acked(host, {"type": "mute", "user_id": "fan", "duration_s": 60, "rid": "m"})
    await acked(mod, {"type": "unmute", "user_id": "fan", "rid": "um"})
    await acked(fan, {"type": "comment", "text": "free", "rid": "c1"})

    # A moderator the host muted cannot lift their own mute; the host can.
    await acked(host, {"type": "mute", "user_id": "mod", "duration_s": 60, "rid": "m2"})
    refused = await ask(mod, {"type": "unmute", "user_id": "mod", "rid": "um2"})
    assert (refused["type"], refused["code"]) == ("error", "forbidden")
    assert (await ask(mod, {"type": "comment", "text": "me?", "rid": "c2"}))["code"] == "muted"
    await acked(host, {"type": "unmute", "user_id": "mod", "rid": "um3"})
    await acked(mod, {"type": "comment", "text": "back", "rid": "c3"})

    # A viewer lifts nothing; a command without its user is refused with a typed error.
    assert (await ask(fan, {"type": "unban", "user_id": "troll", "rid": "v"}))["code"] == "forbidden"
    assert (await ask(fan, {"type": "unmute", "user_id": "fan", "rid": "v2"}))["code"] == "forbidden"
    assert (await ask(host, {"type": "unban", "rid": "x"}))["code"] == "missing_field"
    assert (await ask(host, {"type": "unmute", "user_id": 7, "rid": "y"}))["code"] == "invalid_field"


@pytest.mark.parametrize(
    "last_seq",
    [str(2**63 - 1), str(2**63), str(2**64), str(10**30), "9" * 5000],
    ids=["2**63-1", "2**63", "2**64", "10**30", "5000 digits"],
)
async def test_a_last_seq_past_any_seq_gets_a_fresh_snapshot(
    server: Running, http: aiohttp.ClientSession, room: str, last_seq: str
) -> None:
    host = await Client.connect(http, room, token(server, "host1", Role.HOST))
    await host.send({"type": "host_message", "text": "before"})
    await host.recv_type("host_message")
    params = {"token": token(server, "v"), "last_seq": last_seq}
    viewer = Client(await http.ws_connect(f"/ws/rooms/{room}", params=params))
    viewer.welcome = await viewer.recv()
    assert viewer.welcome["type"] == "welcome"
    assert viewer.welcome["resumed"] is False and viewer.welcome["seq"] == 1
    await host.send({"type": "host_message", "text": "live"})
    assert (await viewer.recv_type("host_message"))["text"] == "live"


@pytest.mark.parametrize("last_seq", ["-1", "+5", " 5", "1_000", "5.0", "٣", "0x10"])
async def test_a_last_seq_that_is_not_a_plain_number_is_refused(
    server: Running, http: aiohttp.ClientSession, room: str, last_seq: str
) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await http.ws_connect(f"/ws/rooms/{room}", params={"token": token(server, "v"), "last_seq": last_seq})
    assert info.value.status == 400
    upgrade = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    params = {"token": token(server, "v"), "last_seq": last_seq}
    async with http.get(f"/ws/rooms/{room}", params=params, headers=upgrade) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == "invalid_field"
