"""The objects of the protocol and the HTTP API as frozen dataclasses.

Every model keeps the object it was read from as ``data`` (fields this version does not know
are there: the server may add fields at any time), and every field has a default, so a missing
one never breaks a client. Built with :func:`build`, which converts nested models by the field's
type hint.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar, Union

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class Model:
    data: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


_Converter = typing.Callable[[Any], Any]
_CONVERTERS: dict[type, dict[str, _Converter]] = {}


def _converter(hint: Any) -> _Converter | None:
    origin = typing.get_origin(hint)
    if isinstance(hint, type) and issubclass(hint, Model):
        model = hint
        return lambda value: build(model, value) if isinstance(value, dict) else value
    if origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        inner = _converter(item)
        if inner is None:
            return None
        convert = inner
        return lambda value: [convert(v) for v in value] if isinstance(value, list) else value
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(hint):
            inner = _converter(arg)
            if inner is not None:
                return inner
    return None


def _converters(cls: type) -> dict[str, _Converter]:
    found = _CONVERTERS.get(cls)
    if found is None:
        hints = typing.get_type_hints(cls)
        found = {}
        for f in dataclasses.fields(cls):
            if f.name in ("data", "type"):
                continue
            convert = _converter(hints[f.name])
            found[f.name] = convert if convert is not None else (lambda value: value)
        _CONVERTERS[cls] = found
    return found


def build(cls: type[T], obj: dict[str, Any], **extra: Any) -> T:
    """``cls`` from a server object: the fields it has, converted; the rest their defaults."""
    kwargs: dict[str, Any] = {"data": obj}
    for name, convert in _converters(cls).items():
        if name in obj:
            kwargs[name] = convert(obj[name])
    kwargs.update(extra)
    return cls(**kwargs)


@dataclass(frozen=True, kw_only=True)
class Product(Model):
    id: str = ""
    room_id: str = ""
    title: str = ""
    price_cents: int = 0
    image_url: str | None = None
    created_at_ms: int = 0


@dataclass(frozen=True, kw_only=True)
class Room(Model):
    id: str = ""
    title: str = ""
    host_id: str = ""
    allow_anonymous: bool = False
    created_at_ms: int = 0
    #: In ``GET /api/rooms/{room}``.
    products: list[Product] = field(default_factory=list)
    #: In the welcome: the room's sales, auctions, questions, draws and polls as they stand.
    sales: list[Sale] = field(default_factory=list)
    auctions: list[Auction] = field(default_factory=list)
    questions: list[Question] = field(default_factory=list)
    draws: list[Draw] = field(default_factory=list)
    polls: list[Poll] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class Group(Model):
    size: int = 0
    price_cents: int = 0
    team_ms: int = 0


@dataclass(frozen=True, kw_only=True)
class Sale(Model):
    id: str = ""
    room_id: str = ""
    product_id: str = ""
    product: Product | None = None
    phase: str = ""
    total: int = 0
    available: int = 0
    held: int = 0
    sold: int = 0
    price_cents: int = 0
    per_user_limit: int = 1
    starts_at_ms: int = 0
    ends_at_ms: int = 0
    hold_ms: int = 0
    group: Group | None = None
    #: HTTP only: ``open`` or ``stopped``.
    state: str | None = None


@dataclass(frozen=True, kw_only=True)
class Order(Model):
    order_id: str = ""
    sale_id: str = ""
    quantity: int = 0
    unit_price_cents: int = 0
    discount_cents: int = 0
    amount_cents: int = 0
    coupon_id: str | None = None
    team_code: str | None = None
    confirmed_at_ms: int = 0
    #: HTTP only.
    user_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class OrdersPage(Model):
    sale_id: str = ""
    orders: list[Order] = field(default_factory=list)
    cursor: str = ""
    more: bool = False


@dataclass(frozen=True, kw_only=True)
class Comment(Model):
    id: int = 0
    seq: int = 0
    user_id: str = ""
    role: str = ""
    text: str = ""
    ts_ms: int = 0


@dataclass(frozen=True, kw_only=True)
class User(Model):
    id: str = ""
    role: str = ""


@dataclass(frozen=True, kw_only=True)
class Offer(Model):
    user_id: str = ""
    amount_cents: int = 0
    pay_by_ms: int = 0


@dataclass(frozen=True, kw_only=True)
class Auction(Model):
    id: str = ""
    room_id: str = ""
    product: Product | None = None
    start_cents: int = 0
    increment_cents: int = 0
    reserve_met: bool = False
    buy_now_cents: int = 0
    opened_at_ms: int = 0
    ends_at_ms: int = 0
    state: str = ""
    leader_id: str | None = None
    amount_cents: int | None = None
    bids: int = 0
    bid_seq: int = 0
    min_bid_cents: int = 0
    hold_ms: int = 0
    offer: Offer | None = None


@dataclass(frozen=True, kw_only=True)
class Question(Model):
    id: str = ""
    room_id: str = ""
    user_id: str = ""
    text: str = ""
    upvotes: int = 0
    state: str = ""
    pinned: bool = False
    asked_at_ms: int = 0


@dataclass(frozen=True, kw_only=True)
class Draw(Model):
    id: str = ""
    room_id: str = ""
    prize: dict[str, Any] = field(default_factory=dict)
    winners: int = 0
    rules: dict[str, Any] = field(default_factory=dict)
    opened_at_ms: int = 0
    closes_at_ms: int = 0
    state: str = ""
    commitment: str = ""
    entrants: int = 0
    seed: str | None = None
    claim_by_ms: int | None = None
    claims_open: bool | None = None


@dataclass(frozen=True, kw_only=True)
class Poll(Model):
    id: str = ""
    room_id: str = ""
    question: str = ""
    options: list[str] = field(default_factory=list)
    allow_change: bool = True
    opened_at_ms: int = 0
    closes_at_ms: int = 0
    state: str = ""
    tallies: list[int] = field(default_factory=list)
    votes: int = 0
    closed_at_ms: int | None = None


@dataclass(frozen=True, kw_only=True)
class Welcome(Model):
    """The snapshot a connection starts with (``room.welcome``; again in ``Reconnected``)."""

    v: int = 1
    server_time_ms: int = 0
    seq: int = 0
    resumed: bool = False
    room: Room = field(default_factory=Room)
    user: User = field(default_factory=User)
    online: int = 0
    likes: int = 0
    slow_mode_s: int = 0
    pinned: Product | None = None
    comments: list[Comment] = field(default_factory=list)
    #: What the signed-in user has in this room now (their holds, orders, coupons, teams, on
    #: whichever device made them); None for a guest.
    you: You | None = None


@dataclass(frozen=True, kw_only=True)
class You(Model):
    """The welcome's ``you``: open holds (soonest to expire first), recent orders (newest
    first), claimed coupons and teams in the room's sales still in play."""

    holds: list[Hold] = field(default_factory=list)
    orders: list[Order] = field(default_factory=list)
    coupons: list[Coupon] = field(default_factory=list)
    teams: list[Team] = field(default_factory=list)


