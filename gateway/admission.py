"""Who may connect: the WebSocket handshake's checks, before a connection joins its room.

The limits per server and per address (counted from the start of a handshake, so a burst of
concurrent handshakes cannot overshoot them), the target room, the token (query or
``Authorization: Bearer``), ``last_seq``, the application's verdict, the room's ban list; and
the answers a refused handshake gets (an HTTP status with a JSON error body).

First-message auth (``?auth=message`` and no token in the request): the upgrade goes through
with the limits, the path and ``last_seq`` checked, and the token comes in the client's first
frame, ``{"type": "auth", "token": ...}`` (``auth_fields``); the application's verdict and the
ban list are then asked the same way (``admit``), and a refusal is answered in the WebSocket
(an ``error`` frame, then the close ``close_codes.refusal`` maps its code to).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from redis.exceptions import RedisError
from websockets.http11 import Request

from gateway.bus import MAX_SEQ
from gateway.config import GatewayConfig
from gateway.messages import Command, GatewayError, ProtocolError

log = logging.getLogger(__name__)

PATH_PREFIX = "/ws/rooms/"


class Refused(GatewayError):
    """A handshake the server turns down, with an HTTP status and an error code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(code, message)
        self.status = status

    @property
    def body(self) -> bytes:
        """The answer's JSON body."""
        return error_body(self.code, self.message)


@dataclass(frozen=True)
class Admission:
    """Who may join a room, as the application decided."""

    user_id: str
    role: str
    #: The room as the welcome shows it (id, title, host_id, and whatever the app adds); the
    #: viewers of a room admitted together may share it: read it, never change it.
    room: dict[str, Any]
    #: Seconds since the epoch when the credential ends, or None.
    expires_at: float | None = None
    #: Admitted without a token (a room open to anonymous viewers).
    anonymous: bool = False
    #: What this user has in the room, as the welcome's ``you`` shows it (the app's to fill);
    #: None: the welcome has no ``you`` (a guest).
    you: dict[str, Any] | None = None


#: The query flag of first-message auth: ``?auth=message``.
AUTH_FLAG, AUTH_BY_MESSAGE = "auth", "message"
#: The type of the first message that authenticates (docs/protocol.md, Connecting).
AUTH = "auth"


@dataclass(frozen=True)
class Admitted:
    """A handshake that passed: the room, who it is, and where a resuming client left off.
    ``admission`` is None for first-message auth: who it is comes with the first frame."""

    room_id: str
    admission: Admission | None
    last_seq: int | None


class Admitter(Protocol):
    """What admission asks the application (live/)."""

    async def admit(self, room_id: str, token: str | None) -> Admission:
        """Who this is, or raise Refused."""


class BanList(Protocol):
    async def is_banned(self, room_id: str, user_id: str) -> bool: ...


class Admissions:
    """The handshakes of one process, and the connections counted against its limits."""

    def __init__(self, config: GatewayConfig, directory: Admitter, bans: BanList) -> None:
        self.config = config
        self.directory = directory
        self.bans = bans
        self.open_count = 0
        self.per_ip: Counter[str] = Counter()
        #: The connections counted, by key, with their address.
        self._counted: dict[Hashable, str] = {}

    async def check(self, key: Hashable, remote_ip: str, request: Request) -> Admitted | Refused:
        """Admit a handshake (counting ``key`` against the limits until ``release``) or say
        why not (then nothing stays counted)."""
        try:
            if self.open_count >= self.config.max_connections:
                raise Refused(503, "server_full", "this server is full; try another or later")
            if self.per_ip[remote_ip] >= self.config.max_connections_per_ip:
                raise Refused(429, "too_many_connections", "too many connections from this address")
            self._count(key, remote_ip)
            room_id, token, last_seq = parse_target(request)
            if token is None and _query(request).get(AUTH_FLAG) == [AUTH_BY_MESSAGE]:
                return Admitted(room_id, None, last_seq)  # who it is comes in the first frame
            admission = await self._admit(room_id, token)
        except Exception as exc:  # (every refusal, and every failure: _refusal)
            self.release(key)
            return _refusal(exc)
        return Admitted(room_id, admission, last_seq)

    async def admit(self, room_id: str, token: str | None) -> Admission | Refused:
        """Who a first-message auth is (``key`` stays counted either way: the connection is
        open, and is released when it closes), or why not."""
        try:
            return await self._admit(room_id, token)
        except Exception as exc:  # (every refusal, and every failure: _refusal)
            return _refusal(exc)

    async def _admit(self, room_id: str, token: str | None) -> Admission:
        admission = await self.directory.admit(room_id, token)
        if await self.bans.is_banned(room_id, admission.user_id):
            raise Refused(403, "banned", "you are banned from this room")
        return admission

    def _count(self, key: Hashable, remote_ip: str) -> None:
        self._counted[key] = remote_ip
        self.open_count += 1
        self.per_ip[remote_ip] += 1

    def release(self, key: Hashable) -> None:
        """``key`` no longer counts (whether it did or not)."""
        remote_ip = self._counted.pop(key, None)
        if remote_ip is None:
            return
        self.open_count -= 1
        self.per_ip[remote_ip] -= 1
        if self.per_ip[remote_ip] <= 0:
            del self.per_ip[remote_ip]


