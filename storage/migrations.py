"""One migrations runner for every component that keeps tables (the store, the ledger), on
both engines.

A component's schema is a list of steps: version N is reached by running step N (its
statements, in one transaction, with the new version recorded in the same transaction). Never
edit a released step: append one. The steps are the same SQL for both engines (portable types:
BIGINT for ms and cents, which in SQLite has INTEGER affinity, so a file made with INTEGER is
the same to SQLite).

Several processes (or nodes) may open one database at once and all run this: each step's
transaction first takes the component's lock (PostgreSQL: ``pg_advisory_xact_lock``; SQLite:
its write lock, taken by BEGIN IMMEDIATE), then reads the version under it, so a step runs
once and a second process finds it done.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from storage.base import Database, Engine, Transaction
from storage.errors import DatabaseError

#: A statement for both engines, or (where they differ) one per engine: an engine left out
#: runs nothing for it.
Statement = str | Mapping[Engine, str]
Step = tuple[Statement, ...]


class SchemaTooNew(DatabaseError):
    """The database's schema is newer than this code's: upgrade the code."""


async def _no_legacy(tx: Transaction) -> int:
    return 0


@dataclass(frozen=True)
class VersionRecord:
    """Where a component records its version. The default is a one-row table; ``adopt`` says
    where a database stands that has no row yet (0: new; a database made before the
    component kept its own record may be further on)."""

    table: str
    adopt: Callable[[Transaction], Awaitable[int]] = _no_legacy

    async def read(self, tx: Transaction) -> int:
        await tx.execute(f"CREATE TABLE IF NOT EXISTS {self.table} (version BIGINT NOT NULL)")
        row = await tx.fetchone(f"SELECT version FROM {self.table}")
        if row is not None:
            return int(row[0])
        version = await self.adopt(tx)
        await tx.execute(f"INSERT INTO {self.table} (version) VALUES (?)", (version,))
        return version

    async def write(self, tx: Transaction, version: int) -> None:
        await tx.execute(f"UPDATE {self.table} SET version = ?", (version,))


@dataclass(frozen=True)
class PragmaUserVersion(VersionRecord):
    """SQLite's ``PRAGMA user_version`` (in the file's header; transactional like a row)."""

    table: str = field(default="")

    async def read(self, tx: Transaction) -> int:
        row = await tx.fetchone("PRAGMA user_version")
        return int(row[0]) if row else 0

    async def write(self, tx: Transaction, version: int) -> None:
        await tx.execute(f"PRAGMA user_version = {int(version)}")


@dataclass(frozen=True)
class Component:
    #: Its name: the lock its migrations take, and in messages ("the ledger").
    name: str
    steps: tuple[Step, ...]


async def migrate(db: Database, component: Component, record: VersionRecord) -> int:
    """Bring ``component``'s schema to its newest version; returns it. Raises SchemaTooNew if
    the database is further on than this code."""
    newest = len(component.steps)
    while True:
        async with db.transaction() as tx:
            await tx.lock(f"live.migrations.{component.name}")
            version = await record.read(tx)
            if version > newest:
                raise SchemaTooNew(
                    f"the {component.name}'s schema is at version {version}, newer than this code's"
                    f" ({newest}): upgrade live"
                )
            if version == newest:
                return version
            for statement in component.steps[version]:
                sql = statement if isinstance(statement, str) else statement.get(tx.engine)
                if sql is not None:
                    await tx.execute(sql)
            await record.write(tx, version + 1)
