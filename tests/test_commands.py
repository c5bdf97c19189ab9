"""The command registry (gateway/commands.py): the app registers a command, the gateway checks
its fields and the sender's role and routes it; and a live server routes an app command it has
never heard of to the app's handler."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from registry import every_command
from test_gateway import token
from wsclient import Client

from gateway import messages
from gateway.commands import STAFF, Caller, Registry
from gateway.frames import OP_TEXT
from gateway.messages import Command, Field, Framing, ProtocolError
from live.auth import Role
from live.commands import BUYING, register
from live.server import Running

VIEWER = Caller("r", "alice", "viewer", "10.0.0.1", anonymous=False)
ANON = Caller("r", "anon_x", "viewer", "10.0.0.2", anonymous=True)
HOST = Caller("r", "host1", "host", "10.0.0.3", anonymous=False)


@pytest.fixture
async def room(server: Running) -> str:
    await server.services.rooms.create("room", host_id="host1", room_id="shop")
    return "shop"


class Buyer:
    """Records what it is asked, as the app's buyer would be."""

    def __init__(self) -> None:
        self.seen: list[tuple[Caller, Command]] = []

    async def command(self, caller: Caller, command: Command) -> dict[str, Any]:
        self.seen.append((caller, command))
        return {"hold_id": "h1", "sale_id": command.fields.get("sale_id")}


def decode(registry: Registry[Any], message: bytes) -> Command:
    return messages.decode(Framing.JSON, OP_TEXT, message, registry)


def refusal(registry: Registry[Any], message: bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode(registry, message)
    return info.value


async def test_an_app_command_is_registered_checked_and_routed() -> None:
    registry: Registry[Caller] = Registry()
    buyer = Buyer()
    register(registry, buyer)
    assert set(registry) == set(BUYING) and all(registry[name].needs_rid for name in BUYING)
    command = decode(registry, b'{"type":"reserve","rid":"r1","sale_id":"s1","quantity":2,"x":1}')
    assert command == Command("reserve", "r1", {"sale_id": "s1", "quantity": 2})
    spec = registry["reserve"]
    registry.allow(spec, VIEWER, command.rid)  # anyone admitted may send it
    work = spec.handler(VIEWER, command)
    assert work is not None
    assert await work == {"hold_id": "h1", "sale_id": "s1"}
    assert buyer.seen == [(VIEWER, command)]


def test_the_rid_an_app_command_needs() -> None:
    registry: Registry[Caller] = Registry()
    register(registry, Buyer())
    error = refusal(registry, b'{"type":"reserve","sale_id":"s1","quantity":1}')
    assert (error.code, error.message, error.rid) == (
        "missing_field",
        "reserve needs a 'rid' (it makes retries safe)",
        None,
    )


def test_roles_are_refused_before_anything_runs() -> None:
    registry: Registry[Caller] = Registry()
    ran: list[str] = []

    def run(caller: Caller, command: Command) -> None:
        ran.append(command.type)

    staff = registry.register("lock_room", run, roles=STAFF)
    members = registry.register("vote", run, {"option": Field(int)}, signed_in=True)
    with pytest.raises(ProtocolError) as info:
        registry.allow(staff, VIEWER, "r9")
    assert (info.value.code, info.value.message, info.value.rid) == (
        "forbidden",
        "only hosts and moderators may send lock_room",
        "r9",
    )
    registry.allow(staff, HOST, None)
    with pytest.raises(ProtocolError) as info:
        registry.allow(members, ANON, None)
    assert info.value.code == "login_required"
    registry.allow(members, VIEWER, None)
    assert ran == []  # allow() only decides


def test_field_schemas_are_checked() -> None:
    registry = every_command()
    assert refusal(registry, b'{"type":"reserve","rid":"r","quantity":1}').code == "missing_field"
    wrong = refusal(registry, b'{"type":"reserve","rid":"r","sale_id":"s","quantity":"1"}')
    assert (wrong.code, wrong.message, wrong.rid) == (
        "invalid_field",
        "the field 'quantity' must be an integer",
        "r",
    )
    assert (
        refusal(registry, b'{"type":"reserve","rid":"r","sale_id":"s","quantity":true}').code
        == "invalid_field"
    )
    huge = refusal(registry, b'{"type":"mute","user_id":"u","duration_s":' + b"9" * 20 + b"}")
    assert huge.message == "the field 'duration_s' is out of range"
    # optional fields may be absent; a null counts as absent
    assert decode(registry, b'{"type":"confirm","rid":"r","hold_id":"h","coupon_id":null}').fields == {
        "hold_id": "h"
    }


def test_an_unknown_command_is_refused() -> None:
    registry: Registry[Caller] = Registry()
    register(registry, Buyer())
    error = refusal(registry, b'{"type":"comment","text":"hi","rid":"c1"}')  # the gateway's, not here
    assert (error.code, error.message, error.rid) == ("unknown_type", "unknown message type 'comment'", "c1")
    # without a registry only the envelope is checked; check() then refuses it the same way
    unchecked = messages.decode(Framing.JSON, OP_TEXT, b'{"type":"bid","amount":5}')
    assert unchecked == Command("bid", None, {"amount": 5})
    with pytest.raises(ProtocolError) as info:
        messages.check(unchecked, registry)
    assert info.value.code == "unknown_type"


def test_a_command_is_registered_once() -> None:
    registry: Registry[Caller] = Registry()
    register(registry, Buyer())
    with pytest.raises(ValueError, match="'reserve' is registered already"):
        register(registry, Buyer())
    with pytest.raises(ValueError, match="registered already"):
        registry.register("confirm", Buyer().command)
    with pytest.raises(ValueError, match="cannot be checked"):
        registry.register("bid", Buyer().command, {"rid": Field(str)})


async def test_a_live_server_routes_a_new_app_command_to_its_handler(
    server: Running, http: aiohttp.ClientSession, room: str
) -> None:
    """A command the gateway has never heard of, added by the app alone: decoded, checked and
    answered by the app's handler, over a real socket."""
    bids: list[tuple[str, int]] = []

    async def bid(caller: Caller, command: Command) -> dict[str, Any]:
        if command.fields["amount"] <= 0:
            raise ProtocolError("invalid_field", "'amount' must be positive")
        bids.append((caller.user_id, command.fields["amount"]))
        return {"amount": command.fields["amount"], "leading": True}

    server.services.hub.commands.register(
        "offer", bid, {"amount": Field(int)}, signed_in=True, needs_rid=True
    )
    alice = await Client.connect(http, room, token(server, "alice"))
    await alice.send({"type": "offer", "rid": "b1", "amount": 30})
    ack = await alice.recv_until(lambda m: m.get("rid") == "b1")
    assert ack == {"type": "ack", "rid": "b1", "of": "offer", "amount": 30, "leading": True}
    await alice.send({"type": "offer", "rid": "b2", "amount": -1})
    error = await alice.recv_until(lambda m: m.get("rid") == "b2")
    assert (error["type"], error["code"]) == ("error", "invalid_field")
    await alice.send({"type": "offer", "rid": "b3", "amount": "30"})
    assert (await alice.recv_until(lambda m: m.get("rid") == "b3"))["code"] == "invalid_field"
    assert bids == [("alice", 30)]  # refusals ran nothing
    host = await Client.connect(http, room, token(server, "host1", Role.HOST))
    await host.send({"type": "unpin_product", "rid": "u1"})  # the gateway's own still route
    assert (await host.recv_until(lambda m: m.get("rid") == "u1"))["type"] == "ack"
    await alice.close()
    await host.close()
