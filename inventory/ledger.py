"""The durable order ledger: confirmed orders from Redis into the store of record (SQLite, or a
PostgreSQL every node shares), none lost, none twice.

Two paths lead in, and both are idempotent (the order id is the primary key):
- ``record``: the process that confirmed an order writes it before the buyer hears
  "confirmed" (group commit: concurrent confirms share one transaction).
- ``run``: a consumer in the group ``ledger`` of every active sale's orders stream. It picks
  up what a process confirmed in Redis but died before writing, and claims (XAUTOCLAIM) the
  entries another consumer read but never acknowledged. On a Redis Cluster the sales'
  streams live in different slots, so it reads them per slot (one XREADGROUP may not span
  slots).

Every order gets a ``position`` in the ledger, growing in commit order, which the orders
listing's cursor uses (``orders_page``): see ``_NEXT_POSITION``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import RedisError, ResponseError

from inventory.keys import SaleKeys, active_sales_key, as_text
from inventory.model import Order
from inventory.ports import RedisClient, Supervisor
from storage import Database, DatabaseError, Transaction, UniqueViolation, open_database, parse_database_url
from storage.migrations import Component, SchemaTooNew, Step, VersionRecord
from storage.migrations import migrate as run_migrations
from storage.sqlite import SqliteDatabase

log = logging.getLogger(__name__)

GROUP = "ledger"

#: The next order's position: one past the largest. Positions must grow in COMMIT order, so
#: that a poller holding the cursor of the last order it saw never skips one committed later
#: with a smaller position. A PostgreSQL sequence would not do: two transactions take 5 and 6,
#: 6 commits first, a poller reads up to 6 and never sees 5. So every transaction that writes
#: orders first takes the lock ``_POSITION_LOCK`` (storage's Transaction.lock: PostgreSQL's
#: ``pg_advisory_xact_lock``, held until the commit is visible; SQLite's one writer), and
#: positions are taken under it: the writers take turns, each commits before the next numbers.
#: (SQLite files made before step 3 had positions from their rowids, which the cursor handed
#: out: the backfill keeps those cursors valid.)
_NEXT_POSITION = "(SELECT COALESCE(MAX(position), 0) + 1 FROM orders)"
_POSITION_LOCK = "live.ledger.positions"

_INSERT = (
    "INSERT INTO orders (id, sale_id, user_id, quantity, amount_cents, idempotency_key, state,"
    " created_at_ms, unit_price_cents, discount_cents, coupon_id, team_code, position)"
    f" VALUES (?, ?, ?, ?, ?, ?, 'confirmed', ?, ?, ?, ?, ?, {_NEXT_POSITION}) ON CONFLICT(id) DO NOTHING"
)
_COLUMNS = (
    "id, sale_id, user_id, quantity, unit_price_cents, discount_cents, amount_cents, coupon_id,"
    " team_code, idempotency_key, created_at_ms"
)

#: The ledger's table, version by version: version N is reached by running ``MIGRATIONS[N-1]``
#: (its statements in one transaction; storage.migrations runs them, on either engine), and the
#: table ``ledger_schema`` records where a database stands. Never edit a released step: append
#: one. (Until the ledger kept its own schema, live.store's migrations 1 and 2 made this table:
#: ``_adopted_version`` reads where such a database stands.) Cents and ms columns are BIGINT:
#: released as INTEGER, the same to SQLite (BIGINT has INTEGER affinity, so files made before
#: are what these steps make), while PostgreSQL's INTEGER is 32 bits, too small for ms.
MIGRATIONS: tuple[Step, ...] = (
    # 1: one row per order; a request id makes at most one order per buyer and sale
    (
        """
        CREATE TABLE IF NOT EXISTS orders (
            id              TEXT PRIMARY KEY,
            sale_id         TEXT NOT NULL,
            user_id         TEXT NOT NULL,
            quantity        INTEGER NOT NULL CHECK (quantity > 0),
            amount_cents    BIGINT NOT NULL CHECK (amount_cents >= 0),
            idempotency_key TEXT NOT NULL,
            state           TEXT NOT NULL,
            created_at_ms   BIGINT NOT NULL,
            UNIQUE (sale_id, user_id, idempotency_key)
        )
        """,
    ),
    # 2: what an order was made of (unit price, discount, coupon, team); orders by sale
    (
        "ALTER TABLE orders ADD COLUMN unit_price_cents BIGINT NOT NULL DEFAULT 0",
        "ALTER TABLE orders ADD COLUMN discount_cents BIGINT NOT NULL DEFAULT 0",
        "ALTER TABLE orders ADD COLUMN coupon_id TEXT",
        "ALTER TABLE orders ADD COLUMN team_code TEXT",
        "CREATE INDEX IF NOT EXISTS orders_by_sale ON orders(sale_id)",
    ),
    # 3: each order's position in commit order, for the listing cursor (see _NEXT_POSITION).
    # Orders already there take theirs in the order they were recorded: on SQLite their rowid,
    # which is what the cursor handed out until now (PostgreSQL had no ledger before this).
    (
        "ALTER TABLE orders ADD COLUMN position BIGINT",
        {"sqlite": "UPDATE orders SET position = rowid"},
        "CREATE UNIQUE INDEX IF NOT EXISTS orders_by_position ON orders(position)",
        "CREATE INDEX IF NOT EXISTS orders_by_sale_position ON orders(sale_id, position)",
    ),
)


def _honour_lost_cancellation() -> None:
    """Raise CancelledError if this task was cancelled and is still running: a client library
    can lose a cancellation (redis-py, cancelled while a command runs, may return the reply),
    and a loop of quick commands would then lose every one the supervisor sends. The request
    is still counted on the task (``Task.cancelling()``), so the loop honours it here, between
    commands."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


