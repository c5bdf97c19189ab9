"""`live reconcile` as an operator runs it, beside a real server with its embedded Redis: clean
after a rush, catches a corrupted counter and lost Redis writes, and `--repair` heals them. On
both stores of record: SQLite in the data dir, and a PostgreSQL (``--database-url``), where it
runs from anywhere: another data dir, with no SQLite file."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis
from test_cli import Server, live
from wsclient import Client

from inventory.keys import SaleKeys
from live.auth import Auth, Role
from live.redis_server import EmbeddedRedis, find_redis_server


async def rush(server: Server, token: str, buyers: int, stock: int) -> str:
    """Open a sale of ``stock`` units and let ``buyers`` buy one each; returns the sale id."""
    server.request("/api/rooms", {"title": "rush", "id": "rush"}, token)
    product = server.request("/api/rooms/rush/products", {"title": "tea", "price_cents": 500}, token)
    sale = server.request(
        "/api/rooms/rush/sales",
        {"product_id": product["id"], "stock": stock, "per_user_limit": 1},  # type: ignore[index]
        token,
    )
    sale_id: str = sale["id"]  # type: ignore[index]
    auth = Auth.hs256((server.data_dir / "secret").read_text().strip())

    async def buy(session: aiohttp.ClientSession, user: str) -> bool:
        client = await Client.connect(session, "rush", auth.mint(user, "rush", Role.VIEWER, 600))
        await client.send({"type": "reserve", "rid": "r", "sale_id": sale_id, "quantity": 1})
        reply = await client.recv_until(lambda m: m.get("rid") == "r")
        if reply["type"] != "ack":
            return False
        await client.send({"type": "confirm", "rid": "c", "hold_id": reply["hold_id"]})
        return bool((await client.recv_until(lambda m: m.get("rid") == "c"))["type"] == "ack")

    async with aiohttp.ClientSession(base_url=server.url("")) as session:
        bought = await asyncio.gather(*(buy(session, f"u{i}") for i in range(buyers)))
    assert sum(bought) == stock  # exactly the stock, no more
    return sale_id


@pytest.fixture(params=["sqlite", "postgresql"])
def started(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    url: str | None = None if request.param == "sqlite" else request.getfixturevalue("database_url")
    server = Server(tmp_path / "data", *(["--database-url", url] if url else []))
    server.database_url = url  # type: ignore[attr-defined]
    yield server
    if server.proc.poll() is None:
        server.proc.kill()
        server.proc.communicate()


def database_args(server: Server) -> list[str]:
    url: str | None = getattr(server, "database_url", None)
    return ["--database-url", url] if url else []


def reconcile(server: Server, *args: str) -> tuple[int, str]:
    done = live("reconcile", "--data-dir", str(server.data_dir), *database_args(server), *args)
    return done.returncode, done.stdout + done.stderr


async def test_reconcile_beside_a_running_server(started: Server, tmp_path: Path) -> None:
    started.wait_ready()
    token = live("token", "--room", "*", "--role", "host", "--data-dir", str(started.data_dir)).stdout.strip()
    sale_id = await rush(started, token, buyers=30, stock=20)

    code, out = reconcile(started)
    assert code == 0, out
    expected = "total 20 = available 0 + held 0 + sold 20; ledger 20 orders, 20 units: clean"
    assert f"sale {sale_id}: {expected}" in out
    if database_args(started):  # from another machine: its own (empty) data dir, no SQLite file
        redis_url = (started.data_dir / "redis" / "url").read_text().strip()
        elsewhere = tmp_path / "elsewhere"
        done = live(
            "reconcile", "--data-dir", str(elsewhere), "--redis-url", redis_url, *database_args(started)
        )
        assert done.returncode == 0 and f"sale {sale_id}: {expected}" in done.stdout, done.stderr
        assert not (elsewhere / "live.db").exists()

    # A running server heals such damage itself (test_sales); an operator meets it when Redis
    # comes back from a crash or a restore while no server runs. Play that: stop the server,
    # start its Redis alone, damage the sale, stop Redis; then reconcile (which starts it).
    assert started.stop(signal.SIGTERM)[0] == 0
    keys = SaleKeys("live", sale_id)
    redis_server = EmbeddedRedis(started.data_dir / "redis", find_redis_server(None))
    redis_server.start()
    redis = aioredis.Redis.from_url(redis_server.url)
    try:
        await redis.hincrby(keys.sale, "available", 1)  # a corrupted counter
        lost = [k for k in await redis.hkeys(keys.orders)][:3]  # and three orders lost
        await redis.hdel(keys.orders, *lost)
        await redis.hincrby(keys.sale, "sold", -3)
    finally:
        await redis.aclose()
        redis_server.stop()

    code, out = reconcile(started, "--sale", sale_id)
    assert code == 3, out
    assert "invariant broken: total 20 != 1 + 0 + 17 = 18" in out
    assert out.count("is in the ledger but not counted in Redis") == 3, out

    code, out = reconcile(started, "--sale", sale_id, "--repair")
    assert code == 0 and "available 0 + held 0 + sold 20" in out and "clean" in out, out
    code, out = reconcile(started)
    assert code == 0 and "clean" in out, out


def test_reconcile_of_an_unknown_sale_or_data_dir(tmp_path: Path) -> None:
    done = live("reconcile", "--data-dir", str(tmp_path / "nothing"))
    assert done.returncode == 2 and "no ledger" in done.stderr
