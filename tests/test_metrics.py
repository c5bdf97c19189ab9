"""The gateway's frame counters: counted in plain integers on the hot paths, in the registry
whenever the metrics are read."""

from __future__ import annotations

from live.metrics import GatewayMetrics, Metrics


def sample(metrics: Metrics, name: str) -> float | None:
    return metrics.registry.get_sample_value(name)


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
