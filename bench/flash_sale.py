"""Flash-sale reservations per second: the Redis ceiling, naive calls, the micro-batching
inventory, and end to end over the WebSocket gateway, side by side in one run.

    /tmp/venv/bin/python bench/flash_sale.py                    # everything (~3.5 min on 2 cores)
    /tmp/venv/bin/python bench/flash_sale.py --parts a,b,c      # without the WebSocket part (~1 min)
    /tmp/venv/bin/python bench/flash_sale.py --parts d --server-workers 2 --rates 5000,10000
    /tmp/venv/bin/python bench/flash_sale.py --parts d --stock-update-ms 60000   # (d), rare stock frames
    /tmp/venv/bin/python bench/flash_sale.py --parts r,d --server-workers 1 --rates 5000  # live vs raw

Results go to stdout (the tables at the end) and to --json (default
/tmp/livebench-logs/flash_sale.json); the server's log to /tmp/livebench-logs/.

It runs from the project's environment (it imports ``inventory`` and ``live``) and needs
``hdrhistogram`` there (bench/requirements.txt), and for part (a) ``redis-benchmark`` or
``valkey-benchmark`` on PATH (``apt-get install redis-tools``); without one, (a) is skipped.

One fresh embedded Redis (``live.redis_server.EmbeddedRedis``: the Valkey that ``live serve``
runs by default, AOF on with fsync every second) serves every part. Every sale has stock
10^9, a per-user limit of 1000 and 10-minute holds, so every request is a real decision that
reserves one unit; every request is from a different user (as in a flash sale), unless said.

(a) ceiling: ``redis-benchmark`` calling EVALSHA of the project's reserve.lua (lib.lua in
    front, as inventory/scripts.py loads it) with one request per call (user
    ``u:__rand_int__``, quantity 1, idempotency key "" or random): 50 connections, without
    and with pipelining (-P 16). What Redis does when every decision is its own call.
(b) naive: the same script from redis-py asyncio, one EVALSHA per request, ``--callers``
    concurrent callers in this process (the server's own client, ``live.redis_client.connect``).
(c) inventory: ``inventory.inventory.Inventory.reserve`` from ``--tasks`` concurrent tasks in
    this process (uvloop), which batches the requests of one sale into one reserve.lua call.
    The script's calls are timed through a wrapper on this instance's ``scripts.call``: batch
    sizes, and how often two calls of the sale were in flight at once.
(d) end to end: ``live serve --redis-url`` on this Redis (``--server-workers`` processes; the
    per-address buy limit raised, since every buyer comes from 127.0.0.1), ``--buyers``
    WebSocket buyers in ``--clients`` processes (bench/buyers.py), sending ``reserve``
    commands open-loop: together ``--rates`` reservations/s, ``--phase-s`` each (a new sale
    per rate, opened over the host API), on a fixed schedule; latency from each request's
    intended send time to its ack/error, in an HDR histogram. A client that has more than
    ``--overload`` seconds' worth of requests unanswered stops sending for that rate (the
    server is overloaded; a growing backlog would only spill into the next rate). Also
    reported: the server's CPU and memory, Redis's EVALSHA calls per request sent (how much
    the server's micro-batching batched; the sweeps' calls are counted too), Redis's own
    stalls (its latency monitor), and the frames the buyers got besides their answers.

(r) raw baseline: the same buyers, rates and schedule as (d) against bench/raw_ws_server.py
    (``--server-workers`` processes): an asyncio server that reads each frame, decodes it and
    writes a small ack, no Redis and nothing else. Run right before (d) for each worker count,
    so the two are side by side: (d)'s server CPU per reservation over (r)'s is the figure
    (Redis's CPU is counted apart, in both).

After every measurement the sale's counters are read back from Redis and checked: total =
available + held + sold, available >= 0, held = the number of holds (every hold is of one
unit): zero oversell. And held = the reservations the clients were told succeeded (at most
the unanswered requests more, in (d)): nothing reserved that nobody was told of.

CPU figures are user + system seconds from /proc over the measured interval, as a share of
one core; the machine has two cores, shared by Redis, the server(s) and the load generators.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import math
import os
import resource
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from hdrh.histogram import HdrHistogram
from inventory.inventory import Inventory, InventoryConfig
from inventory.keys import SaleKeys
from inventory.model import InventoryError, SaleSpec
from inventory.scripts import source
from live.auth import Auth, Role
from live.redis_client import connect
from live.redis_server import EmbeddedRedis, find_redis_server
from live.supervisor import Supervisor
from loadtest.procfs import (
    cpu_seconds,
    listening_pids,
    machine_busy,
    process_alive,
    rss_bytes,
    with_descendants,
)
from loadtest.spawn import LocalServer

from buyers import HDR_ARGS
from common import (
    Children,
    Worker,
    fmt_int,
    install_sigterm,
    machine_facts,
    raise_nofile,
    run_orchestrator,
    table,
)

HERE = Path(__file__).resolve().parent
PREFIX = "bench"  # key prefix of parts a-c; the server of part d uses E2E_PREFIX
E2E_PREFIX = "e2e"
ROOM = "flash"
STOCK = 10**9
PER_USER_LIMIT = 1000
HOLD_S = 600
SECRET = "inventory-bench-secret-" + "x" * 24  # >= 32 characters; a throwaway server's


def as_str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def now_ms() -> int:
    return int(time.time() * 1000)


def rusage_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Ctx:
    args: argparse.Namespace
    children: Children
    redis_server: EmbeddedRedis
    redis: aioredis.Redis
    inventory: Inventory
    out: dict[str, Any]
    sales: int = 0
    invariants: list[dict[str, Any]] = field(default_factory=list)

    @property
    def redis_pid(self) -> int:
        assert self.redis_server.process is not None
        return self.redis_server.process.pid

    async def open_sale(self, tag: str) -> tuple[str, list[str]]:
        """A fresh sale for one measurement: (id, the 10 KEYS of its scripts)."""
        self.sales += 1
        sale_id = f"{tag}{self.sales}"
        now = now_ms()
        spec = SaleSpec(
            id=sale_id,
            room_id="bench",
            product_id="p1",
            stock=STOCK,
            price_cents=1999,
            per_user_limit=PER_USER_LIMIT,
            starts_at_ms=now - 1000,
            ends_at_ms=now + 3_600_000,
            hold_ms=HOLD_S * 1000,
        )
        if not await self.inventory.open_sale(spec):
            raise RuntimeError(f"sale {sale_id} exists already")
        return sale_id, SaleKeys(PREFIX, sale_id).all()

    async def aof_rewrites(self) -> int:
        info = await self.redis.info("persistence")
        return int(info.get("aof_rewrites", 0))

    async def evalsha_stats(self) -> tuple[int, int]:
        """(calls, microseconds) of EVALSHA so far: every inventory script runs through it."""
        stats = await self.redis.info("commandstats")
        evalsha = stats.get("cmdstat_evalsha", {})
        return int(evalsha.get("calls", 0)), int(evalsha.get("usec", 0))

    async def redis_stalls(self) -> dict[str, Any]:
        """Redis's latency monitor since the last call: event -> (count, worst ms)."""
        events = await self.redis.execute_command("LATENCY", "LATEST")
        await self.redis.execute_command("LATENCY", "RESET")
        return {as_str(e[0]): {"latest_ms": int(e[2]), "max_ms": int(e[3])} for e in events}


