"""Flash sales in the application: what hosts open, what buyers do, and what rooms are told.

A journey of a purchase: ``reserve`` over the WebSocket -> rate limits -> the inventory's
batched Lua call -> ack with the hold. ``confirm`` -> the payment step -> confirm.lua (the
order is in Redis and its stream) -> the ledger commits it to SQLite -> ack with the order,
and an ``order_status`` to the buyer's other connections. Meanwhile every process sweeps the
active sales: expired holds go back (the buyer is told), late teams fail (members refunded and
told), and phase changes and stock left are announced to the room once, by one process.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import asdict, dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.hub import Caller, Hub
from gateway.limits import TokenBucket
from gateway.messages import Command, ProtocolError
from inventory import reconcile
from inventory.inventory import Inventory, new_team_code
from inventory.keys import active_sales_key, as_text, sale_id_of
from inventory.ledger import Ledger
from inventory.model import (
    MAX_PRICE_CENTS,
    MAX_QUANTITY,
    MAX_STOCK,
    Coupon,
    HoldNotFound,
    InventoryError,
    Order,
    SaleSpec,
    SaleStatus,
    Sweep,
    UnknownSale,
)
from inventory.payments import Payments
from live.metrics import Metrics
from live.rooms import Rooms, new_id, now_ms
from live.settings import Settings
from live.store import ProductRow, SaleRow, Store
from shared.aio import stop_tasks

log = logging.getLogger(__name__)

#: Upper bounds a host cannot exceed when opening a sale.
MAX_SALE_MS = 30 * 86_400_000
MAX_HOLD_MS = 86_400_000
MAX_LEAD_MS = 365 * 86_400_000
MAX_GROUP_SIZE = 100
MAX_COUPONS = 1_000_000
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_BUCKETS_KEPT = 100_000
#: Sweeps of one sale per sweep interval at most, while each comes back full of expired holds.
_SWEEPS_PER_TICK = 10


class CommerceError(Exception):
    """A host request the API refuses (HTTP 400 with the code)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class SaleRequest:
    """A host's request to open a sale, checked by ``Commerce.open_sale``."""

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


class _Buckets:
    """Token buckets by key (user or address), pruned so they cannot grow without end."""

    def __init__(self, burst: int, rate_per_s: float) -> None:
        self.burst, self.rate = burst, rate_per_s
        self._buckets: dict[str, TokenBucket] = {}

    def take(self, key: str) -> bool:
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= _BUCKETS_KEPT:
                self._buckets.clear()  # rare: everyone starts again with a full bucket
            bucket = self._buckets[key] = TokenBucket(self.burst, self.rate)
        return bucket.take()


