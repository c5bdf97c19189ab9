"""The sweeper: every process sweeps the active sales that are due, each leased to one.

A sweep (sweep.lua) gives expired holds back (their buyers are told), fails late teams (their
members refunded and told), and reports phase changes and stock left, each to one process,
which announces it to the room once. A sale whose counters went back (Redis lost writes) is
healed: one process, holding the sale's repair lock, rebuilds it from the ledger. A sale over
and settled is retired: it leaves the active sales, and its keys expire after retention.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from redis.exceptions import RedisError

from inventory import reconcile
from inventory.inventory import Inventory
from inventory.ledger import Ledger
from inventory.model import SaleStatus, Sweep, UnknownSale
from live import events
from live.metrics import Metrics
from live.notices import Notices
from live.rooms import now_ms
from live.settlement import Settlement
from live.store import Store
from live.supervisor import Supervisor

log = logging.getLogger(__name__)

#: Sweeps of one sale per sweep interval at most, while each comes back full of expired holds.
_SWEEPS_PER_TICK = 10
#: Sales one process leases per sweep interval at most (more wait for the next interval).
_DUE_PER_TICK = 500
#: A lease of a due sale lasts this long at least: far longer than a round of sweeps takes,
#: and the longest a sale waits when the process that leased it dies.
_LEASE_MIN_MS = 1000
#: An ended sale with nothing held waits for the ledger to have every order: checked this often.
_DRAIN_POLL_MS = 1000
#: A repair's lock expires this long after it was taken, should its holder die: far longer
#: than a repair takes (one that takes longer gives the sale up to the next holder).
_REPAIR_LOCK_MS = 60_000


@dataclass(frozen=True)
class SweeperConfig:
    #: How often each process sweeps the sales that are due.
    interval_ms: int = 100
    #: An ended sale's Redis keys expire this long after it settled.
    sale_retention_s: int = 3 * 86_400


class Watermarks:
    """Per sale, the highest (seq, sold, total) this process saw: they only go down when
    Redis lost writes (a failover to a replica that lagged, a restore). The sweeper records
    them; a read of the sale (``Selling.sale``) that finds them lower asks for a heal."""

    def __init__(self) -> None:
        self._high: dict[str, tuple[int, int, int]] = {}

    def behind(self, status: SaleStatus) -> bool:
        """Whether the sale's counters are below what a sweep saw."""
        seen = self._high.get(status.id)
        return seen is not None and (status.sold < seen[1] or status.total < seen[2])

    def note(self, swept: Sweep) -> tuple[int, int, int] | None:
        """Record a sweep's counters; or, when any went back, return those seen before (and
        record nothing: the caller heals the sale, then ``forget``s it)."""
        seen = self._high.get(swept.sale_id)
        now = (swept.seq, swept.sold, swept.total)
        if seen is not None and any(a < b for a, b in zip(now, seen, strict=True)):
            return seen
        self._high[swept.sale_id] = now
        return None

    def forget(self, sale_id: str) -> None:
        self._high.pop(sale_id, None)


