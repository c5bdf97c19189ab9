"""The payment step between a hold and an order. ``Payments`` is what a real provider's adapter
implements; ``SimulatedPayments`` ships for development, tests and load tests, and can be told
to fail or to be slow.

Money moves only with a decision. A payment *reference* names what is paid for: a hold (a
confirm) or a team membership (``team:<sale>:<code>:<user>``). Each charge of a reference is an
*attempt* with its own id, and its life is a small state machine:

    (no charge stands) --charge--> charged --refund(its attempt)--> refunded

- At most one charge stands per reference. ``charge`` when none stands takes the money and
  returns a new attempt with ``new=True``: that caller owns the attempt. ``charge`` while one
  stands (a retry, or a copy of the same request on another process) takes nothing and returns
  the standing attempt with ``new=False``; with another amount or user it is refused
  (``PaymentFailed``) and takes nothing.
- ``refund`` names the attempt: it gives back that attempt's money once, and does nothing when
  the attempt was refunded before or is not the one standing. So an attempt is charged once
  and refunded at most once, and a refund can never hit a later attempt.
- After a refund the reference is free again: a later confirm of the same hold (the first was
  refused, say by a coupon used elsewhere) is a new attempt.

The app keeps the other half of the rule: it refunds an attempt only from the operation that
charged it (``new=True``), or, for a team that failed, from the one sweep that failed it, and
only after the inventory marked the attempt void in Redis (``Inventory.void_payment``), so that
no script can still spend it. A script spends an attempt atomically with the order or the team
membership it pays for (docs/inventory.md, "Payments").
"""

from __future__ import annotations

import asyncio
import random
import secrets
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

from inventory.model import PaymentFailed


@dataclass(frozen=True)
class Charge:
    """A charge that stands for a payment reference."""

    reference: str
    #: The provider's id of this charge (a short printable string): what refunds name, and what
    #: the inventory marks as spent or void.
    attempt: str
    user_id: str
    amount_cents: int
    #: True when this call took the money: its caller owns the attempt and is the only
    #: operation that may refund it. False: the charge stood already, nothing was taken now.
    new: bool


class Payments(Protocol):
    async def charge(self, reference: str, user_id: str, amount_cents: int) -> Charge:
        """Take the money for ``reference``, or raise PaymentFailed (nothing was taken).

        While a charge of ``reference`` stands, take nothing and return it with ``new=False``
        (refused with PaymentFailed when ``user_id`` or ``amount_cents`` differ from it)."""
        ...

    async def refund(self, reference: str, attempt: str) -> bool:
        """Give back the charge ``attempt`` of ``reference`` if it still stands; True when
        this call gave money back. Idempotent: an attempt is refunded at most once."""
        ...


@dataclass(frozen=True)
class Movement:
    """One movement of money, as a provider's statement lists it."""

    kind: Literal["charge", "refund"]
    reference: str
    attempt: str
    amount_cents: int


@dataclass
class SimulatedPayments:
    """An in-process provider. Its charges are per process: with several workers, a retry that
    lands on another process is a new attempt there (the inventory still spends only one)."""

    #: Share of charges that fail (0..1), and how long each call takes.
    fail_rate: float = 0.0
    delay_ms: int = 0
    seed: int | None = None
    #: reference -> amount of the charge standing for it (what a reconciliation would check).
    charged: dict[str, int] = field(default_factory=dict)
    #: reference -> cents given back for it, over all its attempts.
    refunded: dict[str, int] = field(default_factory=dict)
    #: Every charge and refund, in order.
    movements: list[Movement] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)
        self._standing: dict[str, Charge] = {}

    async def charge(self, reference: str, user_id: str, amount_cents: int) -> Charge:
        if self.delay_ms:
            await asyncio.sleep(self.delay_ms / 1000)
        standing = self._standing.get(reference)
        if standing is not None:
            if (standing.user_id, standing.amount_cents) != (user_id, amount_cents):
                raise PaymentFailed("this payment is under way with another amount; nothing was charged")
            return replace(standing, new=False)
        if self.fail_rate and self._random.random() < self.fail_rate:
            raise PaymentFailed()
        # random, not counted: the attempts of several processes must not collide in Redis
        charge = Charge(reference, f"sim_{secrets.token_hex(8)}", user_id, amount_cents, new=True)
        self._standing[reference] = charge
        self.charged[reference] = amount_cents
        self.movements.append(Movement("charge", reference, charge.attempt, amount_cents))
        return charge

    async def refund(self, reference: str, attempt: str) -> bool:
        if self.delay_ms:
            await asyncio.sleep(self.delay_ms / 1000)
        standing = self._standing.get(reference)
        if standing is None or standing.attempt != attempt:
            return False
        del self._standing[reference]
        del self.charged[reference]
        self.refunded[reference] = self.refunded.get(reference, 0) + standing.amount_cents
        self.movements.append(Movement("refund", reference, attempt, standing.amount_cents))
        return True
