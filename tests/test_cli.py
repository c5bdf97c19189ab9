"""`live` as an operator runs it: a real process, its embedded Redis, signals, exit codes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from live.redis_server import process_alive

# The server must find its Redis binary by itself: no LIVE_* settings leak in from outside.
ENV = {k: v for k, v in os.environ.items() if not k.startswith("LIVE_")}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def live(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "live", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env or ENV,
    )


class Server:
    def __init__(self, data_dir: Path, *extra: str) -> None:
        self.port = free_port()
        self.data_dir = data_dir
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "live",
                "serve",
                "--data-dir",
                str(data_dir),
                "--port",
                str(self.port),
                *extra,
            ],
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.proc.communicate()[1]
            try:
                with urllib.request.urlopen(self.url("/readyz"), timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("server not ready in time")

    def redis_pid(self) -> int:
        return int((self.data_dir / "redis" / "redis.pid").read_text())

    def request(self, path: str, body: dict[str, object] | None = None, token: str = "") -> object:
        req = urllib.request.Request(
            self.url(path),
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {token}"},
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> tuple[int, str]:
        self.proc.send_signal(sig)
        _, err = self.proc.communicate(timeout=30)
        return self.proc.returncode, err


@pytest.fixture
def started(tmp_path: Path) -> Iterator[Server]:
    server = Server(tmp_path / "data")
    yield server
    if server.proc.poll() is None:
        server.proc.kill()
        server.proc.communicate()


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while process_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_sigterm_stops_everything_and_a_restart_keeps_the_rooms(started: Server) -> None:
    started.wait_ready()
    redis_pid = started.redis_pid()
    assert process_alive(redis_pid)
    token = live("token", "--room", "*", "--role", "host", "--data-dir", str(started.data_dir)).stdout.strip()
    started.request("/api/rooms", {"title": "夜场 night", "id": "night"}, token)
    code, err = started.stop(signal.SIGTERM)
    assert code == 0, err
    assert wait_gone(redis_pid)
    assert "shutting down" in err and "redis stopped" in err
    assert token not in err  # no token in the logs

    again = Server(started.data_dir)
    try:
        again.wait_ready()
        rooms = again.request("/api/rooms", token=token)
        assert [r["id"] for r in rooms["rooms"]] == ["night"]  # type: ignore[index]
    finally:
        assert again.stop()[0] == 0


def test_sigkill_of_the_server_takes_redis_down_too(started: Server) -> None:
    started.wait_ready()
    redis_pid = started.redis_pid()
    started.stop(signal.SIGKILL)
    assert wait_gone(redis_pid)
    # and the next start on the same data dir recovers (stale socket and pid file)
    again = Server(started.data_dir)
    try:
        again.wait_ready()
    finally:
        again.stop()


def test_second_signal_forces_exit(started: Server) -> None:
    started.wait_ready()
    started.proc.send_signal(signal.SIGINT)
    started.proc.send_signal(signal.SIGINT)
    started.proc.communicate(timeout=30)
    assert started.proc.returncode in (0, 1)


def test_json_logs(tmp_path: Path) -> None:
    server = Server(tmp_path / "d", "--log-format", "json")
    server.wait_ready()
    _, err = server.stop()
    events = [json.loads(line)["event"] for line in err.splitlines()]
    assert "listening" in events and "stopped" in events


def test_port_in_use_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = live("serve", "--data-dir", str(tmp_path / "d"), "--port", str(port), "--log-level", "error")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"live: error: 127.0.0.1:{port} is already in use"]


def test_data_dir_in_use(started: Server) -> None:
    started.wait_ready()
    result = live("serve", "--data-dir", str(started.data_dir), "--port", str(free_port()))
    assert result.returncode == 1
    assert "is in use by a running live server" in result.stderr


@pytest.mark.parametrize(
    ("args", "env", "code", "message"),
    [
        (["serve", "--bogus"], {}, 2, "unrecognized arguments: --bogus"),
        (["serve", "--port", "x"], {}, 2, "invalid int value"),
        (["serve", "--redis-url", "http://nope"], {}, 2, "redis_url must start with"),
        (["serve"], {"LIVE_PORT": "-5"}, 2, "port must be 0..65535"),
        (
            ["serve"],
            {"LIVE_REDIS_SERVER": "/nonexistent/redis-server"},
            1,
            "missing or not executable",
        ),
        (["serve", "--redis-url", "redis://127.0.0.1:1/0"], {}, 1, "cannot reach Redis"),
        (["token", "--room", "r"], {}, 2, "the following arguments are required: --role"),
        (["token", "--room", "r", "--role", "host", "--ttl", "0"], {}, 2, "--ttl must be"),
    ],
)
def test_bad_input_gives_one_line_and_the_right_exit_code(
    tmp_path: Path, args: list[str], env: dict[str, str], code: int, message: str
) -> None:
    result = live(*args, "--data-dir", str(tmp_path / "d"), env={**ENV, **env})
    assert result.returncode == code
    lines = result.stderr.strip().splitlines()
    assert len([line for line in lines if "error" in line]) == 1, result.stderr
    assert message in lines[-1]
    assert "Traceback" not in result.stderr


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    env = {**ENV, "LIVE_REDIS_SERVER": "/nonexistent"}
    result = live("serve", "--debug", "--data-dir", str(tmp_path / "d"), env=env)
    assert result.returncode == 1 and "Traceback" in result.stderr


def test_data_dir_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    result = live("serve", "--data-dir", str(tmp_path / "file"))
    assert result.returncode == 1 and "data dir" in result.stderr


def test_help_shows_examples_and_version() -> None:
    for args in (["--help"], ["serve", "--help"], ["token", "--help"]):
        result = live(*args)
        assert result.returncode == 0 and "examples:" in result.stdout
    assert live("version").stdout.startswith("live ")


def test_token_is_minted_with_the_data_dir_secret(tmp_path: Path) -> None:
    token = live(
        "token", "--room", "shop", "--role", "viewer", "--user", "bob", "--data-dir", str(tmp_path)
    ).stdout.strip()
    secret = tmp_path / "secret"
    assert secret.stat().st_mode & 0o777 == 0o600
    import jwt

    claims = jwt.decode(token, secret.read_text().strip(), algorithms=["HS256"])
    assert (claims["sub"], claims["room"], claims["role"]) == ("bob", "shop", "viewer")
