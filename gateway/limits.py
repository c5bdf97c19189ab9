"""Token buckets for per-connection rate limits."""

from __future__ import annotations

import time


class TokenBucket:
    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, burst: float, rate_per_s: float) -> None:
        self.burst = burst
        self.rate = rate_per_s
        self.tokens = burst
        self.stamp = time.monotonic()

    def take(self, n: float = 1.0) -> bool:
        """Take ``n`` tokens if there are that many."""
        self._refill()
        if self.tokens >= n:
            self.tokens -= n
            return True
        return False

    def take_up_to(self, n: int) -> int:
        """Take as many of ``n`` whole tokens as there are; returns how many."""
        self._refill()
        granted = min(n, int(self.tokens))
        self.tokens -= granted
        return granted

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