@dataclass(frozen=True)
class LedgerConfig:
    key_prefix: str = "live"
    #: The name of this process in the consumer group (unique per process).
    consumer: str = "ledger"
    #: Stream entries read per call, and how long a read waits for new ones.
    read_count: int = 500
    block_ms: int = 1000
    #: An entry read by a consumer that has not acknowledged it for this long is claimed.
    claim_idle_ms: int = 30_000


class Ledger:
    def __init__(
        self,
        redis: RedisClient,
        db: Database,
        config: LedgerConfig,
        supervisor: Supervisor,
    ) -> None:
        self.redis = redis
        self.db = db
        self.config = config
        self.supervisor = supervisor
        self._queue: list[Order] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._wake = asyncio.Event()
        self._grouped: set[str] = set()
        self._tasks: list[str] = []
        self._last_claim = 0.0

    @classmethod
    async def open(
        cls,
        redis: RedisClient,
        path: Path | None,
        config: LedgerConfig,
        supervisor: Supervisor,
        *,
        database_url: str | None = None,
    ) -> Ledger:
        """The ledger in the SQLite file ``path`` (its own connection, synchronous=FULL: a
        committed order survives a power cut, not only a crash), or in the PostgreSQL that
        ``database_url`` names (then no file is needed); its table brought to the newest schema.
        Raises storage's DatabaseError (SchemaTooNew among them) if it cannot."""
        target = parse_database_url(database_url)
        if target.engine == "sqlite" and target.path is None and path is None:
            raise DatabaseError("no ledger: give an SQLite file or a database URL")
        db = await open_database(target, path, synchronous="FULL")
        try:
            await ensure_schema(db)
        except BaseException:
            await db.close()
            raise
        return cls(redis, db, config, supervisor)

    async def start(self, consume: bool = True) -> None:
        self._tasks.append("ledger-writer")
        self.supervisor.start("ledger-writer", self._writer)
        if consume:
            self._tasks.append("ledger-consumer")
            self.supervisor.start("ledger-consumer", self.run)

    async def close(self) -> None:
        await self.supervisor.stop(self._tasks)
        if self._queue:
            await self._insert(self._queue)
        await self.db.close()

    # -- the confirming process's own write ---------------------------------------------------

    async def record(self, orders: list[Order]) -> None:
        """Return once ``orders`` are committed to the ledger."""
        if not orders:
            return
        future = asyncio.get_running_loop().create_future()
        self._queue.extend(orders)
        self._waiters.append(future)
        self._wake.set()
        await future

    async def _writer(self) -> None:
        while True:
            if not self._queue:  # (a restarted writer may find orders queued already)
                self._wake.clear()
                await self._wake.wait()
            self._wake.clear()
            orders, self._queue = self._queue, []
            waiters, self._waiters = self._waiters, []
            try:
                await self._insert(orders)
            except Exception as exc:  # every waiter must hear of it, whatever it is
                log.error("orders not written to the ledger", extra={"error": repr(exc)})
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_exception(exc)
                continue
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def _insert(self, orders: list[Order]) -> None:
        """One transaction for the batch (group commit)."""
        rows = [_row(o) for o in orders]
        try:
            async with self.db.transaction() as tx:
                await tx.lock(_POSITION_LOCK)
                await tx.executemany(_INSERT, rows)
        except UniqueViolation:  # (rolled back: nothing of the batch was written)
            await self._insert_one_by_one(rows)

    async def _insert_one_by_one(self, rows: list[tuple[Any, ...]]) -> None:
        """A row broke UNIQUE (sale, user, key) with a new order id: Redis lost the request's
        idempotency record (a failover) and a retry made a second order. It is a real order
        (its units were sold): keep it, under a key that says so, and tell the operator.
        (A transaction per row: on PostgreSQL a failed statement spoils its transaction.)"""
        for row in rows:
            try:
                await self._insert_rows([row])
            except UniqueViolation:
                log.error("second order for one request id", extra={"order": row[0], "sale": row[1]})
                await self._insert_rows([(*row[:5], f"{row[5]}#{row[0]}", *row[6:])])

    async def _insert_rows(self, rows: list[tuple[Any, ...]]) -> None:
        async with self.db.transaction() as tx:
            await tx.lock(_POSITION_LOCK)
            await tx.executemany(_INSERT, rows)

    # -- the consumer group -------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            _honour_lost_cancellation()
            try:
                if not await self.step():
                    await asyncio.sleep(self.config.block_ms / 1000)
            except (RedisError, OSError, DatabaseError) as exc:
                if "NOGROUP" in str(exc):
                    self._grouped.clear()  # a stream was lost with its group (Redis lost data)
                log.warning("ledger consumer failed; retrying", extra={"error": repr(exc)})
                await asyncio.sleep(1.0)

    async def step(self) -> bool:
        """Read (and claim) what there is for this consumer, write it, acknowledge it.
        Returns False when there are no active sales."""
        members = await self.redis.smembers(active_sales_key(self.config.key_prefix))
        sales = sorted(as_text(m) for m in members)
        if not sales:
            return False
        for sale_id in sales:
            if sale_id not in self._grouped:
                await self.ensure_group(sale_id)
        streams = [SaleKeys(self.config.key_prefix, s).stream for s in sales]
        if time.monotonic() - self._last_claim >= self.config.claim_idle_ms / 1000 / 2:
            self._last_claim = time.monotonic()
            for stream in streams:
                _honour_lost_cancellation()
                await self._claim(stream)
        # On a Redis Cluster one XREADGROUP may name streams of one slot only (and each sale is
        # a slot of its own); a single Redis reads every stream in one command, as it always did.
        # A read may block only when it is the only one: a read blocked on one slot would leave
        # the others unread meanwhile. With several, read each without blocking, and wait when
        # none had anything.
        groups = streams_by_slot(streams) if isinstance(self.redis, RedisCluster) else [streams]
        block = self.config.block_ms if len(groups) == 1 else None
        taken = 0
        for group in groups:
            _honour_lost_cancellation()
            reply: Any = await self.redis.xreadgroup(
                GROUP,
                self.config.consumer,
                dict.fromkeys(group, ">"),
                count=self.config.read_count,
                block=block,
            )
            for stream, entries in reply or ():
                taken += len(entries)
                await self._take(as_text(stream), entries)
        if block is None and not taken:
            await asyncio.sleep(self.config.block_ms / 1000)
        return True

    async def ensure_group(self, sale_id: str) -> None:
        stream = SaleKeys(self.config.key_prefix, sale_id).stream
        try:
            await self.redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._grouped.add(sale_id)

    async def _claim(self, stream: str) -> None:
        start = "0-0"
        while True:
            reply: Any = await self.redis.xautoclaim(
                stream,
                GROUP,
                self.config.consumer,
                self.config.claim_idle_ms,
                start,
                count=self.config.read_count,
            )
            start, entries = reply[0], reply[1]
            if entries:
                log.warning(
                    "claimed orders of a silent consumer", extra={"stream": stream, "orders": len(entries)}
                )
                await self._take(stream, entries)
            if start in (b"0-0", "0-0") or not entries:
                return

    async def _take(self, stream: str, entries: list[Any]) -> None:
        orders = [Order.from_json(fields[b"o"]) for _, fields in entries if fields]
        await self._insert(orders)
        await self.redis.xack(stream, GROUP, *[entry_id for entry_id, _ in entries])

    async def drained(self, sale_id: str) -> bool:
        """True when every order of the sale's stream is acknowledged into the ledger."""
        stream = SaleKeys(self.config.key_prefix, sale_id).stream
        try:
            groups = await self.redis.xinfo_groups(stream)
            length = await self.redis.xlen(stream)
        except ResponseError:  # no stream: no orders yet
            return True
        for group in groups:
            if group["name"] in (GROUP, GROUP.encode()):
                lag = group.get("lag")
                return int(group["pending"]) == 0 and (lag == 0 or (lag is None and length == 0))
        return length == 0

    async def drain(self, sale_id: str, timeout_s: float = 30.0) -> None:
        """Read the sale's stream to its end into the ledger (reconcile and repair use this)."""
        await self.ensure_group(sale_id)
        stream = SaleKeys(self.config.key_prefix, sale_id).stream
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            await self._claim_all(stream)
            reply: Any = await self.redis.xreadgroup(
                GROUP, self.config.consumer, {stream: ">"}, count=self.config.read_count
            )
            if not reply or not reply[0][1]:
                return
            await self._take(stream, reply[0][1])
        raise TimeoutError(f"the orders stream of {sale_id} did not drain in {timeout_s} s")

    async def _claim_all(self, stream: str) -> None:
        """Claim every pending entry, however fresh (only for drain: nobody else is consuming)."""
        start = "0-0"
        while True:
            claimed: Any = await self.redis.xautoclaim(
                stream, GROUP, self.config.consumer, 0, start, count=self.config.read_count
            )
            start, entries = claimed[0], claimed[1]
            if entries:
                await self._take(stream, entries)
            if start in (b"0-0", "0-0") or not entries:
                return

    # -- reads --------------------------------------------------------------------------------

    async def orders(self, sale_id: str) -> list[Order]:
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM orders WHERE sale_id = ? ORDER BY {self.db.bytewise('id')}", (sale_id,)
        )
        return [Order(*r) for r in rows]

    async def orders_page(self, sale_id: str, after: int, limit: int) -> tuple[list[Order], int]:
        """At most ``limit`` orders of the sale in the order the ledger recorded them, past the
        position ``after`` (0: from the start); and the position after the last one returned.

        Positions only grow, in commit order (see ``_NEXT_POSITION``), so whoever polls with
        the position it was given sees every order recorded since, once (an order id would not
        do: ids do not arrive in id order). On SQLite files from before positions, a position is
        the order's rowid, as the cursor always was."""
        rows = await self.db.fetch(
            f"SELECT position, {_COLUMNS} FROM orders WHERE sale_id = ? AND position > ?"
            " ORDER BY position LIMIT ?",
            (sale_id, after, limit),
        )
        return [Order(*r[1:]) for r in rows], (int(rows[-1][0]) if rows else after)

    async def units_sold(self, sale_ids: list[str]) -> dict[str, int]:
        """Units the ledger's orders sold, per sale (sales without orders are left out)."""
        sold: dict[str, int] = {}
        for i in range(0, len(sale_ids), 500):  # SQLite takes a limited number of parameters
            part = sale_ids[i : i + 500]
            sql = (
                "SELECT sale_id, SUM(quantity) FROM orders"
                f" WHERE sale_id IN ({', '.join('?' * len(part))}) GROUP BY sale_id"
            )
            sold.update({str(sale): int(units) for sale, units in await self.db.fetch(sql, part)})
        return sold

    async def order(self, order_id: str) -> Order | None:
        r = await self.db.fetchone(f"SELECT {_COLUMNS} FROM orders WHERE id = ?", (order_id,))
        return None if r is None else Order(*r)


