"""Growth: live's server CPU per delivered frame as the room grows, from the fan-out and the
comment-storm benchmarks at several room sizes (docs/benchmarks.md, section 11).

    python bench/growth.py [--sizes 1000,5000,10000,20000] [--two-workers-from 20000]

(The raw baseline is one process: past the open-file limit, 20,000 here, it is left out.)

For each size N it runs, one after the other, ``fanout.py -n N --servers raw,live`` (M host
messages back to back) and ``storm.py --viewers N`` (the 2,000 comments/s storm), with
``--workers 2`` for live from ``--two-workers-from`` viewers on, and reads their JSON results:
live's CPU (its processes, not its Redis) over the frames it delivered (fan-out: the deliveries;
storm: its ``live_frames_out`` in the window). The growth column is each size against the
first; the target is at most +25% from the first size to the last.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from common import add_run_options, machine_facts, nofile_limit, table

HERE = Path(__file__).resolve().parent
TARGET_GROWTH = 0.25


def run(script: str, argv: list[str], out: Path) -> dict[str, Any]:
    command = [sys.executable, str(HERE / script), *argv, "--json", str(out)]
    print("$", " ".join(command[1:]), flush=True)
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
    if done.returncode != 0 or not out.exists():
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
        raise SystemExit(f"{script} failed (exit {done.returncode}):\n{tail}")
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def fanout_row(result: dict[str, Any]) -> tuple[float, float, float | None]:
    """(live CPU s, deliveries, raw's CPU per delivery) of the run's first round."""
    rows = {r["server"]: r for r in result["rounds"][0]}
    live, raw = rows["live"], rows.get("raw")
    if not live["complete"]:
        raise SystemExit(f"live's fan-out did not complete: {live['note']}")
    raw_per = raw["cpu_s"] / raw["deliveries"] if raw and raw["complete"] else None
    return live["cpu_s"], live["deliveries"], raw_per


def storm_row(result: dict[str, Any]) -> tuple[float, float]:
    storm = result["storm"]
    return storm["live_cpu_s"], storm["counters"]["live_frames_out"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="1000,5000,10000,20000", help="room sizes, comma-separated")
    p.add_argument("--two-workers-from", type=int, default=20_000, help="live --workers 2 from this size")
    p.add_argument("--messages", type=int, default=200, help="fan-out: host messages per run")
    p.add_argument("--duration", type=float, default=15.0, help="storm: seconds measured")
    add_run_options(p)
    args = p.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"# growth: sizes {sizes}; live --workers 2 from {args.two_workers_from}")
    print("machine: " + ", ".join(f"{k} {v}" for k, v in machine_facts().items()), flush=True)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            workers = 2 if n >= args.two_workers_from else 1
            common = ["--live-python", args.live_python, "--log-dir", args.log_dir]
            # the raw server is one process: past the open-file limit, live's workers alone
            servers = "raw,live" if n + 100 <= nofile_limit() else "live"
            fan_argv = ["-n", str(n), "-m", str(args.messages), "--servers", servers]
            fan = run(
                "fanout.py", [*fan_argv, "--live-workers", str(workers), *common], Path(tmp) / "fanout.json"
            )
            storm_argv = ["--viewers", str(n), "--workers", str(workers), "--duration", str(args.duration)]
            storm = run("storm.py", [*storm_argv, *common], Path(tmp) / "storm.json")
            fan_cpu, fan_frames, raw_per = fanout_row(fan)
            storm_cpu, storm_frames = storm_row(storm)
            rows.append(
                {
                    "viewers": n,
                    "workers": workers,
                    "fanout_us_per_frame": fan_cpu / fan_frames * 1e6,
                    "raw_us_per_frame": None if raw_per is None else raw_per * 1e6,
                    "storm_us_per_frame": storm_cpu / storm_frames * 1e6 if storm_frames else None,
                    "storm_frames_per_s": storm_frames / args.duration,
                    "storm_p99_ms": storm["storm"]["latency_us"].get("99", 0) / 1000,
                }
            )
            print(f"  {rows[-1]}", flush=True)
    first = rows[0]

    def growth(key: str, row: dict[str, Any]) -> str:
        if row[key] is None or first[key] is None:
            return "-"
        return f"{row[key] / first[key] - 1:+.0%}"

    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    headers = ["viewers", "live workers", "fan-out us/frame", "growth", "raw us/frame"]
    headers += ["storm us/frame", "growth", "storm frames/s", "storm host p99 ms"]
    lines = [
        [
            f"{r['viewers']:,}",
            r["workers"],
            fmt(r["fanout_us_per_frame"]),
            growth("fanout_us_per_frame", r),
            fmt(r["raw_us_per_frame"]),
            fmt(r["storm_us_per_frame"]),
            growth("storm_us_per_frame", r),
            f"{r['storm_frames_per_s']:,.0f}",
            f"{r['storm_p99_ms']:.1f}",
        ]
        for r in rows
    ]
    print()
    print(table(headers, lines))
    last = rows[-1]
    for key, name in (("fanout_us_per_frame", "fan-out"), ("storm_us_per_frame", "storm")):
        if last[key] is None or first[key] is None:
            continue
        grew = last[key] / first[key] - 1
        verdict = "met" if grew <= TARGET_GROWTH else "NOT met"
        print(f"- {name}: {first['viewers']:,} -> {last['viewers']:,} viewers: {grew:+.0%} per frame "
              f"(target <= +{TARGET_GROWTH:.0%}): {verdict}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"facts": machine_facts(), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
