"""Host sale operations: open a flash sale, add stock, stop it, drop coupons, and read sales
(live from Redis, or from the record and the ledger once over and retired).

Opening a sale: the request is checked -> the record (SQLite, capped per room) -> the sale in
Redis (open_sale.lua) -> its orders stream's consumer group -> the active sales (swept from
then on) -> ``sale_opened`` to the room.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from inventory.inventory import Inventory
from inventory.ledger import Ledger
from inventory.model import (
    MAX_PRICE_CENTS,
    MAX_QUANTITY,
    MAX_STOCK,
    AlreadyEnded,
    Mine,
    SaleSpec,
    SaleStatus,
    UnknownSale,
)
from live import events
from live.errors import AppError
from live.notices import Notices
from live.rooms import Rooms, new_id, now_ms
from live.store import ProductRow, SaleRow, Store
from live.sweeper import Watermarks

#: Upper bounds a host cannot exceed when opening a sale.
MAX_SALE_MS = 30 * 86_400_000
MAX_HOLD_MS = 86_400_000
MAX_LEAD_MS = 365 * 86_400_000
MAX_GROUP_SIZE = 100
MAX_COUPONS = 1_000_000


class SaleRefused(AppError):
    """A host request the API refuses (HTTP 400 with the code; 404 for a ``*_not_found``)."""


@dataclass(frozen=True)
class SellingConfig:
    #: Sales per room that are open and not over (scheduled ones count).
    max_active_sales_per_room: int = 50


@dataclass(frozen=True)
class SaleRequest:
    """A host's request to open a sale, checked by ``Selling.open_sale``."""

    room_id: str
    product_id: str
    stock: int
    price_cents: int | None = None  # None: the product's price
    per_user_limit: int = 1
    starts_at_ms: int | None = None  # None: now
    duration_ms: int = 600_000
    hold_ms: int = 300_000
    group_size: int = 0
    group_price_cents: int = 0
    team_ms: int = 0