class Sweeper:
    def __init__(
        self,
        config: SweeperConfig,
        store: Store,
        inventory: Inventory,
        ledger: Ledger,
        settlement: Settlement,
        notices: Notices,
        metrics: Metrics,
        watermarks: Watermarks,
        supervisor: Supervisor,
    ) -> None:
        self.config = config
        self.store = store
        self.inventory = inventory
        self.ledger = ledger
        self.settlement = settlement
        self.notices = notices
        self.metrics = metrics
        self.watermarks = watermarks
        self.supervisor = supervisor

    def start(self) -> None:
        self.supervisor.start("sales-sweeper", self._sweep_loop)

    async def stop(self) -> None:
        await self.supervisor.stop(["sales-sweeper"])

    async def _sweep_loop(self) -> None:
        """Every sweep interval, sweep the sales that are due (``Inventory.due``): those with a
        hold to expire, a team deadline, a countdown second, a start or end, a stock update
        pending, or a change made by this process; an idle sale only every sweep_idle_ms.
        Each due sale is leased to one process, which hands it back with its next due time."""
        period = self.config.interval_ms / 1000
        lease_ms = max(_LEASE_MIN_MS, 10 * self.config.interval_ms)
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
            if row is not None and row.over(now_ms()):
                # over (its keys expired, or Redis lost them): the ledger is its record, and
                # a repair would only bring back keys that are no longer wanted
                await self._retire(sale_id)
                return None
            await self.heal(sale_id, "the sale is missing from Redis")
            return None
        seen = self.watermarks.note(swept)
        if seen is not None:
            now = (swept.seq, swept.sold, swept.total)
            await self.heal(sale_id, f"its counters went back from {seen} to {now} (seq, sold, total)")
            self.watermarks.forget(sale_id)
            return None
        room_id = await self.inventory.room_of(sale_id)
        if room_id is None:  # gone between the sweep and now: the next sweep heals it
            return swept
        # a flash sale's holds tend to expire together: the notices go out concurrently
        await asyncio.gather(
            *(
                self.notices.order_status(room_id, e.user_id, e.hold_id, "expired", quantity=e.quantity)
                for e in swept.expired
            )
        )
        for team in swept.failed_teams:
            await self.settlement.refund_team(sale_id, team)
            for hold_id, user_id, paid in team.members:
                await self.notices.order_status(
                    room_id, user_id, hold_id, "team_failed", code=team.code, refunded_cents=paid
                )
        if swept.changed:
            await self._announce(room_id, swept)
        if swept.stock is not None:
            # the chat lane: a stock count is a gauge (10,000 viewers x 5 updates/s is 50,000
            # frames/s: written in chunks at the tick, skipped for laggards, latest only)
            stock = events.sale_stock(sale_id, swept.stock, swept.total, swept.sold)
            await self.notices.gauge(room_id, f"stock:{sale_id}", stock)
        if swept.phase == "ended" and swept.held == 0 and await self.ledger.drained(sale_id):
            await self._retire(sale_id)
            return None
        return swept

    async def _retire(self, sale_id: str) -> None:
        """The sale is over and settled: it leaves the active sales, and its Redis keys expire
        after sale_retention_s (``Selling.sale`` then answers from the SQLite record and ledger)."""
        await self.inventory.retire(sale_id, self.config.sale_retention_s * 1000)
        self.watermarks.forget(sale_id)

    async def heal(self, sale_id: str, why: str) -> bool:
        """Redis lost writes of a sale: freeze it and rebuild its counters from the ledger
        (one process does it, holding the sale's repair lock; the others see the sale frozen,
        then healed). False when another process holds the lock (this one did nothing)."""
        lock = self.inventory.repair_lock(sale_id, _REPAIR_LOCK_MS)
        if not await lock.acquire():
            return False
        try:
            row = await self.store.sale(sale_id)
            if row is None:
                log.error("an active sale is not in the ledger's records", extra={"sale": sale_id})
                return True
            log.error(
                "Redis lost writes of a sale: rebuilding it from the ledger",
                extra={"sale": sale_id, "why": why},
            )
            report = await reconcile.repair(self.inventory, self.ledger, row, row.state == "stopped")
            self.metrics.sale_repairs.inc()
            (log.warning if report.clean else log.error)("sale repaired", extra={"report": report.text()})
            return True
        finally:
            if not await lock.release():
                # the repair outlived its lock, which another process may hold now: theirs is
                # left alone (the sale is repaired twice, which is harmless: a repair rebuilds
                # the counters from the ledger)
                log.warning("a repair outlived its lock", extra={"sale": sale_id, "lock": lock.name})

    async def _announce(self, room_id: str, swept: Sweep) -> None:
        sale_id = swept.sale_id
        phase, _, seconds = swept.phase.partition(":")
        if phase == "countdown":
            status = await self.inventory.status(sale_id)
            event = events.sale_countdown(sale_id, int(seconds), status.starts_at_ms)
        elif phase == "live" and swept.previous == "sold_out":
            event = events.sale_stock(sale_id, swept.available, swept.total, swept.sold)
        elif phase == "live":
            status = await self.inventory.status(sale_id)
            event = events.sale_started(sale_id, swept.available, swept.total, status.ends_at_ms)
        elif phase == "sold_out":
            event = events.sale_sold_out(sale_id, swept.sold, swept.total)
        elif phase == "ended":
            event = events.sale_ended(sale_id, swept.sold, swept.total)
        else:
            return  # scheduled (sale_opened said so) or frozen (an operator's repair)
        await self.notices.event(room_id, event)
