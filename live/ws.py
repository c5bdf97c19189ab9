"""The room WebSocket endpoint: authenticate, join the room, answer the client.

The handshake is refused with an HTTP error (401/403/404 JSON) before the upgrade when the
token or the room is wrong, so a client sees why it could not connect. docs/protocol.md is the
client-facing description.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from typing import Any

from aiohttp import WSMsgType, web

from gateway import close_codes
from live.auth import AuthError, Identity, Role
from live.http_api import identify
from live.services import SERVICES, Services
from live.store import RoomRow

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1


class RoomSocket:
    """One client's connection to a room; what the hub tracks."""

    def __init__(self, ws: web.WebSocketResponse, room: RoomRow, who: Identity) -> None:
        self.ws = ws
        self.room_id = room.id
        self.room = room
        self.who = who

    async def close(self, code: int, reason: str) -> None:
        await self.ws.close(code=code, message=reason.encode())

    async def send(self, services: Services, message: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps(message, ensure_ascii=False, separators=(",", ":")))
        services.metrics.frames_out.inc()

    async def send_error(self, services: Services, code: str, message: str) -> None:
        services.metrics.errors.labels(code).inc()
        await self.send(services, {"type": "error", "code": code, "message": message})


def _authenticate(request: web.Request, room: RoomRow) -> Identity:
    try:
        who = identify(request, allow_query=True)
    except AuthError as exc:
        if exc.code != "token_missing" or not room.allow_anonymous:
            raise
        anonymous = "anon_" + secrets.token_urlsafe(9)
        return Identity(anonymous, room.id, Role.VIEWER, expires_at=float("inf"))
    who.require_room(room.id)
    return who


async def room_socket(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    room = await services.rooms.get(request.match_info["room_id"])
    who = _authenticate(request, room)
    settings = services.settings
    ws = web.WebSocketResponse(
        heartbeat=settings.ping_interval_s, max_msg_size=settings.max_frame_bytes, compress=False
    )
    await ws.prepare(request)
    conn = RoomSocket(ws, room, who)
    services.hub.join(conn)
    expiry = _close_at_expiry(conn)
    try:
        await conn.send(
            services,
            {
                "type": "welcome",
                "v": PROTOCOL_VERSION,
                "server_time_ms": int(time.time() * 1000),
                "room": {"id": room.id, "title": room.title, "host_id": room.host_id},
                "user": {"id": who.user_id, "role": str(who.role)},
                "online": services.hub.online(room.id),
            },
        )
        async for msg in ws:
            services.metrics.frames_in.inc()
            if msg.type is WSMsgType.TEXT:
                await _handle_text(services, conn, msg.data)
            elif msg.type is WSMsgType.BINARY:
                await conn.send_error(services, "unsupported_framing", "send JSON text frames")
            elif msg.type is WSMsgType.ERROR:
                services.metrics.errors.labels("ws_protocol").inc()
                log.info("websocket error", extra={"room": room.id, "error": repr(ws.exception())})
    finally:
        if expiry is not None:
            expiry.cancel()
        services.hub.leave(conn)
    return ws


async def _handle_text(services: Services, conn: RoomSocket, data: str) -> None:
    try:
        message = json.loads(data)
    except ValueError:
        await conn.send_error(services, "bad_json", "the message is not valid JSON")
        return
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        await conn.send_error(services, "bad_message", "a message is an object with a 'type'")
        return
    if message["type"] == "ping":
        await conn.send(services, {"type": "pong", "server_time_ms": int(time.time() * 1000)})
        return
    await conn.send_error(services, "unknown_type", f"unknown message type {message['type']!r}")


def _close_at_expiry(conn: RoomSocket) -> asyncio.TimerHandle | None:
    if conn.who.expires_at == float("inf"):
        return None
    loop = asyncio.get_running_loop()
    delay = max(0.0, conn.who.expires_at - time.time())
    reason = json.dumps({"code": "token_expired"})

    def close() -> None:
        task = asyncio.ensure_future(conn.close(close_codes.TOKEN_EXPIRED, reason))
        task.add_done_callback(_log_failure)

    return loop.call_later(delay, close)


def _log_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("closing an expired connection failed", extra={"error": repr(task.exception())})