# -- zero oversell --------------------------------------------------------------------------------


async def check_sale(
    ctx: Ctx, label: str, prefix: str, sale_id: str, reserved: int, unanswered: int = 0, drop: bool = False
) -> dict[str, Any]:
    """Read the sale's counters back and check its invariant, and that its holds are the
    reservations the clients were told of (``unanswered`` requests may hold a unit too, their
    answer not yet arrived); print one line."""
    keys = SaleKeys(prefix, sale_id)
    raw = await ctx.redis.hgetall(keys.sale)
    holds = await ctx.redis.hlen(keys.holds)
    f = {k.decode(): v.decode() for k, v in raw.items()}
    total, available, held, sold = (int(f.get(n) or 0) for n in ("total", "available", "held", "sold"))
    invariant = {
        "total = available + held + sold": total == available + held + sold,
        "available >= 0": available >= 0,
        "held = holds (1 unit each)": held == holds,
    }
    if unanswered:
        accounting = {"reserved seen <= held <= seen + unanswered": reserved <= held <= reserved + unanswered}
    else:
        accounting = {"held = reservations the clients saw": held == reserved}
    no_oversell = all(invariant.values())
    ok = no_oversell and all(accounting.values())
    failed = [name for name, good in {**invariant, **accounting}.items() if not good]
    line = (
        f"  invariant {label} (sale {sale_id}): total {total:,} = available {available:,} + held "
        f"{held:,} + sold {sold:,}; holds {holds:,}; clients saw {reserved:,} reserved"
        + (f" ({unanswered:,} unanswered)" if unanswered else "")
        + (": ok" if ok else f": VIOLATED ({', '.join(failed)})")
    )
    print(line)
    sys.stdout.flush()
    result = {
        "label": label, "sale_id": sale_id, "total": total, "available": available, "held": held,
        "sold": sold, "holds": holds, "reserved_seen": reserved, "unanswered": unanswered,
        "no_oversell": no_oversell, "ok": ok, "failed": failed,
    }  # fmt: skip
    ctx.invariants.append(result)
    if drop:  # keep Redis small for the next measurement
        await ctx.redis.unlink(*keys.all())
    return result


# -- (a) the ceiling: redis-benchmark ------------------------------------------------------------


def benchmark_binary() -> str | None:
    return shutil.which("redis-benchmark") or shutil.which("valkey-benchmark")


async def part_a(ctx: Ctx) -> list[dict[str, Any]]:
    a = ctx.args
    exe = benchmark_binary()
    if exe is None:
        print(
            "\n(a) SKIPPED: neither redis-benchmark nor valkey-benchmark is on PATH "
            "(`apt-get install redis-tools` provides redis-benchmark)"
        )
        return []
    url = ctx.redis_server.url
    if url.startswith("unix://"):
        target = ["-s", url.removeprefix("unix://")]
    else:
        target = ["-h", "127.0.0.1", "-p", url.rsplit(":", 1)[1].split("/")[0]]
    sha = await ctx.redis.script_load(source("reserve"))
    rows = []
    for pipeline in (1, a.pipeline):
        for keyed in (False, True):
            n = a.bench_requests * (2 if pipeline > 1 else 1)
            sale_id, keys = await ctx.open_sale("a")
            argv = [
                exe, *target, "-n", str(n), "-c", str(a.bench_clients), "-P", str(pipeline),
                "-r", "1000000", "--csv", "EVALSHA", sha, "10", *keys,
                "u:__rand_int__", "1", "k:__rand_int__" if keyed else "",
            ]  # fmt: skip
            rewrites0 = await ctx.aof_rewrites()
            r0, c0, t0 = cpu_seconds(ctx.redis_pid), rusage_children(), time.monotonic()
            proc = await ctx.children.spawn(argv, pipes=True)
            try:
                stdout, _ = await asyncio.wait_for(proc.communicate(), a.bench_timeout)
            finally:
                await ctx.children.stop(proc)
            wall = time.monotonic() - t0
            r1, c1 = cpu_seconds(ctx.redis_pid), rusage_children()
            lines = [line for line in stdout.decode().splitlines() if line.startswith('"EVALSHA')]
            if proc.returncode != 0 or not lines:
                raise RuntimeError(
                    f"redis-benchmark failed (code {proc.returncode}): {stdout.decode()[-500:]}"
                )
            cells = [c.strip('"') for c in lines[-1].rsplit(",", 7)[1:]]
            rps, _avg, _min, p50, _p95, p99, _max = (float(c) for c in cells)
            rewrites = await ctx.aof_rewrites() - rewrites0
            inv = await check_sale(
                ctx, f"(a) P{pipeline}{' key' if keyed else ''}", PREFIX, sale_id, n, drop=True
            )
            rows.append(
                {
                    "part": "a",
                    "what": "redis-benchmark EVALSHA reserve.lua, 1 request/call",
                    "variant": f"-c {a.bench_clients} -P {pipeline}, key {'random' if keyed else 'none'}",
                    "keyed": keyed,
                    "pipeline": pipeline,
                    "requests": n,
                    "decisions_per_s": rps,
                    "reserved": inv["held"],
                    "refused": {},
                    "p50_ms": p50,
                    "p99_ms": p99,
                    "wall_s": wall,
                    "redis_cpu": (r1 - r0) / wall,
                    "redis_us_per_decision": (r1 - r0) / n * 1e6,
                    "client_cpu": (c1 - c0) / wall,
                    "aof_rewrites": rewrites,
                    "ok": inv["ok"],
                }
            )
            print_row(rows[-1])
    return rows


