"""asyncio helpers."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any


async def stop_tasks(tasks: Iterable[asyncio.Task[Any]], attempts: int = 5) -> None:
    """Cancel tasks and wait until they end, cancelling again those that do not.

    A cancellation can be lost inside a client library (seen with redis-py: cancelled while a
    command runs, the command returned normally), and a background loop then goes on as if
    nothing happened. Cancelling again at its next await ends it.
    """
    pending = {t for t in tasks if not t.done()}
    for _ in range(attempts):
        if not pending:
            return
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.5)
