"""The HTTP side: health, readiness, metrics, and the host API for rooms and products.

Every error is JSON ``{"error": {"code": "...", "message": "..."}}`` with a 4xx/5xx status;
docs/http-api.md lists the codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError
from redis.exceptions import RedisError

from gateway.front import hand_over, peer_ip
from interact.errors import InteractError
from inventory.model import InventoryError
from live import __version__
from live.auth import ANY_ROOM, AuthError, Identity, Role
from live.errors import AppError
from live.metrics import CONTENT_TYPE
from live.rooms import RoomExists, RoomNotFound
from live.selling import SaleRefused
from live.services import SERVICES
from live.store import LimitExceeded
from live.text import is_text

log = logging.getLogger(__name__)

ROOM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_TITLE = 200
MAX_URL = 2048
MAX_PRICE_CENTS = 10**12
IMAGE_URL = re.compile(r"https?://\S+")
#: Rooms per page of GET /api/rooms: the default and the most a client may ask.
DEFAULT_ROOMS_PAGE = 1000
MAX_ROOMS_PAGE = 10_000


class ApiError(AppError):
    """A refusal answered with an HTTP status and ``{"error": {"code", "message"}}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(code, message)
        self.status = status


def reply(data: Any, status: int = 200) -> web.Response:
    """A JSON response, with non-ASCII text (Chinese titles, say) left readable."""
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return web.Response(text=body, status=status, content_type="application/json")


def error_response(status: int, code: str, message: str) -> web.Response:
    return reply({"error": {"code": code, "message": message}}, status=status)


_HTTP_CODES = {
    400: "bad_request",
    408: "body_timeout",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
}


#: HTTP status of inventory refusals; any other is 409 (a conflict with the sale's state).
_INVENTORY_STATUS = {
    "unknown_sale": 404,
    "hold_not_found": 404,
    "team_not_found": 404,
    "batch_not_found": 404,
    "invalid_quantity": 400,
    "frozen": 503,
    "unavailable": 503,
}


