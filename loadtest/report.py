"""The `live-loadtest` report: one HTML page and four PNG plots from a `live-loadtest/1` result.

The page must open offline, from a CI artifact or a mail attachment, so it is self-contained:
the plots are embedded as data: URIs, the CSS is inline and there is no script or web font.
Every string in the result may come from a server (error kinds, outcomes, notes), so every
string is escaped before it reaches the page.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
from hdrh.histogram import HdrHistogram
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

from loadtest.result import as_mapping, as_number, started
from loadtest.tools_audit import TOOL_COUNTS

REPORT_FILE = "report.html"
LATENCY_OVER_TIME = "latency_over_time.png"
THROUGHPUT_OVER_TIME = "throughput_over_time.png"
CONNECTIONS_OVER_TIME = "connections_over_time.png"
LATENCY_DISTRIBUTION = "latency_distribution.png"
PLOT_FILES = (LATENCY_OVER_TIME, THROUGHPUT_OVER_TIME, CONNECTIONS_OVER_TIME, LATENCY_DISTRIBUTION)

AUDIT_COUNTS = ("oversold", "lost_orders", "duplicate_orders", "over_limit", "chat_unaccounted")
AUDIT_DETAILS = ("read_from", "sales", "chat", "tools", "reconcile", "notes")
#: The per-node table (a run against several --url): column heading -> key of a `nodes` entry.
NODE_COLUMNS = (
    ("connections", "connections"),
    ("viewers", "viewers"),
    ("buyers", "buyers"),
    ("team members", "team_members"),
    ("connected", "connected"),
    ("lost", "lost"),
    ("reconnected here", "reconnected"),
    ("open at end", "open_at_end"),
    ("orders heard", "acked_orders"),
    ("lost orders", "lost_orders"),
)
METRIC_COLUMNS = (
    ("p50", "p50_ms"),
    ("p90", "p90_ms"),
    ("p99", "p99_ms"),
    ("p99.9", "p999_ms"),
    ("max", "max_ms"),
)

FIGURE_SIZE = (10.0, 4.5)
FIGURE_DPI = 100
# tab20 gives 20 distinguishable colours: enough for every latency metric of a big-night run.
COLOURS = "tab20"
# The percentile axis shows at least 1/(1-p) = 10^4 (99.99%) so runs of different sizes look alike.
MIN_NINES = 4
DASH = "\N{EN DASH}"


class Html(str):
    """Markup that is already escaped: `_cell` passes it through, everything else is escaped."""


@dataclass(frozen=True)
class Plot:
    file: str
    title: str
    png: bytes


# --- reading the result defensively: it comes from a file, any part may be missing or odd ---


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _series(value: Any, length: int | None = None) -> list[float]:
    """A timeline series as floats, NaN where a second had no sample (matplotlib draws a gap)."""
    numbers = [as_number(item) for item in _list(value)[:length]]
    return [math.nan if item is None else item for item in numbers]


# --- formatting ---


def _e(value: object) -> Html:
    return Html(html.escape(str(value), quote=True))


def _fmt_ms(value: Any) -> str:
    number = as_number(value)
    if number is None:
        return DASH
    if abs(number) >= 100:
        return f"{number:,.0f}"
    return f"{number:.1f}" if abs(number) >= 10 else f"{number:.2f}"


def _fmt_count(value: Any) -> str:
    number = as_number(value)
    if number is None:
        return DASH
    return f"{number:,.0f}" if number == int(number) else f"{number:,.2f}"


def _fmt_rate(value: Any) -> str:
    number = as_number(value)
    if number is None:
        return DASH
    return f"{number:,.1f}" if abs(number) >= 10 else f"{number:,.2f}"


def _scalar_text(value: Any) -> str:
    # Strings as they are; everything else as JSON, so a parameter reads as it was given.
    return value if isinstance(value, str) else json.dumps(value)


# --- HTML building blocks ---


def _cell(value: object) -> str:
    return value if isinstance(value, Html) else _e(value)


def _table(headers: Sequence[str], rows: Iterable[Sequence[object]], numeric_from: int = 1) -> Html:
    """A table whose columns from `numeric_from` on are right-aligned numbers."""

    def row_html(cells: Sequence[object], tag: str) -> str:
        parts = []
        for index, cell in enumerate(cells):
            css = ' class="num"' if index >= numeric_from else ""
            parts.append(f"<{tag}{css}>{_cell(cell)}</{tag}>")
        return "<tr>" + "".join(parts) + "</tr>"

    head = row_html(headers, "th")
    body = "".join(row_html(row, "td") for row in rows)
    return Html(f"<table><thead>{head}</thead><tbody>{body}</tbody></table>")


def _key_values(pairs: Iterable[tuple[str, object]]) -> Html:
    rows = "".join(f"<tr><th>{_e(key)}</th><td>{_cell(value)}</td></tr>" for key, value in pairs)
    return Html(f'<table class="kv"><tbody>{rows}</tbody></table>') if rows else _muted("none")


def _muted(text: str) -> Html:
    return Html(f'<p class="muted">{_e(text)}</p>')


def _section(title: str, body: str) -> str:
    return f"<section><h2>{_e(title)}</h2>{body}</section>"


def _render_value(value: Any, depth: int = 0) -> Html:
    """Any JSON value as HTML: the audit details have no fixed shape in the schema."""
    if depth > 4:
        # Deeper structure is rare; JSON text keeps it readable without a maze of tables.
        return Html(f"<code>{_e(json.dumps(value))}</code>")
    if isinstance(value, dict):
        if not value:
            return _e(DASH)
        return _key_values((str(key), _render_value(item, depth + 1)) for key, item in value.items())
    if isinstance(value, list):
        if not value:
            return _e(DASH)
        # Short words and numbers read well inline; sentences (notes) and structures as a list.
        if all(not isinstance(item, dict | list) and " " not in _scalar_text(item) for item in value):
            return _e(", ".join(_scalar_text(item) for item in value))
        items = "".join(f"<li>{_render_value(item, depth + 1)}</li>" for item in value)
        nested = any(isinstance(item, dict | list) for item in value)
        return Html(f'<ul class="nested">{items}</ul>' if nested else f"<ul>{items}</ul>")
    return _e(_scalar_text(value))


# --- plots ---


def _new_axes(title: str, ylabel: str) -> tuple[Figure, Axes]:
    # A bare Figure with its own Agg canvas: no pyplot, so no global state and no GUI backend.
    figure = Figure(figsize=FIGURE_SIZE, dpi=FIGURE_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.set_title(title)
    axes.set_ylabel(ylabel)
    axes.grid(True, which="major", alpha=0.3)
    return figure, axes


def _no_data(axes: Axes) -> None:
    axes.text(0.5, 0.5, "no data", transform=axes.transAxes, ha="center", va="center", color="grey")
    axes.set_xticks([])
    axes.set_yticks([])


def _colour(index: int) -> tuple[float, float, float, float]:
    # tab20 pairs a dark and a light shade of each hue: take the ten dark ones first, so
    # neighbouring curves never differ only by shade.
    return matplotlib.colormaps[COLOURS]((2 * index) % 20 + (index // 10) % 2)


def _log_ms_axis(axes: Axes) -> None:
    # 1-2-5 ticks labelled as plain milliseconds read better than matplotlib's 3x10^1 minor labels.
    axes.set_yscale("log")
    axes.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axes.yaxis.set_minor_locator(NullLocator())
    axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,g}"))


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _finish(figure: Figure, axes: Axes, drawn: bool) -> bytes:
    if not drawn:
        _no_data(axes)
    elif axes.get_legend_handles_labels()[0]:
        figure.legend(loc="outside right upper", fontsize="small")
    return _png(figure)


def _has_positive(values: Sequence[float]) -> bool:
    return any(value > 0 for value in values if not math.isnan(value))


def _timeline(result: dict[str, Any]) -> tuple[dict[str, Any], list[float]]:
    timeline = as_mapping(result.get("timeline"))
    # NaN, not dropped, for an odd entry: the series must stay aligned with their seconds.
    return timeline, _series(timeline.get("t_s"))


def _latency_over_time(result: dict[str, Any]) -> bytes:
    figure, axes = _new_axes("Latency over time (solid: p99, dashed: p50)", "ms")
    timeline, times = _timeline(result)
    drawn = False
    for index, (name, stats) in enumerate(sorted(as_mapping(timeline.get("latency")).items())):
        p50 = _series(as_mapping(stats).get("p50_ms"), len(times))
        p99 = _series(as_mapping(stats).get("p99_ms"), len(times))
        if not (_has_positive(p50) or _has_positive(p99)):
            continue
        colour = _colour(index)
        axes.plot(times[: len(p99)], p99, color=colour, linewidth=1.5, label=name)
        axes.plot(times[: len(p50)], p50, color=colour, linewidth=1, linestyle="--", alpha=0.7)
        drawn = True
    if drawn:
        _log_ms_axis(axes)
        axes.set_xlabel("seconds since start of load")
    return _finish(figure, axes, drawn)


def _throughput_over_time(result: dict[str, Any]) -> bytes:
    figure, axes = _new_axes("Throughput over time", "events per second")
    timeline, times = _timeline(result)
    drawn = False
    for index, (name, values) in enumerate(sorted(as_mapping(timeline.get("throughput")).items())):
        series = _series(values, len(times))
        if not series:
            continue
        axes.plot(times[: len(series)], series, color=_colour(index), linewidth=1.5, label=name)
        drawn = True
    if drawn:
        axes.set_xlabel("seconds since start of load")
        # Frames received run at 10,000s/s beside a few host messages/s: a linear axis would
        # flatten everything but the largest. symlog keeps 0 (a quiet second) on the plot.
        axes.set_yscale("symlog", linthresh=1)
        axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,g}"))
        axes.set_ylim(bottom=0)
    return _finish(figure, axes, drawn)


def _connections_over_time(result: dict[str, Any]) -> bytes:
    figure, axes = _new_axes("Open connections over time", "connections")
    timeline, times = _timeline(result)
    series = _series(timeline.get("connections"), len(times))
    drawn = bool(series)
    if drawn:
        axes.plot(times[: len(series)], series, linewidth=1.5, label="open")
        target = as_number(as_mapping(result.get("connections")).get("target"))
        if target is not None:
            axes.axhline(target, color="grey", linestyle="--", linewidth=1, label="target")
        axes.set_xlabel("seconds since start of load")
        axes.set_ylim(bottom=0)
    return _finish(figure, axes, drawn)


def _decode(encoded: Any) -> HdrHistogram | None:
    if not isinstance(encoded, str) or not encoded:
        return None
    try:
        histogram = HdrHistogram.decode(encoded)
    except Exception:
        # A corrupt histogram (binascii, zlib, hdrh's own cookie errors...) loses one curve,
        # not the whole report.
        return None
    return histogram if histogram.get_total_count() > 0 else None


def _spectrum(histogram: HdrHistogram) -> tuple[list[float], list[float]]:
    """Points (1/(1-p), ms) of the percentile spectrum, the classic HdrHistogram plot.

    The x axis stops at the sample count: beyond 1/(1-p) = n the histogram has no more to
    say, so that last point is the maximum.
    """
    total = histogram.get_total_count()
    decades = max(1, math.ceil(math.log10(total)))
    # 20 points per decade of 1/(1-p): smooth on a log axis, and cheap.
    grid = (10 ** (step / 20) for step in range(0, 20 * decades + 1))
    xs = [x for x in grid if x < total]
    percentiles = [100.0 * (1.0 - 1.0 / x) for x in xs]
    values = histogram.get_percentile_to_value_dict(percentiles)
    ys = [values.get(p, histogram.get_max_value()) / 1000.0 for p in percentiles]
    xs.append(float(max(total, 1)))
    ys.append(histogram.get_max_value() / 1000.0)
    return xs, ys


def _percentile_axis(axes: Axes, largest_x: float) -> None:
    nines = max(MIN_NINES, math.ceil(math.log10(largest_x)))
    axes.set_xscale("log")
    axes.set_xlim(1, 10**nines)
    ticks = [2.0] + [10.0**k for k in range(1, nines + 1)]
    labels = ["50%"] + [f"{100 * (1 - 10.0**-k):.{max(0, k - 2)}f}%" for k in range(1, nines + 1)]
    axes.set_xticks(ticks, labels)
    axes.minorticks_off()
    axes.set_xlabel("percentile")


def _latency_distribution(result: dict[str, Any]) -> bytes:
    figure, axes = _new_axes("Latency by percentile (whole run)", "ms")
    largest_x = 0.0
    drawn = False
    for index, (name, encoded) in enumerate(sorted(as_mapping(result.get("histograms")).items())):
        histogram = _decode(encoded)
        if histogram is None:
            continue
        xs, ys = _spectrum(histogram)
        label = f"{name} (n={histogram.get_total_count():,})"
        axes.plot(xs, ys, color=_colour(index), linewidth=1.5, label=label)
        largest_x = max(largest_x, xs[-1])
        drawn = _has_positive(ys) or drawn
    if drawn:
        _percentile_axis(axes, largest_x)
        _log_ms_axis(axes)
    return _finish(figure, axes, drawn)


def _plots(result: dict[str, Any]) -> list[Plot]:
    return [
        Plot(LATENCY_OVER_TIME, "Latency over time", _latency_over_time(result)),
        Plot(THROUGHPUT_OVER_TIME, "Throughput over time", _throughput_over_time(result)),
        Plot(CONNECTIONS_OVER_TIME, "Connections over time", _connections_over_time(result)),
        Plot(LATENCY_DISTRIBUTION, "Latency distribution", _latency_distribution(result)),
    ]


# --- page sections ---


def _banner(result: dict[str, Any]) -> str:
    audit = as_mapping(result.get("audit"))
    passed = audit.get("passed")
    counts = " &middot; ".join(
        f'<span class="{"bad" if (as_number(audit.get(key)) or 0) else "ok"}">'
        f"{_e(key.replace('_', ' '))} {_e(_fmt_count(audit.get(key)))}</span>"
        # (the interaction tools' counts when the run had a tool)
        for key in (*AUDIT_COUNTS, *(TOOL_COUNTS if audit.get("tools") else ()))
    )
    if passed is True:
        css, verdict = "pass", "Audit passed"
    elif passed is False:
        css, verdict = "fail", "Audit FAILED"
    else:
        css, verdict = "none", "No audit"
    detail = f'<div class="counts">{counts}</div>' if audit else ""
    return f'<div class="banner {css}"><strong>{_e(verdict)}</strong>{detail}</div>' + _load_banner(result)


def _load_banner(result: dict[str, Any]) -> str:
    """A run that did not deliver its planned load says so as loudly as a failed audit: an audit
    of a rush that never reached the server proves nothing."""
    load = as_mapping(result.get("load"))
    if load.get("shortfall") is not True:
        return ""
    streams = as_mapping(load.get("streams"))
    short = [
        f"{_scalar_text(name)} {_fmt_count(as_mapping(streams.get(name)).get('unsent'))} of "
        f"{_fmt_count(as_mapping(streams.get(name)).get('planned'))} unsent"
        for name in _list(load.get("short"))
        if isinstance(name, str)
    ]
    verdict = "Load SHORTFALL: the run did not deliver the load it planned"
    if load.get("allowed") is True:
        verdict += " (accepted by --allow-shortfall)"
    detail = f'<div class="counts">{_e(" · ".join(short))}</div>' if short else ""
    return f'<div class="banner fail"><strong>{_e(verdict)}</strong>{detail}</div>'


def _run_card(result: dict[str, Any]) -> Html:
    parts = _list(result.get("scenarios"))
    return _key_values(
        [
            ("scenario", _scalar_text(result.get("scenario", DASH))),
            ("parts", ", ".join(_scalar_text(part) for part in parts) or DASH),
            ("started", started(result, seconds=True)),
            ("duration", f"{_fmt_rate(result.get('duration_s'))} s"),
            ("schema", _scalar_text(result.get("schema", DASH))),
        ]
    )


def _cpu_card(result: dict[str, Any]) -> Html:
    duration = as_number(result.get("duration_s"))
    server = as_number(result.get("server_cpu_s"))
    # The schema gives harness_cores but no server equivalent; the same division makes them comparable.
    server_cores = server / duration if server is not None and duration else None
    return _key_values(
        [
            ("harness CPU", f"{_fmt_rate(result.get('harness_cpu_s'))} s"),
            ("harness cores", _fmt_rate(result.get("harness_cores"))),
            ("server CPU", f"{_fmt_rate(server)} s" if server is not None else "not measured"),
            ("server cores", _fmt_rate(server_cores) if server_cores is not None else DASH),
        ]
    )


def _dict_card(value: Any) -> Html:
    return _key_values((str(key), _render_value(item)) for key, item in as_mapping(value).items())


def _overview(result: dict[str, Any]) -> str:
    cards = [
        ("Run", _run_card(result)),
        ("Target", _dict_card(result.get("target"))),
        ("Machine", _dict_card(result.get("machine"))),
        ("CPU", _cpu_card(result)),
        ("Connections", _dict_card(result.get("connections"))),
    ]
    body = "".join(f'<div class="card"><h3>{_e(title)}</h3>{card}</div>' for title, card in cards)
    return f'<div class="cards">{body}</div>'


def _metrics_section(result: dict[str, Any]) -> str:
    metrics = as_mapping(result.get("metrics"))
    rows = [
        [name, _fmt_count(as_mapping(stats).get("count"))]
        + [_fmt_ms(as_mapping(stats).get(key)) for _, key in METRIC_COLUMNS]
        for name, stats in sorted(metrics.items())
    ]
    headers = ["metric", "count"] + [f"{label} ms" for label, _ in METRIC_COLUMNS]
    return _section("Latency", _table(headers, rows) if rows else _muted("No metrics."))


def _throughput_section(result: dict[str, Any]) -> str:
    throughput = as_mapping(result.get("throughput"))
    counts = as_mapping(result.get("counts"))
    names = sorted(set(throughput) | set(counts))
    rows = [[name, _fmt_rate(throughput.get(name)), _fmt_count(counts.get(name))] for name in names]
    body = _table(["name", "per second", "total"], rows) if rows else _muted("No throughput.")
    return _section("Throughput", body)


def _errors_section(result: dict[str, Any]) -> str:
    errors = as_mapping(result.get("errors"))
    ordered = sorted(errors.items(), key=lambda item: (-(as_number(item[1]) or 0), item[0]))
    rows = [[kind, _fmt_count(count)] for kind, count in ordered]
    return _section("Errors", _table(["kind", "count"], rows) if rows else _muted("No errors."))


def _outcomes_section(result: dict[str, Any]) -> str:
    rows: list[list[object]] = []
    for command, outcomes in sorted(as_mapping(result.get("outcomes")).items()):
        by_outcome = as_mapping(outcomes)
        total = sum(as_number(count) or 0 for count in by_outcome.values())
        for outcome, count in sorted(by_outcome.items()):
            share = (as_number(count) or 0) / total * 100 if total else None
            rows.append([command, outcome, _fmt_count(count), f"{share:.1f}%" if share is not None else DASH])
    body = _table(["command", "outcome", "count", "share"], rows, numeric_from=2) if rows else None
    return _section("Outcomes", body or _muted("No outcomes."))


def _audit_section(result: dict[str, Any]) -> str:
    audit = as_mapping(result.get("audit"))
    parts = [
        f"<h3>{_e(key)}</h3>{_render_value(audit[key])}"
        for key in AUDIT_DETAILS
        if audit.get(key) not in (None, "", [], {})
    ]
    return _section("Audit details", "".join(parts) or _muted("No audit details."))


def _load_section(result: dict[str, Any]) -> str:
    load = as_mapping(result.get("load"))
    parts = [
        f"<h3>{_e(key)}</h3>{_render_value(load[key])}"
        for key in ("shortfall", "max_unsent_share", "streams", "starts", "notes")
        if load.get(key) not in (None, "", [], {})
    ]
    return _section("Load delivered", "".join(parts) or _muted("No load accounting."))


def _nodes_section(result: dict[str, Any]) -> str:
    """What each node was given and what it did; absent for a result from before several nodes."""
    entries = [as_mapping(node) for node in _list(result.get("nodes"))]
    if not entries:
        return ""
    rows: list[list[object]] = []
    for node in entries:
        errors = as_mapping(node.get("errors"))
        ordered = sorted(errors.items(), key=lambda item: (-(as_number(item[1]) or 0), item[0]))
        listed = ", ".join(f"{kind} {_fmt_count(count)}" for kind, count in ordered) or DASH
        url = _scalar_text(node.get("url", DASH)) + (" (host)" if node.get("host") is True else "")
        rows.append([url, *(_fmt_count(node.get(key)) for _, key in NODE_COLUMNS), listed])
    headers = ["node", *(label for label, _ in NODE_COLUMNS), "errors"]
    body = _table(headers, rows)
    return _section("Nodes", body)


def _parameters_section(result: dict[str, Any]) -> str:
    return _section("Parameters", _dict_card(result.get("parameters")))


def _plots_section(plots: Sequence[Plot]) -> str:
    figures = "".join(
        f'<figure><img alt="{_e(plot.title)}" src="data:image/png;base64,'
        f'{base64.b64encode(plot.png).decode("ascii")}"><figcaption>{_e(plot.title)} '
        f"({_e(plot.file)})</figcaption></figure>"
        for plot in plots
    )
    return _section("Plots", figures)


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;
 color:#1f2328;background:#f6f8fa;line-height:1.4}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{margin:0 0 4px;font-size:1.6em}
h2{font-size:1.2em;border-bottom:1px solid #d0d7de;padding-bottom:4px;margin-top:32px}
h3{font-size:1em;margin:12px 0 6px}
.sub{color:#59636e;margin:0 0 16px}
.banner{padding:12px 16px;border-radius:6px;margin:16px 0;font-size:1.1em}
.banner.pass{background:#dafbe1;border:1px solid #4ac26b}
.banner.fail{background:#ffebe9;border:1px solid #ff8182}
.banner.none{background:#eaeef2;border:1px solid #d0d7de}
.counts{font-size:.9em;margin-top:4px}
.counts .bad{color:#cf222e;font-weight:600}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(320px,1fr));gap:12px}
.card{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:8px 12px}
table{border-collapse:collapse;background:#fff;font-size:.9em}
th,td{padding:4px 10px;border-bottom:1px solid #eaeef2;text-align:left;vertical-align:top}
thead th{background:#eaeef2}
tbody tr:nth-child(even){background:#f6f8fa}
.num{text-align:right;font-variant-numeric:tabular-nums}
table.kv th{font-weight:600;color:#59636e;white-space:nowrap}
table.kv td{white-space:pre-wrap}
.card table{width:100%}
.muted{color:#59636e}
ul{margin:0;padding-left:20px}
ul.nested{list-style:none;padding:0}
ul.nested>li{margin-bottom:8px}
figure{margin:16px 0;background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:8px}
figure img{max-width:100%;height:auto;display:block}
figcaption{color:#59636e;font-size:.85em}
code{font-size:.9em}
"""


