"""The inventory's Lua scripts, loaded once per process and called by SHA.

Each script in ``inventory/lua`` gets ``lib.lua`` (shared helpers and the KEYS layout) put in
front of it. redis-py's ``Script`` calls EVALSHA and, on NOSCRIPT (a restarted or failed-over
Redis), loads the script again and retries. On a Redis Cluster, EVALSHA goes to the master of
the slot of its keys (every call's keys share one hash tag), and SCRIPT LOAD to every master: a
replica promoted by a failover never loaded them (SCRIPT LOAD is not replicated), so its first
EVALSHA answers NOSCRIPT and the script is loaded again, on every master.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from typing import Any

from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript

from inventory.ports import RedisClient

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
    "due",
    "reschedule",
    "mine",
)

#: The scripts that change a sale in a way a sweep must look at soon (a new hold to expire, a
#: team deadline, stock left to announce, a new phase): the caller is told, and its sweeper
#: makes the sale due at once (inventory.Inventory.changed).
CHANGES = frozenset({"reserve", "confirm", "cancel", "open_sale", "add_stock", "stop", "team", "repair"})


def source(name: str) -> str:
    """A script's full text as Redis runs it."""
    lua = resources.files("inventory").joinpath("lua")
    return lua.joinpath("lib.lua").read_text() + "\n" + lua.joinpath(f"{name}.lua").read_text()


class Scripts:
    def __init__(self, redis: RedisClient, on_change: Callable[[str], None] | None = None) -> None:
        self._redis = redis
        self._scripts: dict[str, AsyncScript] = {name: redis.register_script(source(name)) for name in NAMES}
        #: Called with the sale hash key (KEYS[1]) after a script of CHANGES ran, or may have.
        self.on_change = on_change

    async def load(self) -> None:
        """Load every script now, so the first sale's first request does not pay for it."""
        for script in self._scripts.values():
            await self._redis.script_load(script.script)

    async def call(self, name: str, keys: list[str], args: list[Any]) -> Any:
        try:
            return await self._scripts[name](keys=keys, args=args)
        finally:  # (a call that failed on the way back may have run)
            self.ran(name, keys)

    def ran(self, name: str, keys: list[str]) -> None:
        """Tell ``on_change`` that the script ran (or may have), if it changes sales. Whoever
        runs a script in a pipeline (``queue``) calls this once the pipeline returned."""
        if name in CHANGES and self.on_change is not None:
            self.on_change(keys[0])

    async def queue(self, pipe: Pipeline, name: str, keys: list[str], args: list[Any]) -> None:
        """Add a call to a pipeline (which loads the script first if Redis lacks it)."""
        await self._scripts[name](keys=keys, args=args, client=pipe)

    def evalsha(self, name: str, keys: list[str], args: list[Any]) -> tuple[Any, ...]:
        """The EVALSHA command of a call, for a caller that sends it itself (to one Cluster node,
        beside a WAIT): it loads the scripts (``load``) on NOSCRIPT, and sends it again."""
        return ("EVALSHA", self._scripts[name].sha, len(keys), *keys, *args)
