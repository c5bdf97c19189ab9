"""A small protocol-v1 client for tests, over aiohttp's WebSocket client."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import msgpack

JSON = "live.v1.json"
MSGPACK = "live.v1.msgpack"


class Client:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.msgpack = ws.protocol == MSGPACK
        self.welcome: dict[str, Any] = {}

    @classmethod
    async def connect(
        cls,
        session: aiohttp.ClientSession,
        room: str,
        token: str | None = None,
        framing: str = JSON,
        last_seq: int | None = None,
        welcome: bool = True,
        auth: dict[str, Any] | None = None,
    ) -> Client:
        """``auth``: first-message auth (``?auth=message``), sending ``auth`` (with its
        ``"type": "auth"`` added) as the first message."""
        params = {}
        if token is not None:
            params["token"] = token
        if last_seq is not None:
            params["last_seq"] = str(last_seq)
        if auth is not None:
            params["auth"] = "message"
        ws = await session.ws_connect(f"/ws/rooms/{room}", params=params, protocols=(framing,))
        client = cls(ws)
        if auth is not None:
            await client.send({"type": "auth", **auth})
        if welcome:
            client.welcome = await client.recv()
            assert client.welcome["type"] == "welcome", client.welcome
        return client

    async def send(self, message: dict[str, Any]) -> None:
        if self.msgpack:
            await self.ws.send_bytes(msgpack.packb(message))
        else:
            await self.ws.send_str(json.dumps(message))

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        msg = await self.ws.receive(timeout=timeout)
        if msg.type is aiohttp.WSMsgType.TEXT:
            assert not self.msgpack
            return dict(json.loads(msg.data))
        if msg.type is aiohttp.WSMsgType.BINARY:
            assert self.msgpack
            return dict(msgpack.unpackb(msg.data))
        raise ConnectionError(f"closed: {msg.type} {msg.data} {msg.extra}")

    async def recv_type(self, kind: str, timeout: float = 5.0) -> dict[str, Any]:
        return await self.recv_until(lambda m: m["type"] == kind, timeout)

    async def recv_until(
        self, pred: Callable[[dict[str, Any]], bool], timeout: float = 5.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            message = await self.recv(max(0.01, deadline - time.monotonic()))
            if pred(message):
                return message

    async def collect(self, seconds: float) -> list[dict[str, Any]]:
        """Every message that arrives within ``seconds``."""
        out = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                out.append(await self.recv(left))
            except TimeoutError:
                break
        return out

    async def closed(self, timeout: float = 5.0) -> tuple[int | None, str]:
        """Wait for the server to close; returns (code, reason)."""
        deadline = time.monotonic() + timeout
        while True:
            msg = await self.ws.receive(timeout=max(0.01, deadline - time.monotonic()))
            if msg.type is aiohttp.WSMsgType.CLOSE:
                return int(msg.data), str(msg.extra or "")
            if msg.type in (aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                return self.ws.close_code, ""

    async def close(self) -> None:
        await self.ws.close()
