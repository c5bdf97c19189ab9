"""The store of record: rooms, products, sales (storage: SQLite in the data dir, in WAL mode,
or a PostgreSQL several nodes share).

Redis holds the live state every gateway node reads; this is what survives. Schema versions
are the list ``MIGRATIONS`` (run by storage.migrations); on SQLite ``PRAGMA user_version``
records where a database stands (as it always has), on PostgreSQL the table ``store_schema``.
Never edit a released migration: append a new one.

The orders table is the ledger's (inventory.ledger keeps its schema and migrations). Until it
was, migrations 1 and 2 here made it too; they no longer do, and a database they made keeps
its table, which the ledger adopts as it is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

from inventory.model import SaleSpec
from live.errors import StartupError
from storage import Database, DatabaseTarget, open_database, parse_database_url
from storage.migrations import Component, PragmaUserVersion, SchemaTooNew, Step, VersionRecord
from storage.migrations import migrate as run_migrations

#: Version N is reached by running ``MIGRATIONS[N-1]``'s statements (storage.migrations).
#: Cents and ms columns are BIGINT: released as INTEGER, which is the same to SQLite (BIGINT
#: has INTEGER affinity, so a file made before is what these steps make), while PostgreSQL's
#: INTEGER is 32 bits, too small for ms since epoch.
MIGRATIONS: tuple[Step, ...] = (
    # 1: rooms and their products, and sales (a later issue fills those in).
    (
        """
        CREATE TABLE rooms (
            id              TEXT PRIMARY KEY,
            title           TEXT NOT NULL,
            host_id         TEXT NOT NULL,
            allow_anonymous INTEGER NOT NULL DEFAULT 0,
            created_at_ms   BIGINT NOT NULL
        )
        """,
        """
        CREATE TABLE products (
            id            TEXT PRIMARY KEY,
            room_id       TEXT NOT NULL REFERENCES rooms(id),
            title         TEXT NOT NULL,
            price_cents   BIGINT NOT NULL CHECK (price_cents >= 0),
            image_url     TEXT,
            created_at_ms BIGINT NOT NULL
        )
        """,
        "CREATE INDEX products_by_room ON products(room_id, created_at_ms)",
        """
        CREATE TABLE sales (
            id             TEXT PRIMARY KEY,
            room_id        TEXT NOT NULL REFERENCES rooms(id),
            product_id     TEXT NOT NULL REFERENCES products(id),
            stock          BIGINT NOT NULL CHECK (stock >= 0),
            price_cents    BIGINT NOT NULL CHECK (price_cents >= 0),
            per_user_limit BIGINT NOT NULL CHECK (per_user_limit > 0),
            starts_at_ms   BIGINT NOT NULL,
            ends_at_ms     BIGINT NOT NULL,
            hold_ms        BIGINT NOT NULL,
            state          TEXT NOT NULL,
            created_at_ms  BIGINT NOT NULL
        )
        """,
    ),
    # 2: flash sales in full: group buying settings.
    (
        "ALTER TABLE sales ADD COLUMN group_size BIGINT NOT NULL DEFAULT 0",
        "ALTER TABLE sales ADD COLUMN group_price_cents BIGINT NOT NULL DEFAULT 0",
        "ALTER TABLE sales ADD COLUMN team_ms BIGINT NOT NULL DEFAULT 0",
        "CREATE INDEX sales_by_room ON sales(room_id, created_at_ms)",
    ),
    # 3: the room's interaction tools (draws, auctions, polls): each one's spec as the host
    # opened it, its state, and its result once closed (JSON, each tool's module documents it).
    (
        """
        CREATE TABLE tools (
            id            TEXT PRIMARY KEY,
            room_id       TEXT NOT NULL REFERENCES rooms(id),
            kind          TEXT NOT NULL,
            spec          TEXT NOT NULL,
            state         TEXT NOT NULL,
            result        TEXT,
            created_at_ms BIGINT NOT NULL,
            closed_at_ms  BIGINT
        )
        """,
        "CREATE INDEX tools_by_room ON tools(room_id, created_at_ms)",
    ),
)

SCHEMA = Component("store", MIGRATIONS)


@dataclass(frozen=True)
class RoomRow:
    id: str
    title: str
    host_id: str
    allow_anonymous: bool
    created_at_ms: int


@dataclass(frozen=True)
class ProductRow:
    id: str
    room_id: str
    title: str
    price_cents: int
    image_url: str | None
    created_at_ms: int


@dataclass(frozen=True)
class SaleRow(SaleSpec):
    """A sale as the record keeps it: the inventory's SaleSpec (``stock`` is the initial stock
    plus all added), and ``state``, "open" or "stopped" (the live phase comes from Redis and
    the clock)."""

    state: str = "open"
    created_at_ms: int = 0

    def over(self, now_ms: int) -> bool:
        """Whether the record says the sale is over at ``now_ms``: ended, or stopped (a stop
        moves its end)."""
        return self.ends_at_ms <= now_ms


#: The sales table's columns, in SaleRow's field order.
_SALE_FIELDS = tuple(f.name for f in fields(SaleRow))
_SALE_COLUMNS = ", ".join(_SALE_FIELDS)


@dataclass(frozen=True)
class ToolRow:
    """The record of an interaction tool (a draw, an auction, a poll): ``spec`` and ``result``
    are JSON text; ``state`` is ``open`` until the tool's module records its end."""

    id: str
    room_id: str
    kind: str
    spec: str
    state: str
    result: str | None
    created_at_ms: int
    closed_at_ms: int | None = None


