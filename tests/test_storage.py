"""The storage package on real engines: one interface over SQLite and PostgreSQL (statements,
transactions, errors mapped to one type), database URLs, the migrations runner (adopting old
SQLite files, several processes migrating one PostgreSQL at once, a schema newer than the code),
and the ledger's listing cursor under concurrent commits."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import asyncpg
import pytest
from postgres import StoreDb

from inventory.ledger import MIGRATIONS, Ledger, LedgerConfig, SchemaTooNew, ensure_schema
from inventory.model import Order
from live import store as live_store
from live.datadir import DataDir
from live.errors import StartupError
from live.redis_client import connect
from live.server import open_store
from live.store import Store
from live.supervisor import Supervisor
from storage import (
    DatabaseError,
    InvalidDatabaseUrl,
    UniqueViolation,
    UnsupportedServer,
    open_database,
    parse_database_url,
    redact,
)
from storage import postgres as pg
from storage.migrations import Component, VersionRecord, migrate
from storage.postgres import check_server_version, placeholders


def order(n: int, sale_id: str = "s1") -> Order:
    return Order(
        f"{sale_id}.{n}.1", sale_id, f"u{n}", 1, 999, 0, 999, None, None, f"r{n}", 1_700_000_000_000 + n
    )


# -- the interface, on both engines ------------------------------------------------------------


async def test_statements_transactions_and_errors_are_the_same_on_both_engines(store_db: StoreDb) -> None:
    db = await store_db.connect()
    try:
        assert db.engine == store_db.engine
        await db.execute("CREATE TABLE t (id TEXT PRIMARY KEY, n BIGINT NOT NULL CHECK (n >= 0), note TEXT)")
        assert await db.execute("INSERT INTO t (id, n, note) VALUES (?, ?, ?)", ("a", 2**40, "it's ?")) == 1
        await db.executemany("INSERT INTO t (id, n) VALUES (?, ?)", [("b", 1), ("c", 2)])
        assert await db.fetch("SELECT id, n, note FROM t WHERE note = 'it''s ?'") == [("a", 2**40, "it's ?")]
        assert await db.fetchone("SELECT COUNT(*) FROM t") == (3,)
        assert await db.fetchone("SELECT id FROM t WHERE id = ?", ("nope",)) is None
        assert await db.execute("UPDATE t SET n = n + 1 WHERE id IN (?, ?)", ("b", "c")) == 2
        assert await db.fetchone(f"SELECT {db.least('n', '?')} FROM t WHERE id = ?", (0, "b")) == (0,)
        with pytest.raises(UniqueViolation):
            await db.execute("INSERT INTO t (id, n) VALUES (?, ?)", ("a", 1))
        with pytest.raises(DatabaseError) as failed:  # (a CHECK: a database error, not a unique one)
            await db.execute("INSERT INTO t (id, n) VALUES (?, ?)", ("d", -1))
        assert not isinstance(failed.value, UniqueViolation)
        with pytest.raises(DatabaseError):
            await db.fetch("SELECT nothing FROM nowhere")
        # a batch that breaks a constraint writes nothing of itself
        with pytest.raises(UniqueViolation):
            await db.executemany("INSERT INTO t (id, n) VALUES (?, ?)", [("e", 1), ("a", 1)])
        # a transaction commits together, or not at all
        with pytest.raises(RuntimeError):
            async with db.transaction() as tx:
                await tx.lock("test")
                await tx.execute("INSERT INTO t (id, n) VALUES (?, ?)", ("f", 1))
                assert await tx.fetchone("SELECT COUNT(*) FROM t") == (4,)
                raise RuntimeError("changed my mind")
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO t (id, n) VALUES (?, ?)", ("g", 1))
        ids = await db.fetch(f"SELECT id FROM t ORDER BY {db.bytewise('id')}")
        assert ids == [("a",), ("b",), ("c",), ("g",)]
        assert await db.columns("t") == {"id", "n", "note"} and await db.columns("nowhere") == set()
        await db.ping()
    finally:
        await db.close()


def test_placeholders_are_translated_outside_quotes_only() -> None:
    assert placeholders("SELECT ? , ?") == "SELECT $1 , $2"
    assert placeholders("SELECT '?', \"a?\", ? WHERE x = 'it''s ?' AND y = ?") == (
        "SELECT '?', \"a?\", $1 WHERE x = 'it''s ?' AND y = $2"
    )


# -- database URLs and bad input ---------------------------------------------------------------


def test_database_urls_choose_the_engine() -> None:
    assert parse_database_url(None).engine == "sqlite" and parse_database_url(None).path is None
    assert parse_database_url("").engine == "sqlite"
    for url in (
        "postgresql://u:p@db.example:5432/live",
        "postgres://db/live",
        "postgresql://u@/live?host=/run",
    ):
        assert parse_database_url(url).engine == "postgresql"
    assert parse_database_url("sqlite:///var/lib/live/x.db").path == Path("/var/lib/live/x.db")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://u:hunter2@h/db", "unsupported database URL mysql://u:***@h/db"),
        ("http://u:hunter2@h/db", "must start with postgresql://"),
        ("not a url", "unsupported database URL"),
        ("postgresql://u:hunter2@h:99999/db", "malformed database URL postgresql://u:***@h:99999/db"),
        ("postgresql://u:hunter2@h:port/db", "malformed"),
        ("postgresql:///db", "no host"),
        ("sqlite://host/x.db", "sqlite:///path"),
    ],
)
def test_bad_database_urls_are_refused_without_their_password(url: str, message: str) -> None:
    with pytest.raises(InvalidDatabaseUrl) as refused:
        parse_database_url(url)
    assert message in str(refused.value) and "hunter2" not in str(refused.value)


def test_redact_hides_only_the_password() -> None:
    assert redact("postgresql://ann:s3cret@db:5432/live?sslmode=require") == (
        "postgresql://ann:***@db:5432/live?sslmode=require"
    )
    assert redact("postgresql://db/live") == "postgresql://db/live"


async def test_an_unreachable_postgresql_is_one_database_error_without_the_password(tmp_path: Path) -> None:
    url = "postgresql://ann:hunter2@127.0.0.1:1/live"
    with pytest.raises(DatabaseError) as failed:
        await open_database(parse_database_url(url))
    assert "cannot connect to PostgreSQL at postgresql://ann:***@127.0.0.1:1/live" in str(failed.value)
    assert "hunter2" not in str(failed.value)
    with pytest.raises(StartupError, match="cannot open the database postgresql://ann:\\*\\*\\*@") as stopped:
        await open_store(DataDir(tmp_path), url)
    assert "hunter2" not in str(stopped.value) and "\n" not in str(stopped.value)


async def test_a_missing_database_on_a_real_server_is_a_database_error(postgres_url: str) -> None:
    from postgres import with_database

    with pytest.raises(DatabaseError, match="does not exist"):
        await open_database(parse_database_url(with_database(postgres_url, "no_such_database_here")))


def test_postgresql_older_than_13_is_refused_naming_its_version() -> None:
    with pytest.raises(UnsupportedServer, match=r"PostgreSQL 12\.17 is too old: live needs PostgreSQL 13"):
        check_server_version("120017")
    with pytest.raises(UnsupportedServer, match=r"PostgreSQL 9\.6 is too old"):
        check_server_version("90624")
    check_server_version("130000")
    check_server_version("180006")


async def test_the_version_check_runs_on_a_real_server(
    database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The real path: the server's own server_version_num, read at connect. This one is new
    enough; with the bar raised past it, it is refused by name, as a PostgreSQL 12 would be."""
    connection = await asyncpg.connect(database_url)
    try:
        version_num = await connection.fetchval("SHOW server_version_num")
    finally:
        await connection.close()
    check_server_version(version_num)
    db = await open_database(parse_database_url(database_url))
    await db.close()
    monkeypatch.setattr(pg, "MINIMUM_VERSION_NUM", int(version_num) + 1)
    major, minor = divmod(int(version_num), 10000)
    with pytest.raises(UnsupportedServer, match=rf"PostgreSQL {major}\.{minor} is too old"):
        await open_database(parse_database_url(database_url))
    with pytest.raises(StartupError, match=rf"PostgreSQL {major}\.{minor} is too old"):
        await open_store(DataDir(tmp_path), database_url)


