"""The store of record (rooms, products, sales), each test on SQLite and on PostgreSQL: its
versioned schema, its constraints, its capped inserts (also racing, from several connections,
on PostgreSQL), and a schema newer than this live refused."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import aiosqlite
import pytest
from postgres import StoreDb

from inventory.ledger import ensure_schema
from live.errors import StartupError
from live.store import MIGRATIONS, LimitExceeded, ProductRow, RoomRow, SaleRow, Store, migrate
from storage import DatabaseError, UniqueViolation
from storage.sqlite import SqliteDatabase


async def open_store(where: StoreDb) -> Store:
    return await Store.open(where.path, database_url=where.url)


def sale(sale_id: str, room_id: str = "r1", ends_at_ms: int = 10_000, created_at_ms: int = 1) -> SaleRow:
    return SaleRow(
        id=sale_id,
        room_id=room_id,
        product_id="p1",
        stock=5,
        price_cents=999,
        per_user_limit=2,
        starts_at_ms=0,
        ends_at_ms=ends_at_ms,
        hold_ms=30_000,
        created_at_ms=created_at_ms,
    )


async def test_schema_is_versioned_and_migrations_run_once(store_db: StoreDb) -> None:
    store = await open_store(store_db)
    await store.insert_room(RoomRow("r1", "t", "h", False, 1_700_000_000_000))
    await store.close()
    store = await open_store(store_db)  # reopening runs nothing twice and keeps the data
    try:
        assert await store.rooms() == [RoomRow("r1", "t", "h", False, 1_700_000_000_000)]
        await ensure_schema(store.db)  # the orders table is the ledger's to make
        tables = await store.db.columns("orders")
        assert {"id", "position"} <= tables
        if store_db.engine == "postgresql":
            row = await store.db.fetchone("SELECT version FROM store_schema")
            assert row == (len(MIGRATIONS),)
    finally:
        await store.close()
    if store_db.engine == "sqlite":
        with sqlite3.connect(store_db.path) as db:
            assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            tables_here = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"rooms", "products", "sales", "orders"} <= tables_here


async def test_constraints_guard_the_record(store_db: StoreDb) -> None:
    store = await open_store(store_db)
    try:
        await store.insert_room(RoomRow("r1", "t", "h", False, 1))
        with pytest.raises(UniqueViolation):
            await store.insert_room(RoomRow("r1", "again", "h", False, 2))
        with pytest.raises(DatabaseError):  # price must be >= 0
            await store.insert_product(ProductRow("p", "r1", "t", -1, None, 1))
        with pytest.raises(DatabaseError):  # product of an unknown room
            await store.insert_product(ProductRow("p", "nope", "t", 1, None, 1))
        assert await store.products() == []
    finally:
        await store.close()


async def test_sales_round_trip_and_stop_moves_the_end_only_earlier(store_db: StoreDb) -> None:
    store = await open_store(store_db)
    try:
        await store.insert_room(RoomRow("r1", "t", "h", False, 1))
        await store.insert_product(ProductRow("p1", "r1", "tea", 500, None, 1))
        # ms since epoch do not fit in 32 bits: the columns are BIGINT on PostgreSQL
        late = 1_800_000_000_000
        await store.insert_sale(sale("s1", ends_at_ms=late))
        assert await store.sale("s1") == sale("s1", ends_at_ms=late)
        await store.add_sale_stock("s1", 3)
        await store.stop_sale("s1", late + 1)  # a later end is not taken (LEAST / MIN)
        stopped = await store.sale("s1")
        assert stopped is not None and (stopped.state, stopped.ends_at_ms, stopped.stock) == (
            "stopped",
            late,
            8,
        )
        await store.stop_sale("s1", 5)
        stopped = await store.sale("s1")
        assert stopped is not None and stopped.ends_at_ms == 5
        assert [s.id for s in await store.sales("r1")] == ["s1"] and await store.sale("nope") is None
    finally:
        await store.close()


async def test_capped_inserts_refuse_past_the_cap(store_db: StoreDb) -> None:
    store = await open_store(store_db)
    try:
        await store.insert_room(RoomRow("r1", "t", "h", False, 1), max_per_host=2)
        await store.insert_room(RoomRow("r2", "t", "h", False, 2), max_per_host=2)
        with pytest.raises(LimitExceeded, match="max_rooms_per_host"):
            await store.insert_room(RoomRow("r3", "t", "h", False, 3), max_per_host=2)
        await store.insert_room(RoomRow("r4", "t", "other", False, 4), max_per_host=2)  # per host
        await store.insert_product(ProductRow("p1", "r1", "t", 1, None, 1), max_per_room=1)
        with pytest.raises(LimitExceeded, match="max_products_per_room"):
            await store.insert_product(ProductRow("p2", "r1", "t", 1, None, 2), max_per_room=1)
        await store.insert_sale(sale("s1", ends_at_ms=100), max_active=1)
        with pytest.raises(LimitExceeded, match="max_active_sales_per_room"):
            await store.insert_sale(sale("s2", ends_at_ms=200, created_at_ms=50), max_active=1)
        await store.insert_sale(sale("s3", ends_at_ms=300, created_at_ms=150), max_active=1)  # s1 is over
        assert [r.id for r in await store.rooms()] == ["r1", "r2", "r4"]
    finally:
        await store.close()


async def test_capped_inserts_racing_from_several_connections_never_pass_the_cap(database_url: str) -> None:
    """Eight stores (eight pools: as many nodes) create rooms for one host at once, cap 5: the
    count and the insert are one locked transaction, so exactly 5 land. A plain
    INSERT .. SELECT .. WHERE count < cap under READ COMMITTED would let several through."""
    stores = [await Store.open(None, database_url=database_url) for _ in range(8)]
    try:

        async def create(i: int) -> bool:
            try:
                await stores[i % 8].insert_room(RoomRow(f"r{i}", "t", "host", False, i), max_per_host=5)
            except LimitExceeded:
                return False
            return True

        for _ in range(3):  # a few rounds, each racing from scratch
            results = await asyncio.gather(*(create(i) for i in range(40)))
            assert sum(results) == 5
            rooms = await stores[0].rooms()
            assert len(rooms) == 5
            await stores[0].db.execute("DELETE FROM rooms")
        await stores[0].insert_room(RoomRow("p", "t", "host2", False, 1))

        async def add(i: int) -> bool:
            try:
                await stores[i % 8].insert_product(ProductRow(f"x{i}", "p", "t", 1, None, i), max_per_room=3)
            except LimitExceeded:
                return False
            return True

        assert sum(await asyncio.gather(*(add(i) for i in range(24)))) == 3
        await stores[0].insert_product(ProductRow("p1", "p", "t", 1, None, 1))

        async def sell(i: int) -> bool:
            try:
                await stores[i % 8].insert_sale(sale(f"s{i}", room_id="p"), max_active=2)
            except LimitExceeded:
                return False
            return True

        assert sum(await asyncio.gather(*(sell(i) for i in range(24)))) == 2
    finally:
        for store in stores:
            await store.close()


async def test_a_database_from_a_newer_live_is_refused(store_db: StoreDb) -> None:
    store = await open_store(store_db)
    if store_db.engine == "sqlite":
        await store.db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    else:
        await store.db.execute("UPDATE store_schema SET version = ?", (len(MIGRATIONS) + 1,))
    await store.close()
    with pytest.raises(StartupError, match="newer than this code"):
        await open_store(store_db)


async def test_an_old_sqlite_file_keeps_its_user_version(tmp_path: Path) -> None:
    """A file an earlier live made (PRAGMA user_version 1: rooms, products, sales without the
    group buying columns) is brought to the newest version and keeps its rows."""
    path = tmp_path / "live.db"
    async with aiosqlite.connect(path) as db:
        await db.executescript(
            "BEGIN; CREATE TABLE rooms (id TEXT PRIMARY KEY, title TEXT NOT NULL, host_id TEXT NOT NULL,"
            " allow_anonymous INTEGER NOT NULL DEFAULT 0, created_at_ms INTEGER NOT NULL);"
            " CREATE TABLE products (id TEXT PRIMARY KEY, room_id TEXT NOT NULL REFERENCES rooms(id),"
            " title TEXT NOT NULL, price_cents INTEGER NOT NULL CHECK (price_cents >= 0), image_url TEXT,"
            " created_at_ms INTEGER NOT NULL);"
            " CREATE INDEX products_by_room ON products(room_id, created_at_ms);"
            " CREATE TABLE sales (id TEXT PRIMARY KEY, room_id TEXT NOT NULL REFERENCES rooms(id),"
            " product_id TEXT NOT NULL REFERENCES products(id), stock INTEGER NOT NULL CHECK (stock >= 0),"
            " price_cents INTEGER NOT NULL CHECK (price_cents >= 0),"
            " per_user_limit INTEGER NOT NULL CHECK (per_user_limit > 0), starts_at_ms INTEGER NOT NULL,"
            " ends_at_ms INTEGER NOT NULL, hold_ms INTEGER NOT NULL, state TEXT NOT NULL,"
            " created_at_ms INTEGER NOT NULL);"
            " INSERT INTO rooms VALUES ('r1', 'old', 'h', 0, 5); PRAGMA user_version = 1; COMMIT;"
        )
    store = await Store.open(path)
    try:
        assert await store.rooms() == [RoomRow("r1", "old", "h", False, 5)]
        assert {"group_size", "team_ms"} <= await store.db.columns("sales")
    finally:
        await store.close()
    async with aiosqlite.connect(path) as db:
        async with db.execute("PRAGMA user_version") as cursor:
            assert await cursor.fetchone() == (len(MIGRATIONS),)
        assert await migrate(SqliteDatabase(db, path)) == len(MIGRATIONS)  # nothing left to run
