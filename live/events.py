"""The app's server messages: one constructor per message the sales send through the gateway
(room events, the stock gauge, a buyer's order status). docs/protocol.md documents each, and a
test checks that they agree; the gateway's own messages are in gateway/messages.py.

Room events get their ``ts_ms`` where they are sent (live/notices.py) and their ``seq`` from the
gateway's bus.
"""

from __future__ import annotations

from typing import Any

Message = dict[str, Any]

#: Every server message type the app builds.
EVENT_TYPES: set[str] = set()


def event_type(name: str) -> str:
    """Declare a server message type of the app (the tools' modules declare theirs with it)."""
    EVENT_TYPES.add(name)
    return name


_type = event_type


SALE_OPENED, SALE_COUNTDOWN, SALE_STARTED = map(_type, ("sale_opened", "sale_countdown", "sale_started"))
SALE_STOCK, SALE_SOLD_OUT, SALE_ENDED = map(_type, ("sale_stock", "sale_sold_out", "sale_ended"))
COUPONS_DROPPED, ORDER_STATUS = _type("coupons_dropped"), _type("order_status")


def sale_opened(sale: dict[str, Any]) -> Message:
    """A host opened a sale (``sale``: the sale as a welcome's ``room.sales`` shows it)."""
    return {"type": SALE_OPENED, "sale": sale}


def sale_countdown(sale_id: str, seconds_left: int, starts_at_ms: int) -> Message:
    return {
        "type": SALE_COUNTDOWN,
        "sale_id": sale_id,
        "seconds_left": seconds_left,
        "starts_at_ms": starts_at_ms,
    }


def sale_started(sale_id: str, available: int, total: int, ends_at_ms: int) -> Message:
    return {
        "type": SALE_STARTED,
        "sale_id": sale_id,
        "available": available,
        "total": total,
        "ends_at_ms": ends_at_ms,
    }


def sale_stock(sale_id: str, available: int, total: int, sold: int) -> Message:
    """Units left: a gauge in the chat lane, or a priority event when a sold-out sale has units
    again."""
    return {"type": SALE_STOCK, "sale_id": sale_id, "available": available, "total": total, "sold": sold}


def sale_sold_out(sale_id: str, sold: int, total: int) -> Message:
    return {"type": SALE_SOLD_OUT, "sale_id": sale_id, "sold": sold, "total": total}


def sale_ended(sale_id: str, sold: int, total: int) -> Message:
    return {"type": SALE_ENDED, "sale_id": sale_id, "sold": sold, "total": total}


def coupons_dropped(sale_id: str, batch_id: str, count: int, discount_cents: int) -> Message:
    return {
        "type": COUPONS_DROPPED,
        "sale_id": sale_id,
        "batch_id": batch_id,
        "count": count,
        "discount_cents": discount_cents,
    }


def order_status(hold_id: str, status: str, ts_ms: int, **fields: Any) -> Message:
    """An order's new status, to its buyer only. ``fields`` by ``status``: ``order``
    (confirmed), ``quantity`` (cancelled, expired), ``code`` and ``refunded_cents``
    (team_failed)."""
    return {"type": ORDER_STATUS, "hold_id": hold_id, "status": status, "ts_ms": ts_ms, **fields}
