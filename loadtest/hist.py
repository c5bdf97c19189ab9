"""Latency histograms: HdrHistogram in microseconds, merged exactly across processes.

Workers send their histograms as the standard compressed base64 encoding; the coordinator
adds them bucket by bucket, so a merged p99 is the p99 of every sample of every worker (an
average of per-worker percentiles would not be a percentile of anything).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
#: One hour: anything slower is clamped (and is a failure anyway).
HIGHEST_US = 3_600_000_000
SIGNIFICANT_DIGITS = 3
PERCENTILES = {"p50_ms": 50.0, "p90_ms": 90.0, "p99_ms": 99.0, "p999_ms": 99.9}


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


def record(hist: HdrHistogram, seconds: float) -> None:
    """Record a latency given in seconds (negative clock noise counts as the lowest value)."""
    hist.record_value(min(max(int(seconds * 1_000_000), LOWEST_US), HIGHEST_US))


def encode(hist: HdrHistogram) -> str:
    encoded: bytes = hist.encode()
    return encoded.decode("ascii")


def decode(encoded: str) -> HdrHistogram:
    hist: HdrHistogram = HdrHistogram.decode(encoded.encode("ascii"))
    return hist


def merge(hists: Iterable[HdrHistogram]) -> HdrHistogram:
    total = new_histogram()
    for hist in hists:
        total.add(hist)
    return total


def summary(hist: HdrHistogram, mean: bool = True) -> dict[str, Any]:
    """count, mean and percentiles in milliseconds (None when there is no sample). The mean
    walks every bucket in Python (~20 ms): the per-second timeline goes without it."""
    count = int(hist.get_total_count())
    if not count:
        return {"count": 0, "mean_ms": None, **dict.fromkeys(PERCENTILES), "max_ms": None}
    out: dict[str, Any] = {
        "count": count,
        "mean_ms": round(hist.get_mean_value() / 1000, 3) if mean else None,
    }
    for name, percentile in PERCENTILES.items():
        out[name] = round(hist.get_value_at_percentile(percentile) / 1000, 3)
    out["max_ms"] = round(hist.get_max_value() / 1000, 3)
    return out
