"""The data dir's files are its owner's only, and the embedded Redis needs its password,
on a unix socket and on the loopback port it falls back to (issue 11). Real Redis, real
SQLite, real sockets."""

from __future__ import annotations

import dataclasses
import logging
import socket
import stat
from pathlib import Path

import aiohttp
import pytest
import redis

from live.redis_server import EmbeddedRedis, find_redis_server
from live.server import running
from live.settings import Settings
from live.store import Store


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def ping_without_password(address: str | tuple[str, int]) -> bytes:
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(address)
        sock.sendall(b"*1\r\n$4\r\nPING\r\n")
        return sock.recv(256)


def long_dir(tmp_path: Path) -> Path:
    """A directory whose redis.sock path is too long for a unix socket."""
    return tmp_path / ("d" * 60) / ("e" * 60)


def test_the_embedded_redis_on_tcp_refuses_a_client_without_the_password(tmp_path: Path) -> None:
    server = EmbeddedRedis(long_dir(tmp_path), find_redis_server())
    server.start()
    try:
        assert server.url.startswith("redis://127.0.0.1:")
        port = redis.Redis.from_url(server.url).connection_pool.connection_kwargs["port"]
        assert ping_without_password(("127.0.0.1", port)).startswith(b"-NOAUTH")
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host="127.0.0.1", port=port, password="guess").ping()
        assert redis.Redis.from_url(server.url).ping()  # the URL it hands out carries it
        assert mode(server.password_path) == 0o600 and len(server.password) >= 32
    finally:
        server.stop()


def test_the_embedded_redis_on_a_unix_socket_needs_the_password_too(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "r", find_redis_server())
    server.start()
    try:
        assert ping_without_password(str(server.socket_path)).startswith(b"-NOAUTH")
        assert redis.Redis.from_url(server.url).ping()
        first = server.password
    finally:
        server.stop()
    server.start()  # the same password at the next start: its URL file stays usable
    try:
        assert server.password == first and redis.Redis.from_url(server.url_path.read_text()).ping()
    finally:
        server.stop()


def test_the_embedded_redis_files_are_owner_only(tmp_path: Path) -> None:
    directory = tmp_path / "r"
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)
    (directory / "redis.log").write_text("an old log\n")
    (directory / "redis.log").chmod(0o644)  # as an earlier version left it
    server = EmbeddedRedis(directory, find_redis_server())
    server.start()
    try:
        client = redis.Redis.from_url(server.url)
        client.set("k", "v")  # something in the AOF
        client.close()
        files = [p for p in [directory, *directory.rglob("*")] if not p.is_socket()]
        assert {"redis.conf", "redis.log", "redis.pid", "url", "password", "appendonlydir"} <= {
            p.name for p in files
        }
        loose = {str(p.relative_to(tmp_path)): oct(mode(p)) for p in files if mode(p) & 0o077}
        assert loose == {}
    finally:
        server.stop()


async def test_the_server_works_with_its_redis_on_tcp(tmp_path: Path) -> None:
    settings = Settings(data_dir=long_dir(tmp_path) / "data", secret="s" * 40, port=0)
    async with running(settings) as server, aiohttp.ClientSession() as http:
        async with http.get(server.url + "/readyz") as resp:
            assert resp.status == 200 and (await resp.json())["status"] == "ready"
        url = (settings.data_dir / "redis" / "url").read_text()
        assert url.startswith("redis://127.0.0.1:")
        port = redis.Redis.from_url(url).connection_pool.connection_kwargs["port"]
        assert ping_without_password(("127.0.0.1", port)).startswith(b"-NOAUTH")


async def test_the_database_files_are_owner_only_in_a_loose_data_dir(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    data = settings.data_dir
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    db = data / "live.db"
    await (await Store.open(db)).close()  # a database from an earlier run...
    for name in ("live.db", "live.db-wal", "live.db-shm"):
        (data / name).touch()
        (data / name).chmod(0o644)  # ...left readable by everyone
    caplog.set_level(logging.WARNING)
    async with running(dataclasses.replace(settings)) as server:
        await server.services.rooms.create("r", host_id="h", room_id="r")  # a write: WAL in use
        for name in ("live.db", "live.db-wal", "live.db-shm"):
            assert mode(data / name) == 0o600, name
    assert any(r.getMessage().startswith("data dir is open to other users") for r in caplog.records)
    assert mode(data) == 0o755  # warned about, not changed: the operator may mean it


async def test_a_new_database_and_its_wal_files_are_owner_only(settings: Settings) -> None:
    async with running(settings) as server:
        await server.services.rooms.create("r", host_id="h", room_id="r")
        names = {p.name: mode(p) for p in settings.data_dir.iterdir() if p.name.startswith("live.db")}
    assert set(names) == {"live.db", "live.db-wal", "live.db-shm"}
    assert set(names.values()) == {0o600}, names
    assert mode(settings.data_dir) == 0o700