def streams_by_slot(streams: list[str]) -> list[list[str]]:
    """``streams`` grouped by their Redis Cluster hash slot, in the order of first appearance
    (each group may be read with one command)."""
    groups: dict[int, list[str]] = defaultdict(list)
    for stream in streams:
        groups[key_slot(stream.encode())].append(stream)
    return list(groups.values())


def _row(o: Order) -> tuple[Any, ...]:
    return (
        o.id,
        o.sale_id,
        o.user_id,
        o.quantity,
        o.amount_cents,
        o.idempotency_key,
        o.created_at_ms,
        o.unit_price_cents,
        o.discount_cents,
        o.coupon_id,
        o.team_code,
    )


SCHEMA = Component("ledger", MIGRATIONS)


async def ensure_schema(db: Database | aiosqlite.Connection) -> int:
    """Bring the ledger's table to the newest schema; returns its version. Processes (and
    nodes) that open one database at once may all run it: storage.migrations takes a lock per
    step (SQLite's write lock, PostgreSQL's advisory lock) and reads the version under it, so
    a step runs once. Raises SchemaTooNew if the database is further on than this code.
    (An aiosqlite connection, as earlier versions took, is used as it is.)"""
    database = db if isinstance(db, Database) else SqliteDatabase(db, Path("(connection)"))
    return await run_migrations(database, SCHEMA, VersionRecord("ledger_schema", _adopted_version))


async def _adopted_version(tx: Transaction) -> int:
    """Where a database with no ledger version stands: a new one (0), or one whose orders
    table live.store's migrations made before the ledger owned it (its schema 1, or 2 with
    the columns of what an order was made of): the same tables as the ledger's steps make."""
    columns = await tx.columns("orders")
    if not columns:
        return 0
    return 2 if "team_code" in columns else 1


__all__ = [
    "GROUP",
    "MIGRATIONS",
    "Ledger",
    "LedgerConfig",
    "SchemaTooNew",
    "ensure_schema",
    "streams_by_slot",
]
