"""The process's supervisor: it keeps the long-running loops running and stops tasks for good.

One per process, made by ``live.server`` and passed down to the gateway's hub and bus, the
inventory, the ledger and the sweeper. gateway/ and inventory/ do not import it: each declares
the small ``Supervisor`` protocol it needs (gateway/ports.py, inventory/ports.py), and this
class is what the app hands them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

log = logging.getLogger(__name__)


#: Restart delays of a supervised task that keeps failing: doubling from the first to the last.
RESTART_FIRST_S = 0.05
RESTART_MAX_S = 5.0
#: A task that ran this long before failing starts again from the first delay.
RESTART_RESET_S = 30.0


class Supervisor:
    """Runs long-lived background loops and keeps them running.

    A loop that raises (anything but a cancellation) is logged with its traceback, counted
    through ``on_crash(name)``, and started again after a delay that doubles while it keeps
    failing. While a loop waits for its restart it is *down*: ``down()`` names it, and the
    server's /readyz reports not ready. A loop that returns is a bug too (loops never end by
    themselves) and is treated the same way.
    """

    def __init__(self, on_crash: Callable[[str], None] | None = None) -> None:
        self._on_crash = on_crash
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._down: set[str] = set()
        self.crashes: dict[str, int] = {}

    def start(self, name: str, loop: Callable[[], Coroutine[Any, Any, None]]) -> asyncio.Task[None]:
        """Run ``loop()`` under supervision; ``name`` must be unique among running loops."""
        if name in self._tasks and not self._tasks[name].done():
            raise ValueError(f"a supervised task named {name!r} is running")
        task = asyncio.create_task(self._keep(name, loop), name=name)
        self._tasks[name] = task
        return task

    def down(self) -> list[str]:
        """The loops that failed and are waiting to be restarted."""
        return sorted(self._down)

    def names(self) -> list[str]:
        return sorted(self._tasks)

    async def stop(self, names: Iterable[str] | None = None) -> None:
        """Stop the named loops (all by default) and wait until they have ended."""
        chosen = list(self._tasks) if names is None else [n for n in names if n in self._tasks]
        tasks = [self._tasks.pop(n) for n in chosen]
        for name in chosen:
            self._down.discard(name)
        await _stop_tasks(tasks)

    async def cancel(self, tasks: Iterable[asyncio.Task[Any]]) -> None:
        """Cancel short-lived tasks (not supervised loops) and wait until they have ended."""
        await _stop_tasks(tasks)

    async def _keep(self, name: str, loop: Callable[[], Coroutine[Any, Any, None]]) -> None:
        delay = RESTART_FIRST_S
        while True:
            started = time.monotonic()
            try:
                await loop()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("background task failed; restarting it", extra={"task": name})
            else:
                log.error("background task ended by itself; restarting it", extra={"task": name})
            self.crashes[name] = self.crashes.get(name, 0) + 1
            if self._on_crash is not None:
                try:
                    self._on_crash(name)
                except Exception:  # counting must never stop the restart
                    log.exception("counting a task failure failed", extra={"task": name})
            if time.monotonic() - started >= RESTART_RESET_S:
                delay = RESTART_FIRST_S
            self._down.add(name)
            try:
                await asyncio.sleep(delay)
            finally:
                self._down.discard(name)
            delay = min(RESTART_MAX_S, delay * 2)


async def _stop_tasks(tasks: Iterable[asyncio.Task[Any]], attempts: int = 5) -> None:
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
