"""PostgreSQL through asyncpg: a small connection pool.

Statements are written once, for both engines, with ``?`` placeholders; ``placeholders``
turns them into asyncpg's ``$1, $2, ...`` here and nowhere else.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import lru_cache
from typing import Any

import asyncpg

from storage.base import Database, Engine, Params, Row, Transaction, lock_key
from storage.errors import DatabaseError, UniqueViolation, UnsupportedServer

#: The oldest PostgreSQL this code runs on (DROP DATABASE .. WITH (FORCE), and what the
#: statements here use, are 13's).
MINIMUM_VERSION_NUM = 130000


@lru_cache(maxsize=512)
def placeholders(sql: str) -> str:
    """``?`` -> ``$1``, ``$2``, ... outside string literals and quoted names."""
    out: list[str] = []
    number = 0
    quote: str | None = None
    for char in sql:
        if quote is not None:
            if char == quote:
                quote = None
        elif char in ("'", '"'):
            quote = char
        elif char == "?":
            number += 1
            out.append(f"${number}")
            continue
        out.append(char)
    return "".join(out)


def check_server_version(version_num: str) -> None:
    """``version_num``: the server's ``server_version_num`` (130004 for 13.4). Raises
    UnsupportedServer, naming the version, if it is older than 13."""
    try:
        number = int(version_num)
    except ValueError as exc:
        raise UnsupportedServer(
            f"PostgreSQL reported a version this code cannot read: {version_num!r}"
        ) from exc
    if number < MINIMUM_VERSION_NUM:
        # 10 and later: MMmmmm (12.17 is 120017); before: MMmmpp (9.6.24 is 90624)
        major, minor = divmod(number, 10000) if number >= 100000 else (number // 10000, number // 100 % 100)
        raise UnsupportedServer(f"PostgreSQL {major}.{minor} is too old: live needs PostgreSQL 13 or newer")


@contextmanager
def _mapped_errors() -> Iterator[None]:
    try:
        yield
    except asyncpg.UniqueViolationError as exc:
        raise UniqueViolation(str(exc)) from exc
    except (TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        raise DatabaseError(str(exc) or type(exc).__name__) from exc


def _changed(status: str) -> int:
    """Rows changed, from a command status ("INSERT 0 1", "UPDATE 3")."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


class PostgresTransaction(Transaction):
    engine: Engine = "postgresql"

    def __init__(self, connection: Any) -> None:
        self._connection = connection

    async def execute(self, sql: str, params: Params = ()) -> int:
        with _mapped_errors():
            return _changed(await self._connection.execute(placeholders(sql), *params))

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        with _mapped_errors():
            await self._connection.executemany(placeholders(sql), [tuple(r) for r in rows])

    async def fetch(self, sql: str, params: Params = ()) -> list[Row]:
        with _mapped_errors():
            return [tuple(r) for r in await self._connection.fetch(placeholders(sql), *params)]

    async def lock(self, name: str) -> None:
        with _mapped_errors():
            await self._connection.execute("SELECT pg_advisory_xact_lock($1)", lock_key(name))


class PostgresDatabase(Database):
    engine: Engine = "postgresql"

    def __init__(self, pool: Any, description: str) -> None:
        self._pool = pool
        self._description = description

    @classmethod
    async def open(
        cls, url: str, description: str, *, max_connections: int = 5, timeout_s: float = 10.0
    ) -> PostgresDatabase:
        """Connect (raises DatabaseError, with ``description`` and not the URL, if the server
        cannot be reached or refuses us; UnsupportedServer if it is older than 13)."""
        try:
            pool = await asyncpg.create_pool(
                dsn=url, min_size=1, max_size=max_connections, timeout=timeout_s, command_timeout=60
            )
        except (TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError, ValueError) as exc:
            reason = str(exc) or type(exc).__name__
            raise DatabaseError(f"cannot connect to PostgreSQL at {description}: {reason}") from exc
        database = cls(pool, description)
        try:
            row = await database.fetchone("SHOW server_version_num")
            check_server_version(str(row[0]) if row else "")
        except BaseException:
            await database.close()
            raise
        return database

    @property
    def description(self) -> str:
        return self._description

    async def execute(self, sql: str, params: Params = ()) -> int:
        with _mapped_errors():
            return _changed(await self._pool.execute(placeholders(sql), *params))

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        with _mapped_errors():
            # asyncpg runs executemany in one transaction (all or nothing).
            await self._pool.executemany(placeholders(sql), [tuple(r) for r in rows])

    async def fetch(self, sql: str, params: Params = ()) -> list[Row]:
        with _mapped_errors():
            return [tuple(r) for r in await self._pool.fetch(placeholders(sql), *params)]

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        with _mapped_errors():
            connection = await self._pool.acquire()
        try:
            with _mapped_errors():
                transaction = connection.transaction()
                await transaction.start()
            try:
                yield PostgresTransaction(connection)
            except BaseException:
                with _mapped_errors():
                    await transaction.rollback()
                raise
            with _mapped_errors():
                await transaction.commit()
        finally:
            await self._pool.release(connection)

    async def close(self) -> None:
        with _mapped_errors():
            await asyncio.wait_for(self._pool.close(), timeout=10)
