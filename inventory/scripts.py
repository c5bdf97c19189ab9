"""The inventory's Lua scripts, loaded once per process and called by SHA.

Each script in ``inventory/lua`` gets ``lib.lua`` (shared helpers and the KEYS layout) put in
front of it. redis-py's ``Script`` calls EVALSHA and, on NOSCRIPT (a restarted or failed-over
Redis), loads the script again and retries.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript

NAMES = (
    "reserve",
    "confirm",
    "cancel",
    "sweep",
    "open_sale",
    "add_stock",
    "stop",
    "team",
    "coupons",
    "repair",
)


def source(name: str) -> str:
    """A script's full text as Redis runs it."""
    lua = resources.files("inventory").joinpath("lua")
    return lua.joinpath("lib.lua").read_text() + "\n" + lua.joinpath(f"{name}.lua").read_text()


class Scripts:
    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._scripts: dict[str, AsyncScript] = {name: redis.register_script(source(name)) for name in NAMES}

    async def load(self) -> None:
        """Load every script now, so the first sale's first request does not pay for it."""
        for script in self._scripts.values():
            await self._redis.script_load(script.script)

    async def call(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return await self._scripts[name](keys=keys, args=args)

    async def queue(self, pipe: Pipeline, name: str, keys: list[str], args: list[Any]) -> None:
        """Add a call to a pipeline (which loads the script first if Redis lacks it)."""
        await self._scripts[name](keys=keys, args=args, client=pipe)
