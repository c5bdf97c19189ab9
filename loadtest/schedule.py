"""Open-loop schedules: events start at their intended time whatever happened to earlier ones.

A closed loop (send, wait for the reply, send again) slows down exactly when the server does,
so it sends less while the server stalls and its latency misses the stall: coordinated
omission. Here event i of a schedule is due at ``start + i / rate`` on the shared monotonic
clock; the caller sends it without waiting for anything and measures its latency from the
intended time. If the harness itself falls behind, overdue events go out at once (never
skipped) and the lag is reported as ``schedule_lag``.

Several workers share one schedule: worker w of W takes events w, w + W, w + 2W, ... so
together they keep the whole rate, interleaved.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

#: Overdue events are sent in runs of this many before letting other tasks in.
_BURST = 64


@dataclass(frozen=True)
class Schedule:
    """``count`` events at ``rate`` per second from monotonic time ``start``, none after ``stop``."""

    start: float
    rate: float
    count: int
    stop: float

    def due(self, i: int) -> float:
        return self.start + i / self.rate

    def until(self, stop: float) -> int:
        """How many events fit before ``stop`` (the count of an unbounded storm)."""
        if stop <= self.start:
            return 0
        return min(self.count, math.ceil((stop - self.start) * self.rate))


async def paced(schedule: Schedule, worker: int = 0, workers: int = 1) -> AsyncIterator[tuple[int, float]]:
    """Yield ``(i, intended)`` for this worker's events of ``schedule``, each at its time."""
    overdue = 0
    for i in range(worker, schedule.until(schedule.stop), workers):
        intended = schedule.due(i)
        delay = intended - time.monotonic()
        if delay > 0:
            overdue = 0
            await asyncio.sleep(delay)
        else:
            overdue += 1
            if overdue % _BURST == 0:
                await asyncio.sleep(0)
        yield i, intended
