"""The load-test harness next to Locust and Artillery, side by side on one live server.

    /tmp/venv/bin/python bench/loadgen.py --json /tmp/loadgen.json    # docs/benchmarks.md sec. 5, ~13 min
    /tmp/venv/bin/python bench/loadgen.py --generators loadtest,locust --stall 0 --rounds 1    # ~2 min
    /tmp/venv/bin/python bench/loadgen.py --viewers 300 --rate 100 --duration 12 --ramp 3 --stall 1

One `live serve` (embedded Redis, one process, default settings) serves every run. Each run is
the same chat workload from one generator in turn, in alternating order (A B C D, then D C B A,
...), so that drift on a shared two-core machine shows instead of favouring one side:

- N viewers connect to a fresh room over ``--ramp`` seconds; from then until 2 s before the
  end (the *storm window*), C = ceil(R / 0.8) of them comment, R comments/s together (the
  server lets a connection comment once a second, burst 5), commenter k first at k / R, then
  every C / R seconds; every comment has a ``rid`` and its ``ack`` is timed; every connection
  pings every 15 s; every viewer reads every frame (about 8 batch frames a second);
- **loadtest**: ``live-loadtest --url ... --secret ... audience chat-storm --viewers N
  --chat-rate R --duration T --ramp RAMP --room ROOM --json F --quiet`` (``audience`` makes it
  connect all N viewers: ``chat-storm`` alone connects only the C commenters, whatever
  ``--viewers`` says). Open loop: each comment goes out at its time whatever happened before;
- **locust** / **locust-2p**: ``locust --headless`` with bench/locustfile_chat.py (users on
  websocket-client; one process, or ``--processes 2``). Closed loop, Locust's usual shape: a
  user sends, waits for the ack, then waits out the rest of its period. Locust lives in its
  own virtual environment (``--locust-venv``, default /tmp/venv-locust, created with ``python
  -m venv`` and ``pip install locust websocket-client`` when missing): it is not a dependency
  of the project;
- **artillery**: Artillery 2 (``npm install artillery@2`` into ``--artillery-dir``, run when
  missing, with PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1; skipped with a note when that fails), its
  WebSocket engine with a processor (``ARTILLERY_PROCESSOR``) that does the users' work: the
  engine's own ``send`` + ``match`` takes the *next* frame as the answer, and in a busy room
  that is a batch, not the ack. Closed loop, like the Locust user.

Measured by this script for every run, the same way for every generator:
- the generator's CPU seconds from /proc (all its processes, sampled every 0.25 s) and the
  server's (live and its Redis), interpolated to the storm window; per 1,000 comments sent and
  per frame the generator received; also the generator's whole-run CPU (getrusage of reaped
  children: start-up, ramp and shut-down included);
- a *spy*: one extra host connection in the room, which gets every comment (hosts get all of
  them, not a sample); each comment's text carries its send time (the harness's intended time,
  the others' actual one), so the spy counts what each generator sent during a stall;
- how evenly comments went out: the share of the server's 125-ms ticks in the storm window
  in which the generator sent no comment, and the longest pause (from the actual send times;
  for the harness its own ``schedule_lag``, actual minus intended send time);
- the server's frame and error counters (/metrics) before and after.

Latency and throughput are copied from what each generator reports (the harness's JSON, the
statistics Locust prints, Artillery's report), not recomputed.

Stall runs (``--stall S[,S2...]``): in the middle of the storm window (found from the first
comment the spy sees) this script SIGSTOPs the server's processes (live and its Redis) for S
seconds, then SIGCONTs them. It reads how many bytes were waiting in the server's sockets just
before the SIGCONT, and the spy counts the comments sent during the stall.

Only loopback; every wait is bounded; every process started is stopped at the end, on an
error, Ctrl-C or SIGTERM (children run under live.parent_death), and a run interrupted mid-stall
SIGCONTs the server first. Runs from the project's environment (PyJWT, aiohttp, uvloop, hdrh).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from loadtest.procfs import cmdline as proc_cmdline
from loadtest.procfs import cpu_seconds, machine_busy, socket_queues, with_descendants

from common import (
    CLK_TCK,
    HERE,
    REPO,
    Children,
    LiveServer,
    default_live_python,
    fmt_int,
    install_sigterm,
    mint,
    npm_install,
    raise_nofile,
    run_orchestrator,
    table,
)

GENERATORS = ("loadtest", "locust", "locust-2p", "artillery")
#: The harness's comment rate per commenter (loadtest/plan.py COMMENTS_PER_COMMENTER_S).
PER_COMMENTER_S = 0.8
#: The harness keeps the last 2 s of a run for replies to arrive (loadtest/plan.py DRAIN_S).
DRAIN_S = 2.0
HEARTBEAT_S = 15.0
REPLY_TIMEOUT_S = 10.0
SAMPLE_S = 0.25
SLOW_MS = 100.0
#: The server's default tick (LIVE_TICK_MS 125): one batch frame per viewer per tick with chat.
TICK_S = 0.125
COMMENT_RE = re.compile(r'"text":"lt:c:(\d+)"')
LOCUSTFILE = HERE / "locustfile_chat.py"


# -- /proc ---------------------------------------------------------------------------------------


def descendants(root: int) -> set[int]:
    """``root`` and every process below it (the harness's own /proc walk)."""
    return with_descendants([root])


def cmdline(pid: int) -> str:
    """A short name for a process: its program and first arguments."""
    args = proc_cmdline(pid)[:4]
    return " ".join(Path(a).name if i == 0 else a for i, a in enumerate(args))[:60]


def safe_cpu(pid: int) -> float | None:
    """None for a process that is gone (procfs reads 0), so that its last reading stands."""
    return cpu_seconds(pid) or None


def children_cpu() -> float:
    """CPU seconds of every reaped descendant (getrusage RUSAGE_CHILDREN)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Sampler:
    """Cumulative CPU seconds, every SAMPLE_S: the generator's process tree, the server's
    processes, this script, and the whole machine (/proc/stat), so that what else ran on the
    machine in a window (``other``) shows.

    Processes are tracked by pid; one that exits keeps its last reading (at most SAMPLE_S of
    its CPU is missed, which the whole-run figure from getrusage does not miss)."""

    def __init__(self, server_pids: list[int]) -> None:
        self.server_pids = server_pids
        self.root: int | None = None
        self._gen: dict[int, float] = {}
        self.names: dict[int, str] = {}
        #: (monotonic, generator, server, this script, machine busy) in seconds
        self.samples: list[tuple[float, float, float, float, float]] = []
        self._task: asyncio.Task[None] | None = None

    def follow(self, root: int) -> None:
        self.root = root
        self._gen = {}
        self.samples = []
        self.names = {}
        self._sample()
        self._task = asyncio.create_task(self._loop())

    def breakdown(self) -> dict[str, float]:
        """Last CPU reading per process of the generator, by pid and program name."""
        return {f"{pid} {self.names.get(pid, '?')}": round(cpu, 2) for pid, cpu in sorted(self._gen.items())}

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._sample()

    def _sample(self) -> None:
        if self.root is not None:
            for pid in descendants(self.root):
                cpu = safe_cpu(pid)
                if cpu is not None:
                    self._gen[pid] = cpu
                    name = cmdline(pid)  # read again: the wrappers exec the real program
                    if name:  # (an exited process's is empty)
                        self.names[pid] = name
        server = sum(c for c in (safe_cpu(p) for p in self.server_pids) if c is not None)
        busy = machine_busy()[0] / CLK_TCK
        self.samples.append((time.monotonic(), sum(self._gen.values()), server, own_cpu(), busy))

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(SAMPLE_S)
            self._sample()

    def at(self, t: float) -> tuple[float, ...]:
        """The cumulative readings at monotonic time ``t``, interpolated."""
        s = self.samples
        if not s:
            return (0.0, 0.0, 0.0, 0.0)
        if t <= s[0][0]:
            return s[0][1:]
        for a, b in itertools.pairwise(s):
            if a[0] <= t <= b[0]:
                w = (t - a[0]) / (b[0] - a[0]) if b[0] > a[0] else 0.0
                return tuple(x + w * (y - x) for x, y in zip(a[1:], b[1:], strict=True))
        return s[-1][1:]

    def window(self, start: float, end: float) -> dict[str, float]:
        """CPU seconds between ``start`` and ``end``: generator, server, this script, other."""
        gen, server, me, busy = (y - x for x, y in zip(self.at(start), self.at(end), strict=True))
        other = max(0.0, busy - gen - server - me)
        return {"generator": gen, "server": server, "loadgen": me, "other": other}


# -- the spy --------------------------------------------------------------------------------------


class Spy:
    """A host connection in the run's room: every comment's send time (monotonic s)."""

    def __init__(self) -> None:
        self.sent: list[float] = []
        #: The send time of the first comment seen.
        self.first: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.connected = False
        #: Handshakes refused before the room existed (the server counts them as room_not_found).
        self.refused = 0

    async def run(self, server: LiveServer, room: str, deadline: float) -> None:
        url = server.ws_url(room, server.host_token)
        timeout = aiohttp.ClientWSTimeout(ws_close=2)
        async with aiohttp.ClientSession() as session:
            ws = None
            while ws is None and time.monotonic() < deadline:
                try:  # the room may not exist yet (the harness creates its own)
                    ws = await session.ws_connect(url, protocols=("live.v1.json",), timeout=timeout)
                except (aiohttp.ClientError, OSError):
                    self.refused += 1
                    await asyncio.sleep(0.1)
            if ws is None:
                return
            self.connected = True
            async with ws:
                while time.monotonic() < deadline:
                    try:
                        msg = await asyncio.wait_for(ws.receive(), max(0.1, deadline - time.monotonic()))
                    except TimeoutError:
                        break
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                            break
                        continue
                    data: str = msg.data
                    if '"batch"' not in data[:40]:
                        continue
                    stamps = [int(m) / 1_000_000 for m in COMMENT_RE.findall(data)]
                    self.sent.extend(stamps)
                    if stamps and not self.first.done():
                        self.first.set_result(min(stamps))

    def count(self, start: float, end: float) -> int:
        return sum(1 for t in self.sent if start <= t < end)


# -- one run ---------------------------------------------------------------------------------------


@dataclass
class Config:
    viewers: int
    rate: float
    duration: float
    ramp: float
    live_python: str
    locust_venv: Path
    artillery_dir: Path
    out_dir: Path

    @property
    def commenters(self) -> int:
        return math.ceil(self.rate / PER_COMMENTER_S)

    @property
    def storm_s(self) -> float:
        return self.duration - DRAIN_S - self.ramp

    @property
    def scheduled(self) -> int:
        return math.ceil(self.storm_s * self.rate)


@dataclass
class RunResult:
    generator: str
    label: str
    exit_code: int | None = None
    storm: tuple[float, float] = (0.0, 0.0)
    sent: int = 0
    acked: int = 0
    ack: dict[str, float | None] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    server_errors: dict[str, float] = field(default_factory=dict)
    frames_in: int | None = None
    gen_cpu_window: float = 0.0
    server_cpu_window: float = 0.0
    #: CPU the rest of the machine used in the window (other sessions, the kernel's softirqs).
    other_cpu_window: float = 0.0
    gen_cpu_total: float = 0.0
    self_reported_cpu: float | None = None
    spy_sent: int = 0
    spy_in_window: int = 0
    stall: dict[str, Any] | None = None
    connections: int = 0
    #: Acks slower than SLOW_MS, as counted from each generator's own samples.
    slow_acks: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    extra_processes: dict[str, float] = field(default_factory=dict)
    #: How evenly comments went out (actual send times; the harness reports schedule_lag instead).
    gaps: dict[str, float] | None = None
    #: The server's live_frames_in / live_frames_out during the run.
    server_frames: dict[str, int] = field(default_factory=dict)

    def noisy(self, max_other: float) -> bool:
        """Other work on the machine used more than ``max_other`` cores in the window."""
        return self.window_s > 0 and self.other_cpu_window / self.window_s > max_other

    @property
    def window_s(self) -> float:
        return self.storm[1] - self.storm[0]

    def per_1000(self, cpu: float) -> float | None:
        return cpu / self.sent * 1000 if self.sent else None


def send_gaps(sends: list[float], start: float, end: float) -> dict[str, float]:
    """Share of the storm's 125-ms slots (the server's tick) in which no comment was sent, and the
    longest pause between two sends: at 200/s an even sender leaves no slot empty."""
    slots = max(1, math.ceil((end - start) / TICK_S))
    times = sorted(t for t in sends if start <= t < start + slots * TICK_S)
    used = {int((t - start) / TICK_S) for t in times}
    longest = max((b - a for a, b in itertools.pairwise(times)), default=0.0)
    return {"empty_slots": round(1 - len(used) / slots, 3), "longest_pause_ms": round(longest * 1000, 1)}


async def server_counters(server: LiveServer) -> dict[str, float]:
    """The server's frame and error counters (/metrics)."""
    try:
        return await server.metrics()
    except (aiohttp.ClientError, OSError):
        return {}


