"""Connecting to Redis (embedded or the operator's) and checking it can run live.

``open_redis`` asks the server at the URL whether it is a Redis Cluster node (``INFO cluster``:
``cluster_enabled:1``) and returns redis-py's cluster client then, the plain client otherwise:
no flag. The cluster client retries, with bounded exponential backoff, what a failover or a
resharding throws at it (connection errors, CLUSTERDOWN, TRYAGAIN, MOVED/ASK past redis-py's own
redirections), and what it still cannot do fails as a ``RedisError``: the app answers that
``unavailable``, so a buyer never waits on a failover for longer than the retry budget.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.asyncio.connection import AbstractConnection, Connection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ClusterError,
    ConnectionError,
    MovedError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TimeoutError,
    TryAgainError,
)

from live.errors import StartupError

#: A Redis client of live: one server (or a server with replicas), or a Redis Cluster.
RedisClient: TypeAlias = aioredis.Redis | RedisCluster

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


class _WritesFailAsConnectionErrors:
    """A write on a connection whose transport was torn down under it (the peer reset it, or
    redis-py's cluster client disconnected the node's free connections while another task had
    just taken one) fails inside asyncio with AttributeError / TypeError / RuntimeError rather
    than OSError (redis-py#4287): no retry and no ``except RedisError`` knows those, so a buyer
    heard ``internal`` and background loops crashed. Here they are the ConnectionError they
    are; redis-py has already dropped the connection (its ``except BaseException``)."""

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        try:
            await super().send_packed_command(command, check_health)  # type: ignore[misc]
        except (AttributeError, TypeError, RuntimeError) as exc:
            raise ConnectionError(f"the connection closed while writing to it ({exc!r})") from exc


_C = TypeVar("_C", bound=AbstractConnection)
_GUARDED: dict[type[AbstractConnection], type[AbstractConnection]] = {}


def _guarded(connection_class: type[_C]) -> type[_C]:
    """``connection_class`` (plain, TLS or unix socket, as the URL says) with the fix above."""
    if issubclass(connection_class, _WritesFailAsConnectionErrors):
        return connection_class
    if connection_class not in _GUARDED:
        _GUARDED[connection_class] = type(
            connection_class.__name__, (_WritesFailAsConnectionErrors, connection_class), {}
        )
    return _GUARDED[connection_class]  # type: ignore[return-value]  # (a subclass of it)


def connect(url: str) -> aioredis.Redis:
    """A client of one Redis server (no cluster detection: ``open_redis`` does that)."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=MAX_CONNECTIONS, timeout=10, socket_connect_timeout=5, health_check_interval=30
    )
    pool.connection_class = _guarded(pool.connection_class)
    return aioredis.Redis(connection_pool=pool)


SLOTS = 16384

#: What a failover or a resharding makes a cluster command fail with for a while: worth retrying.
#: redis-py's own retries (``CLUSTER_ATTEMPTS``) are immediate, so on their own they are spent
#: before a replica is promoted; these come back after a backoff. RedisClusterException (not a
#: RedisError: "slot not covered", no node reachable at (re)initialization) is one too.
FAILOVER_ERRORS: tuple[type[Exception], ...] = (
    ConnectionError,
    TimeoutError,
    ClusterDownError,
    ClusterError,
    TryAgainError,
    MovedError,
    AskError,
    ReadOnlyError,
    RedisClusterException,
)
#: Backoff between the attempts: 0.05, 0.1, 0.2, 0.4, 0.8 s, then 1 s each, within the budget.
FAILOVER_BACKOFF = ExponentialBackoff(cap=1.0, base=0.025)
#: A command retried this long at most (then it fails: ``unavailable`` to a buyer). An automatic
#: failover takes about twice cluster-node-timeout (15 s by default; set it lower to fail over
#: within this), a manual CLUSTER FAILOVER well under a second.
FAILOVER_BUDGET_S = 8.0
#: Connections to each cluster node at most: MAX_CONNECTIONS for commands (their turns), as many
#: again for pipelines and subscribers.
NODE_CONNECTIONS = 2 * MAX_CONNECTIONS
#: redis-py's own attempts per try (re-reading the slot map between them), and per pipeline.
CLUSTER_ATTEMPTS = 3
#: A command on a cluster node that has not answered in this long failed (a node cut off by the
#: network does not reset the connection); longer than any blocking read live makes (1 s).
CLUSTER_SOCKET_TIMEOUT_S = 10.0
T = TypeVar("T")


async def with_failover_retries(
    attempt: Callable[[], Awaitable[T]], budget_s: float = FAILOVER_BUDGET_S
) -> T:
    """``attempt()`` again after a backoff while it fails with one of FAILOVER_ERRORS, for at
    most ``budget_s``; then its last error, as a RedisError (a RedisClusterException becomes a
    ClusterError) so that every caller's ``except RedisError`` sees it."""
    deadline = time.monotonic() + budget_s
    failures = 0
    while True:
        try:
            return await attempt()
        except FAILOVER_ERRORS as exc:
            failures += 1
            delay = FAILOVER_BACKOFF.compute(failures)
            if time.monotonic() + delay >= deadline:
                if isinstance(exc, RedisError):
                    raise
                raise ClusterError(f"Redis Cluster unavailable: {exc}") from exc
            await asyncio.sleep(delay)


