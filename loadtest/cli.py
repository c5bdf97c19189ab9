"""`live-loadtest`: rehearse a big night against a live server on this machine.

    live-loadtest --spawn big-night --duration 60 --json out.json --report out/
    live-loadtest --url http://127.0.0.1:8080 --data-dir live-data audience --viewers 20000
    live-loadtest --url http://127.0.0.1:8081 --url http://127.0.0.1:8082 --secret S rush
    live-loadtest compare baseline.json new.json

Exit status: 0 the run passed its audit and delivered its load, 1 the audit failed (or
compare found a regression), 2 the run could not be made (bad flags, server unreachable, a
worker died), 3 the audit passed but the load fell short of the plan (a stream with more than
--max-unsent-share of its events never sent; --allow-shortfall accepts that with 0).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loadtest import shortfall
from loadtest.api import ApiError
from loadtest.plan import ALIASES, FIELDS, SCENARIOS, Plan, PlanError, expand, load_toml
from loadtest.progress import Progress
from loadtest.run import Run, Target
from loadtest.tools_audit import TOOL_COUNTS

EXIT_PASSED, EXIT_FAILED, EXIT_ERROR, EXIT_SHORTFALL = 0, 1, 2, 3
#: Where results go when neither --json nor --report is given.
DEFAULT_OUTPUT = "live-loadtest-results"

#: Flags are the plan's field names with - for _ and without the _s of seconds, except these.
FLAG_NAMES = {"team_s": "team_deadline", "auction_s": "auction_duration"}
#: --url may be given once per node, up to this many.
MAX_NODES = 64

HELP = {
    "duration_s": "length of the load phase in seconds, ramp included (default 30)",
    "viewers": "audience size (default 1000)",
    "ramp_s": "seconds to connect everyone (default: a quarter of the run, at most 10)",
    "observers": "viewers that decode every frame for chat accounting and latency (default 20)",
    "heartbeat_s": "seconds between each connection's pings (default 15)",
    "framing": "json or msgpack (default json)",
    "chat_rate": "comments per second into the room (default 50)",
    "like_rate": "likes per second (default 200)",
    "host_rate": "host messages per second (default 1)",
    "buyers": "buyers in the rush (default 1000)",
    "rush_rate": "reserve requests per second from the sale's start (default 2000)",
    "stock": "units in the rush's sale (default 300)",
    "per_user_limit": "units one buyer may hold and buy (default 2)",
    "max_quantity": "a buyer reserves 1..this many units (default 2)",
    "confirm_share": "share of holds confirmed (default 0.6)",
    "cancel_share": "share of holds cancelled; the rest expire (default 0.2)",
    "retry_share": "share of reserves sent twice with one rid (default 0.1)",
    "hold_s": "seconds a hold lasts (default 5)",
    "price_cents": "unit price (default 1999)",
    "teams": "group-buy teams (default 20)",
    "team_size": "members per team (default 3)",
    "team_fill_share": "share of teams that fill; the rest fail at their deadline (default 0.8)",
    "team_s": "a team's deadline in seconds (default 6)",
    "draw_entrants": "users entering the lucky draws (default 100)",
    "draw_winners": "winners of each draw (default 5)",
    "draw_keyword": "the keyword a comment enters the keyword draw with (default lucky)",
    "draw_comment_share": "share of entrants entering by comment; the rest by enter_draw (default 0.5)",
    "draw_repeat_share": "share of entrants entering twice (default 0.2)",
    "bidders": "users bidding in the auction (default 30)",
    "bids": "bids sent (default 150)",
    "auction_s": "the auction's duration in seconds before extensions (default 5)",
    "snipe_s": "anti-sniping window in seconds (default 2)",
    "max_extension_s": "cap on the auction's total extension in seconds (default 2)",
    "start_cents": "the auction's starting price (default 1000)",
    "increment_cents": "the auction's minimum increment (default 100)",
    "last_bid_share": "share of bids in the last snipe seconds and the extensions (default 0.6)",
    "low_bid_share": "share of bids deliberately below the minimum (default 0.1)",
    "bid_retry_share": "share of bids sent twice with one rid (default 0.1)",
    "voters": "users voting in the poll (default 100)",
    "poll_options": "the poll's options, 2..6 (default 4)",
    "vote_change_share": "share of voters changing their vote (default 0.3)",
    "vote_repeat_share": "share of voters voting the same again (default 0.1)",
    "qna_users": "Q&A users; all upvote (default 40)",
    "askers": "Q&A users that ask (default 15)",
    "upvotes": "upvotes sent (default 80)",
    "ask_repeat_share": "share of askers asking a second question (default 0.2)",
    "upvote_repeat_share": "share of upvotes sent again (default 0.1)",
    "workers": "harness worker processes (default: one per 8000 connections)",
    "source_addresses": "127.0.0.x source addresses (default: one per 25000 connections)",
    "connect_timeout_s": "handshake timeout (default 15)",
    "reply_timeout_s": "a request unanswered this long counts as no_reply (default 10)",
    "max_unsent_share": "a stream with more of its planned events unsent is a load shortfall, exit 3 "
    "(default 0.01)",
    "seed": "random seed (default 1)",
    "room": "room id (default lt-<random>)",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="live-loadtest",
        description="Load-test a live server on this machine: an audience, chat and like storms, host "
        "messages, a flash-sale rush, group buys, lucky draws, an auction, a poll and Q&A on one timeline; "
        "open-loop latency, an audit of the sale and the tools, a JSON result and an HTML report. "
        "`live-loadtest compare A.json B.json` compares runs.",
    )
    parser.add_argument(
        "scenarios",
        nargs="*",
        metavar="SCENARIO",
        help=f"any of {', '.join(SCENARIOS)}, or {', '.join(ALIASES)} (all of them; the default)",
    )
    target = parser.add_argument_group("target")
    target.add_argument("--spawn", action="store_true", help="start a private live serve with embedded Redis")
    target.add_argument(
        "--url",
        action="append",
        help="a running server, http://127.0.0.1:PORT (loopback only); give it once per node of a "
        "cluster: connections are spread over them round-robin, the setup is on the first",
    )
    target.add_argument("--secret", help="the server's HS256 secret (or LIVE_SECRET, or --data-dir)")
    target.add_argument(
        "--data-dir", type=Path, help="the local server's data dir: its secret, and reconcile"
    )
    target.add_argument(
        "--server-workers", type=int, help="with --spawn: server processes (default: by load)"
    )
    out = parser.add_argument_group("output")
    out.add_argument("--config", type=Path, help="a TOML file with any of these settings (flags win)")
    out.add_argument(
        "--json",
        type=Path,
        metavar="FILE",
        help=f"write the result here (default: in {DEFAULT_OUTPUT}/TIME-SCENARIO/)",
    )
    out.add_argument(
        "--report", type=Path, metavar="DIR", help="write report.html and PNG plots here (default: same)"
    )
    out.add_argument("--quiet", action="store_true", help="no progress display")
    out.add_argument(
        "--allow-shortfall",
        action="store_true",
        help="exit 0 even if the load fell short of the plan (the summary and result still say so)",
    )
    plan = parser.add_argument_group("plan")
    for f in dataclasses.fields(Plan):
        if f.name not in FIELDS:
            continue
        flag = "--" + FLAG_NAMES.get(f.name, f.name.removesuffix("_s")).replace("_", "-")
        kind = {"int": int, "float": float, "str": str}[str(f.type).split(" ")[0]]
        plan.add_argument(flag, dest=f.name, type=kind, default=None, help=HELP.get(f.name))
    return parser


def _settings(args: argparse.Namespace) -> tuple[Plan, dict[str, Any]]:
    """Defaults < TOML file < flags."""
    values: dict[str, Any] = load_toml(args.config) if args.config else {}
    for name in (*FIELDS, "url", "secret", "data_dir", "json", "report"):
        flag = getattr(args, name, None)
        if flag is not None and flag is not False:
            values[name] = flag
    if args.spawn:
        values["spawn"] = True
    if args.allow_shortfall:
        values["allow_shortfall"] = True
    names = args.scenarios or values.pop("scenarios", None) or ["big-night"]
    values.pop("scenarios", None)
    keys = ("url", "spawn", "secret", "data_dir", "json", "report", "allow_shortfall")
    outside: dict[str, Any] = {k: values.pop(k) for k in keys if k in values}
    if "url" in outside:
        outside["url"] = _urls(outside["url"])
    try:
        plan = Plan(scenarios=expand(list(names)), **values)
    except TypeError as exc:
        raise PlanError(str(exc)) from exc
    return plan, outside


def _urls(value: Any) -> list[str]:
    """The nodes' URLs: flags give a list, a TOML file a string or a list of strings."""
    urls = [value] if isinstance(value, str) else value
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        raise PlanError(f"url must be a URL or a list of URLs, not {value!r}")
    if len(urls) > MAX_NODES:
        raise PlanError(f"{len(urls)} URLs: at most {MAX_NODES} nodes")
    return urls


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["compare"]:
        from loadtest import compare

        return compare.main(argv[1:])
    args = _parser().parse_args(argv)
    try:
        plan, outside = _settings(args)
        if bool(outside.get("spawn")) == bool(outside.get("url")):
            raise PlanError("give either --spawn (a private server) or --url (a running one, once per node)")
        target = Target(
            urls=tuple(outside.get("url") or ()),
            spawn=bool(outside.get("spawn")),
            secret=outside.get("secret"),
            data_dir=Path(outside["data_dir"]) if outside.get("data_dir") else None,
            server_workers=args.server_workers,
        )
        progress = Progress(plan.duration_s, quiet=args.quiet)
        result = _run(Run(plan, target, progress))
    except (PlanError, ApiError) as exc:
        print(f"live-loadtest: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("live-loadtest: interrupted", file=sys.stderr)
        return EXIT_ERROR
    json_path, report_dir = outside.get("json"), outside.get("report")
    if not json_path and not report_dir:
        # Nothing asked for: keep both anyway, a run is too costly to lose its numbers.
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(result["started_at_ms"] / 1000))
        report_dir = Path(DEFAULT_OUTPUT) / f"{stamp}-{result['scenario']}"
        json_path = report_dir / "result.json"
    result["load"]["allowed"] = bool(outside.get("allow_shortfall"))
    _write(result, json_path, report_dir)
    print(summary(result))
    if not result["audit"]["passed"]:
        return EXIT_FAILED
    if result["load"]["shortfall"] and not result["load"]["allowed"]:
        return EXIT_SHORTFALL
    return EXIT_PASSED


