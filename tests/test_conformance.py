"""The shared protocol vectors (protocol/vectors/*.json, format in protocol/vectors/README.md)
against a real server, in each framing a case names; and every error code of docs/protocol.md
is in some vector or in NOT_COVERED."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import pytest
import pytest_asyncio

from live.auth import ANY_ROOM, Role
from live.server import Running, running
from live.settings import Settings
from protocol.vectors import framings, load_cases, mismatch, save, subst, subst_text
from tests.wsclient import JSON, MSGPACK

UPGRADE = {
    "Connection": "Upgrade",
    "Upgrade": "websocket",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
}
#: Error codes of docs/protocol.md that no vector produces, and why.
NOT_COVERED = {
    "unavailable": "Redis not answering: needs a fault injected into the server",
    "internal": "a server bug: nothing a client can send produces it",
    "frozen": "needs an operator's `live reconcile --repair` running",
    "banned_words": "needs a banned_words_file in the server's settings",
    "hold_expired": "a race: the hold expiring while it is being confirmed",
    "payment_failed": "needs a failing payment step",
    "amount_changed": "a race: the price changing while paying",
    "team_closed": "needs a team's deadline to pass (timing)",
    "team_exists": "a share-code collision (rare by design)",
    "auction_ended": "needs an auction's end to come (timing)",
    "offer_expired": "needs an offer's pay_by_ms to pass (timing)",
    "queue_full": "needs question_max_open (1000) open questions",
    "draw_full": "needs draw_max_entries entrants",
    "claim_expired": "needs a claim window to pass (timing)",
    "draw_open": "HTTP only (the draw verification endpoint), not a WebSocket frame",
}


CASES = load_cases()
PARAMS = [
    pytest.param(case, framing, id=f"{cid}[{framing}]") for cid, case in CASES for framing in framings(case)
]

REPLIES = ("ack", "error", "pong")


# -- the runner ----------------------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def conformance_server(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str
) -> AsyncIterator[Running]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("conformance") / "data",
        redis_url=redis_url,
        key_prefix=f"t{uuid.uuid4().hex[:12]}",
        secret="conformance-secret-" + "s" * 40,
        port=0,
        buy_ip_burst=100_000,
        buy_ip_rate_per_s=100_000,
        max_connections_per_ip=10_000,
    )
    async with running(settings) as srv:
        yield srv


class Conn:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse, framing: str) -> None:
        self.ws = ws
        self.binary = framing == "msgpack"

    async def send(self, step: dict[str, Any], names: dict[str, Any]) -> None:
        if "send" in step:
            frame = subst(step["send"], names)
            if self.binary:
                await self.ws.send_bytes(msgpack.packb(frame))
            else:
                await self.ws.send_str(json.dumps(frame, ensure_ascii=False))
        elif "send_text" in step:
            await self.ws.send_str(subst_text(step["send_text"], names))
        elif "send_binary_hex" in step:
            await self.ws.send_bytes(bytes.fromhex(step["send_binary_hex"]))

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        msg = await self.ws.receive(timeout=timeout)
        if msg.type is aiohttp.WSMsgType.TEXT:
            assert not self.binary, "a text frame on a MessagePack connection"
            return dict(json.loads(msg.data))
        if msg.type is aiohttp.WSMsgType.BINARY:
            assert self.binary, "a binary frame on a JSON connection"
            return dict(msgpack.unpackb(msg.data))
        raise ConnectionError(f"closed: {msg.type} {msg.data} {msg.extra}")

    async def expect(self, patterns: list[Any], names: dict[str, Any]) -> dict[str, Any] | None:
        """Each pattern in order; events between are skipped, a reply that does not match fails.
        Returns the last reply (ack, error, pong) matched."""
        reply = None
        for pattern in patterns:
            deadline = time.monotonic() + 5
            while True:
                frame = await self.recv(max(0.01, deadline - time.monotonic()))
                why = mismatch(pattern, frame, names)
                if why is None:
                    if frame["type"] in REPLIES:
                        reply = frame
                    break
                assert frame["type"] not in REPLIES, f"{frame} does not match {pattern}: {why}"
        return reply

    async def closed(self) -> tuple[int | None, str]:
        deadline = time.monotonic() + 5
        while True:
            msg = await self.ws.receive(timeout=max(0.01, deadline - time.monotonic()))
            if msg.type is aiohttp.WSMsgType.CLOSE:
                return int(msg.data), str(msg.extra or "")
            if msg.type in (aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                return self.ws.close_code, ""
            if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                continue  # events before the close


class Case:
    def __init__(self, srv: Running, http: aiohttp.ClientSession, case: dict[str, Any], framing: str) -> None:
        self.srv, self.http, self.case, self.framing = srv, http, case, framing
        connect = case.get("connect", {})
        self.connect = connect
        host = f"h{uuid.uuid4().hex[:8]}"
        user = connect.get("user", "$user").replace("$host_id", host)
        self.names: dict[str, Any] = {
            "room_id": f"cf{uuid.uuid4().hex[:10]}",
            "host_id": host,
            "user_id": f"u{uuid.uuid4().hex[:8]}" if user == "$user" else user,
            "missing_room_id": f"no{uuid.uuid4().hex[:10]}",
        }
        self.names["token"] = self.token(connect.get("token", "valid"))
        self.host_token = srv.services.auth.mint(host, ANY_ROOM, Role.HOST, 600)
        self.host: Conn | None = None

    def token(self, kind: str) -> str | None:
        user, role = self.names["user_id"], Role(self.connect.get("role", "viewer"))
        mint = self.srv.services.auth.mint
        return {
            "valid": lambda: mint(user, ANY_ROOM, role, 600),
            "expired": lambda: mint(user, ANY_ROOM, role, -60),
            "wrong_room": lambda: mint(user, "some_other_room", role, 600),
            "invalid": lambda: "forged.token.value",
            "none": lambda: None,
        }[kind]()

    async def host_send(self, frame: dict[str, Any]) -> dict[str, Any]:
        """Send as the room's host (its own connection); its ack."""
        if self.host is None:
            ws = await self.http.ws_connect(
                f"/ws/rooms/{self.names['room_id']}",
                headers={"Authorization": f"Bearer {self.host_token}"},
                protocols=(JSON,),
            )
            self.host = Conn(ws, "json")
            assert (await self.host.recv())["type"] == "welcome"
        rid = f"host{uuid.uuid4().hex[:8]}"
        await self.host.send({"send": {**subst(frame, self.names), "rid": rid}}, self.names)
        while True:
            reply = await self.host.recv()
            if reply.get("rid") == rid:
                assert reply["type"] == "ack", reply
                return reply

    async def setup(self) -> None:
        room = {"id": self.names["room_id"], "title": "conformance", **self.case.get("room", {})}
        await self.post("/api/rooms", room)
        for item in self.case.get("setup", []):
            if "post" in item:
                answer = await self.post(subst(item["post"], self.names), subst(item.get("body"), self.names))
            else:
                answer = await self.host_send(item["host"])
            save(item.get("save", {}), answer, self.names)

    async def post(self, path: str, body: Any) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.host_token}"}
        async with self.http.post(path, json=body, headers=headers) as resp:
            answer = await resp.json()
            assert resp.status in (200, 201), (path, resp.status, answer)
            return dict(answer)

    def request(self) -> tuple[str, dict[str, str], dict[str, str]]:
        room = subst(self.connect.get("room", "$room_id"), self.names)
        params = dict(self.connect.get("query", {}))
        headers: dict[str, str] = {}
        auth, token = self.connect.get("auth", "header"), self.names["token"]
        if auth == "message":
            params["auth"] = "message"
        elif token is not None and auth == "query":
            params["token"] = token
        elif token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return f"/ws/rooms/{room}", params, headers

    async def run(self) -> None:
        await self.setup()
        path, params, headers = self.request()
        protocol = MSGPACK if self.framing == "msgpack" else JSON
        if "handshake" in self.case:
            expected = self.case["handshake"]
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await self.http.ws_connect(path, params=params, headers=headers, protocols=(protocol,))
            assert info.value.status == expected["status"]
            upgrade = {**UPGRADE, **headers, "Sec-WebSocket-Protocol": protocol}
            async with self.http.get(path, params=params, headers=upgrade) as resp:
                assert resp.status == expected["status"]
                assert (await resp.json())["error"]["code"] == expected["code"]
            return
        ws = await self.http.ws_connect(path, params=params, headers=headers, protocols=(protocol,))
        conn = Conn(ws, self.framing)
        try:
            if self.connect.get("auth") == "message":
                token = self.names["token"]
                default = {"type": "auth", **({"token": token} if token is not None else {})}
                await conn.send(self.connect.get("first", {"send": default}), self.names)
            welcome = self.case.get("welcome", {"type": "welcome"})
            if welcome is not False:
                frame = await conn.recv()
                why = mismatch(welcome, frame, self.names)
                assert why is None, f"welcome {frame}: {why}"
            for step in self.case.get("steps", []):
                if "host" in step:
                    reply = await self.host_send(step["host"])
                    await conn.expect(subst(step.get("expect", []), {}), self.names)
                else:
                    await conn.send(step, self.names)
                    reply = await conn.expect(step.get("expect", []), self.names)
                if "save" in step:
                    assert reply is not None, "nothing to save from"
                    save(step["save"], reply, self.names)
            if "close" in self.case:
                code, reason = await conn.closed()
                assert code == self.case["close"]["code"], (code, reason)
                why = mismatch(self.case["close"].get("reason", {}), json.loads(reason or "{}"), self.names)
                assert why is None, f"close reason {reason}: {why}"
        finally:
            await ws.close()
            if self.host is not None:
                await self.host.ws.close()


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(("case", "framing"), PARAMS)
async def test_vector(conformance_server: Running, case: dict[str, Any], framing: str) -> None:
    async with aiohttp.ClientSession(base_url=conformance_server.url) as http:
        await Case(conformance_server, http, case, framing).run()