def unavailable() -> Refused:
    """The answer to a handshake whose reads failed on a backend (Redis): retry later."""
    return Refused(503, "unavailable", "a backend is unavailable; retry")


def _refusal(exc: Exception) -> Refused:
    """What a handshake that raised ``exc`` is answered."""
    if isinstance(exc, Refused):
        return exc
    if isinstance(exc, RedisError | OSError):
        log.warning("handshake failed on a backend", extra={"error": repr(exc)})
        return unavailable()
    # a bug: this handshake gets an answer, and nobody else notices
    log.error("handshake failed", exc_info=exc)
    return Refused(500, "internal", "internal server error")


def _query(request: Request) -> dict[str, list[str]]:
    return parse_qs(urlsplit(request.path).query)


def parse_target(request: Request) -> tuple[str, str | None, int | None]:
    """Room id, token and last_seq from the upgrade request."""
    url = urlsplit(request.path)
    if not url.path.startswith(PATH_PREFIX):
        raise Refused(404, "not_found", "WebSocket endpoints are /ws/rooms/{room}")
    room_id = unquote(url.path[len(PATH_PREFIX) :])
    if not room_id or "/" in room_id or len(room_id) > 64:
        raise Refused(404, "room_not_found", "no such room")
    query = parse_qs(url.query)
    token = query.get("token", [None])[0]
    header = request.headers.get("Authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Refused(401, "token_invalid", "the Authorization header must be 'Bearer <token>'")
        token = value.strip()
    last_seq = None
    if "last_seq" in query:
        raw = query["last_seq"][0]
        if not (raw.isascii() and raw.isdigit()):
            raise Refused(400, "invalid_field", "last_seq must be a non-negative integer")
        # Any length is a number; past 20 digits it is past any seq (and int() refuses
        # thousands of digits): Bus.snapshot gives anything past the room's seq a fresh start.
        last_seq = int(raw) if len(raw) <= 20 else MAX_SEQ
    return room_id, token, last_seq


def auth_fields(command: Command, last_seq: int | None) -> tuple[str | None, int | None]:
    """The token and last_seq of a first message (``last_seq``: the request's, which the
    message's replaces), or raise ProtocolError: it is not ``auth``, or a field is wrong. No
    token (absent or null) asks for a guest's welcome, as a request without one does."""
    if command.type != AUTH:
        raise ProtocolError(
            "token_missing", 'authenticate first: the first message must be {"type": "auth", "token": ...}'
        )
    token = command.fields.get("token")
    if token is not None and not isinstance(token, str):
        raise ProtocolError("invalid_field", "the field 'token' must be a string")
    seq = command.fields.get("last_seq")
    if seq is None:
        return token, last_seq
    if type(seq) is not int or seq < 0:
        raise ProtocolError("invalid_field", "the field 'last_seq' must be a non-negative integer")
    # as in the query: any number past the room's seq gets a fresh start (Bus.snapshot)
    return token, min(seq, MAX_SEQ)


def error_body(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()