def decision_figures(
    keyed: bool,
    reserved: int,
    refused: Counter[str],
    hist: HdrHistogram,
    wall: float,
    redis_cpu_s: float,
    client_cpu_s: float,
) -> dict[str, Any]:
    """The figures of a (b) or (c) row: rates, latency, and CPU per decision."""
    decided = reserved + sum(refused.values())
    return {
        "variant": f"key {'per request' if keyed else 'none'}",
        "keyed": keyed,
        "requests": decided,
        "decisions_per_s": decided / wall,
        "reserved": reserved,
        "refused": dict(refused),
        "p50_ms": hist.get_value_at_percentile(50) / 1000,
        "p99_ms": hist.get_value_at_percentile(99) / 1000,
        "wall_s": wall,
        "redis_cpu": redis_cpu_s / wall,
        "redis_us_per_decision": redis_cpu_s / max(1, decided) * 1e6,
        "client_cpu": client_cpu_s / wall,
        "client_us_per_decision": client_cpu_s / max(1, decided) * 1e6,
    }


# -- (b) naive: one EVALSHA per request from redis-py asyncio -------------------------------------


async def part_b(ctx: Ctx, keyed: bool) -> dict[str, Any]:
    a = ctx.args
    sha = await ctx.redis.script_load(source("reserve"))
    sale_id, keys = await ctx.open_sale("b")
    client = connect(ctx.redis_server.url)  # the server's client: a pool of 64 connections
    hist = HdrHistogram(*HDR_ARGS)
    refused: Counter[str] = Counter()
    reserved = 0
    limit = int(a.duration * 1_000_000)  # bounded in count as well as in time

    async def caller(i: int) -> None:
        nonlocal reserved
        j = 0
        while time.monotonic() < deadline and reserved + sum(refused.values()) < limit:
            t = time.monotonic()
            code, _hold, _n = await client.evalsha(sha, 10, *keys, f"b{i}.{j}", 1, f"k{j}" if keyed else "")
            hist.record_value(max(1, round((time.monotonic() - t) * 1e6)))
            if code == b"reserved":
                reserved += 1
            else:
                refused[code.decode()] += 1
            j += 1

    try:
        await client.ping()
        rewrites0 = await ctx.aof_rewrites()
        r0, c0, t0 = cpu_seconds(ctx.redis_pid), cpu_seconds(os.getpid()), time.monotonic()
        deadline = t0 + a.duration
        await asyncio.gather(*(caller(i) for i in range(a.callers)))
        wall = time.monotonic() - t0
        r1, c1 = cpu_seconds(ctx.redis_pid), cpu_seconds(os.getpid())
    finally:
        await client.aclose()
    inv = await check_sale(ctx, f"(b){' key' if keyed else ''}", PREFIX, sale_id, reserved, drop=True)
    row = {
        "part": "b",
        "what": f"redis-py asyncio, 1 EVALSHA/request, {a.callers} callers",
        **decision_figures(keyed, reserved, refused, hist, wall, r1 - r0, c1 - c0),
        "aof_rewrites": await ctx.aof_rewrites() - rewrites0,
        "ok": inv["ok"],
    }
    print_row(row)
    return row


# -- (c) the inventory's micro-batching ----------------------------------------------------------


