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
    """``count`` events at ``rate`` per second from monotonic time ``start``, none at or after ``stop``."""

    start: float
    rate: float
    count: int
    stop: float

    def due(self, i: int) -> float:
        return self.start + i / self.rate

    def until(self, stop: float) -> int:
        """How many events are due strictly before ``stop`` (the count of an unbounded storm):
        exactly the k < count with ``due(k) < stop``, in the same float arithmetic as ``due``.

        ``ceil((stop - start) * rate)`` alone is not that: the product is rounded, so an event can
        land exactly on ``stop`` (or one before it be left out). It is only the first guess here;
        ``due`` is non-decreasing in k (float division and addition round monotonically), so the
        events before ``stop`` are a prefix, and stepping to its edge makes the count exact.
        """
        if not stop > self.start or self.count <= 0 or not self.rate > 0:
            return 0
        guess = (stop - self.start) * self.rate
        n = self.count if guess >= self.count else max(0, min(self.count, math.ceil(guess)))
        while n > 0 and self.due(n - 1) >= stop:
            n -= 1
        while n < self.count and self.due(n) < stop:
            n += 1
        return n


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