def _codes_in(value: Any) -> set[str]:
    if isinstance(value, dict):
        found = {value["code"]} if isinstance(value.get("code"), str) else set()
        return found.union(*(_codes_in(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_codes_in(v) for v in value))
    return set()


def documented_error_codes() -> set[str]:
    """The codes of docs/protocol.md's error table and its first-message auth table."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "protocol.md").read_text(encoding="utf-8")
    codes: set[str] = set()
    for heading in ("## Error codes", "### First-message auth"):
        section = doc.split(heading, 1)[1].split("\n#", 1)[0]
        for line in section.splitlines():
            cells = line.split("|")
            if line.startswith("| `") and len(cells) > 2:
                codes.update(re.findall(r"`([a-z_]+)`", cells[1]))
    return codes


def test_every_documented_error_code_has_a_vector() -> None:
    documented = documented_error_codes()
    assert len(documented) > 50
    covered = set().union(*(_codes_in(case) for _cid, case in CASES))
    missing = documented - covered - set(NOT_COVERED)
    assert not missing, f"error codes in docs/protocol.md with no vector and not in NOT_COVERED: {missing}"
    stale = set(NOT_COVERED) & covered
    assert not stale, f"NOT_COVERED lists codes a vector covers: {stale}"
    assert set(NOT_COVERED) <= documented, set(NOT_COVERED) - documented


def test_the_vectors_are_well_formed() -> None:
    names = [cid for cid, _ in CASES]
    assert len(names) == len(set(names)), "case names repeat"
    allowed = {"name", "doc", "server_only", "room", "setup", "connect", "handshake", "welcome", "steps"}
    allowed.add("close")
    for cid, case in CASES:
        assert set(case) <= allowed, (cid, set(case) - allowed)
        assert case.get("connect", {}).get("framing", "both") in ("json", "msgpack", "both"), cid
        for step in case.get("steps", []):
            sends = {"send", "send_text", "send_binary_hex", "host"} & set(step)
            assert len(sends) <= 1, (cid, step)
            if {"send_text", "send_binary_hex"} & set(step):
                assert case.get("server_only"), f"{cid}: raw frames are server_only"