class CallLog:
    """Times the calls of one Inventory's scripts (a wrapper on the instance, not a change to it)."""

    def __init__(self, inventory: Inventory) -> None:
        self.calls: list[tuple[float, float, int]] = []  # (start, end, requests) of reserve.lua
        self._inner = inventory.scripts.call
        inventory.scripts.call = self.call  # type: ignore[method-assign]

    async def call(self, name: str, keys: list[str], args: list[Any]) -> Any:
        if name != "reserve":
            return await self._inner(name, keys, args)
        start = time.monotonic()
        try:
            return await self._inner(name, keys, args)
        finally:
            self.calls.append((start, time.monotonic(), len(args) // 3))

    def summary(self, t0: float, t1: float) -> dict[str, Any]:
        calls = [c for c in self.calls if t0 <= c[0] < t1]
        sizes = sorted(c[2] for c in calls)
        if not sizes:
            return {"calls": 0}
        # time with 0, 1, 2+ reserve calls in flight
        edges = sorted([(s, 1) for s, _, _ in calls] + [(e, -1) for _, e, _ in calls])
        inflight, last, spent = 0, edges[0][0], Counter[int]()
        for t, step in edges:
            spent[min(inflight, 2)] += t - last
            inflight, last = inflight + step, t
        busy = sum(spent.values())
        return {
            "calls": len(sizes),
            "mean": statistics.fmean(sizes),
            "p50": sizes[len(sizes) // 2],
            "min": sizes[0],
            "max": sizes[-1],
            "call_ms_p50": statistics.median((e - s) * 1000 for s, e, _ in calls),
            "share_2_in_flight": spent[2] / busy if busy else 0.0,
            "share_none_in_flight": spent[0] / busy if busy else 0.0,
        }


async def part_c(ctx: Ctx, keyed: bool) -> dict[str, Any]:
    a = ctx.args
    client = connect(ctx.redis_server.url)
    config = InventoryConfig(key_prefix=PREFIX, max_batch=a.max_batch, max_in_flight=a.max_in_flight)
    inventory = Inventory(client, config, Supervisor())
    await inventory.start()
    log = CallLog(inventory)
    sale_id, _ = await ctx.open_sale("c")
    hist = HdrHistogram(*HDR_ARGS)
    refused: Counter[str] = Counter()
    reserved = 0
    limit = int(a.duration * 2_000_000)

    async def buyer(i: int) -> None:
        nonlocal reserved
        j = 0
        while time.monotonic() < deadline and reserved + sum(refused.values()) < limit:
            t = time.monotonic()
            try:
                await inventory.reserve(sale_id, f"c{i}.{j}", 1, f"k{j}" if keyed else "")
                reserved += 1
            except InventoryError as exc:
                refused[exc.code] += 1
            hist.record_value(max(1, round((time.monotonic() - t) * 1e6)))
            j += 1

    try:
        rewrites0 = await ctx.aof_rewrites()
        r0, c0, t0 = cpu_seconds(ctx.redis_pid), cpu_seconds(os.getpid()), time.monotonic()
        deadline = t0 + a.duration
        await asyncio.gather(*(buyer(i) for i in range(a.tasks)))
        t1 = time.monotonic()
        r1, c1 = cpu_seconds(ctx.redis_pid), cpu_seconds(os.getpid())
    finally:
        await inventory.stop()
        await client.aclose()
    wall = t1 - t0
    inv = await check_sale(ctx, f"(c){' key' if keyed else ''}", PREFIX, sale_id, reserved, drop=True)
    batches = log.summary(t0, t1)
    row = {
        "part": "c",
        "what": f"Inventory.reserve (micro-batching), {a.tasks} tasks",
        **decision_figures(keyed, reserved, refused, hist, wall, r1 - r0, c1 - c0),
        "aof_rewrites": await ctx.aof_rewrites() - rewrites0,
        "batches": batches,
        "config": {"max_batch": a.max_batch, "max_in_flight": a.max_in_flight},
        "ok": inv["ok"],
    }
    print_row(row)
    if batches["calls"]:
        print(
            f"    batches: {batches['calls']:,} reserve.lua calls, requests per call mean "
            f"{batches['mean']:.0f} / p50 {batches['p50']} / min {batches['min']} / max {batches['max']}; "
            f"call time p50 {batches['call_ms_p50']:.1f} ms; 2 calls in flight "
            f"{batches['share_2_in_flight']:.0%} of the time (max_in_flight {a.max_in_flight}), "
            f"none {batches['share_none_in_flight']:.0%}"
        )
    return row


# -- (d) end to end: live serve + WebSocket buyers ----------------------------------------------


class ServerProcesses:
    """CPU and memory of a server's processes (``pids``: supervisor and workers)."""

    pids: list[int]

    def rss(self) -> int:
        """Resident memory of the server's processes (bytes)."""
        total = 0
        for pid in self.pids:
            with contextlib.suppress(OSError, RuntimeError):
                total += rss_bytes(pid)
        return total

    def cpu(self) -> float:
        """CPU seconds of the server's processes."""
        total = 0.0
        for pid in self.pids:
            with contextlib.suppress(OSError):
                total += cpu_seconds(pid)
        return total


class Server(ServerProcesses, LocalServer):
    """``live serve --redis-url`` (``workers`` processes) on a fresh data dir, for part (d): the
    harness's LocalServer on this benchmark's Redis, with its settings, registered with the
    benchmark's children."""

    def __init__(self, ctx: Ctx, workers: int, settings: dict[str, Any]) -> None:
        env = {"LIVE_KEY_PREFIX": E2E_PREFIX, **{f"LIVE_{k.upper()}": str(v) for k, v in settings.items()}}
        super().__init__(
            0,
            workers,
            keep_data=True,
            python=ctx.args.live_python,
            settings=env,
            args=["--redis-url", ctx.redis_server.url],
            in_data_dir=True,
        )
        self.ctx = ctx
        self.secret = SECRET
        self.pids: list[int] = []
        self.host_token = Auth.hs256(SECRET).mint("host", "*", Role.HOST, 3600)
        self.session: aiohttp.ClientSession | None = None

    async def start(self, timeout_s: float = 60.0) -> None:
        try:
            await super().start()
        finally:
            if self.process is not None:
                self.ctx.children.procs.append(self.process)
        self.session = aiohttp.ClientSession(headers={"Authorization": f"Bearer {self.host_token}"})
        # every worker must listen before the buyers connect (SO_REUSEPORT spreads connections
        # only over the sockets that exist)
        deadline = time.monotonic() + timeout_s
        while True:
            tree = [p for p in sorted(with_descendants([self.pid])) if process_alive(p)]
            if len(listening_pids(self.port) & set(tree)) >= self.workers:
                self.pids = tree
                return
            if self.process is None or self.process.returncode is not None:
                raise RuntimeError(f"live exited: {self.log_tail(5)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"not every worker of live listens after {timeout_s:g} s")
            await asyncio.sleep(0.1)

    async def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        assert self.session is not None
        async with self.session.request(method, f"http://127.0.0.1:{self.port}{path}", json=body) as resp:
            data: dict[str, Any] = await resp.json(content_type=None)
            if resp.status >= 300:
                raise RuntimeError(f"{method} {path}: HTTP {resp.status} {data}")
            return data

    def log_lines(self) -> list[str]:
        try:
            return [x for x in self.log_path.read_text(errors="replace").splitlines() if x.strip()]
        except OSError:
            return []

    async def stop(self) -> int | None:
        if self.session is not None:
            await self.session.close()
        code = await super().stop()
        if self.process is not None:
            with contextlib.suppress(ValueError):
                self.ctx.children.procs.remove(self.process)
        for pid in self.pids:  # workers are killed with the supervisor; make sure
            if process_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)
        return code

    def cleanup(self) -> None:
        shutil.rmtree(self.data_dir, ignore_errors=True)


class RawServer(ServerProcesses):
    """bench/raw_ws_server.py (``workers`` processes) for part (r): the raw baseline, with the
    parts of Server that part_d uses (no HTTP API: it has no rooms or sales)."""

    def __init__(self, ctx: Ctx, workers: int) -> None:
        self.ctx = ctx
        self.workers = workers
        with contextlib.closing(socket.socket()) as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.process: asyncio.subprocess.Process | None = None
        self.pids: list[int] = []

    async def start(self, timeout_s: float = 30.0) -> None:
        argv = [sys.executable, str(HERE / "raw_ws_server.py"), "--port", str(self.port),
                "--workers", str(self.workers)]  # fmt: skip
        self.process = await self.ctx.children.spawn(argv)
        deadline = time.monotonic() + timeout_s
        while True:
            tree = [p for p in sorted(with_descendants([self.process.pid])) if process_alive(p)]
            if len(listening_pids(self.port) & set(tree)) >= self.workers:
                # the listening processes only: the tree's root is live.parent_death's exec of it
                self.pids = tree
                return
            if self.process.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError("the raw baseline server did not start")
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        if self.process is not None:
            await self.ctx.children.stop(self.process, timeout_s=5)
        for pid in self.pids:
            if process_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)


async def part_d(ctx: Ctx, workers: int, raw: bool = False) -> list[dict[str, Any]]:
    a = ctx.args
    n_clients = a.clients or max(2, math.ceil(a.buyers / 2500))
    settings: dict[str, Any] = {
        "max_connections": a.buyers + 1000,
        "max_connections_per_ip": a.buyers + 1000,
        # every buyer comes from 127.0.0.1: the per-address buy limit (10,000/s by default)
        # would refuse most of the load; per buyer the load is rate / buyers (3/s at 30k/s)
        "buy_ip_rate_per_s": 10_000_000,
        "buy_ip_burst": 10_000_000,
        "buy_rate_per_s": 1000,
        "buy_burst": 1000,
        "message_rate_per_s": 1000,
        "message_burst": 2000,
    }
    if a.stock_update_ms:
        settings["stock_update_ms"] = a.stock_update_ms
    what = f"raw baseline (bench/raw_ws_server.py) x{workers}" if raw else f"live serve --workers {workers}"
    print(
        f"\n## ({'r' if raw else 'd'}) end to end: {what}, {a.buyers:,} buyers in {n_clients} client "
        f"processes ({a.framing}), open loop, {a.phase_s:g} s per rate"
    )
    if not raw:
        print("live settings: " + ", ".join(f"LIVE_{k.upper()}={v}" for k, v in settings.items()))
    sys.stdout.flush()
    server: Server | RawServer = RawServer(ctx, workers) if raw else Server(ctx, workers, settings)
    buyer_workers: list[Worker] = []
    rows: list[dict[str, Any]] = []
    try:
        await server.start()
        if isinstance(server, Server):
            await server.api("POST", "/api/rooms", {"id": ROOM, "title": "flash sale bench"})
            product = await server.api(
                "POST", f"/api/rooms/{ROOM}/products", {"title": "Green tea", "price_cents": 1999}
            )
        env = {**os.environ, "LIVEBENCH_SECRET": SECRET}
        per = math.ceil(a.buyers / n_clients)
        t_connect = time.monotonic()
        for first in range(0, a.buyers, per):
            count = min(per, a.buyers - first)
            argv = [
                sys.executable, str(HERE / "buyers.py"), "--port", str(server.port), "--room", ROOM,
                "--first", str(first), "--count", str(count), "--framing", a.framing,
                "--connect-rate", str(a.connect_rate / n_clients),
            ]  # fmt: skip
            proc = await ctx.children.spawn(argv, env=env, pipes=True)
            buyer_workers.append(Worker(f"buyers {len(buyer_workers)}", proc))
        ready = await asyncio.gather(*(w.expect("ready", a.connect_timeout) for w in buyer_workers))
        connected = sum(r["connections"] for r in ready)
        print(
            f"{connected:,} buyers connected in {time.monotonic() - t_connect:.1f} s; "
            f"server pids {server.pids}"
        )
        sys.stdout.flush()
        for index, rate in enumerate(a.rates):
            sale = {"id": f"raw{index}"}
            if isinstance(server, Server):
                sale = await server.api(
                    "POST",
                    f"/api/rooms/{ROOM}/sales",
                    {"product_id": product["id"], "stock": STOCK, "per_user_limit": PER_USER_LIMIT,
                     "duration_s": 3600, "hold_s": HOLD_S},
                )  # fmt: skip
            await asyncio.sleep(a.settle)
            t0 = time.monotonic() + 0.5
            t1 = t0 + a.phase_s
            for w in buyer_workers:
                w.send(cmd="phase", index=index, t0=t0, t1=t1, rate=rate / len(buyer_workers),
                       sale_id=sale["id"], drain_s=a.drain, overload_s=a.overload)  # fmt: skip
            await asyncio.sleep(max(0.0, t0 - time.monotonic()))
            await ctx.redis_stalls()
            rewrites0 = await ctx.aof_rewrites()
            evalsha0 = await ctx.evalsha_stats()
            s0, r0, m0 = server.cpu(), cpu_seconds(ctx.redis_pid), machine_busy()
            # CPU from t0 until every answer is in (or the drain ran out): a phase cut short for
            # overload keeps the server busy with its backlog after the clients stopped sending
            reports = [await w.expect("phase_done", a.drain + a.phase_s + 60) for w in buyer_workers]
            s1, r1, m1, elapsed = (
                server.cpu(),
                cpu_seconds(ctx.redis_pid),
                machine_busy(),
                time.monotonic() - t0,
            )
            busy = (m1[0] - m0[0]) / (m1[1] - m0[1])
            row = phase_row(
                a, workers, rate, reports, (s1 - s0) / elapsed, (r1 - r0) / elapsed, busy, elapsed
            )
            row["part"] = "r" if raw else "d"
            row["sale_id"] = sale["id"]
            row["server_rss_mib"] = server.rss() / 2**20
            row["aof_rewrites"] = await ctx.aof_rewrites() - rewrites0
            calls, usec = (
                after - before for before, after in zip(evalsha0, await ctx.evalsha_stats(), strict=True)
            )
            # the sweeps (every 100 ms per active sale and process) are EVALSHA calls too
            row["evalsha_calls"] = calls
            row["requests_per_evalsha"] = row["sent"] / max(1, calls)
            row["redis_script_us_per_request"] = usec / max(1, row["sent"])
            row["redis_stalls"] = await ctx.redis_stalls()
            if isinstance(server, Server):
                inv = await check_sale(
                    ctx, f"(d) w{workers} {rate:g}/s", E2E_PREFIX, sale["id"], row["acks"], row["unanswered"]
                )
                row["ok"] = inv["ok"]
                row["holds_without_ack"] = inv["held"] - row["acks"]
                await server.api("POST", f"/api/sales/{sale['id']}/stop")
            else:
                row["ok"] = True  # nothing is sold: there is no sale to check
            rows.append(row)
            print_d_row(row)
    finally:
        for w in buyer_workers:
            with contextlib.suppress(Exception):
                w.send(cmd="quit")
        await asyncio.gather(
            *(ctx.children.stop(w.proc, timeout_s=10) for w in buyer_workers), return_exceptions=True
        )
        await server.stop()
        problems = []
        if isinstance(server, Server):
            problems = server.log_lines()
            if problems:
                print(f"  server log: {len(problems)} lines at warning or above; first: {problems[:3]}")
            Path(a.log_dir).mkdir(parents=True, exist_ok=True)
            if server.log_path.exists():
                shutil.copy(server.log_path, Path(a.log_dir) / f"inventory-live-w{workers}.log")
            server.cleanup()
    for row in rows:
        row["server_log_lines"] = len(problems)
    return rows


def phase_row(
    a: argparse.Namespace,
    workers: int,
    rate: float,
    reports: list[dict[str, Any]],
    server_cpu: float,
    redis_cpu: float,
    busy: float,
    elapsed: float,
) -> dict[str, Any]:
    d = a.phase_s
    hist = HdrHistogram(*HDR_ARGS)
    for r in reports:
        hist.add(HdrHistogram.decode(base64.b64decode(r["hdr"])))
    errors: Counter[str] = Counter()
    for r in reports:
        errors.update(r["errors"])
    sent = sum(r["sent"] for r in reports)
    acks = sum(r["acks"] for r in reports)
    answered = sum(r["answered"] for r in reports)
    cut = [r["overloaded_at"] for r in reports if r["overloaded_at"] is not None]
    worst: dict[int, int] = {}
    for r in reports:
        for second, us in r["worst_by_second_us"].items():
            worst[int(second)] = max(worst.get(int(second), 0), us)
    return {
        "part": "d",
        "server_workers": workers,
        "target_per_s": rate,
        "sent": sent,
        "sent_per_s": sum(r["sent"] / max(1e-3, r["duration_s"]) for r in reports),
        "skipped_closed": sum(r["skipped"] for r in reports),
        "acks": acks,
        "errors": dict(errors),
        "answered": answered,
        "answered_per_s": sum(r["answered_in_window"] / max(1e-3, r["duration_s"]) for r in reports),
        "overloaded_at_s": min(cut) if cut else None,
        # what the server got through, until it had answered everything sent
        "throughput_per_s": answered / max(1e-3, max(r["last_answer_s"] for r in reports)),
        "acked_per_s": acks / d,
        "unanswered": sent - answered,
        "latency_ms": {str(p): hist.get_value_at_percentile(p) / 1000 for p in (50, 90, 99, 99.9, 100)},
        "client_max_lag_ms": max(r["max_lag_s"] for r in reports) * 1000,
        "worst_ms_by_second": {s: us / 1000 for s, us in sorted(worst.items())},
        "measured_s": elapsed,
        "server_cpu": server_cpu,
        # server CPU per answered request (its Redis not included: that is redis_cpu)
        "server_us_per_request": server_cpu * elapsed / max(1, answered) * 1e6,
        "redis_cpu": redis_cpu,
        "clients_cpu": sum(r["cpu_s"] for r in reports) / elapsed,
        "machine_busy": busy,
        "buyers_lost": sum(r["lost"] for r in reports),
        "close_codes": dict(sum((Counter(r["close_codes"]) for r in reports), Counter())),
        "other_frames_per_buyer_s": {
            kind: n / a.buyers / elapsed
            for kind, n in sum((Counter(r["other_frames"]) for r in reports), Counter()).most_common()
        },
        "late_answers": sum(r["late"] for r in reports),
    }


# -- output ---------------------------------------------------------------------------------------


def print_row(row: dict[str, Any]) -> None:
    refused = f", refused {row['refused']}" if row["refused"] else ""
    extra = f", client {row['client_us_per_decision']:.1f} us" if "client_us_per_decision" in row else ""
    print(
        f"  ({row['part']}) {row['variant']}: {fmt_int(row['decisions_per_s'])} decisions/s "
        f"({row['reserved']:,} reserved{refused}); p50 {row['p50_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms; "
        f"Redis {row['redis_cpu']:.0%} of a core, {row['redis_us_per_decision']:.1f} us/decision{extra}; "
        f"AOF rewrites {row['aof_rewrites']}"
    )
    sys.stdout.flush()


def print_d_row(row: dict[str, Any]) -> None:
    lat = row["latency_ms"]
    print(
        f"  target {fmt_int(row['target_per_s'])}/s: sent {fmt_int(row['sent_per_s'])}/s, answered "
        f"{fmt_int(row['answered_per_s'])}/s in the window, {row['acks']:,} acks, "
        f"errors {row['errors'] or 0}, unanswered {row['unanswered']:,}; "
        f"latency p50 {lat['50']:.1f} / p99 {lat['99']:.1f} / p99.9 "
        f"{lat['99.9']:.1f} / max {lat['100']:.1f} ms; CPU server {row['server_cpu']:.0%}, Redis "
        f"{row['redis_cpu']:.0%}, clients {row['clients_cpu']:.0%}; machine {row['machine_busy']:.0%} busy"
        + (
            f"; OVERLOADED: sending stopped at +{row['overloaded_at_s']:.1f} s"
            if row["overloaded_at_s"]
            else ""
        )
        + (f"; {row['buyers_lost']} buyers lost {row['close_codes']}" if row["buyers_lost"] else "")
        + f"; server RSS {row['server_rss_mib']:.0f} MiB"
        + f"; {row['evalsha_calls']:,} EVALSHA calls ({row['requests_per_evalsha']:.1f} requests per call)"
        + (f"; AOF rewrites {row['aof_rewrites']}" if row["aof_rewrites"] else "")
        + (f"; Redis stalls >= 20 ms: {row['redis_stalls']}" if row["redis_stalls"] else "")
        + "; worst latency of the requests due in each second: "
        + " ".join(f"{v:.0f}" for v in row["worst_ms_by_second"].values())
        + " ms"
    )
    sys.stdout.flush()


def summary(ctx: Ctx) -> None:
    out, a = ctx.out, ctx.args
    abc = out.get("a", []) + out.get("b", []) + out.get("c", [])
    if abc:
        print("\n## (a)-(c): reservation decisions per second, one sale, one Redis")
        rows = []
        for r in abc:
            batches = r.get("batches")
            notes = (
                f"batch mean {batches['mean']:.0f}, 2 in flight {batches['share_2_in_flight']:.0%}"
                if batches and batches.get("calls")
                else ""
            )
            rows.append(
                [
                    f"({r['part']}) {r['what']}",
                    r["variant"],
                    fmt_int(r["decisions_per_s"]),
                    f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f}",
                    f"{r['redis_cpu']:.0%}",
                    f"{r['redis_us_per_decision']:.1f}",
                    f"{r['client_cpu']:.0%}",
                    f"{r['client_us_per_decision']:.1f}" if "client_us_per_decision" in r else "-",
                    "ok" if r["ok"] else "VIOLATED",
                    notes,
                ]
            )
        print(
            table(
                ["measurement", "variant", "decisions/s", "p50 / p99 ms", "Redis CPU", "Redis us/dec",
                 "client CPU", "client us/dec", "invariant", "notes"],
                rows,
            )
        )  # fmt: skip
        ratios = ratio_lines(out)
        out["ratios"] = ratios
        for line in ratios.get("lines", []):
            print(f"- {line}")
    d_rows = [r for part in ("r", "d") for rows in out.get(part, {}).values() for r in rows]
    if d_rows:
        print(
            f"\n## (d) end to end: {a.buyers:,} WebSocket buyers ({a.framing}), open loop, "
            f"{a.phase_s:g} s per rate"
        )
        rows = []
        for r in d_rows:
            lat = r["latency_ms"]
            rows.append(
                [
                    "raw" if r["part"] == "r" else "live",
                    r["server_workers"],
                    fmt_int(r["target_per_s"]),
                    fmt_int(r["sent_per_s"]),
                    fmt_int(r["answered_per_s"]),
                    fmt_int(r["throughput_per_s"]),
                    f"{r['acks']:,}",
                    json.dumps(r["errors"]) if r["errors"] else "0",
                    f"{r['unanswered']:,}",
                    f"{lat['50']:.1f} / {lat['99']:.1f} / {lat['99.9']:.1f} / {lat['100']:.1f}",
                    f"{r['server_cpu']:.0%}",
                    f"{r['server_us_per_request']:.1f}",
                    f"{r['redis_cpu']:.0%}",
                    f"{r['clients_cpu']:.0%}",
                    f"{r['machine_busy']:.0%}",
                    f"{r['requests_per_evalsha']:.1f}",
                    "ok" if r["ok"] else "VIOLATED",
                    f"overloaded: stopped at +{r['overloaded_at_s']:.1f} s" if r["overloaded_at_s"] else "",
                ]
            )
        print(
            table(
                ["server", "procs", "target/s", "sent/s", "answered/s", "until last/s", "acks", "errors",
                 "unanswered", "latency p50 / p99 / p99.9 / max ms", "server CPU", "server us/req",
                 "Redis CPU", "clients CPU", "machine busy", "req/EVALSHA", "invariant", "notes"],
                rows,
            )
        )  # fmt: skip
        print(
            f"- answered/s: acks + errors that arrived while the clients sent ({a.phase_s:g} s, less if cut "
            "short for overload); until last/s: all answers / time from the start to the last answer; "
            "latency from each request's intended send time to its answer "
            f"(answers up to {a.drain:g} s after the window count)"
        )
        print(
            "- frames other than answers, per buyer per s, by type (each row): "
            + "; ".join(
                ", ".join(f"{k} {v:.2f}" for k, v in r["other_frames_per_buyer_s"].items()) or "none"
                for r in d_rows
            )
        )
        raw = {(r["server_workers"], r["target_per_s"]): r for r in d_rows if r["part"] == "r"}
        ratios = []
        for r in d_rows:
            base = raw.get((r["server_workers"], r["target_per_s"]))
            overloaded = base is None or r["overloaded_at_s"] or base["overloaded_at_s"]
            if r["part"] == "d" and base is not None and not overloaded:
                ratio = r["server_us_per_request"] / base["server_us_per_request"]
                r["server_cpu_vs_raw"] = ratio
                ratios.append(
                    f"{r['server_workers']} proc(s) at {fmt_int(r['target_per_s'])}/s: live "
                    f"{r['server_us_per_request']:.1f} us / raw {base['server_us_per_request']:.1f} us"
                    f" = {ratio:.2f}x"
                    f" ({'met' if ratio <= 2 else 'NOT met'})"
                )
        if ratios:
            print("- server CPU per reservation, live / raw (target <= 2x): " + "; ".join(ratios))
        d_rows = [r for r in d_rows if r["part"] == "d"]
        best = [r for r in d_rows if r["latency_ms"]["99"] <= 50 and not r["unanswered"]]
        top = max(best, key=lambda r: r["answered_per_s"]) if best else None
        met = top is not None and top["answered_per_s"] >= 30_000 * 0.98
        print(
            "- target (d) >= 30,000 answered/s with p99 <= 50 ms at "
            f"{a.buyers:,} buyers: {'met' if met else 'NOT met'}"
            + (
                f" (best within p99 <= 50 ms: {fmt_int(top['answered_per_s'])}/s with "
                f"{top['server_workers']} server process(es), p99 {top['latency_ms']['99']:.1f} ms)"
                if top
                else " (no rate kept p99 <= 50 ms)"
            )
        )
    oversold = [i["label"] for i in ctx.invariants if not i["no_oversell"]]
    unaccounted = [i["label"] for i in ctx.invariants if i["no_oversell"] and not i["ok"]]
    print(
        f"- zero oversell (total = available + held + sold, available >= 0, held = holds): "
        f"{len(ctx.invariants) - len(oversold)} of {len(ctx.invariants)} sales ok"
        + (f"; VIOLATED: {oversold}" if oversold else "")
        + "; holds = reservations the clients were told of: "
        + (f"NOT in {unaccounted}" if unaccounted else "ok in all")
    )


def ratio_lines(out: dict[str, Any]) -> dict[str, Any]:
    def pick(part: str, keyed: bool, pipeline: int | None = None) -> float | None:
        for r in out.get(part, []):
            if r["keyed"] == keyed and (pipeline is None or r.get("pipeline") == pipeline):
                return float(r["decisions_per_s"])
        return None

    ratios: dict[str, Any] = {"lines": []}
    for keyed in (False, True):
        c = pick("c", keyed)
        if c is None:
            continue
        label = "with a key per request" if keyed else "without keys"
        parts = []
        for name, base in (
            ("(a) unpipelined", pick("a", keyed, 1)),
            ("(a) pipelined", next((float(r["decisions_per_s"]) for r in out.get("a", [])
                                    if r["keyed"] == keyed and r["pipeline"] > 1), None)),
            ("(b)", pick("b", keyed)),
        ):  # fmt: skip
            if base:
                ratios[f"c/{name} {label}"] = c / base
                parts.append(f"{c / base:.2f}x {name} ({fmt_int(base)}/s)")
        met = "met" if c >= 100_000 else "NOT met"
        ratios["lines"].append(
            f"(c) {label}: {fmt_int(c)}/s = " + ", ".join(parts) + f"; target >= 100,000/s {met}"
        )
    return ratios


# -- main -----------------------------------------------------------------------------------------


async def main(args: argparse.Namespace) -> int:
    install_sigterm(asyncio.current_task())  # type: ignore[arg-type]
    raise_nofile()
    facts = machine_facts()
    print(f"# flash-sale reservations: parts {','.join(args.parts)}")
    print("machine: " + ", ".join(f"{k} {v}" for k, v in facts.items()))
    children = Children()
    directory = Path(tempfile.mkdtemp(prefix="livebench-redis-", dir="/tmp"))
    binary = find_redis_server(None)
    redis_server = EmbeddedRedis(directory, binary)
    redis_server.start()
    redis = connect(redis_server.url)
    # Redis reports its own stalls (fork for an AOF rewrite, slow AOF writes, slow commands)
    await redis.config_set("latency-monitor-threshold", 20)
    info = await redis.info("server")
    version = info.get("valkey_version") or info.get("redis_version")
    print(f"redis: {binary.name} {version} at {redis_server.url} (AOF everysec, as live serve runs it)")
    print(f"sales: stock {STOCK:,}, per-user limit {PER_USER_LIMIT}, hold {HOLD_S} s; quantity 1 per request")
    sys.stdout.flush()
    out: dict[str, Any] = {"facts": {**facts, "redis": f"{binary.name} {version}"}, "args": vars(args)}
    inventory = Inventory(redis, InventoryConfig(key_prefix=PREFIX), Supervisor())
    ctx = Ctx(args, children, redis_server, redis, inventory, out)
    try:
        if "a" in args.parts:
            print(f"\n## (a) ceiling: redis-benchmark, {args.bench_clients} connections")
            out["a"] = await part_a(ctx)
        if "b" in args.parts:
            print(
                f"\n## (b) naive: one EVALSHA per request, {args.callers} callers, {args.duration:g} s each"
            )
            out["b"] = [await part_b(ctx, keyed) for keyed in (False, True)]
        if "c" in args.parts:
            print(f"\n## (c) Inventory.reserve, {args.tasks} tasks, {args.duration:g} s each")
            out["c"] = [await part_c(ctx, keyed) for keyed in (False, True)]
        # (r) and (d) side by side: per worker count, the raw baseline right before live
        for workers in args.server_workers:
            if "r" in args.parts:
                out.setdefault("r", {})[str(workers)] = await part_d(ctx, workers, raw=True)
            if "d" in args.parts:
                out.setdefault("d", {})[str(workers)] = await part_d(ctx, workers)
    finally:
        await children.stop_all()
        await redis.aclose()
        redis_server.stop()
        shutil.rmtree(directory, ignore_errors=True)
    out["invariants"] = ctx.invariants
    summary(ctx)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1, ensure_ascii=False, default=str))
    print(f"- results: {args.json}")
    return 0 if all(i["ok"] for i in ctx.invariants) else 1


