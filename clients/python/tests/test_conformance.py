"""The shared protocol vectors (protocol/vectors/*.json, format in protocol/vectors/README.md)
through live_client against a real ``live serve``: each server frame a vector expects must come
out of the client as its documented typed result. An ack is the method's typed return (its
fields as the vector says), an error is the exception class ``live_client.errors`` maps its
code to (with ``.code`` and the extra fields in ``.data``), a refused handshake is that class
with ``.status``, and a close is the client's typed stop (4401 Unauthorized, 4403 Forbidden).

``"auth": "message"`` cases connect with the client's first-message auth (``auth="message"``,
its own first message: the case's default ``first``); ``header`` and ``query`` cases with the
header (``auth="header"``: the refusals are the same). A refused first-message auth
(``"welcome": false``) is the typed error ``connect()`` raises: the class of the ``error``
frame's code, the close's typed stop, with the close reason's code, and not retried.

Skipped, case by case with the reason: vectors marked ``server_only`` (raw or malformed frames
the client API cannot send, among them first messages other than the client's own)."""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from conftest import Server, mint
from protocol.vectors import framings, load_cases, mismatch, save, subst

from live_client import (
    ERRORS,
    Forbidden,
    HostClient,
    LiveError,
    NotFound,
    RoomClient,
    Unauthorized,
)
from live_client.room import Auth, room_url

REPLIES = ("ack", "error", "pong")
#: The typed stop of a close code (the reason's code is the exception's ``.code``).
CLOSES: dict[int, type[LiveError]] = {4401: Unauthorized, 4403: Forbidden, 4404: NotFound}


CASES = load_cases()
PARAMS = [
    pytest.param(case, framing, id=f"{cid}[{framing}]") for cid, case in CASES for framing in framings(case)
]


# -- frames to client calls ----------------------------------------------------------------------