def _against(target: dict[str, Any]) -> str:
    urls = [_scalar_text(url) for url in _list(target.get("urls"))]
    if len(urls) > 1:
        return f"{len(urls)} nodes: {', '.join(urls)}"
    return _scalar_text(target.get("url", DASH))


def _page(result: dict[str, Any], plots: Sequence[Plot]) -> str:
    scenario = _scalar_text(result.get("scenario", "unknown scenario"))
    title = f"live-loadtest: {scenario}, {started(result, seconds=True)}"
    body = "".join(
        [
            f"<h1>{_e(title)}</h1>",
            f'<p class="sub">{_e(_fmt_rate(result.get("duration_s")))} s of load against '
            f"{_e(_against(as_mapping(result.get('target'))))}</p>",
            _banner(result),
            _overview(result),
            _nodes_section(result),
            _metrics_section(result),
            _throughput_section(result),
            _errors_section(result),
            _outcomes_section(result),
            _plots_section(plots),
            _audit_section(result),
            _load_section(result),
            _parameters_section(result),
        ]
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head>"
        f"<body><main>{body}</main></body></html>\n"
    )


def write_report(result: dict[str, Any], directory: Path) -> Path:
    """Write `directory/report.html` and the four plot PNGs beside it; return the HTML's path."""
    directory.mkdir(parents=True, exist_ok=True)
    plots = _plots(result)
    for plot in plots:
        (directory / plot.file).write_bytes(plot.png)
    path = directory / REPORT_FILE
    path.write_text(_page(result, plots), encoding="utf-8")
    return path
