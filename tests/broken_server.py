"""A fake live server, small enough to read, that the load-test harness can be pointed at.

It speaks just what ``live-loadtest ... rush`` uses (docs/http-api.md, docs/protocol.md):
``GET /readyz``; creating a room, a product and a flash sale; reading the sale and its ledger
page by page; and the room's WebSocket (JSON framing) with ``welcome``, ``ping``, ``reserve``
(with the same-rid retry), ``confirm``, ``cancel`` and holds that expire. State is in memory.

``mode`` picks the bug the harness's audit must catch:

- ``"honest"``: none; a correct sale.
- ``"oversell"``: every other reserve that the stock check would refuse gets a hold anyway, so
  more units are held and sold than the sale has (``sold > total``, and so is the ledger).
- ``"drop"``: every third confirmed order is acknowledged (with its order) and counted as sold
  but never written to the ledger listing.

Whatever the mode, the room's WebSocket can also be made hard to get into, so that the
harness's load falls short: ``refuse_every`` answers every n-th handshake 503, and
``handshake_delay_s`` holds every handshake that long before accepting it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import WSMsgType, web

MODES = ("honest", "oversell", "drop")
SUBPROTOCOL = "live.v1.json"


def now_ms() -> int:
    return int(time.time() * 1000)


#: The refusals of a reserve that are decisions, kept for its rid.
DECISIONS = frozenset(
    {"sold_out", "insufficient_stock", "limit_reached", "not_started", "ended", "invalid_quantity"}
)


class Refused(Exception):
    """A refusal: an HTTP error answer, or a WebSocket ``error`` frame."""

    def __init__(self, code: str, message: str, status: int = 400, **extra: Any) -> None:
        super().__init__(message)
        self.code, self.status, self.extra = code, status, extra


@dataclass
class Sale:
    id: str
    room_id: str
    product_id: str
    total: int
    price_cents: int
    per_user_limit: int
    starts_at_ms: int
    ends_at_ms: int
    hold_ms: int
    held: int = 0
    sold: int = 0

    @property
    def available(self) -> int:  # negative when oversold: the counters still add up
        return self.total - self.held - self.sold

    def phase(self) -> str:
        now = now_ms()
        if now < self.starts_at_ms:
            return "not_started"
        if now >= self.ends_at_ms:
            return "ended"
        return "live" if self.available > 0 else "sold_out"

    def view(self) -> dict[str, Any]:
        names = ("id", "room_id", "product_id", "total", "available", "held", "sold", "price_cents")
        more = ("per_user_limit", "starts_at_ms", "ends_at_ms", "hold_ms")
        return {"phase": self.phase(), "group": None, **{n: getattr(self, n) for n in (*names, *more)}}


@dataclass
class Hold:
    id: str
    sale: Sale
    user: str
    quantity: int
    expires_at_ms: int
    state: str = "held"  # held, confirmed, cancelled, expired
    order: dict[str, Any] | None = None


@dataclass
class BrokenServer:
    secret: str
    mode: str = "honest"
    rooms: dict[str, dict[str, Any]] = field(default_factory=dict)
    products: dict[str, dict[str, Any]] = field(default_factory=dict)
    sales: dict[str, Sale] = field(default_factory=dict)
    holds: dict[str, Hold] = field(default_factory=dict)
    ledger: dict[str, dict[str, dict[str, Any]]] = field(default_factory=lambda: defaultdict(dict))
    #: (user, rid) -> (the reserve's fields, its ack): the same rid gets the same hold.
    #: (user, rid) -> the reserve's fields and its decision: a hold, or a refusal that is one
    answers: dict[tuple[str, str], tuple[dict[str, Any], dict[str, Any] | Refused]] = field(
        default_factory=dict
    )
    units: Counter[tuple[str, str]] = field(default_factory=Counter)  # (sale, user) -> held + bought
    sockets: dict[tuple[str, str], set[web.WebSocketResponse]] = field(
        default_factory=lambda: defaultdict(set)
    )
    bugs: Counter[str] = field(default_factory=Counter)  # how often each bug struck
    refuse_every: int = 0
    handshake_delay_s: float = 0.0
    handshakes: int = 0
    _ids: int = 0
    _runner: web.AppRunner | None = None
    _sweeper: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        assert self.mode in MODES, self.mode

    def _id(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}{self._ids:06d}"

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> str:
        """Serve on 127.0.0.1 on a free port; returns the base URL."""
        app = web.Application(middlewares=[_errors])
        app.router.add_get("/readyz", self.readyz)
        app.router.add_post("/api/rooms", self.create_room)
        app.router.add_post("/api/rooms/{room}/products", self.create_product)
        app.router.add_post("/api/rooms/{room}/sales", self.open_sale)
        app.router.add_get("/api/sales/{sale}", self.get_sale)
        app.router.add_get("/api/sales/{sale}/orders", self.sale_orders)
        app.router.add_get("/ws/rooms/{room}", self.websocket)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self._sweeper = asyncio.create_task(self._expire_loop())
        return f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self._runner is not None:
            await self._runner.cleanup()

    # -- HTTP -----------------------------------------------------------------------------------

    async def readyz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ready", "redis": "ok", "sqlite": "ok"})

    def _claims(self, request: web.Request, room: str | None, host: bool = True) -> dict[str, Any]:
        """The token's claims (Authorization: Bearer, HS256); for ``room``, and a host's if ``host``."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer" or not token:
            raise Refused("token_missing", "no token", 401)
        try:
            claims: dict[str, Any] = jwt.decode(token, self.secret, algorithms=["HS256"], leeway=5)
        except jwt.ExpiredSignatureError:
            raise Refused("token_expired", "the token expired", 401) from None
        except jwt.InvalidTokenError:
            raise Refused("token_invalid", "bad token", 401) from None
        if room is not None and claims.get("room") not in (room, "*"):
            raise Refused("wrong_room", "the token is for another room", 403)
        if host and claims.get("role") not in ("host", "moderator"):
            raise Refused("forbidden", "hosts only", 403)
        return claims

    def _room(self, request: web.Request) -> str:
        room = request.match_info["room"]
        if room not in self.rooms:
            raise Refused("room_not_found", "no such room", 404)
        self._claims(request, room)
        return room

    async def create_room(self, request: web.Request) -> web.Response:
        body = await request.json()
        claims = self._claims(request, None)
        room = str(body.get("id") or claims["room"])
        self._claims(request, room)
        if room in self.rooms:
            raise Refused("room_exists", "a room with that id exists", 409)
        self.rooms[room] = {"id": room, "title": body["title"], "host_id": claims["sub"]}
        return web.json_response(self.rooms[room], status=201)

    async def create_product(self, request: web.Request) -> web.Response:
        room, body = self._room(request), await request.json()
        product = {"id": self._id("p_"), "room_id": room, "title": body["title"]}
        product["price_cents"] = _int(body, "price_cents", None, 0, 10**12)
        self.products[product["id"]] = product
        return web.json_response(product, status=201)

    async def open_sale(self, request: web.Request) -> web.Response:
        room, body = self._room(request), await request.json()
        product = self.products.get(body.get("product_id", ""))
        if product is None or product["room_id"] != room:
            raise Refused("product_not_found", "no such product in this room", 404)
        if body.get("group") is not None:
            raise Refused("invalid_field", "this fake has no group buys")
        soon = now_ms() + 1000 * _int(body, "starts_in_s", 0, 0, 10**9)
        starts = _int(body, "starts_at_ms", soon, 0, 10**15)
        sale = Sale(
            id=self._id("s_"),
            room_id=room,
            product_id=product["id"],
            total=_int(body, "stock", None, 1, 10**9),
            price_cents=_int(body, "price_cents", product["price_cents"], 0, 10**12),
            per_user_limit=_int(body, "per_user_limit", 1, 1, 1000),
            starts_at_ms=starts,
            ends_at_ms=starts + 1000 * _int(body, "duration_s", 600, 1, 30 * 86400),
            hold_ms=1000 * _int(body, "hold_s", 300, 1, 86400),
        )
        self.sales[sale.id] = sale
        return web.json_response(sale.view(), status=201)

    def _sale(self, request: web.Request) -> Sale:
        sale = self.sales.get(request.match_info["sale"])
        if sale is None:
            raise Refused("unknown_sale", "no such sale", 404)
        self._claims(request, sale.room_id)
        return sale

    async def get_sale(self, request: web.Request) -> web.Response:
        return web.json_response(self._sale(request).view())

    async def sale_orders(self, request: web.Request) -> web.Response:
        """A page of the ledger in recorded order: ``?after=<cursor>&limit=<n>``; the cursor is
        how many orders were read so far."""
        sale = self._sale(request)
        limit = int(request.query.get("limit", "1000"))
        if not 1 <= limit <= 10000:
            raise Refused("invalid_field", "limit must be 1..10000")
        after = int(request.query.get("after") or "0")
        page = list(self.ledger[sale.id].values())[after : after + limit]
        cursor, more = after + len(page), len(page) == limit
        return web.json_response({"sale_id": sale.id, "orders": page, "cursor": str(cursor), "more": more})

    # -- WebSocket ------------------------------------------------------------------------------

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        room = request.match_info["room"]
        if room not in self.rooms:
            raise Refused("room_not_found", "no such room", 404)
        offered = request.headers.get("Sec-WebSocket-Protocol", "").replace(" ", "").split(",")
        if offered != [""] and SUBPROTOCOL not in offered:
            return web.Response(status=400, text="this fake speaks live.v1.json only")
        claims = self._claims(request, room, host=False)
        user, role = str(claims["sub"]), str(claims.get("role"))
        self.handshakes += 1
        if self.refuse_every and self.handshakes % self.refuse_every == 0:
            return web.Response(status=503, text="refused: this fake lets only some in")
        if self.handshake_delay_s:
            await asyncio.sleep(self.handshake_delay_s)
        ws = web.WebSocketResponse(protocols=(SUBPROTOCOL,))
        await ws.prepare(request)
        self.sockets[room, user].add(ws)
        try:
            r = self.rooms[room]
            room_view = {"id": room, "title": r["title"], "host_id": r["host_id"], "sales": []}
            await ws.send_json(
                {"type": "welcome", "v": 1, "server_time_ms": now_ms(), "seq": 0, "resumed": False,
                 "room": room_view, "user": {"id": user, "role": role}, "online": 0, "likes": 0,
                 "slow_mode_s": 0, "pinned": None, "comments": []}
            )  # fmt: skip
            async for frame in ws:
                if frame.type == WSMsgType.TEXT:
                    await ws.send_json(self.command(room, user, frame.data))
                elif frame.type == WSMsgType.BINARY:
                    await ws.send_json({"type": "error", "code": "wrong_framing", "message": "JSON framing"})
        finally:
            self.sockets[room, user].discard(ws)
        return ws

    def command(self, room: str, user: str, text: str) -> dict[str, Any]:
        """The reply to one client message: ``pong``, ``ack`` or ``error``."""
        try:
            message = json.loads(text)
        except ValueError:
            return {"type": "error", "code": "bad_json", "message": "not JSON"}
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            return {"type": "error", "code": "bad_message", "message": "not an object with a type"}
        kind, rid = message["type"], message.get("rid")
        echo = {"rid": rid} if rid is not None else {}
        try:
            if kind == "ping":
                return {"type": "pong", "server_time_ms": now_ms(), **echo}
            if kind not in ("reserve", "confirm", "cancel"):
                raise Refused("unknown_type", f"this fake does not do {kind!r}")
            if not isinstance(rid, str) or not 1 <= len(rid) <= 64:
                raise Refused("missing_field", "buying needs a rid (1-64 characters)")
            body = getattr(self, kind)(room, user, rid, message)
            return {"type": "ack", "rid": rid, "of": kind, **body}
        except Refused as exc:
            return {"type": "error", "code": exc.code, "message": str(exc), **exc.extra, **echo}

    def reserve(self, room: str, user: str, rid: str, message: dict[str, Any]) -> dict[str, Any]:
        """One rid, one decision (docs/protocol.md): a hold, or a refusal that is a decision,
        is the answer to every copy of the request."""
        fields = {"sale_id": message.get("sale_id"), "quantity": message.get("quantity")}
        if (user, rid) in self.answers:
            first, answer = self.answers[user, rid]
            if first != fields:
                raise Refused("duplicate", "this rid was used with other fields")
            if isinstance(answer, Refused):
                raise answer
            return answer
        try:
            return self._reserve(room, user, rid, fields)
        except Refused as exc:
            if exc.code in DECISIONS:
                self.answers[user, rid] = (fields, exc)
            raise

    def _reserve(self, room: str, user: str, rid: str, fields: dict[str, Any]) -> dict[str, Any]:
        sale = self.sales.get(str(fields["sale_id"]))
        if sale is None or sale.room_id != room:
            raise Refused("unknown_sale", "no such sale in this room")
        quantity = fields["quantity"]
        if not isinstance(quantity, int) or isinstance(quantity, bool):
            raise Refused("invalid_field", "quantity must be an integer")
        if not 1 <= quantity <= sale.per_user_limit:
            raise Refused("invalid_quantity", f"quantity must be 1 to {sale.per_user_limit}")
        if sale.phase() in ("not_started", "ended"):
            raise Refused(sale.phase(), f"the sale is {sale.phase()}")
        if self.units[sale.id, user] + quantity > sale.per_user_limit:
            raise Refused("limit_reached", "over the per-user limit")
        if quantity > sale.available and not self._oversell():
            if sale.available <= 0:
                raise Refused("sold_out", "no units left")
            raise Refused("insufficient_stock", "fewer units left", available=sale.available)
        hold = Hold(f"{sale.id}.{self._id('')}", sale, user, quantity, now_ms() + sale.hold_ms)
        self.holds[hold.id] = hold
        sale.held += quantity
        self.units[sale.id, user] += quantity
        answer = {"hold_id": hold.id, "sale_id": sale.id, "quantity": quantity}
        answer["expires_at_ms"] = hold.expires_at_ms
        self.answers[user, rid] = (fields, answer)
        return answer

    def _oversell(self) -> bool:
        """The oversell bug: every other reserve the stock check refuses is let through."""
        if self.mode != "oversell":
            return False
        self.bugs["stock_check_skipped_candidates"] += 1
        if self.bugs["stock_check_skipped_candidates"] % 2:
            return False
        self.bugs["oversold_holds"] += 1
        return True

    def _hold(self, room: str, user: str, message: dict[str, Any]) -> Hold:
        hold = self.holds.get(str(message.get("hold_id")))
        if hold is None or hold.sale.room_id != room or hold.state in ("cancelled", "expired"):
            raise Refused("hold_not_found", "no such hold")
        if hold.user != user:
            raise Refused("not_your_hold", "the hold is someone else's")
        return hold

    def confirm(self, room: str, user: str, rid: str, message: dict[str, Any]) -> dict[str, Any]:
        hold = self._hold(room, user, message)
        if hold.order is not None:
            return {"order": hold.order}
        if now_ms() >= hold.expires_at_ms:
            self._release(hold, "expired")
            raise Refused("hold_expired", "the hold expired just now")
        sale = hold.sale
        sale.held -= hold.quantity
        sale.sold += hold.quantity
        hold.state = "confirmed"
        amount = sale.price_cents * hold.quantity
        hold.order = {
            "order_id": hold.id, "sale_id": sale.id, "quantity": hold.quantity,
            "unit_price_cents": sale.price_cents, "discount_cents": 0, "amount_cents": amount,
            "coupon_id": None, "team_code": None, "confirmed_at_ms": now_ms(),
        }  # fmt: skip
        self.bugs["confirmed"] += 1
        if self.mode == "drop" and self.bugs["confirmed"] % 3 == 0:
            self.bugs["dropped_orders"] += 1  # acked below, never written to the ledger
        else:
            self.ledger[sale.id][hold.id] = {**hold.order, "user_id": user}
        self._push(hold, "confirmed", order=hold.order)
        return {"order": hold.order}

    def cancel(self, room: str, user: str, rid: str, message: dict[str, Any]) -> dict[str, Any]:
        hold = self._hold(room, user, message)
        if hold.state == "confirmed":
            raise Refused("already_confirmed", "the hold is an order already")
        self._release(hold, "cancelled")
        return {"hold_id": hold.id, "quantity": hold.quantity}

    def _release(self, hold: Hold, state: str) -> None:
        """Give a hold's units back (cancelled or expired) and tell the buyer."""
        hold.state = state
        hold.sale.held -= hold.quantity
        self.units[hold.sale.id, hold.user] -= hold.quantity
        self._push(hold, state, quantity=hold.quantity)

    def _push(self, hold: Hold, status: str, **fields: Any) -> None:
        """``order_status`` to every connection of the buyer in the room."""
        message = {"type": "order_status", "hold_id": hold.id, "status": status, "ts_ms": now_ms(), **fields}
        for ws in list(self.sockets.get((hold.sale.room_id, hold.user), ())):
            if not ws.closed:
                task = asyncio.create_task(ws.send_json(message))
                task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(0.05)
            now = now_ms()
            for hold in [h for h in self.holds.values() if h.state == "held" and h.expires_at_ms <= now]:
                self._release(hold, "expired")


@web.middleware
async def _errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Refusals and bad bodies as ``{"error": {"code", "message"}}``."""
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except Refused as exc:
        return web.json_response({"error": {"code": exc.code, "message": str(exc)}}, status=exc.status)
    except (ValueError, KeyError, TypeError) as exc:
        return web.json_response({"error": {"code": "invalid_field", "message": repr(exc)}}, status=400)


def _int(body: dict[str, Any], name: str, default: int | None, low: int, high: int) -> int:
    value = body.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        code = "missing_field" if value is None else "invalid_field"
        raise Refused(code, f"{name} must be an integer from {low} to {high}")
    return value