def _view(model: Any) -> dict[str, Any]:
    """A typed result as a dict of its typed fields (nested models too), without ``data``."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != "data"}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return dict(strip(dataclasses.asdict(model)))


Call = Callable[[RoomClient, dict[str, Any], str | None], Awaitable[dict[str, Any]]]


async def _ping(r: RoomClient, f: dict[str, Any], rid: str | None) -> dict[str, Any]:
    return {"server_time_ms": await r.ping()}


async def _comment(r: RoomClient, f: dict[str, Any], rid: str | None) -> dict[str, Any]:
    return {"seq": await r.comment(f["text"])}


async def _reserve(r: RoomClient, f: dict[str, Any], rid: str | None) -> dict[str, Any]:
    return _view(await r.reserve(f["sale_id"], f["quantity"], rid=rid))


async def _confirm(r: RoomClient, f: dict[str, Any], rid: str | None) -> dict[str, Any]:
    return {"order": _view(await r.confirm(f["hold_id"], f.get("coupon_id"), rid=rid))}


async def _cancel(r: RoomClient, f: dict[str, Any], rid: str | None) -> dict[str, Any]:
    return _view(await r.cancel(f["hold_id"], rid=rid))


async def _open_team(r: RoomClient, f: dict[str, Any], rid: str | None) -> dict[str, Any]:
    return _view(await r.open_team(f["sale_id"], f.get("quantity", 1), rid=rid))


async def _join_team(r: RoomClient, f: dict[str, Any], rid: str | None) -> dict[str, Any]:
    return _view(await r.join_team(f["sale_id"], f["code"], f.get("quantity", 1), rid=rid))


async def _claim_coupon(r: RoomClient, f: dict[str, Any], rid: str | None) -> dict[str, Any]:
    return _view(await r.claim_coupon(f["sale_id"], f["batch_id"]))


async def _bid(r: RoomClient, f: dict[str, Any], rid: str | None) -> dict[str, Any]:
    return _view(await r.bid(f["auction_id"], f["amount_cents"], rid=rid))


async def _pay_auction(r: RoomClient, f: dict[str, Any], rid: str | None) -> dict[str, Any]:
    return {"order": _view(await r.pay_auction(f["auction_id"]))}


async def _enter_draw(r: RoomClient, f: dict[str, Any], rid: str | None) -> dict[str, Any]:
    return {"entered": await r.enter_draw(f["draw_id"])}


async def _claim_prize(r: RoomClient, f: dict[str, Any], rid: str | None) -> dict[str, Any]:
    return _view(await r.claim_prize(f["draw_id"]))


async def _vote(r: RoomClient, f: dict[str, Any], rid: str | None) -> dict[str, Any]:
    return _view(await r.vote(f["poll_id"], f["option"]))


async def _ask(r: RoomClient, f: dict[str, Any], rid: str | None) -> dict[str, Any]:
    return {"question": _view(await r.ask(f["text"]))}


async def _upvote(r: RoomClient, f: dict[str, Any], rid: str | None) -> dict[str, Any]:
    return {"upvotes": await r.upvote(f["question_id"])}


#: The client's method for each command type; the rest go through ``request()``.
METHODS: dict[str, Call] = {
    "ping": _ping,
    "comment": _comment,
    "reserve": _reserve,
    "confirm": _confirm,
    "cancel": _cancel,
    "open_team": _open_team,
    "join_team": _join_team,
    "claim_coupon": _claim_coupon,
    "bid": _bid,
    "pay_auction": _pay_auction,
    "enter_draw": _enter_draw,
    "claim_prize": _claim_prize,
    "vote": _vote,
    "ask": _ask,
    "upvote": _upvote,
}


async def call(room: RoomClient, frame: dict[str, Any]) -> dict[str, Any] | None:
    """The frame sent through the client's method for its type: the typed result as a dict
    (None for a like). A frame the method refuses before sending (the client checks its
    arguments: ``quantity=0``, an empty text) goes through ``request()``, as raw fields."""
    fields = {k: v for k, v in frame.items() if k not in ("type", "rid")}
    rid = frame.get("rid")
    kind = frame["type"]
    if kind == "like":
        try:
            await room.like(fields.get("count", 1))
            return None
        except (TypeError, ValueError):
            pass
    elif kind in METHODS:
        try:
            return await METHODS[kind](room, fields, rid)
        except (TypeError, ValueError, KeyError):
            pass
    return await room.request(kind, fields, rid=rid, timeout_s=10)


# -- the runner ----------------------------------------------------------------------------------


class Case:
    def __init__(self, server: Server, case: dict[str, Any], framing: Any) -> None:
        self.server, self.case, self.framing = server, case, framing
        self.connect: dict[str, Any] = case.get("connect", {})
        host = f"h{uuid.uuid4().hex[:8]}"
        user = str(self.connect.get("user", "$user")).replace("$host_id", host)
        self.names: dict[str, Any] = {
            "room_id": f"cc{uuid.uuid4().hex[:10]}",
            "host_id": host,
            "user_id": f"u{uuid.uuid4().hex[:8]}" if user == "$user" else user,
            "missing_room_id": f"no{uuid.uuid4().hex[:10]}",
        }
        self.names["token"] = self.token(self.connect.get("token", "valid"))
        self.host_token = mint(host, "host")
        self.hosts = HostClient(server.url, self.host_token)
        self.host: RoomClient | None = None

    def token(self, kind: str) -> str | None:
        user, role = str(self.names["user_id"]), str(self.connect.get("role", "viewer"))
        if kind == "none":
            return None
        if kind == "invalid":
            return "forged.token.value"
        ttl_s = {"valid": 600, "wrong_room": 600, "expired": -60}[kind]
        return mint(user, role, room="some_other_room" if kind == "wrong_room" else "*", ttl_s=ttl_s)

    async def host_send(self, frame: dict[str, Any]) -> dict[str, Any]:
        if self.host is None:
            self.host = RoomClient(
                self.server.ws_url, self.host_token, room=self.names["room_id"], framing="json"
            )
            await self.host.connect()
        fields = {k: v for k, v in subst(frame, self.names).items() if k not in ("type", "rid")}
        return await self.host.request(frame["type"], fields, timeout_s=10)

    async def setup(self) -> None:
        options = self.case.get("room", {})
        await self.hosts.create_room(
            "conformance", id=self.names["room_id"], allow_anonymous=bool(options.get("allow_anonymous"))
        )
        for item in self.case.get("setup", []):
            if "post" in item:
                answer = await self.hosts.call(
                    "POST", subst(item["post"], self.names), subst(item.get("body"), self.names)
                )
            else:
                answer = await self.host_send(item["host"])
            save(item.get("save", {}), answer, self.names)

    def url(self) -> str:
        url = room_url(self.server.ws_url, subst(self.connect.get("room", "$room_id"), self.names))
        query = self.connect.get("query")
        return url + "?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else url

    async def run(self) -> None:
        await self.setup()
        auth: Auth = "message" if self.connect.get("auth") == "message" else "header"
        assert "first" not in self.connect, "a first message of its own is server_only"
        room = RoomClient(
            self.url(),
            self.names["token"],
            framing=self.framing,
            auth=auth,
            request_timeout_s=10,
            connect_timeout_s=10,
        )
        try:
            if self.case.get("welcome") is False:
                await self.refused(room)
                return
            if "handshake" in self.case:
                expected = self.case["handshake"]
                with pytest.raises(LiveError) as info:
                    await room.connect()
                assert type(info.value) is ERRORS[expected["code"]], info.value
                assert info.value.code == expected["code"] and info.value.status == expected["status"]
                return
            await room.connect()
            welcome = self.case.get("welcome", {"type": "welcome"})
            why = mismatch(welcome, room.welcome.data, self.names)
            assert why is None, f"welcome {room.welcome.data}: {why}"
            typed = _view(room.welcome)
            pattern = {k: v for k, v in welcome.items() if k in typed}
            # a typed model has every field: one the server left out is None there
            for name in [k for k, v in pattern.items() if v == "$absent"]:
                assert typed[name] is None, f"typed welcome: {name} = {typed[name]!r}"
                del pattern[name]
            why = mismatch(pattern, typed, self.names)
            assert why is None, f"typed welcome {typed}: {why}"
            for step in self.case.get("steps", []):
                await self.step(room, step)
            if "close" in self.case:
                await self.closed(room)
        finally:
            await room.close()
            if self.host is not None:
                await self.host.close()

    async def step(self, room: RoomClient, step: dict[str, Any]) -> None:
        expect = step.get("expect", [])
        replies = [p for p in expect if p.get("type") in REPLIES]
        events = [p for p in expect if p.get("type") not in REPLIES]
        assert len(replies) <= 1, "one reply per step"
        result: dict[str, Any] | None
        if "host" in step:
            result = await self.host_send(step["host"])
        elif not replies:
            assert await call(room, subst(step["send"], self.names)) is None
            result = None
        elif replies[0]["type"] == "error":
            pattern = replies[0]
            with pytest.raises(LiveError) as info:
                await call(room, subst(step["send"], self.names))
            error = info.value
            code = pattern["code"]
            assert type(error) is ERRORS[code], f"{code} raised as {type(error).__name__}: {error}"
            assert error.code == code
            extra = {k: v for k, v in pattern.items() if k not in ("type", "code", "message", "rid")}
            why = mismatch(extra, error.data, self.names) or mismatch(
                pattern.get("message", "$str"), error.message, self.names
            )
            assert why is None, f"{error!r} {error.data}: {why}"
            result = None
        else:
            result = await call(room, subst(step["send"], self.names))
            assert result is not None
            pattern = {k: v for k, v in replies[0].items() if k in result}
            why = mismatch(pattern, result, self.names)
            assert why is None, f"typed result {result}: {why}"
        for pattern in events:
            await self.event(room, pattern)
        if "save" in step:
            assert result is not None, "nothing to save from"
            save(step["save"], result, self.names)

    async def event(self, room: RoomClient, pattern: dict[str, Any]) -> None:
        deadline = time.monotonic() + 5
        while True:
            event = await room.next_event(max(0.01, deadline - time.monotonic()))
            if event.type == pattern["type"] and mismatch(pattern, event.data, self.names) is None:
                return

    async def refused(self, room: RoomClient) -> None:
        """A refused first-message auth: no welcome; ``connect()`` raises at once (no retry
        until the connect timeout) the error frame's class, which is also the close's stop."""
        expected = [p for step in self.case.get("steps", []) for p in step.get("expect", [])]
        assert all("send" not in step and "host" not in step for step in self.case.get("steps", []))
        (pattern,) = expected  # the error frame, before the close
        assert pattern["type"] == "error"
        started = time.monotonic()
        with pytest.raises(LiveError) as info:
            await room.connect()
        assert time.monotonic() - started < 5, "retried"
        error = info.value
        assert type(error) is ERRORS[pattern["code"]], f"{pattern['code']} raised as {error!r}"
        assert error.status is None and room.stats.reconnects == 0
        why = mismatch(pattern.get("message", "$str"), error.message, self.names)
        assert why is None, f"{error!r}: {why}"
        self.check_close(room, error)

    async def closed(self, room: RoomClient) -> None:
        with pytest.raises(LiveError) as info:
            deadline = time.monotonic() + 5
            while True:
                await room.next_event(max(0.01, deadline - time.monotonic()))
        self.check_close(room, info.value)

    def check_close(self, room: RoomClient, error: LiveError) -> None:
        expected = self.case["close"]
        assert isinstance(error, CLOSES[expected["code"]]), error
        assert room.stats.last_close_code == expected["code"]
        reason = expected.get("reason", {})
        why = mismatch(reason, json.loads(room.stats.last_close_reason or "{}"), self.names)
        assert why is None, f"close reason {room.stats.last_close_reason!r}: {why}"
        if "code" in reason:
            assert error.code == reason["code"], error


@pytest.mark.parametrize(("case", "framing"), PARAMS)
async def test_vector(server: Server, case: dict[str, Any], framing: str) -> None:
    if case.get("server_only"):
        pytest.skip(f"server_only: {case['server_only']}")
    await Case(server, case, framing).run()
