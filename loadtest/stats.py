"""What a worker measures, and how it reports it: interval histograms, counts and errors.

A worker records into per-second histograms and counters; every second ``tick()`` hands them
to the coordinator (encoded) and starts new ones. The coordinator adds the seconds up, so the
whole run's histogram is exact and the per-second series comes for free.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from hdrh.histogram import HdrHistogram

from loadtest import hist


class Stats:
    def __init__(self) -> None:
        self._hists: dict[str, HdrHistogram] = {}
        self._counts: Counter[str] = Counter()
        self._errors: Counter[str] = Counter()
        self.outcomes: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.connections = 0
        self.peak_connections = 0
        #: Hot counters, kept as plain attributes (a Counter update per frame adds up).
        self.frames_in = 0
        self._host_deliveries = hist.new_histogram()

    def latency(self, metric: str, seconds: float) -> None:
        h = self._hists.get(metric)
        if h is None:
            h = self._hists[metric] = hist.new_histogram()
        hist.record(h, seconds)

    def host_delivery(self, seconds: float) -> None:
        hist.record(self._host_deliveries, seconds)

    def count(self, name: str, n: int = 1) -> None:
        self._counts[name] += n

    def error(self, kind: str) -> None:
        self._errors[kind] += 1

    def outcome(self, command: str, outcome: str) -> None:
        self.outcomes[command][outcome] += 1

    def opened(self) -> None:
        self.connections += 1
        self.peak_connections = max(self.peak_connections, self.connections)

    def closed(self) -> None:
        self.connections -= 1

    def tick(self) -> dict[str, Any]:
        """This second's numbers, then start afresh."""
        deliveries = int(self._host_deliveries.get_total_count())
        if deliveries:
            self._hists["host_delivery"] = self._host_deliveries
            self._counts["host_deliveries"] += deliveries
            self._host_deliveries = hist.new_histogram()
        if self.frames_in:
            self._counts["frames_in"] += self.frames_in
            self.frames_in = 0
        out = {
            "connections": self.connections,
            "hists": {name: hist.encode(h) for name, h in self._hists.items() if h.get_total_count()},
            "counts": dict(self._counts),
            "errors": dict(self._errors),
        }
        self._hists.clear()
        self._counts.clear()
        self._errors.clear()
        return out
