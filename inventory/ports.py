"""What the inventory needs from the process it runs in, as protocols the app (live/) fulfils."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Protocol, TypeAlias

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

#: The Redis client the inventory runs on: one server, or a Redis Cluster (every script call is
#: single-slot: inventory/keys.py). The same union as live's ``RedisClient``, declared here so
#: the inventory never imports live/.
RedisClient: TypeAlias = aioredis.Redis | RedisCluster


class Supervisor(Protocol):
    """Runs the inventory's long-lived loops (the availability listener, the ledger's writer
    and consumer) and restarts them when they fail (the app's ``live.supervisor.Supervisor``).
    Declared here as well as in gateway/ports.py: the two packages never import each other."""

    def start(self, name: str, loop: Callable[[], Coroutine[Any, Any, None]]) -> asyncio.Task[None]:
        """Run ``loop()`` under supervision."""

    async def stop(self, names: Iterable[str] | None = None) -> None:
        """Stop the named loops and wait until they have ended."""

    async def cancel(self, tasks: Iterable[asyncio.Task[Any]]) -> None:
        """Cancel short-lived tasks and wait until they have ended."""