def diff(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    out = {k: v - before.get(k, 0.0) for k, v in after.items()}
    return {k: v for k, v in out.items() if v}


async def stall_server(
    server: LiveServer, spy: Spy, cfg: Config, stall_s: float, deadline: float
) -> dict[str, Any] | None:
    """SIGSTOP the server's processes for ``stall_s`` in the middle of the storm window (found
    from the first comment the spy sees), SIGCONT them; what the sockets held meanwhile."""
    try:
        first = await asyncio.wait_for(asyncio.shield(spy.first), max(1.0, deadline - time.monotonic()))
    except TimeoutError:
        return None
    start = first + (cfg.storm_s - stall_s) / 2
    await asyncio.sleep(max(0.0, start - time.monotonic()))
    pids = sorted(descendants(server.pid))
    _, queued_before = socket_queues(server.port)
    stopped_at = time.monotonic()
    try:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        await asyncio.sleep(stall_s)
        conns, queued = socket_queues(server.port)
    finally:
        resumed_at = time.monotonic()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    return {
        "start": stopped_at,
        "end": resumed_at,
        "seconds": resumed_at - stopped_at,
        "pids": pids,
        "connections": conns,
        "queued_bytes": queued - queued_before,
    }


async def run_one(
    generator: str,
    label: str,
    n: int,
    server: LiveServer,
    sampler: Sampler,
    children: Children,
    cfg: Config,
    stall_s: float,
) -> RunResult:
    room = f"lg-{generator}-{n}"
    result = RunResult(generator, label)
    out = cfg.out_dir / f"{n:02d}-{generator}-{label}"
    out.mkdir(parents=True, exist_ok=True)
    log = out / "output.log"
    counters_before = await server_counters(server)
    if generator == "loadtest":
        argv, env = loadtest_command(server, room, cfg, out)
    elif generator.startswith("locust"):
        await server.create_room(room)
        argv, env = locust_command(server, room, cfg, out, 2 if generator == "locust-2p" else 1)
    else:
        await server.create_room(room)
        argv, env = artillery_command(server, room, cfg, out)
    spy = Spy()
    deadline = time.monotonic() + cfg.duration + 120
    spy_task = asyncio.create_task(spy.run(server, room, deadline))
    reaped_before = children_cpu()
    proc = await children.spawn(argv, env=env, log=log, cwd=REPO)
    sampler.follow(proc.pid)
    stall_task = (
        asyncio.create_task(stall_server(server, spy, cfg, stall_s, deadline)) if stall_s > 0 else None
    )
    try:
        try:
            result.exit_code = await asyncio.wait_for(proc.wait(), cfg.duration + 120)
        except TimeoutError:
            result.exit_code = await children.stop(proc)
            result.errors["loadgen:timeout"] = 1
        if stall_task is not None:
            result.stall = await stall_task
    finally:
        if stall_task is not None and not stall_task.done():
            stall_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stall_task
        await sampler.stop()
        result.extra_processes = sampler.breakdown()
        await asyncio.sleep(0.5)  # the spy reads the last batches
        spy_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await spy_task
    result.gen_cpu_total = children_cpu() - reaped_before
    counters = diff(await server_counters(server), counters_before)
    result.server_frames = {k: int(v) for k, v in counters.items() if k.startswith("live_frames")}
    result.server_errors = {k: v for k, v in counters.items() if k.startswith("live_errors")}
    key = "live_errors{room_not_found}"  # the spy's own attempts before the harness made the room
    if key in result.server_errors:
        result.server_errors[key] -= spy.refused
        if not result.server_errors[key]:
            del result.server_errors[key]
    if generator == "loadtest":
        read_loadtest(result, out, cfg)
    elif generator.startswith("locust"):
        read_locust(result, out, cfg)
    else:
        read_artillery(result, out, cfg)
    if result.storm[1] > result.storm[0]:
        cpu = sampler.window(*result.storm)
        result.gen_cpu_window, result.server_cpu_window = cpu["generator"], cpu["server"]
        result.other_cpu_window = cpu["other"]
    result.spy_sent = len(spy.sent)
    result.spy_in_window = spy.count(result.storm[0] - 0.001, result.storm[1])
    if result.stall is not None:
        result.stall["spy_sent_during"] = spy.count(result.stall["start"], result.stall["end"])
        result.stall["expected_during"] = round(cfg.rate * result.stall["seconds"])
    sends = result.extra.pop("send_times", None)
    if sends is not None:
        result.gaps = send_gaps(sends, *result.storm)
        if result.stall is not None:
            result.stall["own_sent_during"] = sum(
                1 for t in sends if result.stall["start"] <= t < result.stall["end"]
            )
    (out / "summary.json").write_text(json.dumps(as_dict(result), indent=1) + "\n")
    return result


# -- the generators ---------------------------------------------------------------------------------


def loadtest_command(
    server: LiveServer, room: str, cfg: Config, out: Path
) -> tuple[list[str], dict[str, str]]:
    argv = [cfg.live_python, "-m", "loadtest", "--url", f"http://127.0.0.1:{server.port}"]
    argv += ["--secret", server.secret, "audience", "chat-storm", "--viewers", str(cfg.viewers)]
    argv += ["--chat-rate", f"{cfg.rate:g}", "--duration", f"{cfg.duration:g}", "--ramp", f"{cfg.ramp:g}"]
    argv += ["--room", room, "--json", str(out / "result.json"), "--quiet"]
    return argv, dict(os.environ)


def read_loadtest(result: RunResult, out: Path, cfg: Config) -> None:
    try:
        data = json.loads((out / "result.json").read_text())
    except (OSError, ValueError) as exc:
        result.errors[f"loadgen:no_result:{type(exc).__name__}"] = 1
        return
    offset = time.time() - time.monotonic()
    t0 = data["started_at_ms"] / 1000 - offset
    result.storm = (t0 + cfg.ramp, t0 + cfg.duration - DRAIN_S)
    counts = data["counts"]
    result.sent = int(counts.get("comments_sent", 0))
    result.acked = int(counts.get("comment_ack", 0))
    result.frames_in = int(counts.get("frames_in", 0))
    m = data["metrics"].get("comment_ack", {})
    result.ack = {k: m.get(k) for k in ("p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms")}
    result.errors.update(data["errors"])
    result.self_reported_cpu = data["harness_cpu_s"]
    encoded = data.get("histograms", {}).get("comment_ack")
    if encoded:
        from hdrh.histogram import HdrHistogram

        h = HdrHistogram.decode(encoded.encode("ascii"))
        result.slow_acks = sum(
            int(item.count_at_value_iterated_to)
            for item in h.get_recorded_iterator()
            if item.value_iterated_to > SLOW_MS * 1000
        )
    result.connections = int(data["connections"]["peak"])
    lag = data["metrics"].get("schedule_lag", {})
    result.extra = {
        "schedule_lag_p99_ms": lag.get("p99_ms"),
        "schedule_lag_max_ms": lag.get("max_ms"),
        "harness_duration_s": data["duration_s"],
        "harness_server_cpu_s": data["server_cpu_s"],
        "audit_passed": data["audit"]["passed"],
        "workers": data["parameters"]["workers"],
        "timeline_comments_sent": data["timeline"]["throughput"].get("comments_sent"),
        "timeline_ack_p99_ms": data["timeline"]["latency"].get("comment_ack", {}).get("p99_ms"),
    }


def ensure_locust(venv: Path) -> Path:
    """Locust's own virtual environment (never the project's); created when missing."""
    locust = venv / "bin" / "locust"
    if locust.exists():
        return locust
    print(f"creating {venv} for Locust (pip install locust websocket-client) ...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, timeout=300)
    pip = [str(venv / "bin" / "pip"), "install", "-q", "locust", "websocket-client"]
    subprocess.run(pip, check=True, timeout=900)
    return locust


def tokens_file(server: LiveServer, room: str, cfg: Config, out: Path, prefix: str) -> Path:
    path = out / "tokens.txt"
    lines = [mint(server.secret, room, "viewer", f"{prefix}{i}") for i in range(cfg.viewers)]
    path.write_text("\n".join(lines) + "\n")
    return path


def locust_command(
    server: LiveServer, room: str, cfg: Config, out: Path, processes: int
) -> tuple[list[str], dict[str, str]]:
    locust = ensure_locust(cfg.locust_venv)
    env = {
        **os.environ,
        "LG_WS_URL": f"ws://127.0.0.1:{server.port}/ws/rooms/{room}",
        "LG_TOKENS": str(tokens_file(server, room, cfg, out, "lc")),
        "LG_RATE": f"{cfg.rate:g}",
        "LG_COMMENTERS": str(cfg.commenters),
        "LG_RAMP_S": f"{cfg.ramp:g}",
        "LG_DURATION_S": f"{cfg.duration:g}",
        "LG_DRAIN_S": f"{DRAIN_S:g}",
        "LG_HEARTBEAT_S": f"{HEARTBEAT_S:g}",
        "LG_REPLY_TIMEOUT_S": f"{REPLY_TIMEOUT_S:g}",
        "LG_OUT": str(out / "locust.json"),
        "LG_PROCESSES": str(processes),
    }
    argv = [str(locust), "-f", str(LOCUSTFILE), "--headless", "--host", f"http://127.0.0.1:{server.port}"]
    argv += ["--users", str(cfg.viewers), "--spawn-rate", f"{cfg.viewers / cfg.ramp:g}"]
    argv += ["--run-time", f"{cfg.duration:g}s", "--stop-timeout", "3", "--only-summary"]
    argv += ["--loglevel", "WARNING", "--csv", str(out / "locust")]
    if processes > 1:
        argv += ["--processes", str(processes)]
    return argv, env


def read_locust(result: RunResult, out: Path, cfg: Config) -> None:
    try:
        data = json.loads((out / "locust.json").read_text())
        # with --processes, the workers' counts and times are in files of their own
        parts = [data] + [json.loads(f.read_text()) for f in sorted(out.glob("locust.json.w*"))]
    except (OSError, ValueError) as exc:
        result.errors[f"loadgen:no_result:{type(exc).__name__}"] = 1
        return
    clocks = [p["clock"] for p in parts if p["clock"]]
    result.storm = (min(c["storm_start"] for c in clocks), max(c["storm_end"] for c in clocks))
    counts: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    sends: list[tuple[float, float | None]] = []
    for part in parts:
        counts.update(part["counts"])
        errors.update(part["errors"])
        sends.extend((t, ms) for t, ms, *_ in part["sends"])
        result.connections += int(part["connections"]["peak"])
    result.sent = counts["comments_sent"]
    result.acked = counts["acks"]
    result.frames_in = counts["frames_in"]
    m = data["locust"]["comment_ack"]
    result.ack = {k: m.get(k) for k in ("p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms")}
    result.errors.update(errors)
    latencies = sorted(ms for _, ms in sends if ms is not None)
    result.slow_acks = sum(1 for x in latencies if x > SLOW_MS)
    result.extra = {
        "send_times": [t for t, _ in sends],
        "exact_p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else None,
        "exact_max_ms": latencies[-1] if latencies else None,
        "connect": data["locust"]["connect"],
        "lagged_notices": counts["lagged"],
        "processes": len(parts) - 1 if len(parts) > 1 else 1,
    }


def artillery_files(server: LiveServer, room: str, cfg: Config, out: Path) -> Path:
    """An Artillery 2 script for the same workload, and its processor (written per run)."""
    tokens = tokens_file(server, room, cfg, out, "ar")
    processor = out / "processor.js"
    shutil.copyfile(ARTILLERY_PROCESSOR, processor)
    script = out / "script.json"  # JSON is YAML
    period = cfg.commenters / cfg.rate
    script.write_text(
        json.dumps(
            {
                "config": {
                    "target": f"ws://127.0.0.1:{server.port}",
                    "processor": str(processor),
                    "phases": [{"duration": cfg.ramp, "arrivalCount": cfg.viewers}],
                    "ws": {"subprotocols": ["live.v1.json"]},
                    "variables": {
                        "room": room,
                        "tokensFile": str(tokens),
                        "commenters": cfg.commenters,
                        "period": period,
                        "rate": cfg.rate,
                        "stormStartS": cfg.ramp,
                        "stormEndS": cfg.duration - DRAIN_S,
                        "endS": cfg.duration,
                        "heartbeatS": HEARTBEAT_S,
                        "replyTimeoutS": REPLY_TIMEOUT_S,
                        "out": str(out / "artillery-sends.json"),
                    },
                },
                "scenarios": [
                    {
                        "engine": "ws",
                        "flow": [
                            {"connect": {"function": "connect"}},
                            {"function": "chat"},
                        ],
                    }
                ],
            },
            indent=1,
        )
    )
    return script


#: The per-user work as an Artillery processor (why a function: see its header).
ARTILLERY_PROCESSOR = HERE / "artillery_processor.js"


def ensure_artillery(directory: Path) -> str:
    """'' when Artillery 2 is usable from ``directory`` (installed there when missing), else why
    not (a skip note). Without PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD its install fetches a browser."""
    if (directory / "node_modules" / ".bin" / "artillery").exists():
        return ""
    if shutil.which("node") is None or shutil.which("npm") is None:
        return "skipped: node or npm is not installed"
    print(f"installing Artillery 2 into {directory} (npm install artillery@2) ...", file=sys.stderr)
    return npm_install(directory, "artillery@2", 900, {**os.environ, "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1"})


def artillery_command(
    server: LiveServer, room: str, cfg: Config, out: Path
) -> tuple[list[str], dict[str, str]]:
    binary = cfg.artillery_dir / "node_modules" / ".bin" / "artillery"
    if not binary.exists():
        raise RuntimeError(
            f"no Artillery in {cfg.artillery_dir}: "
            f"cd {cfg.artillery_dir} && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install artillery@2"
        )
    script = artillery_files(server, room, cfg, out)
    env = {**os.environ, "ARTILLERY_DISABLE_TELEMETRY": "true", "WORKERS": "1"}
    argv = [str(binary), "run", "--output", str(out / "artillery.json"), "--quiet", str(script)]
    return argv, env


def read_artillery(result: RunResult, out: Path, cfg: Config) -> None:
    try:
        report = json.loads((out / "artillery.json").read_text())
        sends = json.loads((out / "artillery-sends.json").read_text())
    except (OSError, ValueError) as exc:
        result.errors[f"loadgen:no_result:{type(exc).__name__}"] = 1
        return
    t0 = float(sends["t0"])  # the first user's connect, monotonic
    result.storm = (t0 + cfg.ramp, t0 + cfg.duration - DRAIN_S)
    agg = report.get("aggregate", {})
    counters = agg.get("counters", {})
    summary = agg.get("summaries", {}).get("comment_ack", {})
    result.sent = int(counters.get("comment.sent", 0))
    result.acked = int(counters.get("comment.acked", 0))
    result.ack = {
        "p50_ms": summary.get("median"),
        "p90_ms": summary.get("p90"),
        "p99_ms": summary.get("p99"),
        "p999_ms": summary.get("p999"),
        "max_ms": summary.get("max"),
    }
    wanted = ("errors.", "comment.error", "comment.no_reply", "vusers.failed")
    result.errors.update({k: int(v) for k, v in counters.items() if k.startswith(wanted) and v})
    result.connections = int(counters.get("vusers.created", 0)) - int(counters.get("vusers.failed", 0))
    latencies = [ms for _, ms in sends["sends"] if ms is not None]
    result.slow_acks = sum(1 for x in latencies if x > SLOW_MS)
    result.frames_in = sends.get("frames")  # until the storm's end only
    result.extra = {
        "send_times": [t for t, _ in sends["sends"]],
        "counters": counters,
        "lagged_notices": sends.get("lagged"),
    }


# -- orchestration ---------------------------------------------------------------------------------


def as_dict(r: RunResult) -> dict[str, Any]:
    out = {k: v for k, v in r.__dict__.items()}
    out["window_s"] = r.window_s
    return out


async def wait_quiet(max_wait_s: float, threshold_cores: float = 0.25) -> tuple[float, float]:
    """Wait (at most ``max_wait_s``) until the machine is nearly idle over 2 s: other sessions
    share it. Returns (seconds waited, cores busy in the last 2-s look)."""
    started = time.monotonic()
    while True:
        b0, t0 = machine_busy()
        await asyncio.sleep(2.0)
        b1, t1 = machine_busy()
        cores = (b1 - b0) / (t1 - t0) * (os.cpu_count() or 1) if t1 > t0 else 0.0
        if cores < threshold_cores or time.monotonic() - started >= max_wait_s:
            return time.monotonic() - started, cores
        await asyncio.sleep(3.0)


def orders(generators: list[str], rounds: int) -> list[list[str]]:
    return [generators if i % 2 == 0 else generators[::-1] for i in range(rounds)]


async def orchestrate(args: argparse.Namespace) -> int:
    install_sigterm(asyncio.current_task())  # type: ignore[arg-type]
    raise_nofile()
    cfg = Config(
        viewers=args.viewers,
        rate=args.rate,
        duration=args.duration,
        ramp=args.ramp,
        live_python=args.live_python,
        locust_venv=args.locust_venv,
        artillery_dir=args.artillery_dir,
        out_dir=args.out_dir or Path(tempfile.mkdtemp(prefix="loadgen-", dir="/tmp")),
    )
    if cfg.storm_s <= 2 * max(args.stall, default=0):
        raise SystemExit("the storm window (duration - ramp - 2 s) must be longer than twice --stall")
    if cfg.commenters > cfg.viewers:
        raise SystemExit(f"{cfg.rate:g} comments/s needs {cfg.commenters} commenters: raise --viewers")
    generators = [g.strip() for g in args.generators.split(",") if g.strip()]
    stallers = [g.strip() for g in args.stall_generators.split(",") if g.strip()]
    if unknown := [g for g in generators + stallers if g not in GENERATORS]:
        raise SystemExit(f"unknown generator(s) {unknown}; choose from {', '.join(GENERATORS)}")
    if any(g.startswith("locust") for g in generators + stallers):
        ensure_locust(cfg.locust_venv)
    if "artillery" in generators + stallers and (note := ensure_artillery(cfg.artillery_dir)):
        print(f"artillery {note}")
        generators = [g for g in generators if g != "artillery"]
        stallers = [g for g in stallers if g != "artillery"]
    children = Children()
    server = LiveServer(children, cfg.live_python, {})
    results: list[RunResult] = []
    self_before = own_cpu()
    try:
        await server.start()
        server_pids = sorted(descendants(server.pid))
        sampler = Sampler(server_pids)
        print(f"live serve pid {server.pid} (+ Redis), port {server.port}; outputs in {cfg.out_dir}")
        print(
            f"workload: {cfg.viewers} viewers over {cfg.ramp:g} s, {cfg.commenters} commenters, "
            f"{cfg.rate:g} comments/s for {cfg.storm_s:g} s ({cfg.scheduled} scheduled), "
            f"runs of {cfg.duration:g} s"
        )
        n = 0
        plan = [("chat", 0.0, order) for order in orders(generators, args.rounds)]
        for stall_s in args.stall:
            plan += [("stall", stall_s, order) for order in orders(stallers, args.stall_rounds)]
        for label, stall_s, order in plan:
            for generator in order:
                n += 1
                waited, busy = await wait_quiet(args.quiet_wait)
                print(
                    f"run {n}: {generator}, {label} (machine {busy:.0%} of a core busy before it, "
                    f"after {waited:.0f} s of waiting for quiet) ...",
                    flush=True,
                )
                result = await run_one(generator, label, n, server, sampler, children, cfg, stall_s)
                results.append(result)
                print("  " + one_line(result, cfg), flush=True)
                await asyncio.sleep(args.pause)
        problems = server.log_problems()
    finally:
        # a run interrupted mid-stall must not leave the server stopped
        if server.proc is not None:
            for pid in descendants(server.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
        await server.stop()
        await children.stop_all()
        server.cleanup()
    print()
    print(report(results, cfg, args))
    if problems:
        print(f"\nserver log (warning and above), {len(problems)} line(s):")
        for line in problems[-10:]:
            print("  " + line[:200])
    print(f"\nthis script's own CPU: {own_cpu() - self_before:.1f} s (spy, sampler, tokens)")
    if args.json:
        payload = {
            "config": {k: str(v) if isinstance(v, Path) else v for k, v in cfg.__dict__.items()},
            "machine": machine(),
            "runs": [as_dict(r) for r in results],
        }
        args.json.write_text(json.dumps(payload, indent=1) + "\n")
        print(f"raw numbers: {args.json}")
    if not args.out_dir:
        shutil.rmtree(cfg.out_dir, ignore_errors=True)
    return 0


def machine() -> dict[str, Any]:
    versions = {}
    for name, argv in {
        "locust": ["/tmp/venv-locust/bin/locust", "--version"],
        "node": ["node", "--version"],
    }.items():
        try:
            versions[name] = subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            versions[name] = None
    return {"cpus": os.cpu_count(), "python": sys.version.split()[0], **versions}


def ms(x: float | None) -> str:
    return "-" if x is None else f"{x:,.1f}"


def one_line(r: RunResult, cfg: Config) -> str:
    rate = r.sent / r.window_s if r.window_s > 0 else 0.0
    line = (
        f"sent {r.sent} ({rate:.1f}/s of {cfg.rate:g}), acked {r.acked}, ack p50 {ms(r.ack.get('p50_ms'))} "
        f"p99 {ms(r.ack.get('p99_ms'))} max {ms(r.ack.get('max_ms'))} ms; CPU in window: generator "
        f"{r.gen_cpu_window:.2f} s, server {r.server_cpu_window:.2f} s; generator whole run "
        f"{r.gen_cpu_total:.2f} s; errors {r.errors or '-'}; exit {r.exit_code}"
    )
    if r.stall is not None:
        s = r.stall
        line += (
            f"; stall {s['seconds']:.2f} s: sent during it {s['spy_sent_during']} "
            f"(of {s['expected_during']} scheduled), {s['queued_bytes']} bytes queued"
        )
    return line


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def rate_of(r: RunResult) -> float:
    return r.sent / r.window_s if r.window_s > 0 else 0.0


def cores(cpu: float, r: RunResult) -> str:
    return f"{cpu / r.window_s:.0%}" if r.window_s > 0 else "-"


def gaps_cell(r: RunResult) -> str:
    if r.gaps is not None:
        return f"{r.gaps['empty_slots']:.0%} / {r.gaps['longest_pause_ms']:,.0f} ms"
    lag = r.extra.get("schedule_lag_max_ms")
    return "-" if lag is None else f"(lag max {lag:,.0f} ms)"


def us_per_frame(r: RunResult) -> float | None:
    """Generator CPU in the storm window per frame it received (almost all are in the window)."""
    return r.gen_cpu_window / r.frames_in * 1e6 if r.frames_in else None


def report(results: list[RunResult], cfg: Config, args: argparse.Namespace) -> str:
    parts = []
    chat = [r for r in results if r.label == "chat"]
    rows = []
    for i, r in enumerate(chat, 1):
        per = r.per_1000(r.gen_cpu_window)
        rows.append(
            [
                f"{i}. {r.generator}" + (" (noisy)" if r.noisy(args.max_other) else ""),
                r.connections,
                f"{rate_of(r):.1f}",
                f"{r.acked:,} / {r.sent:,}",
                ms(r.ack.get("p50_ms")),
                ms(r.ack.get("p99_ms")),
                ms(r.ack.get("max_ms")),
                gaps_cell(r),
                fmt_int(r.frames_in) if r.frames_in is not None else "-",
                fmt_int(r.server_frames.get("live_frames_out", 0)),
                f"{r.gen_cpu_window:.2f}",
                cores(r.gen_cpu_window, r),
                "-" if per is None else f"{per * 1000:,.0f}",
                ms(us_per_frame(r)),
                cores(r.server_cpu_window, r),
                cores(r.other_cpu_window, r),
                f"{r.gen_cpu_total:.2f}",
                "-" if r.self_reported_cpu is None else f"{r.self_reported_cpu:.2f}",
                sum(r.errors.values()) + int(sum(r.server_errors.values())),
            ]
        )
    parts.append(
        f"Chat workload: {cfg.viewers} viewers, {cfg.rate:g} comments/s from {cfg.commenters} of them "
        f"for {cfg.storm_s:g} s (the window), runs in the order done"
    )
    parts.append(
        table(
            [
                "run",
                "conns",
                "sent/s",
                "acked / sent",
                "ack p50 ms",
                "p99 ms",
                "max ms",
                "empty ticks / longest pause",
                "frames in",
                "server frames out",
                "gen CPU s",
                "gen cores",
                "gen CPU ms / 1k comments",
                "gen CPU us / frame in",
                "server cores",
                "other cores",
                "gen CPU whole run s",
                "self-reported s",
                "errors",
            ],
            rows,
        )
    )
    by: dict[str, list[RunResult]] = {}
    for r in chat:
        by.setdefault(r.generator, []).append(r)
    for gen, runs in by.items():  # medians of the quiet runs, if a generator has any
        quiet = [r for r in runs if not r.noisy(args.max_other)]
        by[gen] = quiet or runs
    rows = []
    per_comment: dict[str, float] = {}
    per_frame: dict[str, float] = {}
    for gen, runs in by.items():
        per = [(r.per_1000(r.gen_cpu_window) or 0.0) * 1000 for r in runs]
        frame = [x for x in (us_per_frame(r) for r in runs) if x is not None]
        per_comment[gen], per_frame[gen] = median(per), median(frame)
        rows.append(
            [
                gen,
                len(runs),
                f"{median([rate_of(r) for r in runs]):.1f}",
                ms(median([r.ack.get("p50_ms") or 0 for r in runs])),
                ms(median([r.ack.get("p99_ms") or 0 for r in runs])),
                fmt_int(median([r.frames_in or 0 for r in runs])),
                f"{per_comment[gen]:,.0f} ({min(per):,.0f}-{max(per):,.0f})",
                f"{per_frame[gen]:,.1f}",
                f"{median([r.gen_cpu_window / r.window_s for r in runs if r.window_s]):.0%}",
                f"{median([r.server_cpu_window / r.window_s for r in runs if r.window_s]):.0%}",
                f"{median([r.gen_cpu_total for r in runs]):.2f}",
            ]
        )
    parts.append(
        f"\nMedians per generator (of the runs where other work used at most {args.max_other:.0%} "
        "of a core, when a generator has any)"
    )
    parts.append(
        table(
            [
                "generator",
                "runs",
                "sent/s",
                "ack p50 ms",
                "ack p99 ms",
                "frames in",
                "gen CPU ms / 1k comments (range)",
                "gen CPU us / frame in",
                "gen cores",
                "server cores",
                "gen CPU whole run s",
            ],
            rows,
        )
    )
    if per_comment.get("loadtest") and per_frame.get("loadtest"):
        for gen in per_comment:
            if gen != "loadtest":
                parts.append(
                    f"generator CPU, {gen} / loadtest: {per_comment[gen] / per_comment['loadtest']:.2f}x "
                    f"per comment, {per_frame[gen] / per_frame['loadtest']:.2f}x per frame received"
                )
    stalls = [r for r in results if r.label == "stall"]
    if stalls:
        rows = []
        for r in stalls:
            s = r.stall or {}
            rows.append(
                [
                    r.generator,
                    f"{s.get('seconds', 0):.2f}",
                    f"{s.get('spy_sent_during', '-')} / {s.get('expected_during', '-')}",
                    s.get("own_sent_during", "-"),
                    fmt_int(s.get("queued_bytes", 0)),
                    f"{r.acked:,} / {r.sent:,} of {cfg.scheduled:,}",
                    "-" if r.slow_acks is None else f"{r.slow_acks:,}",
                    ms(r.ack.get("p50_ms")),
                    ms(r.ack.get("p90_ms")),
                    ms(r.ack.get("p99_ms")),
                    ms(r.ack.get("max_ms")),
                    cores(r.other_cpu_window, r),
                    sum(r.errors.values()) + int(sum(r.server_errors.values())),
                ]
            )
        parts.append("\nStall: the server's processes SIGSTOPped mid-storm (as each generator reports it)")
        parts.append(
            table(
                [
                    "generator",
                    "stall s",
                    "sent during stall / scheduled (spy)",
                    "(own count)",
                    "bytes queued at server",
                    "acked / sent of scheduled",
                    f"acks > {SLOW_MS:g} ms",
                    "ack p50 ms",
                    "p90 ms",
                    "p99 ms",
                    "max ms",
                    "other cores",
                    "errors",
                ],
                rows,
            )
        )
    errs = Counter[str]()
    for r in results:
        errs.update({f"{r.generator}: {k}": int(v) for k, v in {**r.errors, **r.server_errors}.items()})
    if errs:
        parts.append("\nErrors: " + ", ".join(f"{k} {v}" for k, v in sorted(errs.items())))
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--viewers", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=200.0, help="comments/s in all (default 200)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per run (default 20)")
    parser.add_argument("--ramp", type=float, default=5.0, help="seconds to connect everyone (default 5)")
    parser.add_argument("--rounds", type=int, default=3, help="chat rounds, alternating order (default 3)")
    parser.add_argument(
        "--stall",
        default="2,5",
        help="SIGSTOP seconds of the stall runs, comma-separated (default 2,5); 0: none",
    )
    parser.add_argument("--stall-rounds", type=int, default=1, help="stall rounds (default 1)")
    parser.add_argument(
        "--generators", default=",".join(GENERATORS), help=f"comma-separated, of {', '.join(GENERATORS)}"
    )
    parser.add_argument(
        "--stall-generators",
        default="loadtest,locust,artillery",
        help="generators of the stall runs (default loadtest,locust,artillery)",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=120.0,
        help="before each run, wait up to this many seconds for the machine to be idle (default 120)",
    )
    parser.add_argument(
        "--max-other",
        type=float,
        default=0.2,
        help="a run in which other work used more cores than this is marked noisy and left out "
        "of the medians (default 0.2)",
    )
    parser.add_argument("--pause", type=float, default=3.0, help="seconds between runs (default 3)")
    parser.add_argument("--live-python", default=default_live_python())
    parser.add_argument("--locust-venv", type=Path, default=Path("/tmp/venv-locust"))
    parser.add_argument("--artillery-dir", type=Path, default=Path("/tmp/benchartillery"))
    parser.add_argument("--out-dir", type=Path, help="keep every run's files here (default: a temp dir)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the raw numbers here")
    args = parser.parse_args()
    try:
        args.stall = [float(x) for x in args.stall.split(",") if x.strip() and float(x) > 0]
    except ValueError:
        parser.error("--stall: seconds, comma-separated")
    if not (1 <= args.rounds <= 10 and 0 <= args.stall_rounds <= 10 and all(x <= 10 for x in args.stall)):
        parser.error("rounds 1..10, stall-rounds 0..10, stall 0..10 s")
    if not (10 <= args.duration <= 300 and 0 < args.ramp < args.duration - DRAIN_S):
        parser.error("duration 10..300 s, ramp between 0 and duration - 2")
    run_orchestrator(orchestrate(args))


if __name__ == "__main__":
    main()
