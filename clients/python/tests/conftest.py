"""A real ``live serve`` for the client's tests (the repository's server, ``python -m live``),
and tokens signed with its secret (HS256, minted here with the standard library: the client's
tests import neither the server nor a JWT library)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

SECRET = "client-test-secret-" + "s" * 40
REPO = Path(__file__).resolve().parents[3]
# The repository's protocol/vectors (the conformance vectors and their language) for the tests,
# wherever pytest is run from; live_client itself is the installed one.
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def mint(user: str, role: str = "viewer", room: str = "*", ttl_s: int = 600) -> str:
    """A token as ``live token`` makes it."""
    now = int(time.time())
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = _b64(
        json.dumps({"sub": user, "room": room, "role": role, "iat": now, "exp": now + ttl_s}).encode()
    )
    signature = hmac.new(SECRET.encode(), f"{header}.{claims}".encode(), hashlib.sha256).digest()
    return f"{header}.{claims}.{_b64(signature)}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """One ``live serve`` on a free port and its own data dir; ``restart`` keeps both."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = _free_port()
        self.log_path = data_dir.parent / f"{data_dir.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIVE_")}
        env.update(
            {
                "LIVE_SECRET": SECRET,
                "LIVE_LOG_LEVEL": "warning",
                "LIVE_BUY_IP_BURST": "100000",
                "LIVE_BUY_IP_RATE_PER_S": "100000",
                "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
            }
        )
        command = [
            sys.executable,
            "-m",
            "live",
            "serve",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
        ]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"live serve exited {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"live serve not ready in 60 s:\n{self.log_tail()}")

    def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("live") / "data")
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[Server]:
    """A server for one test (one it may restart)."""
    srv = Server(tmp_path / "data")
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def host_token() -> str:
    return mint("host1", "host")


def new_user() -> str:
    return f"u{secrets.token_hex(4)}"


def new_room_id() -> str:
    return f"r{uuid.uuid4().hex[:10]}"
