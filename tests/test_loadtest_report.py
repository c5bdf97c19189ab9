"""The `live-loadtest` report (HTML + PNG plots) and `compare`, on synthetic `live-loadtest/1` results."""

from __future__ import annotations

import base64
import copy
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hdrh.histogram import HdrHistogram

from loadtest.compare import MIN_SAMPLES, compare, load_result, main
from loadtest.report import PLOT_FILES, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SCRIPT = "<script>alert('x')</script>"


def _histogram(values_us: list[int]) -> HdrHistogram:
    histogram = HdrHistogram(1, 60_000_000, 3)
    for value in values_us:
        histogram.record_value(value)
    return histogram


def _metric(histogram: HdrHistogram) -> dict[str, Any]:
    def ms(percentile: float) -> float:
        return float(histogram.get_value_at_percentile(percentile)) / 1000

    return {
        "count": histogram.get_total_count(),
        "mean_ms": histogram.get_mean_value() / 1000,
        "p50_ms": ms(50),
        "p90_ms": ms(90),
        "p99_ms": ms(99),
        "p999_ms": ms(99.9),
        "max_ms": histogram.get_max_value() / 1000,
    }


def make_result() -> dict[str, Any]:
    """A small but complete result: real histograms, a 5 s timeline, a passed audit."""
    rng = random.Random(7)
    samples = {
        "connect": [rng.randint(2_000, 40_000) for _ in range(2_000)],
        "comment_ack": [rng.randint(500, 8_000) for _ in range(1_000)],
        "chat_delivery": [rng.randint(1_000, 30_000) for _ in range(5_000)],
        "reserve": [rng.randint(800, 12_000) for _ in range(500)],
    }
    histograms = {name: _histogram(values) for name, values in samples.items()}
    seconds = [1, 2, 3, 4, 5]
    return {
        "schema": "live-loadtest/1",
        "scenario": "audience+chat-storm",
        "scenarios": ["audience", "chat-storm"],
        "started_at_ms": 1_717_243_200_000,
        "duration_s": 5.0,
        "target": {"url": "ws://127.0.0.1:8080", "spawned": True, "server_workers": 2},
        "parameters": {"viewers": 2000, "room": SCRIPT, "chat_rate": 200.0, "rooms": ["a", "b"]},
        "machine": {
            "hostname": "ci-runner",
            "cpus": 8,
            "python": "3.11.9",
            "platform": "Linux-6.1-x86_64",
            "harness_version": "0.1.0",
            "open_files_limit": 65536,
        },
        "metrics": {name: _metric(histogram) for name, histogram in histograms.items()},
        "throughput": {"comment_ack": 200.0, "chat_delivery": 1000.0, "reserve": 100.0},
        "counts": {"comment_ack": 1000, "chat_delivery": 5000, "reserve": 500},
        "errors": {"error:rate_limited": 40, "close:1006": 2},
        "outcomes": {"reserve": {"reserved": 200, "sold_out": 300}},
        "connections": {"target": 2000, "peak": 2000, "failed": 0, "closed_by_server": 0},
        "harness_cpu_s": 3.5,
        "harness_cores": 0.7,
        "server_cpu_s": 6.0,
        "audit": {
            "oversold": 0,
            "lost_orders": 0,
            "duplicate_orders": 0,
            "over_limit": 0,
            "chat_unaccounted": 0,
            "passed": True,
            # The details' shapes as loadtest/audit.py makes them: the schema does not fix them.
            "sales": [
                {"sale_id": "s1", "total": 200, "sold": 200, "lost_order_ids": [], "notes": []},
                {"sale_id": "s2", "total": 100, "sold": 100, "lost_order_ids": ["o1", "o2"], "notes": []},
            ],
            "chat": {"acked_comments": 1000, "observers": 4, "delivered": 4000, "missing": 0},
            "reconcile": {"clean": True, "output": "sale s1: ok\nsale s2: ok"},
            "notes": ["note with <b>markup</b> & ampersand"],
        },
        "timeline": {
            "t_s": seconds,
            "connections": [400, 1200, 2000, 2000, 2000],
            "throughput": {
                "comment_ack": [0, 150, 200, 210, 190],
                "chat_delivery": [0, 800, 1000, 1100, 990],
            },
            # The first second had no sample yet: null, as the schema allows.
            "latency": {
                "comment_ack": {"p50_ms": [None, 2.0, 2.1, 2.3, 2.0], "p99_ms": [None, 6.0, 7.5, 7.9, 7.0]},
                "chat_delivery": {
                    "p50_ms": [None, 8.0, 9.0, 9.5, 8.0],
                    "p99_ms": [None, 25.0, 28.0, 29.0, 27.0],
                },
            },
        },
        "histograms": {name: histogram.encode().decode("ascii") for name, histogram in histograms.items()},
    }


