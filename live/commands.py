"""The app's WebSocket commands, registered with the gateway's command registry.

Buying (holds, orders, teams, coupons) is the app's: the gateway checks these commands' fields
and routes them here, and knows nothing of what they mean. Each needs a ``rid``: it is also the
idempotency key of the purchase it starts. A new app command (a bid, a vote...) is a new row
here and a handler, never an edit of the gateway.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

from gateway.commands import Caller, Registry
from gateway.messages import Command, Field

S = TypeVar("S", bound=Caller)


class Buyer(Protocol):
    """What carries out a buyer's command (live/buying.py's ``Buying``)."""

    async def command(self, caller: Caller, command: Command) -> dict[str, Any]:
        """The fields of the command's ack, or raise ProtocolError. Refuses anonymous callers
        itself (``login_required``), so that its metrics count the refusal."""


#: command -> fields. Anyone admitted may send them (the buyer turns anonymous viewers away).
BUYING: dict[str, dict[str, Field]] = {
    "reserve": {"sale_id": Field(str), "quantity": Field(int)},
    "confirm": {"hold_id": Field(str), "coupon_id": Field(str, required=False)},
    "cancel": {"hold_id": Field(str)},
    "open_team": {"sale_id": Field(str), "quantity": Field(int, required=False)},
    "join_team": {"sale_id": Field(str), "code": Field(str), "quantity": Field(int, required=False)},
    "claim_coupon": {"sale_id": Field(str), "batch_id": Field(str)},
}


def register(commands: Registry[S], buyer: Buyer) -> None:
    """Register the buying commands, each carried out by ``buyer.command``."""
    for name, fields in BUYING.items():
        commands.register(name, buyer.command, fields, needs_rid=True)
