"""SQLite through aiosqlite: one connection, in WAL mode, its calls one at a time.

The connection runs in autocommit mode and this module begins its transactions itself, with
BEGIN IMMEDIATE: a transaction takes the database's write lock when it starts (other processes
wait up to the busy timeout), so what it reads stays true until it commits. That is what makes
``Transaction.lock`` a no-op here.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Literal

import aiosqlite

from storage.base import Database, Engine, Params, Row, Transaction
from storage.errors import DatabaseError, UniqueViolation

Synchronous = Literal["NORMAL", "FULL"]


@contextmanager
def _mapped_errors() -> Iterator[None]:
    try:
        yield
    except sqlite3.IntegrityError as exc:
        if "UNIQUE constraint failed" in str(exc):
            raise UniqueViolation(str(exc)) from exc
        raise DatabaseError(str(exc)) from exc
    except sqlite3.Error as exc:
        raise DatabaseError(str(exc)) from exc


class _Statements:
    """The statements of one connection, without taking the database's turn (the caller has)."""

    engine: Engine = "sqlite"

    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._connection = connection

    async def _execute(self, sql: str, params: Params) -> int:
        with _mapped_errors():
            cursor = await self._connection.execute(sql, tuple(params))
            changed = cursor.rowcount
            await cursor.close()
        return max(changed, 0)

    async def _executemany(self, sql: str, rows: Iterable[Params]) -> None:
        with _mapped_errors():
            await self._connection.executemany(sql, [tuple(r) for r in rows])

    async def _fetch(self, sql: str, params: Params) -> list[Row]:
        with _mapped_errors():
            async with self._connection.execute(sql, tuple(params)) as cursor:
                return [tuple(row) for row in await cursor.fetchall()]


class SqliteTransaction(Transaction):
    engine: Engine = "sqlite"

    def __init__(self, statements: _Statements) -> None:
        self._statements = statements

    async def execute(self, sql: str, params: Params = ()) -> int:
        return await self._statements._execute(sql, params)

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        await self._statements._executemany(sql, rows)

    async def fetch(self, sql: str, params: Params = ()) -> list[Row]:
        return await self._statements._fetch(sql, params)

    async def lock(self, name: str) -> None:
        """Held already: BEGIN IMMEDIATE took the write lock, which serialises every writer."""


class SqliteDatabase(Database):
    engine: Engine = "sqlite"

    def __init__(self, connection: aiosqlite.Connection, path: Path) -> None:
        self._statements = _Statements(connection)
        self._connection = connection
        self._path = path
        #: One transaction (or statement) at a time on the connection: tasks share it.
        self._turn = asyncio.Lock()

    @classmethod
    async def open(
        cls, path: Path, *, synchronous: Synchronous = "NORMAL", foreign_keys: bool = False
    ) -> SqliteDatabase:
        """``synchronous``: NORMAL (WAL: survives a process crash; an OS crash may lose the
        last transactions) or FULL (a commit survives a power cut)."""
        try:
            connection = await aiosqlite.connect(path, isolation_level=None)
        except (sqlite3.Error, OSError) as exc:
            raise DatabaseError(f"cannot open {path}: {exc}") from exc
        try:
            with _mapped_errors():
                await connection.execute("PRAGMA journal_mode=WAL")
                await connection.execute(f"PRAGMA synchronous={synchronous}")
                await connection.execute("PRAGMA busy_timeout=5000")
                if foreign_keys:
                    await connection.execute("PRAGMA foreign_keys=ON")
        except BaseException:
            await connection.close()
            raise
        return cls(connection, path)

    @property
    def description(self) -> str:
        return str(self._path)

    async def execute(self, sql: str, params: Params = ()) -> int:
        async with self._turn:
            return await self._statements._execute(sql, params)

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        async with self.transaction() as tx:
            await tx.executemany(sql, rows)

    async def fetch(self, sql: str, params: Params = ()) -> list[Row]:
        async with self._turn:
            return await self._statements._fetch(sql, params)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        async with self._turn:
            with _mapped_errors():
                await self._connection.execute("BEGIN IMMEDIATE")
            try:
                yield SqliteTransaction(self._statements)
            except BaseException:
                with _mapped_errors():
                    await self._connection.rollback()
                raise
            with _mapped_errors():
                await self._connection.commit()

    async def close(self) -> None:
        with _mapped_errors():
            await self._connection.close()
