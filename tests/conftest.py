"""Fixtures: one real Redis for the session (started through the server's own embedded-Redis
code, or LIVE_TEST_REDIS_URL), and servers started in-process on a free port."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from live.auth import ANY_ROOM, Role
from live.redis_server import EmbeddedRedis, find_redis_server
from live.server import Running, running
from live.settings import Settings

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
