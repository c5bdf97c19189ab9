"""Money moves only with the decision: a payment is kept when the script that spends it (a
confirm, a team join) spent it, and given back otherwise; a failed team's members get back
what they paid. What cannot be settled now (Redis or the provider down) is retried in the
background until it is. Used by the buyer commands (live/buying.py) and the sweeper."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.exceptions import RedisError

from inventory.inventory import Inventory
from inventory.model import InventoryError, TeamFailed
from inventory.payments import Charge, Payments
from live.supervisor import Supervisor

log = logging.getLogger(__name__)

#: A payment that could not be settled (Redis or the provider down) is retried after these
#: delays, doubling from the first to the last.
_SETTLE_FIRST_S = 0.1
_SETTLE_MAX_S = 5.0
T = TypeVar("T")
#: Marks a payment attempt void so that no script spends it from now on; True when voided (no
#: script spent it), False when one spent it already (it pays for something: keep it).
Void = Callable[[str], Awaitable[bool]]


class Settlement:
    def __init__(self, inventory: Inventory, payments: Payments, supervisor: Supervisor) -> None:
        self.inventory = inventory
        #: The provider (tests put theirs here: charges and refunds both go through it).
        self.payments = payments
        self.supervisor = supervisor
        #: Payments being settled in the background (their script or refund met a Redis or
        #: provider failure): short-lived, each ends once settled.
        self._settling: set[asyncio.Task[None]] = set()

    async def stop(self) -> None:
        """Stop the background settlements (each logs what it leaves unsettled)."""
        await self.supervisor.cancel(self._settling)

    async def charge(self, reference: str, user_id: str, amount_cents: int) -> Charge:
        return await self.payments.charge(reference, user_id, amount_cents)

    async def spend(
        self,
        sale_id: str,
        charge: Charge,
        commit: Callable[[], Awaitable[tuple[T, bool]]],
        void: Void | None = None,
    ) -> T:
        """Run the script that spends a payment (a confirm, a team join), then keep the payment
        or give it back, so that money moves only with the decision.

        Kept when the script spent it. Given back, and only by the call that took it
        (``charge.new``), when the script refused, answered with what another payment paid
        for, or could not be asked (Redis down: it may have run). The attempt is voided in Redis
        before the refund, so no late or concurrent copy of the script can spend it after; if a
        copy of this request spent it first, that copy's answer is this request's too.

        ``void`` marks the attempt void where its spending script looks (default: the sale's,
        ``Inventory.void_payment``); a caller whose script keeps its attempts elsewhere (an
        auction's payment) passes its own."""
        voider = void or self._sale_void(sale_id)
        try:
            result, paid = await commit()
        except (InventoryError, RedisError, OSError):
            if charge.new and not await self._give_back(voider, charge):
                result, _ = await commit()  # spent by a copy of this request: its answer
                return result
            raise
        except BaseException:  # cancelled while the script ran: settle it in the background
            if charge.new:
                self._settle_later(voider, charge)
            raise
        if charge.new and not paid and not await self._give_back(voider, charge):
            log.error("a payment is spent, though another paid", extra={"reference": charge.reference})
        return result

    async def refund_team(self, sale_id: str, team: TeamFailed) -> None:
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

    def _sale_void(self, sale_id: str) -> Void:
        async def void(attempt: str) -> bool:
            return await self.inventory.void_payment(sale_id, attempt)

        return void

    async def _give_back(self, void: Void, charge: Charge) -> bool:
        """Refund a payment unless a script spent it. False when spent (it pays for something);
        True when refunded, or left to a background retry while Redis or the provider is down."""
        try:
            return await self._refund_unspent(void, charge)
        except Exception as exc:
            log.warning(
                "payment not settled yet; retrying in the background",
                extra={"reference": charge.reference, "error": repr(exc)},
            )
            self._settle_later(void, charge)
            return True

    async def _refund_unspent(self, void: Void, charge: Charge) -> bool:
        if not await void(charge.attempt):
            return False
        await self.payments.refund(charge.reference, charge.attempt)
        return True

    def _settle_later(self, void: Void, charge: Charge) -> None:
        async def settle() -> None:
            if not await self._refund_unspent(void, charge):
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
