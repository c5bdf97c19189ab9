"""The data directory: the SQLite store of record (unless --database-url names a PostgreSQL),
embedded Redis files, the signing secret, and a lock so that two servers never share one directory."""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import stat
from pathlib import Path

from live.errors import StartupError

log = logging.getLogger(__name__)


class DataDirError(StartupError):
    pass


class DataDir:
    def __init__(self, path: Path) -> None:
        self.path = path.resolve()
        self._lock_fd: int | None = None

    @property
    def sqlite_path(self) -> Path:
        return self.path / "live.db"

    @property
    def redis_dir(self) -> Path:
        return self.path / "redis"

    @property
    def secret_path(self) -> Path:
        return self.path / "secret"

    def prepare(self) -> None:
        """Create the directory (owner-only) if needed and check that it is usable."""
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise DataDirError(f"cannot create data dir {self.path}: {exc.strerror}") from exc
        if not self.path.is_dir():
            raise DataDirError(f"data dir {self.path} is not a directory")
        if not os.access(self.path, os.R_OK | os.W_OK | os.X_OK):
            raise DataDirError(f"data dir {self.path} is not readable and writable by this user")

    def lock(self) -> None:
        """Hold an exclusive lock for the life of the process; the kernel drops it if we die."""
        self.prepare()
        self.warn_if_open()
        fd = os.open(self.path / "live.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise DataDirError(
                f"data dir {self.path} is in use by a running live server (pid {holder})"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd

    def warn_if_open(self) -> None:
        """Warn when other users may list or enter the directory. Its files are owner-only
        (the secret, SQLite's, Redis's), so it is not changed: the operator may mean it."""
        mode = stat.S_IMODE(self.path.stat().st_mode)
        if mode & 0o077:
            log.warning(
                "data dir is open to other users; its files are not, but consider chmod 700",
                extra={"path": str(self.path), "mode": f"{mode:04o}"},
            )

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def load_or_create_secret(self) -> str:
        """The HS256 secret, generated once with owner-only permissions."""
        self.prepare()
        if not self.secret_path.exists():
            # Write aside, then link into place: a concurrent reader never sees a partial file.
            tmp = self.path / f".secret.{os.getpid()}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(48) + "\n")
            try:
                os.link(tmp, self.secret_path)
            except FileExistsError:
                pass  # another process won the race; use its secret
            finally:
                tmp.unlink()
        try:
            secret = self.secret_path.read_text().strip()
        except OSError as exc:
            raise DataDirError(f"cannot read {self.secret_path}: {exc.strerror}") from exc
        if len(secret) < 32:
            raise DataDirError(f"{self.secret_path} is damaged: delete it to make a new one")
        return secret
