"""What the inventory takes and gives back: sale settings, outcomes, and typed refusals.

Every refusal is an ``InventoryError`` with a stable ``code`` (the same string the Lua scripts
return and clients see); nothing changed in Redis when one is raised.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, NamedTuple

#: How many units one request may take at most, whatever the sale's limit.
MAX_QUANTITY = 1000
MAX_PRICE_CENTS = 10**12
MAX_STOCK = 10**9


def sale_id_of(hold_id: str) -> str:
    """The sale of a hold (or its order): a hold id is "<sale id>.<seq>.<ms>"."""
    return hold_id.split(".", 1)[0]


class InventoryError(Exception):
    """A refused inventory operation. ``code`` is stable; ``message`` is for people."""

    code = "inventory_error"
    message = "the operation was refused"

    def __init__(self, message: str | None = None, **data: Any) -> None:
        super().__init__(message or self.message)
        self.message = message or self.message
        self.data = data


def _refusal(code: str, message: str) -> type[InventoryError]:
    return type(
        "".join(part.title() for part in code.split("_")),
        (InventoryError,),
        {"code": code, "message": message},
    )


SoldOut = _refusal("sold_out", "the sale is sold out")
InsufficientStock = _refusal("insufficient_stock", "fewer units are left than asked for")
LimitReached = _refusal("limit_reached", "that would take you past the per-user limit")
NotStarted = _refusal("not_started", "the sale has not started yet")
Ended = _refusal("ended", "the sale has ended")
Frozen = _refusal("frozen", "the sale is being repaired; retry in a moment")
Duplicate = _refusal("duplicate", "this request id was used with other parameters")
InvalidQuantity = _refusal("invalid_quantity", "the quantity must be a whole number from 1 to the limit")
UnknownSale = _refusal("unknown_sale", "no such sale")
HoldNotFound = _refusal("hold_not_found", "no such hold (it may have expired)")
NotYourHold = _refusal("not_your_hold", "that hold belongs to someone else")
HoldExpired = _refusal("hold_expired", "the hold expired and its units went back")
InTeam = _refusal("in_team", "a team member's hold is confirmed or released with the team")
AlreadyConfirmed = _refusal("already_confirmed", "that hold is already an order")
CouponInvalid = _refusal("coupon_invalid", "that coupon is not yours, is used, or does not exist")
AmountChanged = _refusal("amount_changed", "the amount changed while paying; the payment was given back")
NotGroupSale = _refusal("not_group_sale", "this sale has no group price")
TeamNotFound = _refusal("team_not_found", "no team with that code")
TeamClosed = _refusal("team_closed", "the team is complete or past its deadline")
TeamExists = _refusal("team_exists", "a team with that code exists")
AlreadyInTeam = _refusal("already_in_team", "you are in this team already")
CouponsGone = _refusal("coupons_gone", "all coupons of this batch are taken")
BatchNotFound = _refusal("batch_not_found", "no coupon batch with that id")
BatchExists = _refusal("batch_exists", "a coupon batch with that id exists")
AlreadyEnded = _refusal("already_ended", "the sale has ended already")
PaymentFailed = _refusal("payment_failed", "the payment did not go through; nothing was charged")
Unavailable = _refusal("unavailable", "the inventory store is unavailable; retry")
#: A request whose text cannot be sent to Redis (not encodable as UTF-8), refused alone.
InvalidField = _refusal("invalid_field", "a field is not valid text")

REFUSALS: dict[str, type[InventoryError]] = {
    cls.code: cls
    for cls in (
        SoldOut,
        InsufficientStock,
        LimitReached,
        NotStarted,
        Ended,
        Frozen,
        Duplicate,
        InvalidQuantity,
        UnknownSale,
        HoldNotFound,
        NotYourHold,
        HoldExpired,
        InTeam,
        AlreadyConfirmed,
        CouponInvalid,
        AmountChanged,
        NotGroupSale,
        TeamNotFound,
        TeamClosed,
        TeamExists,
        AlreadyInTeam,
        CouponsGone,
        BatchNotFound,
        BatchExists,
        AlreadyEnded,
        PaymentFailed,
        Unavailable,
    )
}


def refusal(code: str, **data: Any) -> InventoryError:
    cls = REFUSALS.get(code)
    if cls is not None:
        return cls(**data)
    error = InventoryError(f"refused ({code})", **data)  # a script newer than this code
    error.code = code
    return error


@dataclass(frozen=True)
class SaleSpec:
    """A flash sale as the host opens it. Times are ms since the epoch; money is cents."""

    id: str
    room_id: str
    product_id: str
    stock: int
    price_cents: int
    per_user_limit: int
    starts_at_ms: int
    ends_at_ms: int
    hold_ms: int
    #: Group buying: a team of ``group_size`` (>= 2) buys at ``group_price_cents`` if it fills
    #: within ``team_ms``; 0 means no group buying.
    group_size: int = 0
    group_price_cents: int = 0
    team_ms: int = 0

    def redis_fields(self, channel: str) -> dict[str, str | int]:
        """The sale hash fields open_sale.lua and repair.lua take."""
        return {
            "id": self.id,
            "room": self.room_id,
            "product": self.product_id,
            "price": self.price_cents,
            "limit": self.per_user_limit,
            "starts": self.starts_at_ms,
            "ends": self.ends_at_ms,
            "hold_ms": self.hold_ms,
            "total": self.stock,
            "group_size": self.group_size,
            "group_price": self.group_price_cents,
            "team_ms": self.team_ms,
            "channel": channel,
        }


@dataclass(frozen=True)
class SaleStatus:
    """A sale's counters at one instant (``total = available + held + sold`` always)."""

    id: str
    room_id: str
    product_id: str
    phase: str  # not_started | live | sold_out | ended | frozen
    total: int
    available: int
    held: int
    sold: int
    price_cents: int
    per_user_limit: int
    starts_at_ms: int
    ends_at_ms: int
    hold_ms: int
    group_size: int
    group_price_cents: int
    team_ms: int

    def public(self) -> dict[str, Any]:
        """As clients see it (welcome, HTTP)."""
        return {
            "id": self.id,
            "room_id": self.room_id,
            "product_id": self.product_id,
            "phase": self.phase,
            "total": self.total,
            "available": self.available,
            "held": self.held,
            "sold": self.sold,
            "price_cents": self.price_cents,
            "per_user_limit": self.per_user_limit,
            "starts_at_ms": self.starts_at_ms,
            "ends_at_ms": self.ends_at_ms,
            "hold_ms": self.hold_ms,
            "group": (
                {"size": self.group_size, "price_cents": self.group_price_cents, "team_ms": self.team_ms}
                if self.group_size
                else None
            ),
        }