# -- command results ------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Hold(Model):
    """A reservation (``reserve``): its units wait for ``confirm`` until ``expires_at_ms``."""

    hold_id: str = ""
    sale_id: str = ""
    quantity: int = 0
    expires_at_ms: int = 0
    #: In the welcome's ``you``: the product, the unit price, ``held`` (pay it with
    #: ``confirm``) or ``team`` (a paid place in the team ``team_code``; it expires at the
    #: team's deadline).
    product_id: str = ""
    price_cents: int = 0
    status: str = "held"
    team_code: str | None = None


@dataclass(frozen=True, kw_only=True)
class Cancelled(Model):
    hold_id: str = ""
    quantity: int = 0


@dataclass(frozen=True, kw_only=True)
class Team(Model):
    """A group buy (``open_team``, ``join_team``): share ``code``."""

    hold_id: str = ""
    sale_id: str = ""
    code: str = ""
    deadline_ms: int = 0
    members: int = 0
    size: int = 0
    completed: bool = False
    #: In the welcome's ``you``: ``open`` or ``complete``, and the group price.
    state: str = ""
    price_cents: int = 0


@dataclass(frozen=True, kw_only=True)
class Coupon(Model):
    coupon_id: str = ""
    sale_id: str = ""
    discount_cents: int = 0
    #: In the welcome's ``you``: the batch it came from, and whether it took its discount off
    #: an order already.
    batch_id: str = ""
    used: bool = False


@dataclass(frozen=True, kw_only=True)
class CouponBatch(Model):
    """A batch of coupons a host dropped (``count`` and ``discount_cents`` in the answer to the
    drop; ``remaining`` is how many nobody has claimed yet)."""

    sale_id: str = ""
    batch_id: str = ""
    count: int | None = None
    discount_cents: int | None = None
    remaining: int = 0


@dataclass(frozen=True, kw_only=True)
class TeamStatus(Model):
    """A group buy as the host API shows it (``GET /api/sales/{sale}/teams/{code}``)."""

    code: str = ""
    sale_id: str = ""
    state: str = ""  # open | complete | failed
    deadline_ms: int = 0
    size: int = 0
    members: int = 0
    price_cents: int = 0


@dataclass(frozen=True, kw_only=True)
class Bid(Model):
    """An accepted bid."""

    auction_id: str = ""
    amount_cents: int = 0
    bid_seq: int = 0
    ends_at_ms: int = 0
    extended: bool = False


@dataclass(frozen=True, kw_only=True)
class Prize(Model):
    """A claimed lucky-draw prize: its order, and for a coupon prize the coupon."""

    draw_id: str = ""
    order: Order | None = None
    coupon: Coupon | None = None


@dataclass(frozen=True, kw_only=True)
class Vote(Model):
    poll_id: str = ""
    option: int = 0
