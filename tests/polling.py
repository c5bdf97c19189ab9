"""Waiting for a condition in a test: polled, with a generous bound, never a fixed sleep."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable


async def until(
    condition: Callable[[], bool | Awaitable[bool]], timeout_s: float = 10.0, every_s: float = 0.02
) -> None:
    """Return once ``condition()`` (a function or a coroutine function) holds; fail the test if
    it has not within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        held = condition()
        if inspect.isawaitable(held):
            held = await held
        if held:
            return
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(every_s)
