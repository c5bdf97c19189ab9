"""The inventory's closed boundary (issue 12, item 4): the app asks the inventory for what it
needs (active sales, a sale's room, a repair lock) instead of building its key names; a repair
lock is released only by its holder; the ledger owns its table's schema, and a database made
before it did (by live.store's old migrations) opens and keeps working."""

from __future__ import annotations

import ast
import asyncio
import re
import sqlite3
import time
from pathlib import Path

import aiosqlite
import pytest
from conftest import sale_spec

from inventory.inventory import Inventory
from inventory.ledger import MIGRATIONS, Ledger, LedgerConfig, SchemaTooNew, ensure_schema
from inventory.model import Order
from live import reconcile as live_reconcile
from live.datadir import DataDir
from live.errors import StartupError
from live.selling import SaleRequest
from live.server import Running, running
from live.settings import Settings
from live.store import Store
from live.supervisor import Supervisor

ROOT = Path(__file__).resolve().parent.parent


async def until_gone(inventory: Inventory, key: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while await inventory.redis.exists(key):
        assert time.monotonic() < deadline, f"{key} did not expire"
        await asyncio.sleep(0.02)


def repairs_counted(server: Running) -> float:
    value = server.services.metrics.registry.get_sample_value("live_sale_repairs_total")
    return 0.0 if value is None else value


# -- the repair lock ---------------------------------------------------------------------------


async def test_a_lock_that_expired_and_was_taken_is_not_released_by_its_first_holder(
    inventory: Inventory,
) -> None:
    """The old lock (SET NX PX, then an unconditional DEL) let a repair that outlived its lock
    delete the lock of the process repairing the sale next. Now a release checks the token."""
    first = inventory.repair_lock("s1", timeout_ms=100)
    assert await first.acquire()
    assert not await inventory.repair_lock("s1").acquire()  # held: nobody else gets it
    await until_gone(inventory, first.name)  # the first holder is slow: its lock expires
    second = inventory.repair_lock("s1", timeout_ms=60_000)
    assert await second.acquire()
    token = await inventory.redis.get(second.name)
    assert await first.release() is False  # not its lock any more: a clear outcome, no error
    assert await inventory.redis.get(second.name) == token  # the second holder still has it
    assert not await inventory.repair_lock("s1").acquire()
    assert await second.release() is True
    assert not await inventory.redis.exists(second.name)
    assert await inventory.repair_lock("s1").acquire()  # free again


async def test_the_locks_of_two_sales_are_apart_and_a_released_lock_is_not_released_twice(
    inventory: Inventory,
) -> None:
    one, two = inventory.repair_lock("s1"), inventory.repair_lock("s2")
    assert await one.acquire() and await two.acquire()
    assert one.name != two.name and "{s1}" in one.name  # in the sale's Cluster slot
    assert await one.release() is True
    assert await one.release() is False
    assert await inventory.redis.exists(two.name)


async def test_a_heal_leaves_a_sale_alone_while_another_process_holds_its_repair_lock(
    server: Running,
) -> None:
    services = server.services
    await services.rooms.create("shop", host_id="host1", room_id="shop")
    product = await services.rooms.add_product("shop", "tea", 1500, None)
    sale = await services.selling.open_sale(SaleRequest(room_id="shop", product_id=product.id, stock=5))
    theirs = services.inventory.repair_lock(sale.id)
    assert await theirs.acquire()
    token = await services.redis.get(theirs.name)
    repairs = repairs_counted(server)
    assert await services.sweeper.heal(sale.id, "a test") is False
    assert repairs_counted(server) == repairs  # nothing rebuilt
    assert await services.redis.get(theirs.name) == token  # their lock, untouched
    assert await theirs.release()
    assert await services.sweeper.heal(sale.id, "a test") is True  # free: this one repairs
    assert repairs_counted(server) == repairs + 1
    assert not await services.redis.exists(theirs.name)  # and gives its own lock back


# -- what the app asks the inventory -----------------------------------------------------------


async def test_active_sales_room_of_exists_and_retire(inventory: Inventory) -> None:
    assert await inventory.active_sales() == []
    assert await inventory.open_sale(sale_spec("s1", room_id="r1"))
    assert await inventory.active_sales() == []  # opened, not yet listed
    await inventory.activate("s1")
    await inventory.activate("s1")  # idempotent
    assert await inventory.active_sales() == ["s1"]
    assert await inventory.room_of("s1") == "r1"
    assert await inventory.room_of("nope") is None
    assert await inventory.exists("s1") and not await inventory.exists("nope")
    await inventory.retire("s1", retention_ms=60_000)
    assert await inventory.active_sales() == []
    assert await inventory.exists("s1")  # its keys expire later


def test_the_app_builds_no_inventory_key_names_and_each_key_family_is_defined_once() -> None:
    """live/ asks the inventory (and gateway/keys.py) for names; it never makes its own."""
    for path in sorted((ROOT / "live").glob("*.py")):
        source = path.read_text()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert node.module != "inventory.keys", f"{path.name} imports inventory.keys"
        # the inventory's names (":sale:{", ":sales:...") and the gateway's (":room:{")
        assert not re.search(r""":sales?:|:room:|:repairing""", source), path.name
    key_classes = []
    for package in ("gateway", "inventory", "live"):
        for path in sorted((ROOT / package).glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ClassDef) and node.name.endswith("Keys"):
                    key_classes.append(f"{package}/{path.name}:{node.name}")
    assert sorted(key_classes) == ["gateway/keys.py:RoomKeys", "inventory/keys.py:SaleKeys"]


# -- the ledger's own schema -------------------------------------------------------------------

#: live.store's migrations 1 and 2 as released before the ledger owned its table (copied as
#: they were: a database made by that version is what these tests open).
OLD_STORE_MIGRATIONS = (
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
    CREATE TABLE orders (
        id              TEXT PRIMARY KEY,
        sale_id         TEXT NOT NULL REFERENCES sales(id),
        user_id         TEXT NOT NULL,
        quantity        INTEGER NOT NULL CHECK (quantity > 0),
        amount_cents    INTEGER NOT NULL CHECK (amount_cents >= 0),
        idempotency_key TEXT NOT NULL,
        state           TEXT NOT NULL,
        created_at_ms   INTEGER NOT NULL,
        UNIQUE (sale_id, user_id, idempotency_key)
    );
    """,
    """
    ALTER TABLE sales ADD COLUMN group_size INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE sales ADD COLUMN group_price_cents INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE sales ADD COLUMN team_ms INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX sales_by_room ON sales(room_id, created_at_ms);
    ALTER TABLE orders ADD COLUMN unit_price_cents INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE orders ADD COLUMN discount_cents INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE orders ADD COLUMN coupon_id TEXT;
    ALTER TABLE orders ADD COLUMN team_code TEXT;
    CREATE INDEX orders_by_sale ON orders(sale_id);
    """,
)


def old_database(path: Path, version: int) -> None:
    """A database as the old live made it, at store schema ``version``, with one order."""
    with sqlite3.connect(path) as db:
        for number in range(1, version + 1):
            db.executescript(
                f"BEGIN; {OLD_STORE_MIGRATIONS[number - 1]} PRAGMA user_version = {number}; COMMIT;"
            )
        row: tuple[object, ...] = ("s1.1.1", "s1", "ann", 1, 999, "k1", "confirmed", 1)
        if version >= 2:  # with what the order was made of
            row += (999, 0, None, None)
        db.execute(f"INSERT INTO orders VALUES ({', '.join('?' * len(row))})", row)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == version


def orders_schema(path: Path) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    """The orders table's columns (name, type, not null, default, primary key) and its
    indexes with their columns and uniqueness: what the ledger relies on."""
    with sqlite3.connect(path) as db:
        # (BIGINT, as the ledger's steps now say for PostgreSQL, is INTEGER affinity to SQLite)
        columns = [
            (r[1], "INTEGER" if r[2] == "BIGINT" else r[2], *r[3:])
            for r in db.execute("PRAGMA table_info(orders)")
        ]
        indexes = []
        for _, name, unique, *_ in db.execute("PRAGMA index_list(orders)"):
            cols = tuple(r[2] for r in db.execute(f"PRAGMA index_info('{name}')"))
            indexes.append((unique, cols))
    return columns, sorted(indexes)


def order(order_id: str, key: str, user: str = "bob") -> Order:
    return Order(order_id, "s1", user, 2, 500, 100, 900, "c1", "T1", key, 2)


async def open_ledger(inventory: Inventory, path: Path) -> Ledger:
    ledger = await Ledger.open(
        inventory.redis, path, LedgerConfig(key_prefix=inventory.config.key_prefix), Supervisor()
    )
    await ledger.start(consume=False)
    return ledger


@pytest.mark.parametrize("version", [1, 2])
async def test_a_database_made_by_the_old_store_migrations_opens_and_keeps_its_orders(
    inventory: Inventory, tmp_path: Path, version: int
) -> None:
    old = tmp_path / "old.db"
    old_database(old, version)
    await (await Store.open(old)).close()
    ledger = await open_ledger(inventory, old)
    try:
        kept = await ledger.orders("s1")
        assert [(o.id, o.user_id, o.amount_cents, o.idempotency_key) for o in kept] == [
            ("s1.1.1", "ann", 999, "k1")
        ]
        assert kept[0].unit_price_cents == (999 if version >= 2 else 0)
        await ledger.record([order("s1.2.2", "k2")])
        assert await ledger.order("s1.2.2") == order("s1.2.2", "k2")
        # UNIQUE (sale, user, request id) holds: a second order for one request is kept apart
        await ledger.record([order("s1.3.3", "k2")])
        assert (await ledger.order("s1.3.3")) == order("s1.3.3", "k2#s1.3.3")
        assert await ledger.units_sold(["s1"]) == {"s1": 5}
    finally:
        await ledger.close()
    new = tmp_path / "new.db"
    await (await Store.open(new)).close()
    async with aiosqlite.connect(new) as db:
        assert await ensure_schema(db) == len(MIGRATIONS)
    assert orders_schema(old) == orders_schema(new)  # the same table, however it was made
    ledger = await open_ledger(inventory, old)  # reopening changes nothing
    try:
        assert len(await ledger.orders("s1")) == 3
    finally:
        await ledger.close()
    assert orders_schema(old) == orders_schema(new)


async def test_a_new_database_gets_the_orders_table_from_the_ledger_alone(tmp_path: Path) -> None:
    path = tmp_path / "live.db"
    await (await Store.open(path)).close()
    with sqlite3.connect(path) as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "orders" not in tables  # the store no longer makes it
    async with aiosqlite.connect(path) as db:
        assert await ensure_schema(db) == len(MIGRATIONS)
        assert await ensure_schema(db) == len(MIGRATIONS)  # runs nothing twice
    columns, indexes = orders_schema(path)
    assert [c[0] for c in columns][-5:] == [
        "unit_price_cents",
        "discount_cents",
        "coupon_id",
        "team_code",
        "position",
    ]
    assert (1, ("sale_id", "user_id", "idempotency_key")) in indexes and (0, ("sale_id",)) in indexes
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version FROM ledger_schema").fetchall() == [(len(MIGRATIONS),)]


async def test_processes_opening_one_database_at_once_migrate_it_once(tmp_path: Path) -> None:
    path = tmp_path / "live.db"
    dbs = [await aiosqlite.connect(path) for _ in range(4)]
    try:
        for one in dbs:
            await one.execute("PRAGMA busy_timeout=5000")
        assert await asyncio.gather(*(ensure_schema(one) for one in dbs)) == [len(MIGRATIONS)] * 4
    finally:
        for one in dbs:
            await one.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version FROM ledger_schema").fetchall() == [(len(MIGRATIONS),)]


async def test_a_ledger_schema_newer_than_this_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "live.db"
    async with aiosqlite.connect(path) as db:
        await ensure_schema(db)
        await db.execute("UPDATE ledger_schema SET version = ?", (len(MIGRATIONS) + 1,))
        await db.commit()
        with pytest.raises(SchemaTooNew, match="newer than this code"):
            await ensure_schema(db)


async def test_a_server_refuses_to_start_on_a_ledger_schema_newer_than_its_own(settings: Settings) -> None:
    path = DataDir(settings.data_dir).sqlite_path
    path.parent.mkdir(parents=True, exist_ok=True)
    async with aiosqlite.connect(path) as db:
        await ensure_schema(db)
        await db.execute("UPDATE ledger_schema SET version = ?", (len(MIGRATIONS) + 1,))
        await db.commit()
    with pytest.raises(StartupError, match="newer than this code"):
        async with running(settings):
            pass


async def test_reconcile_refuses_a_ledger_schema_newer_than_its_own_with_the_reason(
    settings: Settings,
) -> None:
    path = DataDir(settings.data_dir).sqlite_path
    path.parent.mkdir(parents=True, exist_ok=True)
    await (await Store.open(path)).close()
    async with aiosqlite.connect(path) as db:
        await ensure_schema(db)
        await db.execute("UPDATE ledger_schema SET version = ?", (len(MIGRATIONS) + 1,))
        await db.commit()
    with pytest.raises(StartupError, match=r"cannot open the ledger.*newer than this code"):
        await live_reconcile.run(settings, None, repair=False)
