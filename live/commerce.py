"""Flash sales in the application: what hosts open, what buyers do, and what rooms are told.

A journey of a purchase: ``reserve`` over the WebSocket -> rate limits -> the inventory's
batched Lua call -> ack with the hold. ``confirm`` -> the payment step -> confirm.lua (the
order is in Redis and its stream) -> the ledger commits it to SQLite -> ack with the order,
and an ``order_status`` to the buyer's other connections. Meanwhile every process sweeps the
active sales that are due: expired holds go back (the buyer is told), late teams fail (members
refunded and told), and phase changes and stock left are announced to the room once, by one
process; a settled sale leaves the active sales and its keys expire after sale_retention_s.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.hub import Caller, Hub
from gateway.limits import TokenBucket
from gateway.messages import Command, ProtocolError
from inventory import reconcile
from inventory.inventory import Inventory, team_code
from inventory.keys import active_sales_key, as_text, sale_id_of
from inventory.ledger import Ledger
from inventory.model import (
    MAX_PRICE_CENTS,
    MAX_QUANTITY,
    MAX_STOCK,
    AlreadyEnded,
    Coupon,
    InventoryError,
    Order,
    SaleSpec,
    SaleStatus,
    Sweep,
    TeamFailed,
    TeamJoined,
    UnknownSale,
)
from inventory.payments import Charge, Payments
from live.metrics import Metrics
from live.rooms import Rooms, new_id, now_ms
from live.settings import Settings
from live.store import ProductRow, SaleRow, Store
from shared.aio import Supervisor, stop_tasks

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
#: Sales one process leases per sweep interval at most (more wait for the next interval).
_DUE_PER_TICK = 500
#: A lease of a due sale lasts this long at least: far longer than a round of sweeps takes,
#: and the longest a sale waits when the process that leased it dies.
_LEASE_MIN_MS = 1000
#: An ended sale with nothing held waits for the ledger to have every order: checked this often.
_DRAIN_POLL_MS = 1000
#: A payment that could not be settled (Redis or the provider down) is retried after these
#: delays, doubling from the first to the last.
_SETTLE_FIRST_S = 0.1
_SETTLE_MAX_S = 5.0
T = TypeVar("T")


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
        supervisor: Supervisor | None = None,
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
        #: Per sale, the highest (seq, sold, total) this process saw: they only go down when
        #: Redis lost writes (a failover to a replica that lagged, a restore).
        self._high: dict[str, tuple[int, int, int]] = {}
        self._counters: dict[tuple[str, str], Any] = {}
        self.supervisor = supervisor or inventory.supervisor
        #: Payments being settled in the background (their script or refund met a Redis or
        #: provider failure): short-lived, each ends once settled.
        self._settling: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await self.inventory.start()
        await self.ledger.start(consume=self.settings.ledger_consumer)
        self.supervisor.start("sales-sweeper", self._sweep_loop)

    async def stop(self) -> None:
        await stop_tasks(self._settling)
        await self.supervisor.stop(["sales-sweeper"])
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
        row = SaleRow(**asdict(spec), state="open", created_at_ms=now)
        await self.store.insert_sale(row, max_active=self.settings.max_active_sales_per_room)
        await self.inventory.open_sale(spec)
        await self.ledger.ensure_group(spec.id)
        await self.redis.sadd(self._active_key, spec.id)
        status = await self.inventory.status(spec.id)
        sale = {**status.public(), "product": _product_view(product)}
        await self._event(spec.room_id, {"type": "sale_opened", "sale": sale})
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
            if not _over(row):
                self.inventory.changed.add(sale_id)  # lost: its next sweep (at once) heals it
            return row, None
        seen = self._high.get(sale_id)
        if seen is not None and (status.sold < seen[1] or status.total < seen[2]):
            self.inventory.changed.add(sale_id)  # Redis lost writes: the same
        return row, status

    async def settled(self, row: SaleRow) -> SaleStatus | None:
        """A sale that is over and no longer in Redis (its keys expire sale_retention_s after
        it settled), as its record and the ledger tell it; None for a sale not over."""
        if not _over(row):
            return None
        sold = (await self.ledger.units_sold([row.id])).get(row.id, 0)
        return _settled_status(row, sold)

    async def settled_all(self, rows: list[SaleRow]) -> dict[str, SaleStatus]:
        """``settled`` for many sales, with one read of the ledger."""
        over = [r for r in rows if _over(r)]
        sold = await self.ledger.units_sold([r.id for r in over]) if over else {}
        return {r.id: _settled_status(r, sold.get(r.id, 0)) for r in over}

    async def add_stock(self, sale_id: str, units: int) -> SaleStatus:
        row, status = await self.sale(sale_id)
        _require(0 < units <= MAX_STOCK, "units", f"must be 1 to {MAX_STOCK}")
        if status is None and _over(row):
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
        # confirm.lua decides first, changing nothing: what it refuses now costs no payment
        amount = await self.inventory.hold_amount(hold_id, user, coupon_id)
        if isinstance(amount, Order):
            return amount  # a retry of a confirm that went through: the same order, no charge
        charge = await self.payments.charge(hold_id, user, amount)

        async def commit() -> tuple[Order, bool]:
            return await self.inventory.paid_confirm(hold_id, user, coupon_id, amount, charge.attempt)

        order = await self._spend(sale_id_of(hold_id), charge, commit)
        await self._write_ledger([order])
        await self._tell(caller.room_id, user, hold_id, "confirmed", order=order.public())
        return order

    async def _team(self, caller: Caller, command: Command) -> dict[str, Any]:
        f, user, key = command.fields, caller.user_id, command.rid or ""
        sale_id = await self._sale_in(caller.room_id, f["sale_id"])
        quantity = f.get("quantity", 1)
        if not 0 < quantity <= MAX_QUANTITY:
            raise ProtocolError("invalid_quantity", f"'quantity' must be 1 to {MAX_QUANTITY}")
        op = "open" if command.type == "open_team" else "join"
        # an open's code follows from its request id: every copy of the request, on any
        # process, names the same team and so the same payment reference
        code = team_code(sale_id, user, key) if op == "open" else f["code"].strip().upper()
        if op == "join" and not _ID.fullmatch(code):
            raise ProtocolError("team_not_found", "no team with that code")
        # team.lua decides first, changing nothing: what it refuses now costs no payment, and a
        # request answered before gets its first answer (its first copy paid)
        checked = await self.inventory.check_team(op, sale_id, code, user, quantity, key)
        if isinstance(checked, TeamJoined):
            joined = checked
        else:
            # members pay on joining
            charge = await self.payments.charge(f"team:{sale_id}:{code}:{user}", user, checked)

            async def commit() -> tuple[TeamJoined, bool]:
                if op == "open":
                    done = await self.inventory.open_team(sale_id, user, quantity, key, code, charge.attempt)
                else:
                    done = await self.inventory.join_team(sale_id, code, user, quantity, key, charge.attempt)
                return done, done.paid

            joined = await self._spend(sale_id, charge, commit)
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

    # -- payments -----------------------------------------------------------------------------

    async def _spend(
        self, sale_id: str, charge: Charge, commit: Callable[[], Awaitable[tuple[T, bool]]]
    ) -> T:
        """Run the script that spends a payment (a confirm, a team join), then keep the payment
        or give it back, so that money moves only with the decision.

        Kept when the script spent it. Given back, and only by the call that took it
        (``charge.new``), when the script refused, answered with what another payment paid
        for, or could not be asked (Redis down: it may have run). The attempt is voided in Redis
        before the refund, so no late or concurrent copy of the script can spend it after; if a
        copy of this request spent it first, that copy's answer is this request's too."""
        try:
            result, paid = await commit()
        except (InventoryError, RedisError, OSError):
            if charge.new and not await self._give_back(sale_id, charge):
                result, _ = await commit()  # spent by a copy of this request: its answer
                return result
            raise
        except BaseException:  # cancelled while the script ran: settle it in the background
            if charge.new:
                self._settle_later(sale_id, charge)
            raise
        if charge.new and not paid and not await self._give_back(sale_id, charge):
            log.error("a payment is spent, though another paid", extra={"reference": charge.reference})
        return result

    async def _give_back(self, sale_id: str, charge: Charge) -> bool:
        """Refund a payment unless a script spent it. False when spent (it pays for something);
        True when refunded, or left to a background retry while Redis or the provider is down."""
        try:
            return await self._refund_unspent(sale_id, charge)
        except Exception as exc:
            log.warning(
                "payment not settled yet; retrying in the background",
                extra={"reference": charge.reference, "error": repr(exc)},
            )
            self._settle_later(sale_id, charge)
            return True

    async def _refund_unspent(self, sale_id: str, charge: Charge) -> bool:
        if not await self.inventory.void_payment(sale_id, charge.attempt):
            return False
        await self.payments.refund(charge.reference, charge.attempt)
        return True

    def _settle_later(self, sale_id: str, charge: Charge) -> None:
        async def settle() -> None:
            if not await self._refund_unspent(sale_id, charge):
                log.warning("payment kept: a script spent it", extra={"reference": charge.reference})

        self._later(f"payment {charge.reference} ({charge.attempt}, {charge.amount_cents} cents)", settle)

    def _later(self, what: str, action: Callable[[], Awaitable[None]]) -> None:
        """Run a settlement (idempotent) in the background until it succeeds."""

        async def retry() -> None:
            delay = _SETTLE_FIRST_S
            try:
                while True:
                    try:
                        await action()
                        return
                    except Exception as exc:  # Redis or the provider is down: try again
                        log.warning("settlement failed; retrying", extra={"what": what, "error": repr(exc)})
                        await asyncio.sleep(delay)
                        delay = min(2 * delay, _SETTLE_MAX_S)
            except asyncio.CancelledError:
                log.error("left unsettled at shutdown: settle it with the provider", extra={"what": what})
                raise

        task = asyncio.create_task(retry(), name="payment-settlement")
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _refund_team(self, sale_id: str, team: TeamFailed) -> None:
        """Give back what each member of a failed team paid. sweep.lua hands a failed team to
        one sweep, and a refund names the attempt that paid: each member is refunded once."""
        users = [user_id for _, user_id, _ in team.members]

        async def refund() -> None:
            attempts = await self.inventory.team_payments(sale_id, team.code, users)
            for user_id, attempt in zip(users, attempts, strict=True):
                if attempt:  # none: a member admitted without a payment
                    await self.payments.refund(f"team:{sale_id}:{team.code}:{user_id}", attempt)

        try:
            await refund()
        except Exception as exc:
            log.warning("team refunds failed; retrying", extra={"team": team.code, "error": repr(exc)})
            self._later(f"refunds of team {team.code} of sale {sale_id}", refund)

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
        """Every sweep interval, sweep the sales that are due (``Inventory.due``): those with a
        hold to expire, a team deadline, a countdown second, a start or end, a stock update
        pending, or a change made by this process; an idle sale only every sweep_idle_ms.
        Each due sale is leased to one process, which hands it back with its next due time."""
        period = self.settings.sweep_interval_ms / 1000
        lease_ms = max(_LEASE_MIN_MS, 10 * self.settings.sweep_interval_ms)
        while True:
            await asyncio.sleep(period)
            try:
                swept: list[tuple[str, int, int]] = []
                for sale_id, lease in await self.inventory.due(lease_ms, _DUE_PER_TICK):
                    due_ms = await self._sweep_due(sale_id)
                    if due_ms is not None:
                        swept.append((sale_id, lease, due_ms))
                await self.inventory.reschedule(swept)
            except (RedisError, OSError) as exc:
                # the sales leased and not handed back are due again when their lease ends
                log.warning("sweep failed on Redis", extra={"error": repr(exc)})

    async def _sweep_due(self, sale_id: str) -> int | None:
        """Sweep a due sale (again while a sweep comes back full); returns when it is next
        due (Redis ms), or None when it is not to be scheduled: it left the active set, or is
        being healed (its lease runs out, or the repair makes it due)."""
        swept = None
        for _ in range(_SWEEPS_PER_TICK):
            swept = await self.sweep(sale_id)
            if swept is None:
                return None
            if len(swept.expired) < self.inventory.config.sweep_limit:
                break
        assert swept is not None
        if swept.phase == "ended" and swept.held == 0:  # waiting for the ledger to drain
            return min(swept.due_ms, swept.now_ms + _DRAIN_POLL_MS)
        return swept.due_ms

    async def sweep(self, sale_id: str) -> Sweep | None:
        """One sweep of a sale, and telling the room and buyers what it changed. None when
        there is nothing more to sweep: the sale is settled and retired, or being healed."""
        self.metrics.sale_sweeps.inc()
        try:
            swept = await self.inventory.sweep(sale_id)
        except UnknownSale:
            row = await self.store.sale(sale_id)
            if row is not None and _over(row):
                # over (its keys expired, or Redis lost them): the ledger is its record, and
                # a repair would only bring back keys that are no longer wanted
                await self._retire(sale_id)
                return None
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
            await self._refund_team(sale_id, team)
            for hold_id, user_id, paid in team.members:
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
            await self._retire(sale_id)
            return None
        return swept

    async def _retire(self, sale_id: str) -> None:
        """The sale is over and settled: it leaves the active sales, and its Redis keys expire
        after sale_retention_s (``sale`` then answers from the SQLite record and ledger)."""
        await self.inventory.retire(sale_id, self.settings.sale_retention_s * 1000)
        self._high.pop(sale_id, None)

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
        """The sale's room, or None for no such sale (a sale never moves: the inventory keeps
        it with the sale's other fixed facts, for the sales in use only)."""
        facts = await self.inventory.facts(sale_id)
        return None if facts is None else facts.room_id


def _over(row: SaleRow) -> bool:
    """Whether the record says the sale is over (ended, or stopped: a stop moves its end)."""
    return row.ends_at_ms <= now_ms()


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
