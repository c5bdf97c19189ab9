"""Database engines for the store of record: SQLite (aiosqlite, the embedded default) and
PostgreSQL (asyncpg), behind one small interface (storage.base.Database).

A bottom package: it imports nothing of the project; inventory/ and live/ import it.
"""

from storage.base import Database, Transaction
from storage.errors import DatabaseError, InvalidDatabaseUrl, UniqueViolation, UnsupportedServer
from storage.url import DatabaseTarget, open_database, parse_database_url, redact

__all__ = [
    "Database",
    "DatabaseError",
    "DatabaseTarget",
    "InvalidDatabaseUrl",
    "Transaction",
    "UniqueViolation",
    "UnsupportedServer",
    "open_database",
    "parse_database_url",
    "redact",
]