def csv_of(kind: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    return lambda text: [kind(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--parts", type=csv_of(str), default=["a", "b", "c", "r", "d"], help="which of a,b,c,r,d to run"
    )
    p.add_argument("--duration", type=float, default=5.0, help="seconds of each (b) and (c) measurement")
    p.add_argument(
        "--bench-requests", type=int, default=200_000, help="(a) requests unpipelined (x2 pipelined)"
    )
    p.add_argument("--bench-clients", type=int, default=50, help="(a) redis-benchmark connections")
    p.add_argument("--pipeline", type=int, default=16, help="(a) pipelined run's -P")
    p.add_argument(
        "--bench-timeout", type=float, default=120.0, help="(a) longest a redis-benchmark run may take"
    )
    p.add_argument("--callers", type=int, default=64, help="(b) concurrent callers")
    p.add_argument("--tasks", type=int, default=2000, help="(c) concurrent tasks")
    p.add_argument(
        "--max-batch", type=int, default=InventoryConfig.max_batch, help="(c) InventoryConfig.max_batch"
    )
    p.add_argument("--max-in-flight", type=int, default=InventoryConfig.max_in_flight,
                   help="(c) InventoryConfig.max_in_flight")  # fmt: skip
    p.add_argument(
        "--server-workers", type=csv_of(int), default=[1, 2], help="(d) live serve --workers, each in turn"
    )
    p.add_argument("--buyers", type=int, default=10_000, help="(d) WebSocket buyers")
    p.add_argument("--clients", type=int, default=0, help="(d) client processes (default buyers / 2500)")
    p.add_argument("--framing", choices=["msgpack", "json"], default="msgpack", help="(d) subprotocol")
    p.add_argument("--rates", type=csv_of(float), default=[2_500.0, 5_000.0, 10_000.0, 20_000.0, 30_000.0],
                   help="(d) target reservations/s, one phase each")  # fmt: skip
    p.add_argument("--phase-s", type=float, default=10.0, help="(d) seconds per rate")
    p.add_argument("--drain", type=float, default=10.0, help="(d) most seconds after a phase for its answers")
    p.add_argument(
        "--overload", type=float, default=2.0,
        help="(d) a client stops a phase when this many seconds' worth of its requests are unanswered",
    )  # fmt: skip
    p.add_argument(
        "--settle", type=float, default=2.0, help="(d) seconds between opening a sale and its phase"
    )
    p.add_argument(
        "--connect-rate", type=float, default=2000.0, help="(d) new connections/s, all clients together"
    )
    p.add_argument("--connect-timeout", type=float, default=180.0)
    p.add_argument("--stock-update-ms", type=int, default=0,
                   help="(d) LIVE_STOCK_UPDATE_MS (default: the server's, 200)")  # fmt: skip
    p.add_argument("--live-python", default=sys.executable, help="python with live installed (default: ours)")
    p.add_argument("--log-dir", default="/tmp/livebench-logs", help="server logs are kept here")
    p.add_argument("--json", default="/tmp/livebench-logs/flash_sale.json", help="results file")
    args = p.parse_args(argv)
    unknown = set(args.parts) - set("abcdr")
    if unknown:
        p.error(f"--parts: unknown {sorted(unknown)}")
    if args.duration <= 0 or args.phase_s <= 0 or not args.rates or args.buyers < 1:
        p.error("--duration, --phase-s > 0, --rates not empty, --buyers >= 1")
    return args


if __name__ == "__main__":
    run_orchestrator(main(parse_args(sys.argv[1:])))
