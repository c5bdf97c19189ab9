import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from live.errors import StartupError
from live.redis_client import (
    RedisUnusableError,
    check_server,
    connect,
    parse_version,
    require_version,
)
from live.redis_server import (
    EmbeddedRedis,
    RedisServerError,
    find_redis_server,
)
from live.redis_server import process_alive as alive


def test_binary_is_found_without_any_system_redis() -> None:
    binary = find_redis_server()
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True)
    assert "server v=" in out.stdout


def test_missing_binary_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RedisServerError, match="missing or not executable"):
        find_redis_server(str(tmp_path / "nope"))


def test_start_persist_restart_stop(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "r", find_redis_server())
    server.start()
    assert server.url.startswith("unix://")
    client = redis.Redis.from_url(server.url)
    client.set("stock", 500)
    client.close()
    pid = server.process.pid  # type: ignore[union-attr]
    server.stop()
    assert not alive(pid)
    assert not server.socket_path.exists()

    server.start()  # AOF brings the data back
    client = redis.Redis.from_url(server.url)
    assert client.get("stock") == b"500"
    assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
    client.close()
    server.stop()


def test_long_paths_fall_back_to_a_loopback_port(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    server = EmbeddedRedis(deep, find_redis_server())
    server.start()
    try:
        assert server.url.startswith("redis://127.0.0.1:")
        assert redis.Redis.from_url(server.url).ping()
    finally:
        server.stop()


def test_stale_redis_from_a_crash_is_stopped_and_replaced(tmp_path: Path) -> None:
    first = EmbeddedRedis(tmp_path / "r", find_redis_server())
    first.start()
    orphan = first.process.pid  # type: ignore[union-attr]
    first.process = None  # forget it, as a crashed parent would
    second = EmbeddedRedis(tmp_path / "r", find_redis_server())
    second.start()
    try:
        deadline = time.monotonic() + 5
        while alive(orphan) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(orphan)
        assert redis.Redis.from_url(second.url).ping()
    finally:
        second.stop()


def test_a_server_that_exits_at_start_reports_why(tmp_path: Path) -> None:
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\necho 'FATAL: bad config' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(RedisServerError, match=r"exited with code 3.*bad config"):
        EmbeddedRedis(tmp_path / "r", fake).start()


def test_child_dies_with_its_parent(tmp_path: Path) -> None:
    """The kernel stops Redis when the process that started it is SIGKILLed."""
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from live.redis_server import EmbeddedRedis, find_redis_server\n"
        "s = EmbeddedRedis(Path(sys.argv[1]), find_redis_server())\n"
        "s.start()\n"
        "print(s.process.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "r")], stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    assert alive(child)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(child)


async def test_version_and_scripting_check_against_the_real_server(redis_url: str) -> None:
    client = connect(redis_url)
    try:
        kind = await check_server(client, redis_url)
    finally:
        await client.aclose()
    assert kind.split()[0] in ("redis", "valkey")


def test_version_rule() -> None:
    assert parse_version("7.2.4") == (7, 2, 4)
    require_version("6.2.0", "x")
    require_version("7.0.15", "x")
    with pytest.raises(RedisUnusableError, match=r"version 6\.0\.9; live needs 6\.2 or newer"):
        require_version("6.0.9", "x")
    assert issubclass(RedisUnusableError, StartupError)


async def test_unreachable_redis_is_a_startup_error(tmp_path: Path) -> None:
    url = f"unix://{tmp_path}/none.sock"
    client = connect(url)
    try:
        with pytest.raises(RedisUnusableError, match="cannot reach Redis"):
            await check_server(client, url)
    finally:
        await client.aclose()