# -- migrations --------------------------------------------------------------------------------


async def test_several_nodes_migrating_one_postgresql_at_once_run_each_step_once(database_url: str) -> None:
    """Eight pools (as many nodes starting together) migrate the store and the ledger at once:
    each step's transaction takes the component's advisory lock and reads the version under
    it, so no step runs twice (a second CREATE TABLE or ADD COLUMN would fail)."""
    dbs = [await open_database(parse_database_url(database_url)) for _ in range(8)]
    try:
        results = await asyncio.gather(*(ensure_schema(db) for db in dbs))
        assert results == [len(MIGRATIONS)] * 8
        stores = await asyncio.gather(*(Store.open(None, database_url=database_url) for _ in range(4)))
        for store in stores:
            await store.close()
        assert await dbs[0].fetch("SELECT version FROM ledger_schema") == [(len(MIGRATIONS),)]
        assert await dbs[0].fetch("SELECT version FROM store_schema") == [(len(live_store.MIGRATIONS),)]
    finally:
        for db in dbs:
            await db.close()


async def test_steps_run_in_order_each_in_one_transaction(store_db: StoreDb) -> None:
    """A step that fails leaves the version where it was and nothing of itself."""
    db = await store_db.connect()
    try:
        good: Component = Component("thing", (("CREATE TABLE thing (a BIGINT)",),))
        record = VersionRecord("thing_schema")
        assert await migrate(db, good, record) == 1
        bad = Component(
            "thing",
            (*good.steps, ("ALTER TABLE thing ADD COLUMN b BIGINT", "ALTER TABLE thing ADD COLUMN b BIGINT")),
        )
        with pytest.raises(DatabaseError):
            await migrate(db, bad, record)
        assert await db.fetch("SELECT version FROM thing_schema") == [(1,)]
        assert await db.columns("thing") == {"a"}
        fixed = Component("thing", (*good.steps, ("ALTER TABLE thing ADD COLUMN b BIGINT",)))
        assert await migrate(db, fixed, record) == 2
        with pytest.raises(
            SchemaTooNew, match="thing's schema is at version 2, newer than this code's \\(1\\)"
        ):
            await migrate(db, good, record)
    finally:
        await db.close()