def _run(run: Run) -> dict[str, Any]:
    try:
        import uvloop

        return uvloop.run(run.execute())
    except ImportError:
        return asyncio.run(run.execute())


def _write(result: dict[str, Any], json_path: Any, report_dir: Any) -> None:
    if json_path:
        path = Path(json_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"result: {path}", file=sys.stderr)
    if report_dir:
        from loadtest.report import write_report

        html = write_report(result, Path(report_dir))
        print(f"report: {html}", file=sys.stderr)


def summary(result: dict[str, Any]) -> str:
    """A short human summary for the terminal."""
    urls = result["target"].get("urls") or [result["target"]["url"]]
    against = urls[0] if len(urls) == 1 else f"{len(urls)} nodes"
    lines = [f"{result['scenario']}: {result['duration_s']:.1f} s against {against}"]
    conns = result["connections"]
    lines.append(f"  connections: peak {conns['peak']} of {conns['target']}, failed {conns['failed']}")
    if len(urls) > 1:
        for node in result.get("nodes", []):
            errors = sum(node["errors"].values())
            lines.append(
                f"    {node['url']}: {node['connections']} connections ({node['buyers']} buyers), "
                f"connected {node['connected']}, lost {node['lost']}, reconnected here "
                f"{node['reconnected']}, errors {errors}"
            )
    for name, m in result["metrics"].items():
        if m["count"]:
            lines.append(
                f"  {name:<14} n={m['count']:<8} p50 {m['p50_ms']:>8.1f} ms  p99 {m['p99_ms']:>8.1f} ms  "
                f"p99.9 {m['p999_ms']:>8.1f} ms  max {m['max_ms']:>8.1f} ms"
            )
    if result["errors"]:
        lines.append("  errors: " + ", ".join(f"{k} {v}" for k, v in result["errors"].items()))
    server = result["server_cpu_s"]
    lines.append(
        f"  cpu: harness {result['harness_cpu_s']:.1f} s ({result['harness_cores']} cores)"
        + (f", server {server:.1f} s" if server is not None else "")
    )
    audit = result["audit"]
    counts = ", ".join(
        f"{k} {audit[k]}" for k in ("oversold", "lost_orders", "duplicate_orders", "over_limit")
    )
    lines.append(
        f"  audit: {'PASSED' if audit['passed'] else 'FAILED'} ({counts}, chat_unaccounted "
        f"{audit['chat_unaccounted']})"
    )
    if audit.get("tools"):
        tools = ", ".join(f"{k} {audit.get(k, 0)}" for k in TOOL_COUNTS)
        lines.append(f"    tools: {tools}")
    if len(urls) > 1 and audit.get("read_from"):
        lines.append(f"    ledger read from {audit['read_from']}")
    lines.extend(f"    note: {n}" for n in audit["notes"])
    load = result["load"]
    lines.append(f"  {shortfall.describe(load)}")
    lines.extend(f"    note: {n}" for n in load["notes"])
    return "\n".join(lines)