class Commerce:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        rooms: Rooms,
        inventory: Inventory,
        ledger: Ledger,
        payments: Payments,
        hub: Hub,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.store = store
        self.rooms = rooms
        self.inventory = inventory
        self.ledger = ledger
        self.payments = payments
        self.hub = hub
        self.metrics = metrics
        self.redis: aioredis.Redis = inventory.redis
        self._active_key = active_sales_key(settings.key_prefix)
        self._per_user = _Buckets(settings.buy_burst, settings.buy_rate_per_s)
        self._per_ip = _Buckets(settings.buy_ip_burst, settings.buy_ip_rate_per_s)
        self._sale_rooms: dict[str, str] = {}
        #: Per sale, the highest (seq, sold, total) this process saw: they only go down when
        #: Redis lost writes (a failover to a replica that lagged, a restore).
        self._high: dict[str, tuple[int, int, int]] = {}
        self._counters: dict[tuple[str, str], Any] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await self.inventory.start()
        await self.ledger.start(consume=self.settings.ledger_consumer)
        self._tasks.append(asyncio.create_task(self._sweep_loop(), name="sales-sweeper"))

    async def stop(self) -> None:
        await stop_tasks(self._tasks)
        await self.inventory.stop()
        await self.ledger.close()

    # -- hosts --------------------------------------------------------------------------------

    async def open_sale(self, request: SaleRequest) -> SaleStatus:
        r = request
        product = next((p for p in await self.rooms.products(r.room_id) if p.id == r.product_id), None)
        if product is None:
            raise CommerceError("product_not_found", "no such product in this room")
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
        await self.store.insert_sale(SaleRow(**asdict(spec), state="open", created_at_ms=now))
        await self.inventory.open_sale(spec)
        await self.ledger.ensure_group(spec.id)
        await self.redis.sadd(self._active_key, spec.id)
        status = await self.inventory.status(spec.id)
        sale = {**status.public(), "product": _product_view(product)}
        await self._event(spec.room_id, {"type": "sale_opened", "sale": sale})
        return status

    async def sale(self, sale_id: str) -> tuple[SaleRow, SaleStatus | None]:
        """The record, and the live counters (None if Redis lost the sale: repair it)."""
        row = await self.store.sale(sale_id)
        if row is None:
            raise UnknownSale()
        try:
            return row, await self.inventory.status(sale_id)
        except UnknownSale:
            return row, None

    async def add_stock(self, sale_id: str, units: int) -> SaleStatus:
        _, status = await self.sale(sale_id)
        _require(0 < units <= MAX_STOCK, "units", f"must be 1 to {MAX_STOCK}")
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
        batch = {"sale_id": sale_id, "batch_id": batch_id, "count": count, "discount_cents": discount_cents}
        await self._event(row.room_id, {"type": "coupons_dropped", **batch})
        return {**batch, "remaining": count}

    async def room_sales(self, room_id: str) -> list[dict[str, Any]]:
        """The room's sales that are not over, as a new viewer's welcome shows them."""
        active = [as_text(m) for m in await self.redis.smembers(self._active_key)]
        statuses = [
            s for s in await self.inventory.statuses(active) if s.room_id == room_id and s.phase != "ended"
        ]
        if not statuses:
            return []
        products = {p.id: p for p in await self.rooms.products(room_id)}
        return [{**s.public(), "product": _product_view(products.get(s.product_id))} for s in statuses]

    # -- buyers -------------------------------------------------------------------------------

    async def command(self, caller: Caller, command: Command) -> dict[str, Any]:
        """A buyer's command from the WebSocket: the ack's fields, or a ProtocolError."""
        outcome = "ok"
        try:
            if caller.anonymous:
                raise ProtocolError("login_required", "sign in to buy: anonymous viewers cannot")
            if not self._per_user.take(caller.user_id) or not self._per_ip.take(caller.remote_ip):
                raise ProtocolError("rate_limited", "too many purchase actions; wait a moment")
            try:
                return await self._buy(caller, command)
            except InventoryError as exc:
                raise ProtocolError(exc.code, exc.message, data=exc.data) from None
        except ProtocolError as exc:
            outcome = exc.code
            raise
        finally:
            self._count(command.type, outcome)

    def _count(self, action: str, outcome: str) -> None:
        counter = self._counters.get((action, outcome))
        if counter is None:  # prometheus' labels() takes a lock and a lookup: once per pair
            counter = self._counters[(action, outcome)] = self.metrics.buy_actions.labels(action, outcome)
        counter.inc()

    async def _buy(self, caller: Caller, command: Command) -> dict[str, Any]:
        f, key, user = command.fields, command.rid or "", caller.user_id
        match command.type:
            case "reserve":
                sale_id = await self._sale_in(caller.room_id, f["sale_id"])
                held = await self.inventory.reserve(sale_id, user, f["quantity"], key)
                return {
                    "hold_id": held.hold_id,
                    "sale_id": sale_id,
                    "quantity": held.quantity,
                    "expires_at_ms": held.expires_at_ms,
                }
            case "confirm":
                await self._sale_in(caller.room_id, sale_id_of(f["hold_id"]))
                order = await self._confirm(caller, f["hold_id"], f.get("coupon_id"))
                return {"order": order.public()}
            case "cancel":
                await self._sale_in(caller.room_id, sale_id_of(f["hold_id"]))
                units = await self.inventory.cancel(f["hold_id"], user)
                await self._tell(caller.room_id, user, f["hold_id"], "cancelled", quantity=units)
                return {"hold_id": f["hold_id"], "quantity": units}
            case "open_team" | "join_team":
                return await self._team(caller, command)
            case "claim_coupon":
                sale_id = await self._sale_in(caller.room_id, f["sale_id"])
                coupon: Coupon = await self.inventory.claim_coupon(sale_id, f["batch_id"], user)
                return {"coupon_id": coupon.id, "sale_id": sale_id, "discount_cents": coupon.discount_cents}
        raise ProtocolError("unknown_type", f"unknown command {command.type!r}")

    async def _confirm(self, caller: Caller, hold_id: str, coupon_id: str | None) -> Order:
        user = caller.user_id
        try:
            amount = await self.inventory.hold_amount(hold_id, user, coupon_id)
        except HoldNotFound:
            # a retry of a confirm that went through gets the same order; else hold_not_found
            return await self.inventory.confirm(hold_id, user, coupon_id)
        await self.payments.charge(hold_id, user, amount)
        try:
            order = await self.inventory.confirm(hold_id, user, coupon_id, amount)
        except BaseException:
            # not confirmed (expired meanwhile, coupon used elsewhere, Redis down): give it back
            await self.payments.refund(hold_id, user, amount)
            raise
        await self._write_ledger([order])
        await self._tell(caller.room_id, user, hold_id, "confirmed", order=order.public())
        return order

    async def _team(self, caller: Caller, command: Command) -> dict[str, Any]:
        f, user = command.fields, caller.user_id
        sale_id = await self._sale_in(caller.room_id, f["sale_id"])
        quantity = f.get("quantity", 1)
        if not 0 < quantity <= MAX_QUANTITY:
            raise ProtocolError("invalid_quantity", f"'quantity' must be 1 to {MAX_QUANTITY}")
        status = await self.inventory.status(sale_id)
        if not status.group_size:
            raise ProtocolError("not_group_sale", "this sale has no group price")
        opening = command.type == "open_team"
        code = new_team_code() if opening else f["code"].strip().upper()
        if not opening and not _ID.fullmatch(code):
            raise ProtocolError("team_not_found", "no team with that code")
        reference = f"team:{sale_id}:{code}:{user}"
        amount = quantity * status.group_price_cents
        await self.payments.charge(reference, user, amount)  # members pay on joining
        try:
            if opening:
                joined = await self.inventory.open_team(sale_id, user, quantity, command.rid or "", code)
            else:
                joined = await self.inventory.join_team(sale_id, code, user, quantity, command.rid or "")
        except BaseException:
            await self.payments.refund(reference, user, amount)
            raise
        if joined.orders:
            await self._write_ledger(joined.orders)
            for order in joined.orders:
                await self._tell(caller.room_id, order.user_id, order.id, "confirmed", order=order.public())
        return {
            "hold_id": joined.hold_id,
            "sale_id": sale_id,
            "code": joined.code,
            "deadline_ms": joined.deadline_ms,
            "members": joined.members,
            "size": joined.size,
            "completed": joined.completed,
        }

    async def _sale_in(self, room_id: str, sale_id: str) -> str:
        """The sale id if the sale belongs to this room (a buyer buys where they watch)."""
        if not _ID.fullmatch(sale_id) or await self._room_of(sale_id) != room_id:
            raise UnknownSale()
        return sale_id

    async def _write_ledger(self, orders: list[Order]) -> None:
        try:
            await self.ledger.record(orders)
        except Exception as exc:  # the order is safe in Redis and its stream; the consumer retries
            log.error("ledger write failed; the consumer will retry", extra={"error": repr(exc)})

    async def _tell(self, room_id: str, user_id: str, hold_id: str, status: str, **fields: Any) -> None:
        """Push an order's new status to every connection of its buyer in the room."""
        message = {"type": "order_status", "hold_id": hold_id, "status": status, "ts_ms": now_ms(), **fields}
        try:
            await self.hub.send_to_user(room_id, user_id, message)
        except (RedisError, OSError) as exc:
            log.warning("order status not pushed", extra={"hold": hold_id, "error": repr(exc)})

    async def _event(self, room_id: str, message: dict[str, Any]) -> None:
        await self.hub.publish_event(room_id, {**message, "ts_ms": now_ms()})

    # -- sweeping -----------------------------------------------------------------------------

    async def _sweep_loop(self) -> None:
        period = self.settings.sweep_interval_ms / 1000
        while True:
            await asyncio.sleep(period)
            try:
                sale_ids = [as_text(m) for m in await self.redis.smembers(self._active_key)]
                for sale_id in sale_ids:
                    for _ in range(_SWEEPS_PER_TICK):  # more while a sweep came back full
                        swept = await self.sweep(sale_id)
                        if swept is None or len(swept.expired) < self.inventory.config.sweep_limit:
                            break
            except (RedisError, OSError) as exc:
                log.warning("sweep failed on Redis", extra={"error": repr(exc)})

    async def sweep(self, sale_id: str) -> Sweep | None:
        """One sweep of a sale, and telling the room and buyers what it changed."""
        try:
            swept = await self.inventory.sweep(sale_id)
        except UnknownSale:
            await self.heal(sale_id, "the sale is missing from Redis")
            return None
        seen = self._high.get(sale_id)
        now = (swept.seq, swept.sold, swept.total)
        if seen is not None and any(a < b for a, b in zip(now, seen, strict=True)):
            await self.heal(sale_id, f"its counters went back from {seen} to {now} (seq, sold, total)")
            self._high.pop(sale_id, None)
            return None
        self._high[sale_id] = now
        room_id = await self._room_of(sale_id)
        if room_id is None:  # gone between the sweep and now: the next sweep heals it
            return swept
        # a flash sale's holds tend to expire together: the notices go out concurrently
        await asyncio.gather(
            *(
                self._tell(room_id, e.user_id, e.hold_id, "expired", quantity=e.quantity)
                for e in swept.expired
            )
        )
        for team in swept.failed_teams:
            for hold_id, user_id, paid in team.members:
                await self.payments.refund(f"team:{sale_id}:{team.code}:{user_id}", user_id, paid)
                await self._tell(
                    room_id, user_id, hold_id, "team_failed", code=team.code, refunded_cents=paid
                )
        if swept.changed:
            await self._announce(room_id, swept)
        if swept.stock is not None:
            # the chat lane: a stock count is a gauge (10,000 viewers x 5 updates/s is 50,000
            # frames/s: written in chunks at the tick, skipped for laggards, latest only)
            stock = {**_stock_event(swept, swept.stock), "ts_ms": now_ms()}
            await self.hub.publish_gauge(room_id, f"stock:{sale_id}", stock)
        if swept.phase == "ended" and swept.held == 0 and await self.ledger.drained(sale_id):
            await self.redis.srem(self._active_key, sale_id)
        return swept

    async def heal(self, sale_id: str, why: str) -> None:
        """Redis lost writes of a sale: freeze it and rebuild its counters from the ledger
        (one process does it; the others see the sale frozen, then healed)."""
        lock = self.inventory.keys(sale_id)[0] + ":repairing"
        if not await self.redis.set(lock, self.hub.node_id, nx=True, px=60_000):
            return
        try:
            row = await self.store.sale(sale_id)
            if row is None:
                log.error("an active sale is not in the ledger's records", extra={"sale": sale_id})
                return
            log.error(
                "Redis lost writes of a sale: rebuilding it from the ledger",
                extra={"sale": sale_id, "why": why},
            )
            report = await reconcile.repair(self.inventory, self.ledger, row, row.state == "stopped")
            self.metrics.sale_repairs.inc()
            (log.warning if report.clean else log.error)("sale repaired", extra={"report": report.text()})
        finally:
            await self.redis.delete(lock)

    async def _announce(self, room_id: str, swept: Sweep) -> None:
        base = {"sale_id": swept.sale_id}
        phase, _, seconds = swept.phase.partition(":")
        status = None
        if phase == "countdown":
            status = await self.inventory.status(swept.sale_id)
            event = {
                "type": "sale_countdown",
                **base,
                "seconds_left": int(seconds),
                "starts_at_ms": status.starts_at_ms,
            }
        elif phase == "live" and swept.previous == "sold_out":
            event = _stock_event(swept, swept.available)
        elif phase == "live":
            status = await self.inventory.status(swept.sale_id)
            event = {
                "type": "sale_started",
                **base,
                "available": swept.available,
                "total": swept.total,
                "ends_at_ms": status.ends_at_ms,
            }
        elif phase == "sold_out":
            event = {"type": "sale_sold_out", **base, "sold": swept.sold, "total": swept.total}
        elif phase == "ended":
            event = {"type": "sale_ended", **base, "sold": swept.sold, "total": swept.total}
        else:
            return  # scheduled (sale_opened said so) or frozen (an operator's repair)
        await self._event(room_id, event)

    async def _room_of(self, sale_id: str) -> str | None:
        """The sale's room (a sale never moves, so it is kept), or None for no such sale."""
        room = self._sale_rooms.get(sale_id)
        if room is None:
            raw = await self.redis.hget(self.inventory.keys(sale_id)[0], "room")
            if raw is None:
                return None
            room = self._sale_rooms[sale_id] = as_text(raw)
        return room


def _stock_event(swept: Sweep, available: int) -> dict[str, Any]:
    return {
        "type": "sale_stock",
        "sale_id": swept.sale_id,
        "available": available,
        "total": swept.total,
        "sold": swept.sold,
    }


def _require(ok: bool, field: str, rule: str) -> None:
    if not ok:
        raise CommerceError("invalid_field", f"the field {field!r} {rule}")


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