class Reserved(NamedTuple):
    """A hold: its units wait for a confirm until ``expires_at_ms``. (A named tuple: one is made
    per reservation on the hot path, where a frozen dataclass costs a microsecond more.)"""

    hold_id: str
    sale_id: str
    quantity: int
    expires_at_ms: int


@dataclass(frozen=True)
class Order:
    """A confirmed order, as the ledger stores it."""

    id: str
    sale_id: str
    user_id: str
    quantity: int
    unit_price_cents: int
    discount_cents: int
    amount_cents: int
    coupon_id: str | None
    team_code: str | None
    idempotency_key: str
    created_at_ms: int

    @classmethod
    def from_json(cls, text: str | bytes) -> Order:
        o = json.loads(text)
        return cls(
            id=o["id"],
            sale_id=o["sale"],
            user_id=o["user"],
            quantity=int(o["qty"]),
            unit_price_cents=int(o["unit_price"]),
            discount_cents=int(o["discount"]),
            amount_cents=int(o["amount"]),
            coupon_id=o["coupon"] or None,
            team_code=o["team"] or None,
            idempotency_key=o["key"],
            created_at_ms=int(o["ts"]),
        )

    def to_json(self) -> str:
        """The JSON the scripts write (repair.lua reads it back)."""
        return json.dumps(
            {
                "id": self.id,
                "sale": self.sale_id,
                "user": self.user_id,
                "qty": self.quantity,
                "unit_price": self.unit_price_cents,
                "discount": self.discount_cents,
                "amount": self.amount_cents,
                "coupon": self.coupon_id or "",
                "team": self.team_code or "",
                "key": self.idempotency_key,
                "ts": self.created_at_ms,
            },
            separators=(",", ":"),
        )

    def public(self) -> dict[str, Any]:
        return {
            "order_id": self.id,
            "sale_id": self.sale_id,
            "quantity": self.quantity,
            "unit_price_cents": self.unit_price_cents,
            "discount_cents": self.discount_cents,
            "amount_cents": self.amount_cents,
            "coupon_id": self.coupon_id,
            "team_code": self.team_code,
            "confirmed_at_ms": self.created_at_ms,
        }