def interact_status(code: str) -> int:
    """HTTP status of an interaction tool's refusal: 404 for a ``*_not_found``, 400 for an
    ``invalid_*``, 503 for ``unavailable``, else 409 (a conflict with the tool's state)."""
    if code.endswith("_not_found"):
        return 404
    if code.startswith("invalid_"):
        return 400
    return 503 if code == "unavailable" else 409


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    metrics = request.app[SERVICES].metrics
    try:
        if request.body_exists:
            await read_body(request)  # every body, read or not by its handler, in bounded time
        check_params(request)
        response = await handler(request)
    except ApiError as exc:
        response = error_response(exc.status, exc.code, exc.message)
        if exc.status == 408:
            response.force_close()
    except AuthError as exc:
        response = error_response(exc.http_status, exc.code, exc.message)
    except RoomNotFound as exc:
        response = error_response(404, "room_not_found", f"no room {exc.args[0]!r}")
    except RoomExists as exc:
        response = error_response(409, "room_exists", f"room {exc.args[0]!r} already exists")
    except LimitExceeded as exc:
        response = error_response(409, "limit_exceeded", exc.message)
    except InventoryError as exc:
        response = error_response(_INVENTORY_STATUS.get(exc.code, 409), exc.code, exc.message)
    except SaleRefused as exc:
        response = error_response(404 if exc.code.endswith("_not_found") else 400, exc.code, exc.message)
    except InteractError as exc:
        response = error_response(interact_status(exc.code), exc.code, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        response = error_response(exc.status, code, exc.reason)
    except (RedisError, OSError) as exc:
        log.error("backend unavailable", extra={"error": repr(exc), "path": request.path})
        response = error_response(503, "unavailable", "a backend is unavailable; retry shortly")
    except Exception:
        log.exception("unhandled error", extra={"path": request.path})
        response = error_response(500, "internal", "internal server error")
    metrics.http_responses.labels(str(response.status)).inc()
    if response.status >= 400 and isinstance(response, web.Response) and response.body:
        metrics.errors.labels(_error_code(response)).inc()
    return response


def _error_code(response: web.Response) -> str:
    try:
        return str(json.loads(response.body)["error"]["code"])  # type: ignore[arg-type]
    except (ValueError, KeyError, TypeError):
        return f"http_{response.status}"


# -- request helpers ------------------------------------------------------------------------


def bearer_token(request: web.Request, allow_query: bool = False) -> str | None:
    header = request.headers.get("Authorization", "")
    if not is_text(header):  # aiohttp keeps a header's non-UTF-8 bytes as lone surrogates
        raise AuthError("token_invalid", "the Authorization header is not UTF-8 text")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("token_invalid", "the Authorization header must be 'Bearer <token>'")
        return token.strip()
    if allow_query:
        return request.query.get("token") or None
    return None


def identify(request: web.Request, allow_query: bool = False) -> Identity:
    token = bearer_token(request, allow_query)
    if token is None:
        raise AuthError("token_missing", "send a token: Authorization: Bearer <token>")
    return request.app[SERVICES].auth.verify(token)


async def room_reader(request: web.Request, room_id: str) -> Identity | None:
    """Who reads a room's public side: any token of the room (every role), or, with no token,
    a guest (None) where the room lets guests in (as the WebSocket handshake admits them)."""
    token = bearer_token(request)
    if token is not None:
        who = request.app[SERVICES].auth.verify(token)
        who.require_room(room_id)
        return who
    room = await request.app[SERVICES].rooms.get(room_id)  # 404 room_not_found
    if not room.allow_anonymous:
        raise AuthError("token_missing", "send a token: Authorization: Bearer <token>")
    return None


async def read_body(request: web.Request) -> bytes:
    """The whole body: 413 past client_max_size, 408 if it has not all arrived within
    http_body_timeout_s (aiohttp itself waits for a body for as long as the client likes)."""
    timeout = request.app[SERVICES].settings.http_body_timeout_s
    try:
        async with asyncio.timeout(timeout):
            return await request.read()
    except TimeoutError:
        # The rest of this body, should it come, must not be read as a next request: stop
        # reading the connection, end the body here; the 408 goes out with Connection: close.
        request.protocol.close()
        request.content.feed_eof()
        raise ApiError(408, "body_timeout", f"the request body did not arrive within {timeout:g} s") from None
    except (RequestPayloadError, ConnectionError) as exc:  # bad chunking, or the client left
        raise ApiError(400, "bad_request", f"the request body could not be read: {exc}") from None


async def json_body(request: web.Request) -> dict[str, Any]:
    raw = await read_body(request)
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nesting too deep
        raise ApiError(400, "bad_json", "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "bad_json", "the body must be a JSON object")
    check_text(body)
    return body


def _shown(name: str) -> str:
    """A name, quoted, fit for an error message whatever it holds (``'\\ud800'`` for a lone
    surrogate)."""
    return "'" + name.encode(errors="backslashreplace").decode() + "'"


def check_text(body: dict[str, Any]) -> None:
    """400 invalid_field, naming the field, for any text in a decoded body that cannot be
    encoded as UTF-8. JSON's ``\\ud800`` escapes decode to lone surrogates, which SQLite and
    Redis cannot store: past this point every string is known to encode."""
    stack: list[tuple[str, Any]] = [("", body)]
    while stack:  # iterative: json.loads accepts nesting deeper than Python's recursion limit
        where, value = stack.pop()
        if isinstance(value, str):
            if not is_text(value):
                raise ApiError(400, "invalid_field", f"the field {_shown(where)} is not valid Unicode text")
        elif isinstance(value, dict):
            for key, item in value.items():
                name = f"{where}.{key}" if where else key
                if not is_text(key):
                    raise ApiError(
                        400, "invalid_field", f"the field name {_shown(name)} is not valid Unicode text"
                    )
                stack.append((name, item))
        elif isinstance(value, list):
            stack.extend((f"{where}[{i}]", item) for i, item in enumerate(value))


def check_params(request: web.Request) -> None:
    """The same rule for path and query parameters (yarl decodes a bad percent-escape to
    U+FFFD or leaves it escaped today; this keeps it so for any version)."""
    params = [("path parameter", k, v) for k, v in request.match_info.items()]
    params += [("query parameter", k, v) for k, v in request.query.items()]
    for kind, name, value in params:
        if not (is_text(name) and is_text(value)):
            raise ApiError(400, "invalid_field", f"the {kind} {_shown(name)} is not valid Unicode text")


def query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    # digits only (int() would take " 5", "+5", "1_0"), and few of them (int() refuses 4300+)
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 18 and low <= int(raw) <= high):
        raise ApiError(
            400, "invalid_field", f"the parameter {name!r} must be an integer from {low} to {high}"
        )
    return int(raw)


_TYPE_NAMES = {str: "a string", int: "an integer", bool: "true or false"}


def take(body: dict[str, Any], name: str, kind: type, required: bool = True) -> Any:
    """The field ``name`` if it has type ``kind`` (bool is not an int here), else a 400."""
    if name not in body or body[name] is None:
        if required:
            raise ApiError(400, "missing_field", f"the field {name!r} is required")
        return None
    value = body[name]
    if type(value) is not kind:
        raise ApiError(400, "invalid_field", f"the field {name!r} must be {_TYPE_NAMES[kind]}")
    return value


def _check_field(ok: bool, name: str, rule: str) -> None:
    if not ok:
        raise ApiError(400, "invalid_field", f"the field {name!r} {rule}")


def _text(body: dict[str, Any], name: str, max_len: int) -> str:
    value: str = take(body, name, str).strip()
    _check_field(0 < len(value) <= max_len, name, f"must be 1 to {max_len} characters")
    return value


# -- handlers -------------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    return reply({"status": "ok", "version": __version__})


async def readyz(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    checks: dict[str, str] = {}
    for name, probe in (("redis", services.redis.ping), ("sqlite", services.store.ping)):
        try:
            async with asyncio.timeout(2.0):
                await probe()
            checks[name] = "ok"
        except Exception as exc:  # any failure means "not ready"; the reason is reported
            checks[name] = f"error: {exc.__class__.__name__}: {exc}"
    down = services.supervisor.down()
    checks["tasks"] = f"error: restarting {', '.join(down)}" if down else "ok"
    if services.node is not None and services.node.lost:  # reported only when it fails
        checks["node"] = f"error: node name {services.node.name} is held by another node"
    ready = all(v == "ok" for v in checks.values())
    return reply({"status": "ready" if ready else "unready", **checks}, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    body = request.app[SERVICES].metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def create_room(request: web.Request) -> web.Response:
    who = identify(request)
    who.require_role(Role.HOST)
    body = await json_body(request)
    title = _text(body, "title", MAX_TITLE)
    room_id = take(body, "id", str, required=False)
    allow_anonymous = take(body, "allow_anonymous", bool, required=False) or False
    if room_id is None and who.room != ANY_ROOM:
        room_id = who.room
    if room_id is not None:
        _check_field(bool(ROOM_ID.fullmatch(room_id)), "id", "must be 1-64 of A-Z a-z 0-9 _ -")
        who.require_room(room_id)
    services = request.app[SERVICES]
    room = await services.rooms.create(
        title,
        host_id=who.user_id,
        room_id=room_id,
        allow_anonymous=allow_anonymous,
        max_per_host=services.settings.max_rooms_per_host,
    )
    return reply(asdict(room), status=201)


async def list_rooms(request: web.Request) -> web.Response:
    """A page of rooms, oldest first: ``?after=<cursor>&limit=<n>`` (cursor: a room id)."""
    who = identify(request)
    who.require_role(Role.HOST, Role.MODERATOR)
    rooms = request.app[SERVICES].rooms
    limit = query_int(request, "limit", DEFAULT_ROOMS_PAGE, 1, MAX_ROOMS_PAGE)
    after = request.query.get("after") or None
    if after is not None and not ROOM_ID.fullmatch(after):
        raise ApiError(400, "invalid_field", "the parameter 'after' must be a cursor from an earlier answer")
    if who.room != ANY_ROOM:  # a token for one room lists that room only
        page, more = [], False
        if after is None:
            with contextlib.suppress(RoomNotFound):
                page = [await rooms.get(who.room)]
    else:
        try:
            page, more = await rooms.page(after, limit)
        except RoomNotFound:
            raise ApiError(400, "invalid_field", "the parameter 'after' is not a room of this list") from None
    cursor = page[-1].id if page else after or ""
    return reply({"rooms": [asdict(r) for r in page], "cursor": cursor, "more": more})


async def get_room(request: web.Request) -> web.Response:
    room_id = request.match_info["room_id"]
    identify(request).require_room(room_id)
    rooms = request.app[SERVICES].rooms
    room, products = await rooms.get(room_id), await rooms.products(room_id)
    return reply({**asdict(room), "products": [asdict(p) for p in products]})


async def add_product(request: web.Request) -> web.Response:
    room_id = request.match_info["room_id"]
    who = identify(request)
    who.require_room(room_id)
    who.require_role(Role.HOST)
    body = await json_body(request)
    title = _text(body, "title", MAX_TITLE)
    price_cents = take(body, "price_cents", int)
    _check_field(0 <= price_cents <= MAX_PRICE_CENTS, "price_cents", f"must be 0 to {MAX_PRICE_CENTS}")
    image_url = take(body, "image_url", str, required=False)
    if image_url is not None:
        _check_field(
            # fullmatch: with re.match, "$" would also match before a trailing newline
            len(image_url) <= MAX_URL and IMAGE_URL.fullmatch(image_url) is not None,
            "image_url",
            f"must be an http(s) URL of at most {MAX_URL} characters",
        )
    services = request.app[SERVICES]
    product = await services.rooms.add_product(
        room_id, title, price_cents, image_url, max_per_room=services.settings.max_products_per_room
    )
    return reply(asdict(product), status=201)


async def list_products(request: web.Request) -> web.Response:
    room_id = request.match_info["room_id"]
    identify(request).require_room(room_id)
    products = await request.app[SERVICES].rooms.products(room_id)
    return reply({"products": [asdict(p) for p in products]})


async def websocket_on_reused_connection(request: web.Request) -> web.StreamResponse:
    """A WebSocket upgrade that arrived on a keep-alive connection aiohttp already serves
    (clients such as aiohttp's reuse pooled connections): take the connection away from
    aiohttp and give it to the gateway, replaying the request head. New connections never get
    here: the front door sends their upgrades to the gateway directly."""
    protocol, transport = request.protocol, request.transport
    if transport is None or request.headers.get("Upgrade", "").lower() != "websocket":
        raise ApiError(404, "not_found", "WebSocket endpoints are /ws/rooms/{room}")
    head = f"{request.method} {request.raw_path} HTTP/{request.version.major}.{request.version.minor}\r\n"
    raw = head.encode() + b"".join(k + b": " + v + b"\r\n" for k, v in request.raw_headers) + b"\r\n"
    hub = request.app[SERVICES].hub
    conn = hub.connection(peer_ip(transport))
    # Detach aiohttp first: with its transport cleared, it forgets the connection without
    # closing it, and writes nothing more to it.
    protocol.transport = None
    protocol.connection_lost(None)
    hand_over(transport, conn, raw)
    raise asyncio.CancelledError  # this request has no HTTP response: the socket is the gateway's


def staff(request: web.Request, *roles: Role) -> tuple[Identity, str]:
    """The caller of a tool's host route and the route's room: 401/403 unless a host or
    moderator (or one of ``roles``) of that room."""
    room_id = request.match_info["room_id"]
    who = identify(request)
    who.require_room(room_id)
    who.require_role(*(roles or (Role.HOST, Role.MODERATOR)))
    return who, room_id


def int_field(body: dict[str, Any], name: str, default: int | None, low: int, high: int) -> int:
    """An integer field of a host route's body in [low, high] (``default`` None: required)."""
    given: int | None = take(body, name, int, required=default is None)
    value = default if given is None else given
    if value is None or not low <= value <= high:
        raise ApiError(400, "invalid_field", f"the field {name!r} must be {low} to {high}")
    return int(value)
