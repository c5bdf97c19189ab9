"""`--database-url` / LIVE_DATABASE_URL as an operator meets it: bad input is one line and the
right exit code (never the password), and `live serve --workers 2` on PostgreSQL hands the URL
to its workers, which share the one store of record."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import asyncpg
import pytest
from test_cli import ENV, Server, live

from live.store import MIGRATIONS as STORE_MIGRATIONS


@pytest.mark.parametrize(
    ("command", "args", "env", "code", "message"),
    [
        ("serve", ["--database-url", "mysql://ann:hunter2@h/db"], {}, 2, "unsupported database URL"),
        ("serve", [], {"LIVE_DATABASE_URL": "postgresql://ann:hunter2@h:x/db"}, 2, "malformed database URL"),
        ("reconcile", ["--database-url", "http://ann:hunter2@h/db"], {}, 2, "must start with postgresql://"),
        (
            "serve",
            ["--database-url", "postgresql://ann:hunter2@127.0.0.1:1/live"],
            {},
            1,
            "cannot open the database postgresql://ann:***@127.0.0.1:1/live: cannot connect to PostgreSQL",
        ),
        (
            "reconcile",
            ["--database-url", "postgresql://ann:hunter2@127.0.0.1:1/live"],
            {},
            1,
            "cannot connect to PostgreSQL at postgresql://ann:***@127.0.0.1:1/live",
        ),
    ],
)
def test_a_bad_database_url_is_one_line_and_the_right_exit_code(
    tmp_path: Path, command: str, args: list[str], env: dict[str, str], code: int, message: str
) -> None:
    result = live(command, "--data-dir", str(tmp_path / "d"), *args, env={**ENV, **env})
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len([line for line in lines if "error" in line]) == 1, result.stderr
    assert message in lines[-1], result.stderr
    assert "hunter2" not in result.stderr + result.stdout and "Traceback" not in result.stderr


def request(server: Server, path: str, body: dict[str, object] | None, token: str) -> object:
    return server.request(path, body, token)


async def test_workers_share_the_postgresql_store(tmp_path: Path, database_url: str) -> None:
    """`live serve --workers 2 --database-url ...`: the supervisor migrates once, each worker
    opens the same PostgreSQL (no SQLite file is made), and what one worker wrote, any reads."""
    server = Server(tmp_path / "data", "--workers", "2", "--database-url", database_url)
    try:
        server.wait_ready(timeout=30)
        token = live(
            "token", "--room", "*", "--role", "host", "--data-dir", str(server.data_dir)
        ).stdout.strip()
        for i in range(6):  # spread over both workers by the kernel (one shared port)
            request(server, "/api/rooms", {"title": f"room {i}", "id": f"room{i}"}, token)
        connection = await asyncpg.connect(database_url)
        try:
            rooms = {r["id"] for r in await connection.fetch("SELECT id FROM rooms")}
            version = await connection.fetchval("SELECT version FROM store_schema")
        finally:
            await connection.close()
        assert rooms == {f"room{i}" for i in range(6)} and version == len(STORE_MIGRATIONS)
        assert not (server.data_dir / "live.db").exists()
        with urllib.request.urlopen(server.url("/readyz"), timeout=5) as resp:
            assert json.loads(resp.read())["sqlite"] == "ok"
    finally:
        code, err = server.stop()
    assert code == 0, err
