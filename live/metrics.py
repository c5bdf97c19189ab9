"""Prometheus metrics, in a registry owned by one server (no process-global state)."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["CONTENT_TYPE", "GatewayMetrics", "GcProbe", "Metrics"]


class Metrics:
    def __init__(self, node: str | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        #: Called before every render: counts kept outside the registry are added in then.
        self.before_render: list[Callable[[], None]] = []
        r = self.registry
        # The node name is on one info gauge only, not on every series: scrapers join on it
        # (or label by target), and the other series keep their cardinality.
        self.node_info = Gauge("live_node_info", "This process's node name (value 1)", ["node"], registry=r)
        if node is not None:
            self.node_info.labels(node).set(1)
        self.connections = Gauge("live_connections", "Open WebSocket connections in this process", registry=r)
        self.rooms = Gauge(
            "live_rooms_active", "Rooms with at least one connection in this process", registry=r
        )
        self.frames_in = Counter("live_frames_in", "WebSocket frames received from clients", registry=r)
        self.frames_out = Counter("live_frames_out", "WebSocket frames sent to clients", registry=r)
        self.errors = Counter(
            "live_errors", "Errors answered to clients, by kind (error code)", ["kind"], registry=r
        )
        self.http_responses = Counter(
            "live_http_responses", "HTTP responses by status code", ["status"], registry=r
        )
        self.redis_rtt = Histogram(
            "live_redis_roundtrip_seconds",
            "Round-trip time of a Redis PING from this process",
            buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        self.redis_up = Gauge("live_redis_up", "1 when the last Redis probe succeeded", registry=r)
        self.buy_actions = Counter(
            "live_buy_actions",
            "Buyers' actions (reserve, confirm, ...) by outcome (ok or the error code)",
            ["action", "outcome"],
            registry=r,
        )
        self.task_failures = Counter(
            "live_task_failures",
            "Background tasks that failed (or ended) unexpectedly and were restarted, by task",
            ["task"],
            registry=r,
        )
        self.sale_repairs = Counter(
            "live_sale_repairs", "Sales rebuilt from the ledger after Redis lost writes", registry=r
        )
        self.sale_sweeps = Counter(
            "live_sale_sweeps",
            "Sweeps of a flash sale this process ran (only sales with something due are swept)",
            registry=r,
        )

        self.gc_collections = Counter(
            "live_gc_collections",
            "Python garbage collections in this process, by generation (2: full)",
            ["generation"],
            registry=r,
        )
        self.gc_pause = Histogram(
            "live_gc_pause_seconds",
            "Pauses of Python's garbage collector in this process, by generation",
            ["generation"],
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0),
            registry=r,
        )
        self.gc_pause_max = Gauge(
            "live_gc_pause_max_seconds",
            "The longest garbage-collector pause in this process since it started, by generation",
            ["generation"],
            registry=r,
        )
        self.gc_frozen = Gauge(
            "live_gc_frozen_objects", "Objects in the permanent generation (gc.freeze)", registry=r
        )
        for generation in ("0", "1", "2"):  # the series exist (at 0) before the first collection
            self.gc_collections.labels(generation)
            self.gc_pause.labels(generation)
            self.gc_pause_max.labels(generation)

    def watch_gc(self) -> GcProbe:
        """Count this process's garbage collections and their pauses (until ``stop``)."""
        probe = GcProbe(self)
        probe.start()
        return probe

    def render(self) -> bytes:
        for flush in self.before_render:
            flush()
        return generate_latest(self.registry)


class GatewayMetrics:
    """The gateway's view of the metrics (``gateway.hub.Metrics``).

    Frames in and out are counted per frame, on the hottest paths: in plain integers here,
    added to their counters when the metrics are read (a counter's ``inc`` takes a lock)."""

    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics
        self._frames_in = 0
        self._frames_out = 0
        metrics.before_render.append(self.flush)

    def frames_in(self, n: int) -> None:
        self._frames_in += n

    def frames_out(self, n: int) -> None:
        self._frames_out += n

    def flush(self) -> None:
        """Add the frames counted since the last read to their counters."""
        if self._frames_in:
            self._m.frames_in.inc(self._frames_in)
            self._frames_in = 0
        if self._frames_out:
            self._m.frames_out.inc(self._frames_out)
            self._frames_out = 0

    def error(self, kind: str) -> None:
        self._m.errors.labels(kind).inc()

    def gauges(self, connections: int, rooms: int) -> None:
        self._m.connections.set(connections)
        self._m.rooms.set(rooms)


class GcProbe:
    """A ``gc.callbacks`` probe: every collection's generation and pause.

    The callback runs inside the collector, wherever an allocation triggered it (possibly inside
    a metric's locked update), so it only counts and notes the pause; the registry is updated
    when the metrics are read. Collections and the longest pause are always exact; the pauses
    for the histogram are kept up to ``MAX_PENDING`` between two reads (a process nobody
    scrapes does not grow a list for ever). ``gc.callbacks`` is process-wide: ``stop`` takes
    it out again."""

    MAX_PENDING = 10_000

    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics
        self._started: float | None = None
        #: (generation, pause in seconds) since the last read, for the histogram
        self._pending: list[tuple[int, float]] = []
        #: collections per generation since the last read; the longest pause of each, ever
        self._counts = [0, 0, 0]
        self._max = [0.0, 0.0, 0.0]
        metrics.before_render.append(self.flush)

    def start(self) -> None:
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)

    def stop(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)
        self.flush()

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started is not None:
            generation, pause = info["generation"], time.perf_counter() - self._started
            self._started = None
            self._counts[generation] += 1
            self._max[generation] = max(self._max[generation], pause)
            if len(self._pending) < self.MAX_PENDING:
                self._pending.append((generation, pause))

    def flush(self) -> None:
        self._m.gc_frozen.set(gc.get_freeze_count())
        pending, self._pending = self._pending, []
        counts, self._counts = self._counts, [0, 0, 0]
        for generation, pause in pending:
            self._m.gc_pause.labels(str(generation)).observe(pause)
        for generation, count in enumerate(counts):
            label = str(generation)
            if count:
                self._m.gc_collections.labels(label).inc(count)
            self._m.gc_pause_max.labels(label).set(self._max[generation])
