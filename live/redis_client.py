"""Connecting to Redis (embedded or the operator's) and checking it can run live."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from live.errors import StartupError

MIN_VERSION = (6, 2)


class RedisUnusableError(StartupError):
    pass


def redact_url(url: str) -> str:
    """The URL without its password (in the user part, or a ``password=`` query parameter, as
    the embedded Redis's URL has it), for messages and logs."""
    base, mark, query = url.partition("?")
    if mark and "password=" in query:
        pairs = parse_qsl(query, keep_blank_values=True)
        url = base + "?" + urlencode([(k, "***" if k == "password" else v) for k, v in pairs], safe="*")
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def parse_version(text: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", text)[:3])


def require_version(version: str, where: str) -> None:
    if parse_version(version) < MIN_VERSION:
        raise RedisUnusableError(
            f"Redis at {where} is version {version}; live needs {'.'.join(map(str, MIN_VERSION))} or newer"
        )


#: Redis connections one process opens at most; more concurrent commands wait for one.
MAX_CONNECTIONS = 64


def connect(url: str) -> aioredis.Redis:
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=MAX_CONNECTIONS, timeout=10, socket_connect_timeout=5, health_check_interval=30
    )
    return aioredis.Redis(connection_pool=pool)


async def check_server(client: aioredis.Redis, url: str) -> str:
    """Fail with one clear line unless the server answers, is >= 6.2 and runs Lua.

    Returns a description such as ``valkey 9.1.2`` or ``redis 7.2.4`` for the log.
    """
    where = redact_url(url)
    try:
        info = await client.info("server")
    except RedisError as exc:
        raise RedisUnusableError(f"cannot reach Redis at {where}: {exc}") from exc
    version = str(info.get("redis_version", "0"))
    require_version(version, where)
    try:
        if await client.eval("return 1", 0) != 1:
            raise RedisUnusableError(f"Redis at {where} runs Lua scripts wrongly")
    except ResponseError as exc:
        raise RedisUnusableError(f"Redis at {where} refuses Lua scripts: {exc}") from exc
    if "valkey_version" in info:
        return f"valkey {info['valkey_version']}"
    return f"redis {version}"
