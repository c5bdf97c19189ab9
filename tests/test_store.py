import sqlite3
from pathlib import Path

import aiosqlite
import pytest

from inventory.ledger import ensure_schema
from live.errors import StartupError
from live.store import MIGRATIONS, RoomRow, Store, migrate


async def test_schema_is_versioned_and_migrations_run_once(tmp_path: Path) -> None:
    path = tmp_path / "live.db"
    store = await Store.open(path)
    await store.insert_room(RoomRow("r1", "t", "h", False, 1))
    await store.close()
    store = await Store.open(path)  # reopening runs nothing twice and keeps the data
    assert [r.id for r in await store.rooms()] == ["r1"]
    await store.close()
    async with aiosqlite.connect(path) as db:  # the orders table is the ledger's to make
        await ensure_schema(db)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"rooms", "products", "sales", "orders"} <= tables


async def test_constraints_guard_the_record(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "live.db")
    try:
        await store.insert_room(RoomRow("r1", "t", "h", False, 1))
        with pytest.raises(sqlite3.IntegrityError):
            await store.insert_room(RoomRow("r1", "again", "h", False, 2))
    finally:
        await store.close()
    with sqlite3.connect(tmp_path / "live.db") as db:
        db.execute("PRAGMA foreign_keys=ON")
        with pytest.raises(sqlite3.IntegrityError):  # price must be >= 0
            db.execute("INSERT INTO products VALUES ('p', 'r1', 't', -1, NULL, 1)")
        with pytest.raises(sqlite3.IntegrityError):  # product of an unknown room
            db.execute("INSERT INTO products VALUES ('p', 'nope', 't', 1, NULL, 1)")


async def test_a_database_from_a_newer_live_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "live.db"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    async with aiosqlite.connect(path) as db:
        with pytest.raises(StartupError, match="newer than this live"):
            await migrate(db)
