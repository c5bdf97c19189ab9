"""The interface every engine implements: statements with ``?`` placeholders (written once,
translated by the engine), rows as tuples, and transactions that may serialise on a name."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Literal

Row = tuple[Any, ...]
Params = Sequence[Any]
Engine = Literal["sqlite", "postgresql"]


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for ``name`` (PostgreSQL's advisory locks take a bigint)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


class Executor(ABC):
    """What runs statements: a database (each call its own transaction) or a transaction."""

    engine: Engine

    @abstractmethod
    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; returns the number of rows it changed."""

    @abstractmethod
    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        """Run one statement once per row of parameters (all or nothing)."""

    @abstractmethod
    async def fetch(self, sql: str, params: Params = ()) -> list[Row]: ...

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        rows = await self.fetch(sql, params)
        return rows[0] if rows else None

    async def columns(self, table: str) -> set[str]:
        """The column names of ``table`` (empty if there is no such table)."""
        if self.engine == "sqlite":
            rows = await self.fetch("SELECT name FROM pragma_table_info(?)", (table,))
        else:
            rows = await self.fetch(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_schema = current_schema() AND table_name = ?",
                (table,),
            )
        return {str(r[0]) for r in rows}

    def bytewise(self, column: str) -> str:
        """``column`` for ORDER BY in byte order, as SQLite sorts text (PostgreSQL would sort by
        the database's locale)."""
        return column if self.engine == "sqlite" else f'{column} COLLATE "C"'

    def least(self, *expressions: str) -> str:
        """The SQL of the smallest of ``expressions`` (SQLite's scalar MIN, PostgreSQL's LEAST)."""
        function = "MIN" if self.engine == "sqlite" else "LEAST"
        return f"{function}({', '.join(expressions)})"


class Transaction(Executor):
    """Statements that commit together when the ``Database.transaction()`` block ends, and
    roll back together if it raises."""

    @abstractmethod
    async def lock(self, name: str) -> None:
        """Wait for, and hold to the end of this transaction, the lock called ``name``: every
        other transaction (of any process) that takes it waits. PostgreSQL: a transaction-scoped
        advisory lock. SQLite: nothing more to do, its transactions here take the database's one
        write lock when they begin (BEGIN IMMEDIATE)."""


class Database(Executor):
    @abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[Transaction]: ...

    @abstractmethod
    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise DatabaseError unless the database answers."""
        await self.fetch("SELECT 1")

    @property
    @abstractmethod
    def description(self) -> str:
        """Where the database is, for messages (no password)."""
