"""The live progress display: one status line a second on stderr while a run goes."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, TextIO

from loadtest import hist

if TYPE_CHECKING:
    from loadtest.run import Aggregate, Second

#: Latency metrics shown, in this order, when they have samples that second.
SHOWN = ("host_delivery", "chat_delivery", "comment_ack", "reserve", "confirm", "team_join", "connect")


class Progress:
    def __init__(self, duration_s: float, stream: TextIO = sys.stderr, quiet: bool = False) -> None:
        self.duration_s = duration_s
        self.stream = stream
        self.quiet = quiet
        # On a terminal the line is redrawn in place; in a log, one line every 5 s.
        self.tty = stream.isatty()
        self._last_line = 0.0

    def say(self, text: str) -> None:
        if not self.quiet:
            self._end_line()
            print(text, file=self.stream, flush=True)

    def second(self, k: int, second: Second, aggregate: Aggregate) -> None:
        if self.quiet:
            return
        now = time.monotonic()
        if not self.tty and now - self._last_line < 5 and k < self.duration_s:
            return
        self._last_line = now
        parts = [f"[{k:>4}s/{self.duration_s:g}s]", f"conns {second.connections}"]
        for name in SHOWN:
            h = second.hists.get(name)
            if h is not None and h.get_total_count():
                p99 = hist.summary(h, mean=False)["p99_ms"]
                parts.append(f"{name} {h.get_total_count()}/s p99 {p99:.1f}ms")
        errors = sum(aggregate.errors.values())
        parts.append(f"errors {errors}" + (f" (+{sum(second.errors.values())})" if second.errors else ""))
        line = "  ".join(parts)
        if self.tty:
            print("\r\x1b[2K" + line, end="", file=self.stream, flush=True)
        else:
            print(line, file=self.stream, flush=True)

    def _end_line(self) -> None:
        if self.tty:
            print("\r\x1b[2K", end="", file=self.stream, flush=True)
