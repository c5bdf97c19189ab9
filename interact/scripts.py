"""The interaction tools' Lua scripts (``interact/lua/<name>.lua``), loaded once per process
and called by SHA. redis-py's ``Script`` calls EVALSHA and, on NOSCRIPT (a restarted or
failed-over Redis), loads the script again and retries; on a Redis Cluster EVALSHA goes to the
master of the slot of its keys (every call's keys share the room's hash tag)."""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from typing import Any

from redis.commands.core import AsyncScript

from interact.errors import InteractError
from interact.ports import RedisClient


def source(name: str) -> str:
    """A script's text as Redis runs it: ``lib.lua`` (shared helpers) in front of it."""
    lua = resources.files("interact").joinpath("lua")
    return lua.joinpath("lib.lua").read_text() + "\n" + lua.joinpath(f"{name}.lua").read_text()


class Scripts:
    """The scripts of one tool's module (its names), registered on first use."""

    def __init__(self, redis: RedisClient, names: tuple[str, ...]) -> None:
        self._redis = redis
        self._scripts: dict[str, AsyncScript] = {name: redis.register_script(source(name)) for name in names}

    async def load(self) -> None:
        for script in self._scripts.values():
            await self._redis.script_load(script.script)

    async def call(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return await self._scripts[name](keys=keys, args=args)


def text(value: Any) -> str:
    """A reply's bytes (or a number) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


def raise_if_refused(
    reply: Any, messages: Mapping[str, str], numbers: Mapping[str, str] | None = None
) -> None:
    """Raise the ``InteractError`` of a script's refusal (lib.lua's ``refuse``: ``{"err", code,
    number?}``), with the module's message for its code; a code in ``numbers`` carries its number
    in the error's data under that name (``bid_too_low``: ``min_bid_cents``). Any other reply
    passes."""
    if isinstance(reply, list) and reply and text(reply[0]) == "err":
        code = text(reply[1])
        field = (numbers or {}).get(code)
        data = {field: int(text(reply[2]))} if field is not None and len(reply) > 2 else None
        raise InteractError(code, messages.get(code, code), data)
