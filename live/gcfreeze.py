"""Freeze the heap after a burst of connections, so full collections do not walk them.

A full (generation 2) collection walks every tracked object; at 10,000 connections that is
about a million objects, 100-200 ms with the event loop stopped. ``live.server.tune_gc``
freezes what exists at start (``gc.freeze``: moved to a permanent generation the collector never
walks). The objects of the connections that arrive later are not frozen: ``GcFreezer`` freezes
them too, once a burst of new connections (``after`` of them, net) has been quiet for a second.

Frozen objects are still freed by reference counting when a connection goes; but a frozen
reference *cycle* that becomes garbage is never collected while frozen: a leak. So when about as
many connections have gone since the last freeze as ``after`` (whatever is left of theirs may be
frozen cycles), at the next quiet second it unfreezes, runs one full collection (a pause at a
moment of its choosing, not in the middle of a storm), and freezes again. The leak is bounded by
the cycles of ``after`` departed connections.

Off by default (setting ``gc_freeze_after``: 0): in the storm benchmark (docs/benchmarks.md,
section 2) ``tune_gc``'s thresholds already left no full collection in the window to avoid.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

#: How long the connection count must not change before the freezer acts.
QUIET_S = 1.0
#: How often it looks at the connection count.
POLL_S = 0.25


@dataclass
class GcFreezer:
    #: The open connections now (the hub's).
    connections: Callable[[], int]
    #: New connections (net) since the last freeze that make it freeze again; as many gone since
    #: then make it unfreeze, collect, and freeze (> 0; live does not run it for 0).
    after: int
    quiet_s: float = QUIET_S
    poll_s: float = POLL_S

    def __post_init__(self) -> None:
        self.freezes = 0
        self.refreezes = 0
        self._arrived = 0
        self._left = 0

    def step(self, now: float, count: int, state: list[float]) -> None:
        """One look: ``state`` is [last count, when it last changed]."""
        last, changed_at = int(state[0]), state[1]
        if count != last:
            if count > last:
                self._arrived += count - last
            else:
                self._left += last - count
            state[0], state[1] = count, now
            return
        if now - changed_at < self.quiet_s:
            return
        if self._left >= self.after:
            started = time.perf_counter()
            gc.unfreeze()
            found = gc.collect()
            gc.freeze()
            self.refreezes += 1
            log.info(
                "unfroze, collected, froze again",
                extra={
                    "left": self._left,
                    "found": found,
                    "pause_ms": round((time.perf_counter() - started) * 1000),
                },
            )
            self._arrived = self._left = 0
        elif self._arrived >= self.after:
            gc.collect(1)  # the young garbage, not frozen with the rest
            gc.freeze()
            self.freezes += 1
            self._arrived = 0

    async def run(self) -> None:
        state = [float(self.connections()), time.monotonic()]
        while True:
            await asyncio.sleep(self.poll_s)
            self.step(time.monotonic(), self.connections(), state)
