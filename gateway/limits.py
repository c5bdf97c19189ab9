"""Token buckets for per-connection rate limits."""

from __future__ import annotations

import time


class TokenBucket:
    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, burst: float, rate_per_s: float, now: float | None = None) -> None:
        self.burst = burst
        self.rate = rate_per_s
        self.tokens = burst
        self.stamp = time.monotonic() if now is None else now

    def take(self, n: float = 1.0, now: float | None = None) -> bool:
        """Take ``n`` tokens if there are that many (``now``: time.monotonic(), if not given;
        a sans-I/O caller passes the time it was told)."""
        self._refill(now)
        if self.tokens >= n:
            self.tokens -= n
            return True
        return False

    def take_up_to(self, n: int, now: float | None = None) -> int:
        """Take as many of ``n`` whole tokens as there are; returns how many."""
        self._refill(now)
        granted = min(n, int(self.tokens))
        self.tokens -= granted
        return granted

    def _refill(self, now: float | None) -> None:
        if now is None:
            now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