class Selling:
    def __init__(
        self,
        config: SellingConfig,
        store: Store,
        rooms: Rooms,
        inventory: Inventory,
        ledger: Ledger,
        notices: Notices,
        watermarks: Watermarks,
    ) -> None:
        self.config = config
        self.store = store
        self.rooms = rooms
        self.inventory = inventory
        self.ledger = ledger
        self.notices = notices
        self.watermarks = watermarks

    async def open_sale(self, request: SaleRequest) -> SaleStatus:
        r = request
        product = next((p for p in await self.rooms.products(r.room_id) if p.id == r.product_id), None)
        if product is None:
            raise SaleRefused("product_not_found", "no such product in this room")
        now = now_ms()
        price = product.price_cents if r.price_cents is None else r.price_cents
        starts = now if r.starts_at_ms is None else r.starts_at_ms
        _require(0 < r.stock <= MAX_STOCK, "stock", f"must be 1 to {MAX_STOCK}")
        _require(0 <= price <= MAX_PRICE_CENTS, "price_cents", f"must be 0 to {MAX_PRICE_CENTS}")
        _require(0 < r.per_user_limit <= MAX_QUANTITY, "per_user_limit", f"must be 1 to {MAX_QUANTITY}")
        _require(
            now - 60_000 <= starts <= now + MAX_LEAD_MS, "starts_at_ms", "must be from now to a year ahead"
        )
        _require(1000 <= r.duration_ms <= MAX_SALE_MS, "duration_s", "must be 1 s to 30 days")
        _require(1000 <= r.hold_ms <= MAX_HOLD_MS, "hold_s", "must be 1 s to 1 day")
        if r.group_size:
            _require(2 <= r.group_size <= MAX_GROUP_SIZE, "group.size", f"must be 2 to {MAX_GROUP_SIZE}")
            _require(0 <= r.group_price_cents <= price, "group.price_cents", "must be 0 to the sale price")
            _require(1000 <= r.team_ms <= MAX_SALE_MS, "group.team_s", "must be 1 s to 30 days")
        spec = SaleSpec(
            id=new_id("s"),
            room_id=r.room_id,
            product_id=r.product_id,
            stock=r.stock,
            price_cents=price,
            per_user_limit=r.per_user_limit,
            starts_at_ms=starts,
            ends_at_ms=starts + r.duration_ms,
            hold_ms=r.hold_ms,
            group_size=r.group_size,
            group_price_cents=r.group_price_cents if r.group_size else 0,
            team_ms=r.team_ms if r.group_size else 0,
        )
        # the record first (a sale Redis knows is always in SQLite), then Redis
        row = SaleRow(**asdict(spec), state="open", created_at_ms=now)
        await self.store.insert_sale(row, max_active=self.config.max_active_sales_per_room)
        await self.inventory.open_sale(spec)
        await self.ledger.ensure_group(spec.id)
        await self.inventory.activate(spec.id)
        status = await self.inventory.status(spec.id)
        sale = {**status.public(), "product": _product_view(product)}
        await self.notices.event(spec.room_id, events.sale_opened(sale))
        return status

    async def sale(self, sale_id: str) -> tuple[SaleRow, SaleStatus | None]:
        """The record, and the live counters (None if Redis does not have the sale: it is over
        and its keys expired, see ``settled``; or Redis lost it, and the sweeper heals it)."""
        row = await self.store.sale(sale_id)
        if row is None:
            raise UnknownSale()
        try:
            status = await self.inventory.status(sale_id)
        except UnknownSale:
            if not row.over(now_ms()):
                self.inventory.changed.add(sale_id)  # lost: its next sweep (at once) heals it
            return row, None
        if self.watermarks.behind(status):
            self.inventory.changed.add(sale_id)  # Redis lost writes: the same
        return row, status

    async def settled(self, row: SaleRow) -> SaleStatus | None:
        """A sale that is over and no longer in Redis (its keys expire sale_retention_s after
        it settled), as its record and the ledger tell it; None for a sale not over."""
        if not row.over(now_ms()):
            return None
        sold = (await self.ledger.units_sold([row.id])).get(row.id, 0)
        return _settled_status(row, sold)

    async def settled_all(self, rows: list[SaleRow]) -> dict[str, SaleStatus]:
        """``settled`` for many sales, with one read of the ledger."""
        now = now_ms()
        over = [r for r in rows if r.over(now)]
        sold = await self.ledger.units_sold([r.id for r in over]) if over else {}
        return {r.id: _settled_status(r, sold.get(r.id, 0)) for r in over}

    async def add_stock(self, sale_id: str, units: int) -> SaleStatus:
        row, status = await self.sale(sale_id)
        _require(0 < units <= MAX_STOCK, "units", f"must be 1 to {MAX_STOCK}")
        if status is None and row.over(now_ms()):
            raise AlreadyEnded("the sale is over and settled: the ledger keeps its record")
        if status is None:
            raise UnknownSale("the sale is missing from Redis: run `live reconcile --repair`")
        await self.store.add_sale_stock(sale_id, units)
        await self.inventory.add_stock(sale_id, units)
        return await self.inventory.status(sale_id)

    async def stop_sale(self, sale_id: str) -> SaleStatus:
        await self.sale(sale_id)
        ends = await self.inventory.stop_sale(sale_id)
        await self.store.stop_sale(sale_id, ends)
        return await self.inventory.status(sale_id)

    async def drop_coupons(self, sale_id: str, count: int, discount_cents: int) -> dict[str, Any]:
        row, _ = await self.sale(sale_id)
        _require(0 < count <= MAX_COUPONS, "count", f"must be 1 to {MAX_COUPONS}")
        _require(0 < discount_cents <= MAX_PRICE_CENTS, "discount_cents", f"must be 1 to {MAX_PRICE_CENTS}")
        batch_id = new_id("c").replace("-", "_")
        await self.inventory.drop_coupons(sale_id, batch_id, count, discount_cents)
        await self.notices.event(
            row.room_id, events.coupons_dropped(sale_id, batch_id, count, discount_cents)
        )
        batch = {"sale_id": sale_id, "batch_id": batch_id, "count": count, "discount_cents": discount_cents}
        return {**batch, "remaining": count}

    async def room_sales(self, room_id: str) -> RoomSales:
        """What a new viewer's welcome shows of the room's selling (``RoomSales``)."""
        active = await self.inventory.active_sales()
        here = [s for s in await self.inventory.statuses(active) if s.room_id == room_id]
        in_play = [s.id for s in here]
        statuses = [s for s in here if s.phase != "ended"]
        if not statuses:
            return RoomSales([], in_play)
        products = {p.id: p for p in await self.rooms.products(room_id)}
        sales = [{**s.public(), "product": _product_view(products.get(s.product_id))} for s in statuses]
        return RoomSales(sales, in_play)

    async def yours(self, asks: list[tuple[list[str], str]]) -> list[dict[str, Any]]:
        """The welcome's ``you`` of several signed-in users at once, each asked as (the sales
        in play in its room, its user id): one read for all of them."""
        return [you_view(mines) for mines in await self.inventory.mine_many(asks)]