async def test_a_ledger_schema_newer_than_the_code_is_refused_on_postgresql(database_url: str) -> None:
    db = await open_database(parse_database_url(database_url))
    try:
        await ensure_schema(db)
        await db.execute("UPDATE ledger_schema SET version = ?", (len(MIGRATIONS) + 1,))
        with pytest.raises(SchemaTooNew, match="newer than this code"):
            await ensure_schema(db)
    finally:
        await db.close()


async def test_an_old_sqlite_ledger_is_adopted_and_its_cursors_stay_valid(
    tmp_path: Path, redis_url: str
) -> None:
    """A file whose ledger stood at version 2 (positions were rowids then): step 3 gives each
    order its rowid as position, so a cursor an HTTP client holds from before still means the
    same place; orders recorded after take the next positions."""
    path = tmp_path / "live.db"
    with sqlite3.connect(path) as db:
        db.executescript(
            "CREATE TABLE orders (id TEXT PRIMARY KEY, sale_id TEXT NOT NULL, user_id TEXT NOT NULL,"
            " quantity INTEGER NOT NULL CHECK (quantity > 0), amount_cents INTEGER NOT NULL,"
            " idempotency_key TEXT NOT NULL, state TEXT NOT NULL, created_at_ms INTEGER NOT NULL,"
            " unit_price_cents INTEGER NOT NULL DEFAULT 0, discount_cents INTEGER NOT NULL DEFAULT 0,"
            " coupon_id TEXT, team_code TEXT, UNIQUE (sale_id, user_id, idempotency_key));"
            " CREATE INDEX orders_by_sale ON orders(sale_id);"
            " CREATE TABLE ledger_schema (version INTEGER NOT NULL); INSERT INTO ledger_schema VALUES (2);"
        )
        for n in (5, 3, 9, 1):  # recorded out of id order; one of another sale in between
            o = order(n, "s1" if n != 9 else "s2")
            db.execute(
                "INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?, 'confirmed', ?, ?, ?, ?, ?)",
                (
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
                ),
            )
        rowids = dict(db.execute("SELECT id, rowid FROM orders").fetchall())
    redis = connect(redis_url)
    ledger = await Ledger.open(redis, path, LedgerConfig(key_prefix="adopt"), Supervisor())
    try:
        await ledger.start(consume=False)
        page, cursor = await ledger.orders_page("s1", 0, 10)
        assert [o.id for o in page] == ["s1.5.1", "s1.3.1", "s1.1.1"] and cursor == rowids["s1.1.1"]
        # a cursor handed out before the upgrade (the rowid of the first order) still works
        page, _ = await ledger.orders_page("s1", rowids["s1.5.1"], 10)
        assert [o.id for o in page] == ["s1.3.1", "s1.1.1"]
        await ledger.record([order(7)])
        page, later = await ledger.orders_page("s1", cursor, 10)
        assert [o.id for o in page] == ["s1.7.1"] and later == max(rowids.values()) + 1
    finally:
        await ledger.close()
        await redis.aclose()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version FROM ledger_schema").fetchall() == [(len(MIGRATIONS),)]
        assert db.execute(
            "SELECT COUNT(*) FROM orders WHERE position IS NULL OR position != rowid"
        ).fetchone() == (0,)


