"""The gateway's frame counters: counted in plain integers on the hot paths, in the registry
whenever the metrics are read."""

from __future__ import annotations

from live.metrics import GatewayMetrics, Metrics


def sample(metrics: Metrics, name: str, labels: dict[str, str] | None = None) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_frames_are_in_the_counters_whenever_the_metrics_are_read() -> None:
    metrics = Metrics()
    gateway = GatewayMetrics(metrics)
    gateway.frames_in(1)
    gateway.frames_in(2)
    gateway.frames_out(0)
    gateway.frames_out(5)
    assert sample(metrics, "live_frames_in_total") == 0  # not yet read
    text = metrics.render().decode()
    assert "live_frames_in_total 3.0" in text and "live_frames_out_total 5.0" in text
    gateway.frames_out(1)
    metrics.render()
    assert (sample(metrics, "live_frames_in_total"), sample(metrics, "live_frames_out_total")) == (3, 6)


def test_a_forced_full_collection_is_counted_with_its_pause() -> None:
    import gc

    metrics = Metrics()
    probe = metrics.watch_gc()
    try:
        metrics.render()
        before = sample(metrics, "live_gc_collections_total", {"generation": "2"})
        paused = sample(metrics, "live_gc_pause_seconds_count", {"generation": "2"})
        gc.collect()
        text = metrics.render().decode()
    finally:
        probe.stop()
    assert sample(metrics, "live_gc_collections_total", {"generation": "2"}) == (before or 0) + 1
    assert sample(metrics, "live_gc_pause_seconds_count", {"generation": "2"}) == (paused or 0) + 1
    longest = sample(metrics, "live_gc_pause_max_seconds", {"generation": "2"})
    assert longest is not None and 0 < longest < 10
    assert 'live_gc_collections_total{generation="2"}' in text
    # stopped: the callback is gone, and later collections are not counted
    gc.collect()
    metrics.render()
    assert sample(metrics, "live_gc_collections_total", {"generation": "2"}) == (before or 0) + 1


def test_a_process_nobody_scrapes_keeps_counting_without_growing() -> None:
    """Between two reads the probe keeps at most MAX_PENDING pauses for the histogram; the
    collections and the longest pause stay exact however many there were."""
    from live.metrics import GcProbe

    metrics = Metrics()
    probe = GcProbe(metrics)  # (not started: its callback is driven by hand here)
    for _ in range(GcProbe.MAX_PENDING + 500):
        probe._callback("start", {"generation": 1})
        probe._callback("stop", {"generation": 1})
    assert len(probe._pending) == GcProbe.MAX_PENDING
    metrics.render()
    assert sample(metrics, "live_gc_collections_total", {"generation": "1"}) == GcProbe.MAX_PENDING + 500
    assert sample(metrics, "live_gc_pause_seconds_count", {"generation": "1"}) == GcProbe.MAX_PENDING
    longest = sample(metrics, "live_gc_pause_max_seconds", {"generation": "1"})
    assert probe._pending == [] and longest is not None and longest > 0