@dataclass(frozen=True)
class RoomSales:
    """A room's selling as its welcome shows it: the sales not over (``sales``, each with its
    product), and the ids of every sale still in play (not yet retired: an ended one may still
    have holds to pay and teams to fill), in which a signed-in viewer's ``you`` is read."""

    sales: list[dict[str, Any]]
    in_play: list[str]


#: The most orders the welcome's ``you`` lists (the newest): the rest are in the ledger.
WELCOME_ORDERS = 20


def you_view(mines: list[Mine]) -> dict[str, Any]:
    """The welcome's ``you`` (docs/protocol.md): open holds soonest to expire first, orders
    newest first, coupons and teams in the sales' order."""
    holds = sorted((h for m in mines for h in m.holds), key=lambda h: (h.expires_at_ms, h.hold_id))
    orders = sorted((o for m in mines for o in m.orders), key=lambda o: (o.created_at_ms, o.id), reverse=True)
    return {
        "holds": [
            {
                "hold_id": h.hold_id,
                "sale_id": h.sale_id,
                "product_id": h.product_id,
                "quantity": h.quantity,
                "price_cents": h.unit_price_cents,
                "expires_at_ms": h.expires_at_ms,
                "status": h.status,
                "team_code": h.team_code,
            }
            for h in holds
        ],
        "orders": [o.public() for o in orders[:WELCOME_ORDERS]],
        "coupons": [
            {
                "coupon_id": c.id,
                "sale_id": c.sale_id,
                "batch_id": c.batch_id,
                "discount_cents": c.discount_cents,
                "used": c.used,
            }
            for m in mines
            for c in m.coupons
        ],
        "teams": [
            {
                "code": t.code,
                "sale_id": t.sale_id,
                "hold_id": t.hold_id,
                "state": t.state,
                "deadline_ms": t.deadline_ms,
                "members": t.members,
                "size": t.size,
                "completed": t.state == "complete",
                "price_cents": t.price_cents,
            }
            for m in mines
            for t in m.teams
        ],
    }


def _settled_status(row: SaleRow, sold: int) -> SaleStatus:
    return SaleStatus(
        id=row.id,
        room_id=row.room_id,
        product_id=row.product_id,
        phase="ended",
        total=row.stock,
        available=row.stock - sold,
        held=0,
        sold=sold,
        price_cents=row.price_cents,
        per_user_limit=row.per_user_limit,
        starts_at_ms=row.starts_at_ms,
        ends_at_ms=row.ends_at_ms,
        hold_ms=row.hold_ms,
        group_size=row.group_size,
        group_price_cents=row.group_price_cents,
        team_ms=row.team_ms,
    )


def _require(ok: bool, field: str, rule: str) -> None:
    if not ok:
        raise SaleRefused("invalid_field", f"the field {field!r} {rule}")


def _product_view(product: ProductRow | None) -> dict[str, Any] | None:
    """What a sale card shows of its product (None if the product is unknown)."""
    if product is None:
        return None
    return {
        "id": product.id,
        "title": product.title,
        "price_cents": product.price_cents,
        "image_url": product.image_url,
    }