def _write(path: Path, result: dict[str, Any]) -> Path:
    path.write_text(json.dumps(result), encoding="utf-8")
    return path


# --- report ---


def test_report_writes_self_contained_html_and_four_pngs(tmp_path: Path) -> None:
    path = write_report(make_result(), tmp_path / "out")

    assert path == tmp_path / "out" / "report.html"
    page = path.read_text(encoding="utf-8")
    for name in PLOT_FILES:
        png = (tmp_path / "out" / name).read_bytes()
        assert png.startswith(PNG_MAGIC), name
        # The page embeds the very same image, so it needs nothing beside it to open.
        assert f"data:image/png;base64,{base64.b64encode(png).decode('ascii')}" in page
    assert page.count("data:image/png;base64,") == 4
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page.lower() and "<link" not in page.lower()


def test_report_shows_the_run_and_escapes_strings(tmp_path: Path) -> None:
    page = write_report(make_result(), tmp_path).read_text(encoding="utf-8")

    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "note with &lt;b&gt;markup&lt;/b&gt; &amp; ampersand" in page
    assert "audience+chat-storm" in page and "2024-06-01" in page
    assert "Audit passed" in page
    for text in ("chat_delivery", "error:rate_limited", "sold_out", "ci-runner", "harness cores"):
        assert text in page, text
    assert "server CPU" in page and "6.00 s" in page


def test_report_banner_shows_a_failed_audit_with_its_counts(tmp_path: Path) -> None:
    result = make_result()
    result["audit"].update(passed=False, oversold=3)

    page = write_report(result, tmp_path).read_text(encoding="utf-8")

    assert "Audit FAILED" in page
    assert '<span class="bad">oversold 3</span>' in page


def test_report_copes_with_an_almost_empty_result(tmp_path: Path) -> None:
    result: dict[str, Any] = {
        "schema": "live-loadtest/1",
        "scenario": "audience",
        "metrics": {
            "connect": {"count": 0, "p50_ms": None, "p90_ms": None, "p99_ms": None, "p999_ms": None},
            "odd": "not an object",
        },
        "timeline": {"t_s": [], "connections": [], "throughput": {}, "latency": {}},
        "histograms": {"connect": "not base64 at all!", "empty": ""},
        "server_cpu_s": None,
        "audit": {},
    }

    page = write_report(result, tmp_path).read_text(encoding="utf-8")

    for name in PLOT_FILES:
        assert (tmp_path / name).read_bytes().startswith(PNG_MAGIC), name
    assert "not measured" in page and "No errors." in page and "No audit" in page


def test_report_copes_with_only_a_schema(tmp_path: Path) -> None:
    page = write_report({"schema": "live-loadtest/1"}, tmp_path).read_text(encoding="utf-8")

    assert "unknown date" in page and page.count("data:image/png;base64,") == 4


def test_report_copes_with_ragged_timeline_series(tmp_path: Path) -> None:
    result = make_result()
    timeline = result["timeline"]
    timeline["connections"] = [1, 2]
    timeline["throughput"]["comment_ack"] = [1, 2, 3, 4, 5, 6, 7]
    timeline["latency"]["comment_ack"] = {"p50_ms": [None] * 5, "p99_ms": "oops"}

    assert write_report(result, tmp_path).exists()


# --- compare ---