# -- the listing cursor under concurrent commits -----------------------------------------------


async def test_a_poller_never_skips_an_order_while_two_nodes_commit_at_once(
    database_url: str, redis_url: str
) -> None:
    """Two ledgers (two pools: two nodes) group-commit orders of one sale at once, while a
    poller follows the listing with its cursor. Positions grow in commit order (the insert
    transaction holds the ledger's advisory lock to its commit), so the poller sees every
    order exactly once: none committed behind its cursor."""
    redis = connect(redis_url)
    config = LedgerConfig(key_prefix="cursor")
    ledgers = [
        await Ledger.open(redis, None, config, Supervisor(), database_url=database_url) for _ in range(2)
    ]
    for ledger in ledgers:
        await ledger.start(consume=False)
    reader = await open_database(parse_database_url(database_url))
    total = 600
    try:

        async def writer(index: int) -> None:
            mine = [order(n) for n in range(index, total, 2)]
            for start in range(0, len(mine), 5):  # batches of 5, each several records at once
                await asyncio.gather(*(ledgers[index].record([o]) for o in mine[start : start + 5]))

        seen: list[str] = []
        done = asyncio.Event()

        async def poller() -> None:
            cursor = 0
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                finished = done.is_set()
                page, cursor = await ledgers[0].orders_page("s1", cursor, 7)
                seen.extend(o.id for o in page)
                if finished and not page:
                    return
                await asyncio.sleep(0)

        polling = asyncio.create_task(poller())
        await asyncio.gather(writer(0), writer(1))
        done.set()
        await polling
        assert len(seen) == total and sorted(seen) == sorted(order(n).id for n in range(total))
        positions = [r[0] for r in await reader.fetch("SELECT position FROM orders ORDER BY position")]
        assert positions == list(range(1, total + 1))  # dense, and unique
    finally:
        await reader.close()
        for ledger in ledgers:
            await ledger.close()
        await redis.aclose()
