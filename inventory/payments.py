"""The payment step between a hold and an order. ``Payments`` is what a real provider's adapter
implements; ``SimulatedPayments`` ships for development, tests and load tests, and can be told
to fail or to be slow."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Protocol

from inventory.model import PaymentFailed


class Payments(Protocol):
    async def charge(self, reference: str, user_id: str, amount_cents: int) -> None:
        """Take the money, or raise PaymentFailed. ``reference`` (the hold id) makes a retry of
        the same charge harmless."""

    async def refund(self, reference: str, user_id: str, amount_cents: int) -> None:
        """Give back what ``charge`` took for this reference."""


@dataclass
class SimulatedPayments:
    #: Share of charges that fail (0..1), and how long each call takes.
    fail_rate: float = 0.0
    delay_ms: int = 0
    seed: int | None = None
    #: reference -> amount charged and not refunded (what a reconciliation would check).
    charged: dict[str, int] = field(default_factory=dict)
    refunded: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    async def charge(self, reference: str, user_id: str, amount_cents: int) -> None:
        if self.delay_ms:
            await asyncio.sleep(self.delay_ms / 1000)
        if reference in self.charged:
            return
        if self.fail_rate and self._random.random() < self.fail_rate:
            raise PaymentFailed()
        self.charged[reference] = amount_cents

    async def refund(self, reference: str, user_id: str, amount_cents: int) -> None:
        if self.delay_ms:
            await asyncio.sleep(self.delay_ms / 1000)
        amount = self.charged.pop(reference, None)
        if amount is not None:
            self.refunded[reference] = amount
