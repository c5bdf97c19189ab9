"""Which engine a database URL means, and opening it.

No URL: SQLite in the data dir. ``postgresql://`` or ``postgres://``: PostgreSQL. ``sqlite:///``
followed by a path: that SQLite file. Anything else is refused before anything connects.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from storage.base import Database, Engine
from storage.errors import InvalidDatabaseUrl
from storage.postgres import PostgresDatabase
from storage.sqlite import SqliteDatabase, Synchronous

_POSTGRES_SCHEMES = ("postgresql", "postgres")


def redact(url: str) -> str:
    """``url`` without its password (for messages and logs)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unreadable URL>"
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    user = parts.username or ""
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, parts.fragment))


@dataclass(frozen=True)
class DatabaseTarget:
    engine: Engine
    #: The PostgreSQL URL (engine "postgresql"), or None.
    url: str | None = None
    #: The SQLite file (engine "sqlite"), or None for "the data dir's".
    path: Path | None = None

    @property
    def description(self) -> str:
        if self.url is not None:
            return redact(self.url)
        return str(self.path) if self.path is not None else "the data dir's SQLite file"


def parse_database_url(url: str | None) -> DatabaseTarget:
    """Raises InvalidDatabaseUrl (its message names the URL without its password)."""
    if url is None or not url.strip():
        return DatabaseTarget("sqlite")
    shown = redact(url)
    try:
        parts = urlsplit(url.strip())
        port = parts.port  # (raises ValueError for a port that is not a number, or too big)
    except ValueError as exc:
        raise InvalidDatabaseUrl(f"malformed database URL {shown}: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme in _POSTGRES_SCHEMES:
        if not parts.netloc and "host=" not in parts.query:
            raise InvalidDatabaseUrl(f"malformed database URL {shown}: no host (postgresql://user@host/db)")
        if port == 0:
            raise InvalidDatabaseUrl(f"malformed database URL {shown}: port 0")
        return DatabaseTarget("postgresql", url=url.strip())
    if scheme == "sqlite":
        path = unquote(parts.path)
        if parts.netloc or not path or path == "/":
            raise InvalidDatabaseUrl(f"malformed database URL {shown}: use sqlite:///path/to/file.db")
        return DatabaseTarget("sqlite", path=Path(path))
    raise InvalidDatabaseUrl(
        f"unsupported database URL {shown}: it must start with postgresql:// or postgres://"
        " (or sqlite:///path; leave it unset for SQLite in the data dir)"
    )


async def open_database(
    target: DatabaseTarget,
    default_sqlite: Path | None = None,
    *,
    synchronous: Synchronous = "NORMAL",
    foreign_keys: bool = False,
    max_connections: int = 5,
) -> Database:
    """Connect to ``target``; an SQLite target without a path is ``default_sqlite``.
    ``synchronous`` and ``foreign_keys`` are SQLite's (PostgreSQL commits durably, and always
    checks foreign keys)."""
    if target.engine == "postgresql":
        assert target.url is not None
        return await PostgresDatabase.open(target.url, target.description, max_connections=max_connections)
    path = target.path or default_sqlite
    if path is None:
        raise InvalidDatabaseUrl("no SQLite file given: pass a data dir or a database URL")
    return await SqliteDatabase.open(path, synchronous=synchronous, foreign_keys=foreign_keys)


__all__ = ["DatabaseTarget", "open_database", "parse_database_url", "redact"]
