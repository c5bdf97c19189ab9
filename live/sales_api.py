"""The host API for flash sales, group buys and coupons (docs/http-api.md#sales).

Only a host of the sale's room may open, stop or restock a sale and drop coupons; hosts and
moderators may read its status and page through its orders in the ledger.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from aiohttp import web

from inventory.model import Order, SaleStatus, UnknownSale
from live.auth import Identity, Role
from live.http_api import ApiError, identify, json_body, query_int, reply, take
from live.rooms import now_ms
from live.selling import SaleRequest
from live.services import SERVICES
from live.store import SaleRow

#: Orders per page of GET /api/sales/{sale}/orders: the default and the most a client may ask.
DEFAULT_ORDERS_PAGE = 1000
MAX_ORDERS_PAGE = 10_000


def _host_of(request: web.Request, room_id: str, *roles: Role) -> Identity:
    who = identify(request)
    who.require_room(room_id)
    who.require_role(*(roles or (Role.HOST,)))
    return who


def _sale_view(row: SaleRow, status: SaleStatus | None) -> dict[str, Any]:
    if status is None:
        return {**asdict(row), "phase": "missing_in_redis"}
    return {**status.public(), "state": row.state, "created_at_ms": row.created_at_ms}


async def open_sale(request: web.Request) -> web.Response:
    room_id = request.match_info["room_id"]
    _host_of(request, room_id)
    await request.app[SERVICES].rooms.get(room_id)  # 404 for an unknown room
    body = await json_body(request)
    group = body.get("group")
    if group is not None and not isinstance(group, dict):
        raise ApiError(400, "invalid_field", "the field 'group' must be an object")
    group = group or {}
    starts_at_ms = take(body, "starts_at_ms", int, required=False)
    starts_in_s = take(body, "starts_in_s", int, required=False)
    if starts_at_ms is not None and starts_in_s is not None:
        raise ApiError(400, "invalid_field", "give 'starts_at_ms' or 'starts_in_s', not both")
    if starts_in_s is not None:
        if not 0 <= starts_in_s <= 365 * 86_400:
            raise ApiError(400, "invalid_field", "the field 'starts_in_s' must be 0 to a year")
        starts_at_ms = now_ms() + starts_in_s * 1000
    sale = await request.app[SERVICES].selling.open_sale(
        SaleRequest(
            room_id=room_id,
            product_id=take(body, "product_id", str),
            stock=take(body, "stock", int),
            price_cents=take(body, "price_cents", int, required=False),
            per_user_limit=_int(body, "per_user_limit", 1),
            starts_at_ms=starts_at_ms,
            duration_ms=_int(body, "duration_s", 600) * 1000,
            hold_ms=_int(body, "hold_s", 300) * 1000,
            group_size=_int(group, "size", 0),
            group_price_cents=_int(group, "price_cents", 0),
            team_ms=_int(group, "team_s", 0) * 1000,
        )
    )
    return reply(sale.public(), status=201)


async def list_sales(request: web.Request) -> web.Response:
    room_id = request.match_info["room_id"]
    _host_of(request, room_id, Role.HOST, Role.MODERATOR)
    services = request.app[SERVICES]
    rows = await services.store.sales(room_id)
    statuses = {s.id: s for s in await services.inventory.statuses([r.id for r in rows])}
    # a sale over and gone from Redis (sale_retention_s) is shown from its record and the ledger
    statuses |= await services.selling.settled_all([r for r in rows if r.id not in statuses])
    return reply({"sales": [_sale_view(r, statuses.get(r.id)) for r in rows]})


async def _sale(request: web.Request, *roles: Role) -> tuple[SaleRow, SaleStatus | None]:
    sale_id = request.match_info["sale_id"]
    who = identify(request)  # before the lookup: no probing sale ids without a token
    row, status = await request.app[SERVICES].selling.sale(sale_id)
    who.require_room(row.room_id)
    who.require_role(*(roles or (Role.HOST,)))
    return row, status


async def _sale_row(request: web.Request, *roles: Role) -> SaleRow:
    """The sale's record, checked like ``_sale`` but without Redis (reads of the ledger)."""
    who = identify(request)
    row = await request.app[SERVICES].store.sale(request.match_info["sale_id"])
    if row is None:
        raise UnknownSale()
    who.require_room(row.room_id)
    who.require_role(*(roles or (Role.HOST,)))
    return row


