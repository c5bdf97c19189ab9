"""The SQLite store of record (through aiosqlite, in WAL mode).

Redis holds the live state every gateway node reads; this file is what survives. Schema
versions are the list ``MIGRATIONS``: version N is reached by running ``MIGRATIONS[N-1]``, and
``PRAGMA user_version`` records where a database stands. Never edit a released migration:
append a new one.

The orders table is the ledger's (inventory.ledger keeps its schema and migrations). Until it
was, migrations 1 and 2 here made it too; they no longer do, and a database they made keeps
its table, which the ledger adopts as it is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import aiosqlite

from inventory.model import SaleSpec
from live.errors import StartupError

MIGRATIONS: tuple[str, ...] = (
    # 1: rooms and their products, and sales (a later issue fills those in).
    """
    CREATE TABLE rooms (
        id              TEXT PRIMARY KEY,
        title           TEXT NOT NULL,
        host_id         TEXT NOT NULL,
        allow_anonymous INTEGER NOT NULL DEFAULT 0,
        created_at_ms   INTEGER NOT NULL
    );
    CREATE TABLE products (
        id            TEXT PRIMARY KEY,
        room_id       TEXT NOT NULL REFERENCES rooms(id),
        title         TEXT NOT NULL,
        price_cents   INTEGER NOT NULL CHECK (price_cents >= 0),
        image_url     TEXT,
        created_at_ms INTEGER NOT NULL
    );
    CREATE INDEX products_by_room ON products(room_id, created_at_ms);
    CREATE TABLE sales (
        id             TEXT PRIMARY KEY,
        room_id        TEXT NOT NULL REFERENCES rooms(id),
        product_id     TEXT NOT NULL REFERENCES products(id),
        stock          INTEGER NOT NULL CHECK (stock >= 0),
        price_cents    INTEGER NOT NULL CHECK (price_cents >= 0),
        per_user_limit INTEGER NOT NULL CHECK (per_user_limit > 0),
        starts_at_ms   INTEGER NOT NULL,
        ends_at_ms     INTEGER NOT NULL,
        hold_ms        INTEGER NOT NULL,
        state          TEXT NOT NULL,
        created_at_ms  INTEGER NOT NULL
    );
    """,
    # 2: flash sales in full: group buying settings.
    """
    ALTER TABLE sales ADD COLUMN group_size INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE sales ADD COLUMN group_price_cents INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE sales ADD COLUMN team_ms INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX sales_by_room ON sales(room_id, created_at_ms);
    """,
)


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
    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    @classmethod
    async def open(cls, path: Path) -> Store:
        _private_files(path)
        db = await aiosqlite.connect(path)
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives a process crash; only an OS crash may lose the last
            # transactions, and the order ledger re-reads those from its Redis stream.
            await db.execute("PRAGMA synchronous=NORMAL")
            await db.execute("PRAGMA foreign_keys=ON")
            await db.execute("PRAGMA busy_timeout=5000")
            await migrate(db)
        except BaseException:
            await db.close()
            raise
        return cls(db)

    async def close(self) -> None:
        await self._db.commit()
        await self._db.close()

    async def ping(self) -> None:
        async with self._db.execute("SELECT 1") as cursor:
            await cursor.fetchone()

    # The capped inserts count and insert in one statement, so that concurrent requests (from
    # any process: SQLite takes its write lock for the statement) cannot pass the cap together.

    async def insert_room(self, room: RoomRow, max_per_host: int | None = None) -> None:
        """Raises LimitExceeded if the host has ``max_per_host`` rooms already."""
        written = await self._write(
            "INSERT INTO rooms (id, title, host_id, allow_anonymous, created_at_ms)"
            " SELECT ?, ?, ?, ?, ? WHERE (SELECT COUNT(*) FROM rooms WHERE host_id = ?) < ?",
            (
                room.id,
                room.title,
                room.host_id,
                int(room.allow_anonymous),
                room.created_at_ms,
                room.host_id,
                _no_cap(max_per_host),
            ),
        )
        if not written:
            raise LimitExceeded(f"a host may have {max_per_host} rooms at most (max_rooms_per_host)")

    async def insert_product(self, product: ProductRow, max_per_room: int | None = None) -> None:
        """Raises LimitExceeded if the room has ``max_per_room`` products already."""
        written = await self._write(
            "INSERT INTO products (id, room_id, title, price_cents, image_url, created_at_ms)"
            " SELECT ?, ?, ?, ?, ?, ? WHERE (SELECT COUNT(*) FROM products WHERE room_id = ?) < ?",
            (
                product.id,
                product.room_id,
                product.title,
                product.price_cents,
                product.image_url,
                product.created_at_ms,
                product.room_id,
                _no_cap(max_per_room),
            ),
        )
        if not written:
            raise LimitExceeded(f"a room may have {max_per_room} products at most (max_products_per_room)")

    async def rooms(self) -> list[RoomRow]:
        rows = await self._read(
            "SELECT id, title, host_id, allow_anonymous, created_at_ms FROM rooms ORDER BY created_at_ms, id"
        )
        return [RoomRow(r[0], r[1], r[2], bool(r[3]), r[4]) for r in rows]

    async def products(self) -> list[ProductRow]:
        rows = await self._read(
            "SELECT id, room_id, title, price_cents, image_url, created_at_ms FROM products"
            " ORDER BY created_at_ms, id"
        )
        return [ProductRow(*r) for r in rows]

    async def insert_sale(self, sale: SaleRow, max_active: int | None = None) -> None:
        """Raises LimitExceeded if the room has ``max_active`` active sales already: open
        (not stopped) and not over at ``sale.created_at_ms`` (scheduled ones count)."""
        written = await self._write(
            f"INSERT INTO sales ({_SALE_COLUMNS}) SELECT {', '.join('?' * len(_SALE_FIELDS))} WHERE"
            " (SELECT COUNT(*) FROM sales WHERE room_id = ? AND state = 'open' AND ends_at_ms > ?) < ?",
            (
                *(getattr(sale, name) for name in _SALE_FIELDS),
                sale.room_id,
                sale.created_at_ms,
                _no_cap(max_active),
            ),
        )
        if not written:
            raise LimitExceeded(
                f"a room may have {max_active} active sales at most (max_active_sales_per_room):"
                " stop one, or wait for one to end"
            )

    async def sale(self, sale_id: str) -> SaleRow | None:
        rows = await self._read(f"SELECT {_SALE_COLUMNS} FROM sales WHERE id = ?", (sale_id,))
        return SaleRow(*rows[0]) if rows else None

    async def sales(self, room_id: str | None = None) -> list[SaleRow]:
        if room_id is None:
            rows = await self._read(f"SELECT {_SALE_COLUMNS} FROM sales ORDER BY created_at_ms, id")
        else:
            rows = await self._read(
                f"SELECT {_SALE_COLUMNS} FROM sales WHERE room_id = ? ORDER BY created_at_ms, id", (room_id,)
            )
        return [SaleRow(*r) for r in rows]

    async def add_sale_stock(self, sale_id: str, units: int) -> None:
        await self._write("UPDATE sales SET stock = stock + ? WHERE id = ?", (units, sale_id))

    async def stop_sale(self, sale_id: str, ends_at_ms: int) -> None:
        await self._write(
            "UPDATE sales SET state = 'stopped', ends_at_ms = MIN(ends_at_ms, ?) WHERE id = ?",
            (ends_at_ms, sale_id),
        )

    async def _write(self, sql: str, params: tuple[Any, ...]) -> int:
        """Run one statement and commit; returns the number of rows it changed."""
        cursor = await self._db.execute(sql, params)
        await self._db.commit()
        return cursor.rowcount

    async def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        async with self._db.execute(sql, params) as cursor:
            return [tuple(row) for row in await cursor.fetchall()]


def _no_cap(cap: int | None) -> int:
    return 2**62 if cap is None else cap


async def migrate(db: aiosqlite.Connection) -> int:
    """Bring the schema to the newest version; returns it. Each step is one transaction."""
    async with db.execute("PRAGMA user_version") as cursor:
        row = await cursor.fetchone()
    version = int(row[0]) if row else 0
    if version > len(MIGRATIONS):
        raise StartupError(
            f"the database is at schema version {version}, newer than this live "
            f"({len(MIGRATIONS)}): upgrade live"
        )
    for number in range(version + 1, len(MIGRATIONS) + 1):
        # executescript would commit on its own; BEGIN..COMMIT keeps each step all-or-nothing.
        await db.executescript(f"BEGIN; {MIGRATIONS[number - 1]} PRAGMA user_version = {number}; COMMIT;")
    return len(MIGRATIONS)