def test_identical_results_do_not_regress(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = make_result()
    comparison = compare(result, copy.deepcopy(result))

    assert comparison.regressions == []
    assert any("connect p99" in line for line in comparison.lines)
    a, b = _write(tmp_path / "a.json", result), _write(tmp_path / "b.json", result)
    assert main([str(a), str(b)]) == 0
    assert "No regression" in capsys.readouterr().out


def test_p99_growth_beyond_the_limit_regresses() -> None:
    a = make_result()
    b = copy.deepcopy(a)
    b["metrics"]["connect"]["p99_ms"] = a["metrics"]["connect"]["p99_ms"] * 1.5

    comparison = compare(a, b)

    assert len(comparison.regressions) == 1 and "connect p99" in comparison.regressions[0]
    assert compare(a, b, max_regression_pct=60).regressions == []


def test_p99_noise_is_not_a_regression() -> None:
    a = make_result()
    b = copy.deepcopy(a)
    # A near-zero p99 tripling is under a millisecond: noise.
    a["metrics"]["comment_ack"]["p99_ms"], b["metrics"]["comment_ack"]["p99_ms"] = 0.2, 0.6
    # Too few samples for a p99 to mean anything.
    a["metrics"]["reserve"]["count"] = b["metrics"]["reserve"]["count"] = MIN_SAMPLES - 1
    b["metrics"]["reserve"]["p99_ms"] = a["metrics"]["reserve"]["p99_ms"] * 10

    assert compare(a, b).regressions == []


def test_throughput_drop_regresses() -> None:
    a = make_result()
    b = copy.deepcopy(a)
    b["throughput"]["comment_ack"] = 150.0

    regressions = compare(a, b).regressions

    assert len(regressions) == 1 and "throughput comment_ack" in regressions[0]


def test_new_error_kind_and_error_growth_regress() -> None:
    a = make_result()
    b = copy.deepcopy(a)
    b["errors"]["connect:refused"] = 5
    b["errors"]["error:rate_limited"] = 100

    regressions = compare(a, b).regressions

    assert any("new error kind connect:refused" in text for text in regressions)
    assert any("errors error:rate_limited" in text for text in regressions)


def test_fewer_errors_do_not_regress() -> None:
    a = make_result()
    b = copy.deepcopy(a)
    b["errors"] = {"close:1006": 1}

    assert compare(a, b).regressions == []


def test_audit_failure_regresses_through_main(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = make_result()
    b = copy.deepcopy(a)
    b["audit"].update(passed=False, lost_orders=2)

    code = main([str(_write(tmp_path / "a.json", a)), str(_write(tmp_path / "b.json", b))])

    assert code == 1
    out = capsys.readouterr().out
    assert "audit passed -> failed (lost_orders 2)" in out and "REGRESSION" in out


def _slower_p99(result: dict[str, Any]) -> None:
    result["metrics"]["chat_delivery"]["p99_ms"] *= 2


def _lower_throughput(result: dict[str, Any]) -> None:
    result["throughput"]["chat_delivery"] = 10.0


def _new_error(result: dict[str, Any]) -> None:
    result["errors"]["no_reply:reserve"] = 1


def _failed_audit(result: dict[str, Any]) -> None:
    result["audit"]["passed"] = False


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (_slower_p99, "chat_delivery p99"),
        (_lower_throughput, "throughput chat_delivery"),
        (_new_error, "new error kind no_reply:reserve"),
        (_failed_audit, "audit passed -> failed"),
    ],
)
def test_each_kind_of_regression_exits_1(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change: Callable[[dict[str, Any]], None],
    expected: str,
) -> None:
    a = make_result()
    b = copy.deepcopy(a)
    change(b)

    assert main([str(_write(tmp_path / "a.json", a)), str(_write(tmp_path / "b.json", b))]) == 1
    assert expected in capsys.readouterr().out


def test_added_and_removed_metrics_are_listed_not_judged() -> None:
    a = make_result()
    b = copy.deepcopy(a)
    del b["metrics"]["reserve"]
    b["metrics"]["like_ack"] = dict(a["metrics"]["comment_ack"])

    comparison = compare(a, b)

    assert comparison.regressions == []
    text = "\n".join(comparison.lines)
    assert "reserve" in text and "removed" in text and "like_ack" in text and "added" in text


def test_bad_input_exits_2_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = str(_write(tmp_path / "good.json", make_result()))
    wrong_schema = tmp_path / "wrong.json"
    wrong_schema.write_text(json.dumps({"schema": "live-loadtest/0"}))
    not_json = tmp_path / "not.json"
    not_json.write_text("<html>nope</html>")
    a_list = tmp_path / "list.json"
    a_list.write_text("[1, 2]")
    cases = {
        str(wrong_schema): "expected 'live-loadtest/1'",
        str(not_json): "not JSON",
        str(a_list): "JSON object",
        str(tmp_path / "missing.json"): "cannot read",
    }
    for path, message in cases.items():
        assert main([good, path]) == 2, path
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["only-one.json"]) == 2
    assert main(["a.json", "b.json", "--max-regression", "-5"]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_load_result_reads_a_result(tmp_path: Path) -> None:
    result = make_result()

    assert load_result(_write(tmp_path / "r.json", result)) == result
