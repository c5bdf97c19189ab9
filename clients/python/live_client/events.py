"""Room events (docs/protocol.md, "Server -> client"), one frozen dataclass per type.

``async for event in room`` yields these; a type this version does not know comes as
:class:`Event` itself, with its ``type`` and the whole message as ``data``. Match on the class::

    match event:
        case CommentBatch(comments=comments): ...
        case SaleOpened(sale=sale): ...
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from live_client.models import Auction, Comment, Draw, Order, Poll, Product, Question, Sale, Welcome, build


@dataclass(frozen=True, kw_only=True)
class Event:
    """Any room event. ``seq`` is the room's event number (``None`` for chat batches, gauges
    and private events)."""

    type: str = ""
    data: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    seq: int | None = None
    ts_ms: int | None = None


# -- chat lane --------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class CommentBatch(Event):
    """One tick's chat: new comments (a sample: ``skipped`` counts the rest), and the room's
    ``likes`` and ``online`` when they changed."""

    comments: list[Comment] = field(default_factory=list)
    skipped: int = 0
    likes: int | None = None
    online: int | None = None


@dataclass(frozen=True, kw_only=True)
class Lagged(Event):
    """This client read too slowly: chat batches were skipped for it."""

    dropped_frames: int = 0
    dropped_comments: int = 0


@dataclass(frozen=True, kw_only=True)
class Reconnected(Event):
    """Made by the client (not sent by the server): the connection came back. ``welcome`` is
    the new snapshot; ``resumed`` False means events were missed (the history did not reach
    back far enough): start over from the welcome."""

    welcome: Welcome = field(default_factory=Welcome)
    resumed: bool = False


# -- priority lane ----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class HostMessage(Event):
    text: str = ""
    role: str = ""
    by: str = ""


@dataclass(frozen=True, kw_only=True)
class ProductPinned(Event):
    product: Product = field(default_factory=Product)
    by: str = ""


@dataclass(frozen=True, kw_only=True)
class ProductUnpinned(Event):
    by: str = ""


@dataclass(frozen=True, kw_only=True)
class CommentDeleted(Event):
    comment_id: int = 0
    by: str = ""


@dataclass(frozen=True, kw_only=True)
class ChatCleared(Event):
    by: str = ""


@dataclass(frozen=True, kw_only=True)
class UserMuted(Event):
    user_id: str = ""
    until_ms: int = 0
    by: str = ""


@dataclass(frozen=True, kw_only=True)
class UserBanned(Event):
    user_id: str = ""
    by: str = ""


@dataclass(frozen=True, kw_only=True)
class UserUnmuted(Event):
    user_id: str = ""
    by: str = ""


@dataclass(frozen=True, kw_only=True)
class UserUnbanned(Event):
    user_id: str = ""
    by: str = ""


@dataclass(frozen=True, kw_only=True)
class SlowModeChanged(Event):
    interval_s: int = 0
    by: str = ""


# -- flash sales ------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SaleOpened(Event):
    sale: Sale = field(default_factory=Sale)


@dataclass(frozen=True, kw_only=True)
class SaleCountdown(Event):
    sale_id: str = ""
    seconds_left: int = 0
    starts_at_ms: int = 0


@dataclass(frozen=True, kw_only=True)
class SaleStarted(Event):
    sale_id: str = ""
    available: int = 0
    total: int = 0
    ends_at_ms: int = 0


@dataclass(frozen=True, kw_only=True)
class SaleStock(Event):
    sale_id: str = ""
    available: int = 0
    total: int = 0
    sold: int = 0


@dataclass(frozen=True, kw_only=True)
class SaleSoldOut(Event):
    sale_id: str = ""
    sold: int = 0
    total: int = 0


@dataclass(frozen=True, kw_only=True)
class SaleEnded(Event):
    sale_id: str = ""
    sold: int = 0
    total: int = 0


@dataclass(frozen=True, kw_only=True)
class CouponsDropped(Event):
    sale_id: str = ""
    batch_id: str = ""
    count: int = 0
    discount_cents: int = 0


@dataclass(frozen=True, kw_only=True)
class OrderStatus(Event):
    """To the buyer only: ``confirmed`` (with ``order``), ``cancelled``, ``expired`` (with
    ``quantity``), ``team_failed`` (with ``code``, ``refunded_cents``)."""

    hold_id: str = ""
    status: str = ""
    order: Order | None = None
    quantity: int | None = None
    code: str | None = None
    refunded_cents: int | None = None


# -- auctions ---------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class AuctionOpened(Event):
    auction: Auction = field(default_factory=Auction)


@dataclass(frozen=True, kw_only=True)
class AuctionBid(Event):
    auction_id: str = ""
    leader_id: str | None = None
    amount_cents: int = 0
    ends_at_ms: int = 0
    bids: int = 0
    bid_seq: int = 0
    extended: bool = False
    min_bid_cents: int = 0


@dataclass(frozen=True, kw_only=True)
class AuctionEnded(Event):
    auction_id: str = ""
    state: str = ""
    winner_id: str | None = None
    amount_cents: int | None = None


@dataclass(frozen=True, kw_only=True)
class AuctionOffer(Event):
    auction_id: str = ""
    user_id: str = ""
    amount_cents: int = 0
    pay_by_ms: int = 0


@dataclass(frozen=True, kw_only=True)
class AuctionSold(Event):
    auction_id: str = ""
    user_id: str = ""
    amount_cents: int = 0
    order_id: str = ""


@dataclass(frozen=True, kw_only=True)
class AuctionOutbid(Event):
    auction_id: str = ""
    amount_cents: int = 0
    your_bid_cents: int = 0


@dataclass(frozen=True, kw_only=True)
class AuctionWon(Event):
    auction_id: str = ""
    amount_cents: int = 0
    pay_by_ms: int = 0


# -- Q&A --------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class QnaTop(Event):
    questions: list[Question] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class QuestionPinned(Event):
    question: Question = field(default_factory=Question)
    by: str = ""


@dataclass(frozen=True, kw_only=True)
class QuestionUnpinned(Event):
    question_id: str = ""
    by: str = ""


@dataclass(frozen=True, kw_only=True)
class QuestionAnswered(Event):
    question: Question = field(default_factory=Question)
    by: str = ""


# -- lucky draws ------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class DrawOpened(Event):
    draw: Draw = field(default_factory=Draw)


@dataclass(frozen=True, kw_only=True)
class DrawEntries(Event):
    draw_id: str = ""
    entrants: int = 0


@dataclass(frozen=True, kw_only=True)
class DrawClosed(Event):
    draw_id: str = ""
    seed: str = ""
    commitment: str = ""
    winner_ids: list[str] = field(default_factory=list)
    entrants: int = 0
    eligible: int = 0
    excluded: dict[str, int] = field(default_factory=dict)
    claim_by_ms: int = 0


@dataclass(frozen=True, kw_only=True)
class DrawWon(Event):
    draw_id: str = ""
    prize: dict[str, Any] = field(default_factory=dict)
    claim_by_ms: int = 0


# -- polls ------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class PollOpened(Event):
    poll: Poll = field(default_factory=Poll)


@dataclass(frozen=True, kw_only=True)
class PollTally(Event):
    poll_id: str = ""
    tallies: list[int] = field(default_factory=list)
    votes: int = 0
    tally_seq: int = 0


@dataclass(frozen=True, kw_only=True)
class PollClosed(Event):
    poll_id: str = ""
    tallies: list[int] = field(default_factory=list)
    votes: int = 0


#: The event class of every known ``type``.
EVENT_TYPES: dict[str, type[Event]] = {
    "batch": CommentBatch,
    "lagged": Lagged,
    "host_message": HostMessage,
    "product_pinned": ProductPinned,
    "product_unpinned": ProductUnpinned,
    "comment_deleted": CommentDeleted,
    "chat_cleared": ChatCleared,
    "user_muted": UserMuted,
    "user_banned": UserBanned,
    "user_unmuted": UserUnmuted,
    "user_unbanned": UserUnbanned,
    "slow_mode": SlowModeChanged,
    "sale_opened": SaleOpened,
    "sale_countdown": SaleCountdown,
    "sale_started": SaleStarted,
    "sale_stock": SaleStock,
    "sale_sold_out": SaleSoldOut,
    "sale_ended": SaleEnded,
    "coupons_dropped": CouponsDropped,
    "order_status": OrderStatus,
    "auction_opened": AuctionOpened,
    "auction_bid": AuctionBid,
    "auction_ended": AuctionEnded,
    "auction_offer": AuctionOffer,
    "auction_sold": AuctionSold,
    "auction_outbid": AuctionOutbid,
    "auction_won": AuctionWon,
    "qna_top": QnaTop,
    "question_pinned": QuestionPinned,
    "question_unpinned": QuestionUnpinned,
    "question_answered": QuestionAnswered,
    "draw_opened": DrawOpened,
    "draw_entries": DrawEntries,
    "draw_closed": DrawClosed,
    "draw_won": DrawWon,
    "poll_opened": PollOpened,
    "poll_tally": PollTally,
    "poll_closed": PollClosed,
}


def parse_event(message: dict[str, Any]) -> Event:
    """The typed event for a server message (an :class:`Event` for an unknown type)."""
    kind = message.get("type")
    kind = kind if isinstance(kind, str) else ""
    cls = EVENT_TYPES.get(kind, Event)
    return build(cls, message, type=kind)