_TOOL_FIELDS = tuple(f.name for f in fields(ToolRow))
_TOOL_COLUMNS = ", ".join(_TOOL_FIELDS)


class LimitExceeded(Exception):
    """A write refused because it would pass a configured cap; nothing was written."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _private_files(path: Path) -> None:
    """Make the database file 0600 before SQLite opens it: SQLite creates the -wal and -shm
    files with the database's mode, so those follow. Files left looser by earlier versions are
    tightened (the data dir may be shared, or 0755)."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            mode = file.stat().st_mode & 0o777
        except FileNotFoundError:
            continue
        if mode & 0o077:
            file.chmod(mode & 0o700)


class Store:
    def __init__(self, db: Database) -> None:
        self.db = db

    @classmethod
    async def open(cls, path: Path | None = None, *, database_url: str | None = None) -> Store:
        """The store in the SQLite file ``path``, or in the database ``database_url`` names
        (PostgreSQL; then ``path`` is not needed). Raises storage's DatabaseError if it cannot
        be opened, StartupError if its schema is newer than this live."""
        target = parse_database_url(database_url)
        return cls(await _open_migrated(target, path))

    async def close(self) -> None:
        await self.db.close()

    async def ping(self) -> None:
        await self.db.ping()

    # The capped inserts count and insert in one transaction that holds a lock on what is
    # counted (the host's rooms, the room's products or sales), so that concurrent requests from
    # any process or node cannot pass the cap together. An INSERT .. SELECT .. WHERE count < cap
    # alone is not enough on PostgreSQL: under READ COMMITTED two transactions each count the
    # rows committed before them, neither sees the other's, and both insert. The lock
    # (storage's Transaction.lock: a transaction-scoped advisory lock there, SQLite's one write
    # lock here) makes the second wait until the first commits, and then count its row.

    async def insert_room(self, room: RoomRow, max_per_host: int | None = None) -> None:
        """Raises LimitExceeded if the host has ``max_per_host`` rooms already."""
        async with self.db.transaction() as tx:
            await tx.lock(f"live.store.rooms-of-host.{room.host_id}")
            if max_per_host is not None:
                row = await tx.fetchone("SELECT COUNT(*) FROM rooms WHERE host_id = ?", (room.host_id,))
                if row is not None and int(row[0]) >= max_per_host:
                    raise LimitExceeded(f"a host may have {max_per_host} rooms at most (max_rooms_per_host)")
            await tx.execute(
                "INSERT INTO rooms (id, title, host_id, allow_anonymous, created_at_ms)"
                " VALUES (?, ?, ?, ?, ?)",
                (room.id, room.title, room.host_id, int(room.allow_anonymous), room.created_at_ms),
            )

    async def insert_product(self, product: ProductRow, max_per_room: int | None = None) -> None:
        """Raises LimitExceeded if the room has ``max_per_room`` products already."""
        async with self.db.transaction() as tx:
            await tx.lock(f"live.store.products-of-room.{product.room_id}")
            if max_per_room is not None:
                row = await tx.fetchone("SELECT COUNT(*) FROM products WHERE room_id = ?", (product.room_id,))
                if row is not None and int(row[0]) >= max_per_room:
                    raise LimitExceeded(
                        f"a room may have {max_per_room} products at most (max_products_per_room)"
                    )
            await tx.execute(
                "INSERT INTO products (id, room_id, title, price_cents, image_url, created_at_ms)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    product.id,
                    product.room_id,
                    product.title,
                    product.price_cents,
                    product.image_url,
                    product.created_at_ms,
                ),
            )

    async def rooms(self) -> list[RoomRow]:
        rows = await self.db.fetch(
            "SELECT id, title, host_id, allow_anonymous, created_at_ms FROM rooms"
            f" ORDER BY created_at_ms, {self.db.bytewise('id')}"
        )
        return [RoomRow(r[0], r[1], r[2], bool(r[3]), r[4]) for r in rows]

    async def products(self) -> list[ProductRow]:
        rows = await self.db.fetch(
            "SELECT id, room_id, title, price_cents, image_url, created_at_ms FROM products"
            f" ORDER BY created_at_ms, {self.db.bytewise('id')}"
        )
        return [ProductRow(*r) for r in rows]

    async def insert_sale(self, sale: SaleRow, max_active: int | None = None) -> None:
        """Raises LimitExceeded if the room has ``max_active`` active sales already: open
        (not stopped) and not over at ``sale.created_at_ms`` (scheduled ones count)."""
        async with self.db.transaction() as tx:
            await tx.lock(f"live.store.sales-of-room.{sale.room_id}")
            if max_active is not None:
                row = await tx.fetchone(
                    "SELECT COUNT(*) FROM sales WHERE room_id = ? AND state = 'open' AND ends_at_ms > ?",
                    (sale.room_id, sale.created_at_ms),
                )
                if row is not None and int(row[0]) >= max_active:
                    raise LimitExceeded(
                        f"a room may have {max_active} active sales at most (max_active_sales_per_room):"
                        " stop one, or wait for one to end"
                    )
            await tx.execute(
                f"INSERT INTO sales ({_SALE_COLUMNS}) VALUES ({', '.join('?' * len(_SALE_FIELDS))})",
                tuple(getattr(sale, name) for name in _SALE_FIELDS),
            )

    async def sale(self, sale_id: str) -> SaleRow | None:
        row = await self.db.fetchone(f"SELECT {_SALE_COLUMNS} FROM sales WHERE id = ?", (sale_id,))
        return SaleRow(*row) if row else None

    async def sales(self, room_id: str | None = None) -> list[SaleRow]:
        order = f"ORDER BY created_at_ms, {self.db.bytewise('id')}"
        if room_id is None:
            rows = await self.db.fetch(f"SELECT {_SALE_COLUMNS} FROM sales {order}")
        else:
            rows = await self.db.fetch(
                f"SELECT {_SALE_COLUMNS} FROM sales WHERE room_id = ? {order}", (room_id,)
            )
        return [SaleRow(*r) for r in rows]

    async def add_sale_stock(self, sale_id: str, units: int) -> None:
        await self.db.execute("UPDATE sales SET stock = stock + ? WHERE id = ?", (units, sale_id))

    async def stop_sale(self, sale_id: str, ends_at_ms: int) -> None:
        await self.db.execute(
            f"UPDATE sales SET state = 'stopped', ends_at_ms = {self.db.least('ends_at_ms', '?')}"
            " WHERE id = ?",
            (ends_at_ms, sale_id),
        )

    # -- the interaction tools --------------------------------------------------------------------

    async def insert_tool(self, tool: ToolRow, max_open: int | None = None) -> None:
        """Raises LimitExceeded if the room has ``max_open`` open tools of this kind already."""
        async with self.db.transaction() as tx:
            await tx.lock(f"live.store.tools-of-room.{tool.room_id}")
            if max_open is not None:
                row = await tx.fetchone(
                    "SELECT COUNT(*) FROM tools WHERE room_id = ? AND kind = ? AND state = 'open'",
                    (tool.room_id, tool.kind),
                )
                if row is not None and int(row[0]) >= max_open:
                    raise LimitExceeded(
                        f"a room may have {max_open} open {tool.kind}s at most: wait for one to close"
                    )
            await tx.execute(
                f"INSERT INTO tools ({_TOOL_COLUMNS}) VALUES ({', '.join('?' * len(_TOOL_FIELDS))})",
                tuple(getattr(tool, name) for name in _TOOL_FIELDS),
            )

    async def tool(self, tool_id: str) -> ToolRow | None:
        row = await self.db.fetchone(f"SELECT {_TOOL_COLUMNS} FROM tools WHERE id = ?", (tool_id,))
        return ToolRow(*row) if row else None

    async def tools(
        self, room_id: str | None = None, kind: str | None = None, state: str | None = None
    ) -> list[ToolRow]:
        """Tools by creation time, filtered by room, kind and state when given."""
        where, args = [], []
        for column, value in (("room_id", room_id), ("kind", kind), ("state", state)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        clause = f"WHERE {' AND '.join(where)} " if where else ""
        rows = await self.db.fetch(
            f"SELECT {_TOOL_COLUMNS} FROM tools {clause}ORDER BY created_at_ms, {self.db.bytewise('id')}",
            tuple(args),
        )
        return [ToolRow(*r) for r in rows]

    async def update_tool(
        self, tool_id: str, state: str, result: str | None, closed_at_ms: int | None
    ) -> None:
        """Record a tool's new state (and its result, once known)."""
        await self.db.execute(
            "UPDATE tools SET state = ?, result = ?, closed_at_ms = ? WHERE id = ?",
            (state, result, closed_at_ms, tool_id),
        )


def _version_record(db: Database) -> VersionRecord:
    """SQLite files keep ``PRAGMA user_version`` (what every earlier live wrote and reads);
    PostgreSQL a table."""
    return PragmaUserVersion() if db.engine == "sqlite" else VersionRecord("store_schema")


async def _open_migrated(target: DatabaseTarget, path: Path | None) -> Database:
    if target.engine == "sqlite":
        file = target.path or path
        if file is None:
            raise StartupError("no store: give a data dir or a database URL")
        _private_files(file)
        # NORMAL in WAL mode survives a process crash; only an OS crash may lose the last
        # transactions, and the order ledger (synchronous=FULL) re-reads those from Redis.
        db = await open_database(DatabaseTarget("sqlite", path=file), synchronous="NORMAL", foreign_keys=True)
    else:
        db = await open_database(target)
    try:
        await migrate(db)
    except BaseException:
        await db.close()
        raise
    return db


async def migrate(db: Database) -> int:
    """Bring the schema to the newest version; returns it. Each step is one transaction."""
    try:
        return await run_migrations(db, SCHEMA, _version_record(db))
    except SchemaTooNew as exc:
        raise StartupError(str(exc)) from exc