async def get_sale(request: web.Request) -> web.Response:
    row, status = await _sale(request, Role.HOST, Role.MODERATOR)
    if status is None:  # over and gone from Redis (sale_retention_s): the record and the ledger
        status = await request.app[SERVICES].selling.settled(row)
    return reply(_sale_view(row, status))


async def stop_sale(request: web.Request) -> web.Response:
    row, _ = await _sale(request)
    status = await request.app[SERVICES].selling.stop_sale(row.id)
    return reply(status.public())


async def add_stock(request: web.Request) -> web.Response:
    row, _ = await _sale(request)
    body = await json_body(request)
    status = await request.app[SERVICES].selling.add_stock(row.id, take(body, "units", int))
    return reply(status.public())


async def drop_coupons(request: web.Request) -> web.Response:
    row, _ = await _sale(request)
    body = await json_body(request)
    batch = await request.app[SERVICES].selling.drop_coupons(
        row.id, take(body, "count", int), take(body, "discount_cents", int)
    )
    return reply(batch, status=201)


async def coupon_batch(request: web.Request) -> web.Response:
    row, _ = await _sale(request, Role.HOST, Role.MODERATOR)
    batch_id = request.match_info["batch_id"]
    left = await request.app[SERVICES].inventory.coupons_left(row.id, batch_id)
    if left is None:
        raise ApiError(404, "batch_not_found", "no coupon batch with that id")
    return reply({"sale_id": row.id, "batch_id": batch_id, "remaining": left})


async def team(request: web.Request) -> web.Response:
    row, _ = await _sale(request, Role.HOST, Role.MODERATOR)
    status = await request.app[SERVICES].inventory.team_status(row.id, request.match_info["code"])
    return reply(status)


async def sale_orders(request: web.Request) -> web.Response:
    """A page of the sale's orders from the ledger, in the order recorded: ``?after=<cursor>&limit=<n>``."""
    row = await _sale_row(request, Role.HOST, Role.MODERATOR)
    limit = query_int(request, "limit", DEFAULT_ORDERS_PAGE, 1, MAX_ORDERS_PAGE)
    after = query_int(request, "after", 0, 0, 2**62)
    orders, cursor = await request.app[SERVICES].ledger.orders_page(row.id, after, limit)
    return reply(
        {
            "sale_id": row.id,
            "orders": [_order_view(o) for o in orders],
            "cursor": str(cursor),
            "more": len(orders) == limit,
        }
    )


async def get_order(request: web.Request) -> web.Response:
    """An order from the ledger: for the room's hosts and moderators, and for its buyer."""
    who = identify(request)
    services = request.app[SERVICES]
    order = await services.ledger.order(request.match_info["order_id"])
    if order is None:
        raise ApiError(404, "order_not_found", "no such order in the ledger")
    # an order of a sale, or of an interaction tool (an auction won, a prize drawn): its room
    row = await services.store.sale(order.sale_id) or await services.store.tool(order.sale_id)
    if row is None:
        raise UnknownSale()
    who.require_room(row.room_id)
    if who.user_id != order.user_id:
        who.require_role(Role.HOST, Role.MODERATOR)
    return reply(_order_view(order))


def _order_view(order: Order) -> dict[str, Any]:
    return {**order.public(), "user_id": order.user_id}


def _int(body: dict[str, Any], name: str, default: int) -> int:
    value = take(body, name, int, required=False)
    return default if value is None else int(value)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/rooms/{room_id}/sales", open_sale)
    app.router.add_get("/api/rooms/{room_id}/sales", list_sales)
    app.router.add_get("/api/sales/{sale_id}", get_sale)
    app.router.add_post("/api/sales/{sale_id}/stop", stop_sale)
    app.router.add_post("/api/sales/{sale_id}/stock", add_stock)
    app.router.add_post("/api/sales/{sale_id}/coupons", drop_coupons)
    app.router.add_get("/api/sales/{sale_id}/coupons/{batch_id}", coupon_batch)
    app.router.add_get("/api/sales/{sale_id}/teams/{code}", team)
    app.router.add_get("/api/sales/{sale_id}/orders", sale_orders)
    app.router.add_get("/api/orders/{order_id}", get_order)