@dataclass(frozen=True)
class TeamJoined:
    hold_id: str
    sale_id: str
    code: str
    deadline_ms: int
    members: int
    size: int
    #: Every member's order when this join completed the team, else empty.
    orders: list[Order] = field(default_factory=list)
    #: The payment attempt given to the call pays this membership (spent with it, now or by
    #: an earlier copy of the request): False means the caller's payment paid nothing.
    paid: bool = False

    @property
    def completed(self) -> bool:
        return self.members >= self.size


@dataclass(frozen=True)
class Expired:
    hold_id: str
    user_id: str
    quantity: int


@dataclass(frozen=True)
class TeamFailed:
    code: str
    #: (hold id, user id, amount paid in cents) per member, for refunds and notices.
    members: list[tuple[str, str, int]]


@dataclass(frozen=True)
class Sweep:
    """What one sweep of a sale did, and the sale's counters after it."""

    sale_id: str
    #: scheduled | countdown:<s> | live | sold_out | ended | frozen
    phase: str
    #: The phase before, when this sweep saw it change (and so must announce it); else phase.
    previous: str
    stock: int | None  # units left to announce (coalesced), or None
    available: int
    held: int
    sold: int
    total: int
    now_ms: int
    expired: list[Expired]
    failed_teams: list[TeamFailed]
    #: The sale's hold counter: like sold and total, it only goes down when Redis lost writes.
    seq: int
    #: When the sale's next sweep is due (Redis ms), as far as this sweep could tell.
    due_ms: int = 0

    @property
    def changed(self) -> bool:
        return self.phase != self.previous


@dataclass(frozen=True)
class Coupon:
    id: str
    sale_id: str
    batch_id: str
    discount_cents: int
    #: It took its discount off an order already.
    used: bool = False


@dataclass(frozen=True)
class OpenHold:
    """A user's hold that is still open: awaiting payment until ``expires_at_ms``, or (with a
    ``team_code``) a paid place in a team that becomes an order when the team fills, or is
    refunded at its deadline, ``expires_at_ms``."""

    hold_id: str
    sale_id: str
    product_id: str
    quantity: int
    unit_price_cents: int
    expires_at_ms: int
    team_code: str | None

    @property
    def status(self) -> str:
        """ "held" (pay it with a confirm) or "team" (paid; the team decides)."""
        return "held" if self.team_code is None else "team"


@dataclass(frozen=True)
class TeamPlace:
    """A team a user is in, with its state now ("open" or "complete")."""

    code: str
    sale_id: str
    hold_id: str
    state: str
    deadline_ms: int
    size: int
    members: int
    price_cents: int


@dataclass(frozen=True)
class Mine:
    """What one user has in one sale: open holds, orders, coupons, teams (mine.lua)."""

    sale_id: str
    holds: list[OpenHold]
    orders: list[Order]
    coupons: list[Coupon]
    teams: list[TeamPlace]
