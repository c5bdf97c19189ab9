"""Buyer commands: what a viewer does over the WebSocket to buy (reserve, confirm, cancel,
open or join a team, claim a coupon), behind per-user and per-address rate limits.

A reservation: ``command`` (signed in? within the limits?) -> the sale is this room's
(``Inventory.room_of``) -> ``Inventory.reserve`` (one batched reserve.lua call decides it) ->
the ack's fields, with the hold. A confirm: the hold's sale is this room's -> confirm.lua
decides, changing nothing (a refusal costs no payment) -> the charge -> ``Settlement.spend``
runs confirm.lua with it (the order is in Redis and its stream) and keeps or gives back the
money -> the ledger commits the order -> ``order_status`` to the buyer's other connections ->
the ack's fields, with the order.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from gateway.commands import Caller
from gateway.limits import TokenBucket
from gateway.messages import Command, ProtocolError
from inventory.inventory import Inventory, team_code
from inventory.ledger import Ledger
from inventory.model import (
    MAX_QUANTITY,
    Coupon,
    InventoryError,
    Order,
    TeamJoined,
    Unavailable,
    UnknownSale,
    sale_id_of,
)
from live.metrics import Metrics
from live.notices import Notices
from live.settlement import Settlement

log = logging.getLogger(__name__)

#: Sale ids and team codes are short ids; anything else is refused before Redis is asked.
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: Rate-limit buckets kept per limit at most (users or addresses).
_BUCKETS_KEPT = 100_000


@dataclass(frozen=True)
class BuyingConfig:
    """Per user, and per client address (many buyers can share one, behind a NAT), the burst
    and rate of buy actions (reserve, confirm, cancel, teams, coupons)."""

    burst: int = 10
    rate_per_s: float = 5.0
    ip_burst: int = 20_000
    ip_rate_per_s: float = 10_000.0


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


class Buying:
    def __init__(
        self,
        config: BuyingConfig,
        inventory: Inventory,
        ledger: Ledger,
        settlement: Settlement,
        notices: Notices,
        metrics: Metrics,
    ) -> None:
        self.inventory = inventory
        self.ledger = ledger
        self.settlement = settlement
        self.notices = notices
        self.metrics = metrics
        self._per_user = _Buckets(config.burst, config.rate_per_s)
        self._per_ip = _Buckets(config.ip_burst, config.ip_rate_per_s)
        self._counters: dict[tuple[str, str], Any] = {}

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
                await self.notices.order_status(
                    caller.room_id, user, f["hold_id"], "cancelled", quantity=units
                )
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
            # a retry of a confirm that went through: the same order, no charge; into the ledger
            # before the answer, as the first time (whose ledger write may have failed)
            await self._write_ledger([amount])
            return amount
        charge = await self.settlement.charge(hold_id, user, amount)

        async def commit() -> tuple[Order, bool]:
            return await self.inventory.paid_confirm(hold_id, user, coupon_id, amount, charge.attempt)

        order = await self.settlement.spend(sale_id_of(hold_id), charge, commit)
        await self._write_ledger([order])
        await self.notices.order_status(caller.room_id, user, hold_id, "confirmed", order=order.public())
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
            charge = await self.settlement.charge(f"team:{sale_id}:{code}:{user}", user, checked)

            async def commit() -> tuple[TeamJoined, bool]:
                if op == "open":
                    done = await self.inventory.open_team(sale_id, user, quantity, key, code, charge.attempt)
                else:
                    done = await self.inventory.join_team(sale_id, code, user, quantity, key, charge.attempt)
                return done, done.paid

            joined = await self.settlement.spend(sale_id, charge, commit)
        if joined.orders:
            await self._write_ledger(joined.orders)
            for order in joined.orders:
                await self.notices.order_status(
                    caller.room_id, order.user_id, order.id, "confirmed", order=order.public()
                )
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
        if not _ID.fullmatch(sale_id) or await self.inventory.room_of(sale_id) != room_id:
            raise UnknownSale()
        return sale_id

    async def _write_ledger(self, orders: list[Order]) -> None:
        """Commit the orders to the ledger before the buyer hears "confirmed": an order a buyer
        was told of survives a Redis failover that loses it (``live reconcile --repair`` puts it
        back from the ledger). When the ledger cannot be written the buyer hears ``unavailable``
        and retries, which answers the same order (no second charge) once it is written; the
        ledger's consumer also writes it from the sale's stream meanwhile."""
        try:
            await self.ledger.record(orders)
        except Exception as exc:
            log.error("ledger write failed; the buyer is told unavailable", extra={"error": repr(exc)})
            raise Unavailable() from exc
