"""The errors of the storage package: callers catch these, whichever engine is underneath."""

from __future__ import annotations


class DatabaseError(Exception):
    """A database failed: it could not be reached, or refused a statement (wraps
    sqlite3.Error, asyncpg's PostgresError, and the OSError of connecting)."""


class UniqueViolation(DatabaseError):
    """A row broke a UNIQUE constraint (or the primary key); nothing of the statement was
    written."""


class InvalidDatabaseUrl(ValueError):
    """A database URL that is malformed or of a scheme no engine takes. The message never
    holds the URL's password."""


class UnsupportedServer(DatabaseError):
    """The server is of a version this code does not support."""
