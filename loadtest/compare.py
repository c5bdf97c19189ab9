"""`live-loadtest compare A.json B.json`: what changed from a baseline run A to a run B.

Made for CI: it prints a table and exits 1 when B regressed beyond a tolerance, 0 otherwise,
and 2 (with a one-line message, never a traceback) when a file is not a `live-loadtest/1` result.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtest.audit import COUNTS as AUDIT_COUNTS
from loadtest.result import ResultError, as_mapping, as_number, load_result, started

DEFAULT_MAX_REGRESSION_PCT = 20.0
# Below these, a p99 is noise: a few samples, or a sub-millisecond wobble on a near-zero value,
# must not fail a pipeline.
MIN_SAMPLES = 20
MIN_LATENCY_CHANGE_MS = 1.0

LATENCY_STATS = (("p50", "p50_ms"), ("p99", "p99_ms"), ("max", "max_ms"))
CPU_KEYS = ("duration_s", "harness_cpu_s", "harness_cores", "server_cpu_s")
CONNECTION_KEYS = ("target", "peak", "failed", "closed_by_server")
DASH = "-"


@dataclass
class Comparison:
    """The printable table (`lines`) and why B is worse than A (`regressions`, empty when not)."""

    lines: list[str] = field(default_factory=list)
    regressions: list[str] = field(default_factory=list)

    @property
    def regressed(self) -> bool:
        return bool(self.regressions)


@dataclass(frozen=True)
class _Row:
    label: str
    before: str
    after: str
    change: str = ""
    flag: str = ""


@dataclass
class _Section:
    title: str
    rows: list[_Row] = field(default_factory=list)
    regressions: list[str] = field(default_factory=list)


# --- formatting ---


def _fmt(value: float | None, digits: int = 2) -> str:
    """A number with a fixed number of decimals, so a column lines up (counts: digits=0)."""
    return DASH if value is None else f"{value:,.{digits}f}"


def _pct(before: float | None, after: float | None) -> float | None:
    """Relative change in percent; inf when growing from zero, None when either side is unknown."""
    if before is None or after is None:
        return None
    if before == 0:
        return 0.0 if after == 0 else math.inf
    return (after - before) / abs(before) * 100


def _fmt_change(before: float | None, after: float | None) -> str:
    change = _pct(before, after)
    if change is None:
        return ""
    if change == 0:
        return "="
    return "from 0" if math.isinf(change) else f"{change:+.1f}%"


def _describe(result: dict[str, Any]) -> str:
    scenario = result.get("scenario")
    name = scenario if isinstance(scenario, str) else "unknown scenario"
    return f"{name}, {started(result)}, {_fmt(as_number(result.get('duration_s')), 1)} s of load"


# --- sections: each compares one part of the results and says what regressed ---


def _presence_rows(before: dict[str, Any], after: dict[str, Any]) -> list[_Row]:
    rows = [_Row(name, "present", DASH, "removed") for name in sorted(set(before) - set(after))]
    rows += [_Row(name, DASH, "present", "added") for name in sorted(set(after) - set(before))]
    return rows


def _p99_regression(name: str, before: dict[str, Any], after: dict[str, Any], limit: float) -> str | None:
    counts = (as_number(before.get("count")), as_number(after.get("count")))
    if any(count is None or count < MIN_SAMPLES for count in counts):
        return None
    old, new = as_number(before.get("p99_ms")), as_number(after.get("p99_ms"))
    change = _pct(old, new)
    if old is None or new is None or change is None:
        return None
    if new - old < MIN_LATENCY_CHANGE_MS or change <= limit:
        return None
    return f"{name} p99 {_fmt(old)} ms -> {_fmt(new)} ms ({_fmt_change(old, new)}, limit +{limit:g}%)"


def _metrics(a: dict[str, Any], b: dict[str, Any], limit: float) -> _Section:
    section = _Section("latency (ms)")
    before, after = as_mapping(a.get("metrics")), as_mapping(b.get("metrics"))
    for name in sorted(set(before) & set(after)):
        old, new = as_mapping(before[name]), as_mapping(after[name])
        old_count, new_count = as_number(old.get("count")), as_number(new.get("count"))
        section.rows.append(
            _Row(f"{name} count", _fmt(old_count, 0), _fmt(new_count, 0), _fmt_change(old_count, new_count))
        )
        regression = _p99_regression(name, old, new, limit)
        for label, key in LATENCY_STATS:
            old_ms, new_ms = as_number(old.get(key)), as_number(new.get(key))
            flag = "REGRESSION" if regression and key == "p99_ms" else ""
            section.rows.append(
                _Row(f"{name} {label}", _fmt(old_ms), _fmt(new_ms), _fmt_change(old_ms, new_ms), flag)
            )
        if regression:
            section.regressions.append(regression)
    section.rows += _presence_rows(before, after)
    return section


def _throughput(a: dict[str, Any], b: dict[str, Any], limit: float) -> _Section:
    section = _Section("throughput (/s)")
    before, after = as_mapping(a.get("throughput")), as_mapping(b.get("throughput"))
    for name in sorted(set(before) & set(after)):
        old, new = as_number(before[name]), as_number(after[name])
        change = _pct(old, new)
        fell = old is not None and old > 0 and change is not None and -change > limit
        section.rows.append(
            _Row(name, _fmt(old, 1), _fmt(new, 1), _fmt_change(old, new), "REGRESSION" if fell else "")
        )
        if fell:
            section.regressions.append(
                f"throughput {name} {_fmt(old, 1)}/s -> {_fmt(new, 1)}/s "
                f"({_fmt_change(old, new)}, limit -{limit:g}%)"
            )
    section.rows += _presence_rows(before, after)
    return section


def _errors(a: dict[str, Any], b: dict[str, Any], limit: float) -> _Section:
    section = _Section("errors")
    before, after = as_mapping(a.get("errors")), as_mapping(b.get("errors"))
    for kind in sorted(set(before) | set(after)):
        old, new = as_number(before.get(kind)) or 0.0, as_number(after.get(kind)) or 0.0
        change = _pct(old, new)
        regression = None
        if old == 0 and new > 0:
            regression = f"new error kind {kind} ({_fmt(new, 0)})"
        elif change is not None and change > limit:
            regression = (
                f"errors {kind} {_fmt(old, 0)} -> {_fmt(new, 0)} ({_fmt_change(old, new)}, limit +{limit:g}%)"
            )
        change_text = "new" if old == 0 and new > 0 else _fmt_change(old, new)
        section.rows.append(
            _Row(kind, _fmt(old, 0), _fmt(new, 0), change_text, "REGRESSION" if regression else "")
        )
        if regression:
            section.regressions.append(regression)
    return section


def _passed_text(passed: Any) -> str:
    if passed is True:
        return "passed"
    return "FAILED" if passed is False else DASH


def _audit(a: dict[str, Any], b: dict[str, Any]) -> _Section:
    section = _Section("audit")
    before, after = as_mapping(a.get("audit")), as_mapping(b.get("audit"))
    # A baseline that did not fail (passed, or had no audit) followed by a failure is a regression;
    # a run that failed in both is reported but was already broken before this change.
    failed_now = after.get("passed") is False and before.get("passed") is not False
    section.rows.append(
        _Row(
            "passed",
            _passed_text(before.get("passed")),
            _passed_text(after.get("passed")),
            flag="REGRESSION" if failed_now else "",
        )
    )
    for key in AUDIT_COUNTS:
        old, new = as_number(before.get(key)), as_number(after.get(key))
        section.rows.append(_Row(key, _fmt(old, 0), _fmt(new, 0), _fmt_change(old, new)))
    if failed_now:
        bad = [
            f"{key} {_fmt(as_number(after.get(key)), 0)}" for key in AUDIT_COUNTS if as_number(after.get(key))
        ]
        section.regressions.append("audit passed -> failed" + (f" ({', '.join(bad)})" if bad else ""))
    return section


def _shortfall_text(load: dict[str, Any]) -> str:
    if "shortfall" not in load:
        return DASH
    if load["shortfall"] is not True:
        return "none"
    listed = load.get("short")
    short = [name for name in listed if isinstance(name, str)] if isinstance(listed, list) else []
    return "SHORT: " + ", ".join(short) if short else "SHORT"


def _load(a: dict[str, Any], b: dict[str, Any]) -> _Section:
    """A run that did not deliver its planned load measured less than it claims: B falling short
    where A did not is a regression (the numbers of the two are not comparable)."""
    section = _Section("load delivered")
    before, after = as_mapping(a.get("load")), as_mapping(b.get("load"))
    short_now = after.get("shortfall") is True and before.get("shortfall") is not True
    if before or after:
        section.rows.append(
            _Row(
                "shortfall",
                _shortfall_text(before),
                _shortfall_text(after),
                flag="REGRESSION" if short_now else "",
            )
        )
    if short_now:
        section.regressions.append(f"load as planned -> {_shortfall_text(after).lower()}")
    return section


def _plain(
    title: str, before: dict[str, Any], after: dict[str, Any], keys: Sequence[str], digits: int
) -> _Section:
    """Context without a verdict: CPU and connections explain a change but are not one."""
    section = _Section(title)
    for key in keys:
        old, new = as_number(before.get(key)), as_number(after.get(key))
        section.rows.append(_Row(key, _fmt(old, digits), _fmt(new, digits), _fmt_change(old, new)))
    return section


def _parameters(a: dict[str, Any], b: dict[str, Any]) -> _Section:
    """Only the parameters that differ: comparing runs of different plans is allowed but worth a look."""
    section = _Section("parameters that differ")
    before, after = as_mapping(a.get("parameters")), as_mapping(b.get("parameters"))
    for key in sorted(set(before) | set(after)):
        if before.get(key, DASH) != after.get(key, DASH):
            old = json.dumps(before[key]) if key in before else DASH
            new = json.dumps(after[key]) if key in after else DASH
            section.rows.append(_Row(key, old, new))
    return section


# --- the table ---


def _render(header: list[str], sections: Sequence[_Section]) -> list[str]:
    """One aligned table for all sections, so A and B read as two columns down the whole output."""
    shown = [section for section in sections if section.rows]
    rows = [row for section in shown for row in section.rows]
    before_w, after_w, change_w = (
        max([len(title), *(len(getattr(row, column)) for row in rows)])
        for column, title in (("before", "A"), ("after", "B"), ("change", "change"))
    )
    # Section titles share the label column, outdented by the rows' two-space indent.
    label_w = max([0, *(len(row.label) for row in rows), *(len(section.title) - 2 for section in shown)])
    lines = list(header)
    for section in shown:
        lines.append("")
        lines.append(
            f"{section.title:<{label_w + 2}}  {'A':>{before_w}}  {'B':>{after_w}}  {'change':>{change_w}}"
        )
        for row in section.rows:
            line = (
                f"  {row.label:<{label_w}}  {row.before:>{before_w}}  {row.after:>{after_w}}"
                f"  {row.change:>{change_w}}  {row.flag}"
            )
            lines.append(line.rstrip())
    return lines


def compare(
    a: dict[str, Any], b: dict[str, Any], max_regression_pct: float = DEFAULT_MAX_REGRESSION_PCT
) -> Comparison:
    """Compare baseline `a` with run `b`; a regression is a change beyond `max_regression_pct`.

    Regressions: a p99 that grew more than the limit (with at least MIN_SAMPLES samples on both
    sides and at least MIN_LATENCY_CHANGE_MS more), a throughput that fell more than the limit,
    a new error kind or an error count that grew more than the limit, an audit that failed after
    a baseline that did not, a load that fell short after a baseline that did not. Metrics or
    throughputs in only one result are listed, not judged.
    """
    sections = [
        _metrics(a, b, max_regression_pct),
        _throughput(a, b, max_regression_pct),
        _errors(a, b, max_regression_pct),
        _audit(a, b),
        _load(a, b),
        _plain("cpu and duration", a, b, CPU_KEYS, 2),
        _plain(
            "connections",
            as_mapping(a.get("connections")),
            as_mapping(b.get("connections")),
            CONNECTION_KEYS,
            0,
        ),
        _parameters(a, b),
    ]
    header = [f"A (baseline): {_describe(a)}", f"B:            {_describe(b)}"]
    return Comparison(
        lines=_render(header, sections),
        regressions=[regression for section in sections for regression in section.regressions],
    )


# --- the command ---


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="live-loadtest compare",
        description="Compare two live-loadtest JSON results: A is the baseline, B the new run. "
        "Exit 0: no regression; 1: B regressed; 2: bad input.",
    )
    parser.add_argument("a", type=Path, metavar="A.json", help="baseline result")
    parser.add_argument("b", type=Path, metavar="B.json", help="result to judge against the baseline")
    parser.add_argument(
        "--max-regression",
        type=float,
        default=DEFAULT_MAX_REGRESSION_PCT,
        metavar="PCT",
        help="tolerated worsening in percent (default %(default)g)",
    )
    return parser


def _parse(argv: Sequence[str]) -> argparse.Namespace | int:
    """The parsed arguments, or the exit code argparse chose (2 on a usage error, 0 for --help)."""
    try:
        args = _parser().parse_args(list(argv))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    if not math.isfinite(args.max_regression) or args.max_regression < 0:
        print("live-loadtest compare: --max-regression must be a non-negative number", file=sys.stderr)
        return 2
    return args


def main(argv: Sequence[str]) -> int:
    """`live-loadtest compare A.json B.json [--max-regression PCT]`; argv holds only what follows
    `compare`. Returns the exit code: 0 no regression, 1 regression, 2 bad input."""
    args = _parse(argv)
    if isinstance(args, int):
        return args
    try:
        a, b = load_result(args.a), load_result(args.b)
    except ResultError as exc:
        print(f"live-loadtest compare: {exc}", file=sys.stderr)
        return 2
    comparison = compare(a, b, args.max_regression)
    print("\n".join(comparison.lines))
    print()
    if not comparison.regressed:
        print(f"No regression (limit {args.max_regression:g}%).")
        return 0
    print(f"{len(comparison.regressions)} regression(s) (limit {args.max_regression:g}%):")
    for regression in comparison.regressions:
        print(f"  - {regression}")
    return 1