class FailoverRetryingCluster(RedisCluster):
    """redis-py's cluster client, with every command retried through failovers (see the module
    docstring). A retried command may have run before its connection broke, as with redis-py's
    own retries: live's scripts are safe so (a confirm or a request with a key gives its first
    answer again; a keyless hold made twice expires)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # redis-py's cluster nodes refuse a command when their connections are all busy (where
        # the single server's BlockingConnectionPool waits): so commands wait here for one of
        # MAX_CONNECTIONS turns, and each node has room for them and for pipelines and pub/sub.
        self._turns = asyncio.Semaphore(MAX_CONNECTIONS)
        # every node's connections, those of the nodes it learns of later too, written safely
        kwargs = self.nodes_manager.connection_kwargs
        kwargs["connection_class"] = _guarded(kwargs.get("connection_class", Connection))
        for node in self.nodes_manager.startup_nodes.values():
            node.connection_class = _guarded(node.connection_class)

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async def attempt() -> Any:
            async with self._turns:
                # (redis-py pops target_nodes from the kwargs it gets: each attempt gets a copy)
                return await RedisCluster.execute_command(self, *args, **dict(kwargs))

        return await with_failover_retries(attempt)

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> ClusterPipeline:
        if shard_hint:
            raise RedisClusterException("shard_hint is deprecated in cluster mode")
        return _Pipeline(self, transaction)  # type: ignore[abstract]  # (as redis-py makes its own)


class _Pipeline(ClusterPipeline):
    """A pipeline whose failures are RedisErrors. It is not retried here (its queue is gone once
    it ran); redis-py retries it CLUSTER_ATTEMPTS times, 0.25 s apart."""

    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> list[Any]:
        try:
            return await super().execute(raise_on_error, allow_redirections)
        except RedisClusterException as exc:
            raise ClusterError(f"Redis Cluster unavailable: {exc}") from exc


async def open_redis(url: str) -> RedisClient:
    """The client for the Redis at ``url``: a cluster client when it is a Redis Cluster node,
    a plain one otherwise. Fails with one clear line (RedisUnusableError) when the server does
    not answer, or is a cluster that cannot serve every slot."""
    where = redact_url(url)
    probe = aioredis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=10)
    try:
        info = await probe.info("cluster")
        cluster_info = None
        if info.get("cluster_enabled"):
            cluster_info = await probe.execute_command("CLUSTER", "INFO")  # type: ignore[no-untyped-call]
    except RedisError as exc:
        raise RedisUnusableError(f"cannot reach Redis at {where}: {exc}") from exc
    finally:
        await probe.aclose()
    if cluster_info is None:
        return connect(url)
    state = _cluster_info_fields(cluster_info)
    assigned = int(state.get("cluster_slots_assigned", "0"))
    if assigned < SLOTS:
        raise RedisUnusableError(
            f"Redis Cluster at {where} has {assigned} of {SLOTS} slots assigned "
            "(assign every slot, e.g. with CLUSTER ADDSLOTSRANGE, before starting live)"
        )
    if state.get("cluster_state") != "ok":
        raise RedisUnusableError(
            f"Redis Cluster at {where} is in state {state.get('cluster_state')!r}, not 'ok' "
            f"({state.get('cluster_slots_fail', '?')} slots failing; is a master down without a replica?)"
        )
    cluster = FailoverRetryingCluster.from_url(
        url,
        retry=Retry(NoBackoff(), CLUSTER_ATTEMPTS),
        max_connections=NODE_CONNECTIONS,
        socket_connect_timeout=5,
        socket_timeout=CLUSTER_SOCKET_TIMEOUT_S,
        health_check_interval=30,
    )
    try:
        await with_failover_retries(cluster.initialize)
    except RedisError as exc:
        await cluster.aclose()
        raise RedisUnusableError(f"cannot use the Redis Cluster at {where}: {exc}") from exc
    return cluster


def _cluster_info_fields(reply: Any) -> dict[str, str]:
    text = reply.decode() if isinstance(reply, bytes) else str(reply)
    fields = {}
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep:
            fields[name.strip()] = value.strip()
    return fields


async def check_server(client: RedisClient, url: str) -> str:
    """Fail with one clear line unless the server (each master of a cluster) answers, is
    >= 6.2 and runs Lua.

    Returns a description such as ``valkey 9.1.2`` or ``redis 7.2.4`` for the log (with
    ``cluster of N masters`` for a cluster).
    """
    where = redact_url(url)
    if isinstance(client, RedisCluster):
        primaries = client.get_primaries()
        kinds = {await _check_one(client, where, node) for node in primaries}
        return f"{', '.join(sorted(kinds))} (cluster of {len(primaries)} masters)"
    return await _check_one(client, where, None)


async def _check_one(client: RedisClient, where: str, node: ClusterNode | None) -> str:
    if node is not None:
        where = f"{where} (master {node.name})"
    target: dict[str, Any] = {} if node is None else {"target_nodes": node}
    try:
        info = await client.info("server", **target)
    except RedisError as exc:
        raise RedisUnusableError(f"cannot reach Redis at {where}: {exc}") from exc
    version = str(info.get("redis_version", "0"))
    require_version(version, where)
    try:
        if await client.execute_command("EVAL", "return 1", 0, **target) != 1:
            raise RedisUnusableError(f"Redis at {where} runs Lua scripts wrongly")
    except ResponseError as exc:
        raise RedisUnusableError(f"Redis at {where} refuses Lua scripts: {exc}") from exc
    if "valkey_version" in info:
        return f"valkey {info['valkey_version']}"
    return f"redis {version}"
