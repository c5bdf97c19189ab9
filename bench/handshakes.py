"""Handshakes per server CPU-second, live side by side with its peers; and a reconnect storm.

    python bench/handshakes.py [--connections 5000] [--concurrency 100] [--servers ws,...]
    python bench/handshakes.py --storm [--viewers 20000] [--host-messages 5] [--live-workers 2]

Handshakes (the default): for each server in turn, N connections are opened C at a time (C
split over the client processes), each from a fresh TCP connect to the server's first frame:

  ws            websockets' own ``serve`` (accepts and holds the connection, sends nothing):
                done at the 101 response
  aiohttp       aiohttp ``WebSocketResponse``, the same: done at the 101
  socketio      python-socketio on aiohttp: done at the Socket.IO connect ack (the client
                reads the Engine.IO open packet, sends ``40``, reads ``40{"sid":...}``)
  node-socketio Node socket.io 4, the same
  live          ``live serve`` (embedded Redis), a signed token per viewer (minted before the
                run) in the query, JSON framing (``live.v1.json``): done at the ``welcome``

The peers are bench/peers/ (the fan-out servers, which hold every connection and send
nothing until told to). Connections stay open until the server's CPU is read again. The
figure is handshakes per server CPU-second (/proc/PID/stat before the first connect and after
the last first frame); live's row counts its process(es), its embedded Redis is reported
apart and in a "live + redis" row. Latency: connect start to first frame, all connections.

Reconnect storm (``--storm``): ``live serve --workers 2``, one room. V viewers connect (C at a
time) and remember their welcome's ``seq``; the host publishes K host messages (acked); then
every viewer drops its connection at once (TCP abort, no close handshake) and reconnects at
once with ``?last_seq=<seq>``. Measured: first reconnect attempt to last welcome, welcomes with
``resumed: true``, refusals and failures (no retries), which clients got all K missed host
messages after their welcome, and the server's CPU (live processes; Redis apart) from the drop
to the last welcome. Target: <= 5 s, all resumed, none refused.

Clients: loadtest/wsclient.py's lean client (the handshake is its own code: one write of
the request, the 101 found in the first read), in several client processes
(``handshakes.py _worker``), at most 5,000 connections each, bound to 127.0.0.1..127.0.0.S
(``--sources``) round-robin, so no source address runs out of ports.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from loadtest.procfs import cpu_seconds
from loadtest.wsclient import Endpoint, HandshakeError, WsConnection, connect

from common import (
    Children,
    Control,
    CpuRates,
    LiveServer,
    Worker,
    add_run_options,
    cpu_self,
    fmt_int,
    free_port,
    install_sigterm,
    machine_facts,
    mint,
    orchestrator_parser,
    peer_command,
    peer_env,
    raise_nofile,
    run_script,
    stop_workers,
    table,
    versions,
    wait_port,
)

SERVERS = ("ws", "aiohttp", "socketio", "node-socketio", "live")
ROOM = "hs"
#: Connections per client process at most (the file limit is 20,000 per process).
MAX_PER_WORKER = 5000
SUBPROTOCOL = "live.v1.json"
#: The host messages of the storm: "storm-<k> ...", k = 0..K-1.
STORM_TAG = "storm-"


def pct(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(p / 100 * len(sorted_values)))]


# -- the client worker ----------------------------------------------------------------------------


class Conn:
    """One client connection's state: done (a future) at the server's first frame that counts:
    the 101 (plain), the Socket.IO connect ack (sio), the welcome (live); then, for live, the
    storm's host messages it receives."""

    __slots__ = ("done", "host_seen", "proto", "welcome", "ws")

    def __init__(self, proto: str) -> None:
        self.proto = proto
        self.done: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.welcome: dict[str, Any] = {}
        self.host_seen: set[int] = set()
        self.ws: WsConnection | None = None

    def on_frame(self, ws: WsConnection, payload: bytes, now: float) -> None:
        if self.done.done():
            if self.proto == "live" and payload.startswith(b'{"type":"host_message"'):
                text = json.loads(payload).get("text", "")
                if text.startswith(STORM_TAG):
                    self.host_seen.add(int(text[len(STORM_TAG) :].split(" ", 1)[0]))
            elif self.proto == "sio" and payload == b"2":
                ws.send(b"3")  # Engine.IO ping -> pong
            return
        if self.proto == "sio":
            if payload[:1] == b"0":  # Engine.IO open -> Socket.IO connect to "/"
                ws.send(b"40")
            elif payload[:2] == b"40":
                self.done.set_result(now)
            elif payload[:2] == b"44":
                self.done.set_exception(ConnectionError("socket.io connect_error"))
        elif self.proto == "live":
            if payload.startswith(b'{"type":"welcome"'):
                self.welcome = json.loads(payload)
                self.done.set_result(now)
            elif payload.startswith(b'{"type":"error"'):
                code = json.loads(payload).get("code", "?")
                self.done.set_exception(ConnectionError(f"error frame {code}"))


def failure(exc: BaseException) -> str:
    """A short reason for a failed connection, to count by."""
    if isinstance(exc, HandshakeError):
        try:
            code = json.loads(exc.body).get("error", {}).get("code") or json.loads(exc.body).get("code")
        except (ValueError, AttributeError):
            code = None
        return f"HTTP {exc.status}" + (f" {code}" if code else "")
    if isinstance(exc, TimeoutError):
        return "timeout"
    if str(exc).startswith("connection lost in the handshake"):
        return "closed by the server before any HTTP answer"
    if isinstance(exc, OSError) and exc.errno:
        return f"{type(exc).__name__} errno {exc.errno}"
    return str(exc)[:80] or type(exc).__name__


async def open_one(
    proto: str, port: int, path: str, source: str | None, timeout_s: float
) -> tuple[Conn, float, float]:
    """Connect and wait for the first frame that counts: (state, start, done) monotonic times;
    raises on a refusal, a close or an error frame first, or after ``timeout_s``."""
    st = Conn(proto)
    started = time.monotonic()
    subprotocol = SUBPROTOCOL if proto == "live" else None
    st.ws = ws = await connect(
        Endpoint("127.0.0.1", port, path, source), st.on_frame, subprotocol=subprotocol, timeout_s=timeout_s
    )
    if proto == "plain":
        return st, started, time.monotonic()
    left = max(0.1, timeout_s - (time.monotonic() - started))
    await asyncio.wait([st.done, ws.lost], timeout=left, return_when=asyncio.FIRST_COMPLETED)
    if st.done.done():
        return st, started, st.done.result()
    assert ws.transport is not None
    ws.transport.abort()
    if ws.lost.done():
        raise ConnectionError(f"closed before the first frame ({ws.close_code})")
    raise TimeoutError


def source_of(i: int, sources: int) -> str | None:
    return f"127.0.0.{1 + i % sources}" if sources > 1 else None


class Opened:
    """What a worker's batch of connects came to."""

    def __init__(self) -> None:
        self.conns: dict[int, Conn] = {}
        self.latency_ms: list[float] = []
        self.failures: Counter[str] = Counter()
        self.first = math.inf
        self.last = 0.0

    async def run(
        self,
        proto: str,
        port: int,
        paths: dict[int, str],
        sources: int,
        concurrency: int,
        timeout_s: float,
    ) -> None:
        sem = asyncio.Semaphore(concurrency) if concurrency else contextlib.nullcontext()

        async def one(i: int, path: str) -> None:
            async with sem:
                self.first = min(self.first, time.monotonic())
                try:
                    st, started, done = await open_one(proto, port, path, source_of(i, sources), timeout_s)
                except (OSError, TimeoutError, ConnectionError) as exc:
                    self.failures[failure(exc)] += 1
                    self.last = max(self.last, time.monotonic())
                    return
                self.conns[i] = st
                self.latency_ms.append(round((done - started) * 1000, 3))
                self.last = max(self.last, done)

        await asyncio.gather(*(one(i, p) for i, p in paths.items()))

    def report(self) -> dict[str, Any]:
        return {
            "ok": len(self.conns),
            "failures": dict(self.failures),
            "latency_ms": self.latency_ms,
            "first": self.first if self.first < math.inf else 0.0,
            "last": self.last,
        }

    def abort_all(self) -> None:
        for st in self.conns.values():
            if st.ws is not None and st.ws.transport is not None:
                st.ws.transport.abort()


def viewer_path(args: argparse.Namespace, secret: str, i: int) -> str:
    if args.proto == "live":
        return f"/ws/rooms/{args.room}?token={mint(secret, args.room, 'viewer', f'v{i}')}"
    if args.proto == "sio":
        return "/socket.io/?EIO=4&transport=websocket"
    return "/"


async def worker(args: argparse.Namespace) -> None:
    """Handshakes: "go" opens the connections, "done" reports them, "quit" drops them.
    Storm: "connect" opens them ("ready" with the welcomes' seqs), "drop" aborts every one at a
    given time and reconnects each with its last_seq ("storm"), "verify" waits for the missed
    host messages ("replays")."""
    raise_nofile()
    control = Control()
    await control.open()
    secret = os.environ.get("LIVEBENCH_SECRET", "")
    indexes = range(args.first, args.first + args.count)
    paths = {i: viewer_path(args, secret, i) for i in indexes}  # tokens minted before any timing
    opened = Opened()
    storm = Opened()
    control.report("prepared")
    while True:
        command = await control.command()
        cmd = command["cmd"]
        if cmd in ("go", "connect"):
            cpu0 = cpu_self()
            await opened.run(args.proto, args.port, paths, args.sources, args.concurrency, args.timeout)
            report = {**opened.report(), "cpu_s": cpu_self() - cpu0}
            if cmd == "connect":  # the storm's first phase: what to resume from, not latencies
                report["seqs"] = {str(i): st.welcome.get("seq", 0) for i, st in opened.conns.items()}
                del report["latency_ms"]
            control.report("done" if cmd == "go" else "ready", **report)
        elif cmd == "drop":
            await asyncio.sleep(max(0.0, command["t"] - time.monotonic()))
            cpu0 = cpu_self()
            opened.abort_all()
            resume = {i: f"{paths[i]}&last_seq={st.welcome.get('seq', 0)}" for i, st in opened.conns.items()}
            await storm.run(args.proto, args.port, resume, args.sources, 0, args.timeout)
            resumed = sum(1 for st in storm.conns.values() if st.welcome.get("resumed") is True)
            control.report("storm", **storm.report(), resumed=resumed, cpu_s=cpu_self() - cpu0)
        elif cmd == "verify":
            k, deadline = command["k"], time.monotonic() + command["wait_s"]
            while time.monotonic() < deadline and any(len(st.host_seen) < k for st in storm.conns.values()):
                await asyncio.sleep(0.05)
            seen = Counter(len(st.host_seen) for st in storm.conns.values())
            lost = sum(1 for st in storm.conns.values() if st.ws is not None and st.ws.lost.done())
            control.report("replays", seen={str(n): c for n, c in seen.items()}, lost=lost)
        elif cmd == "quit":
            break
    opened.abort_all()
    storm.abort_all()


# -- the orchestrator -----------------------------------------------------------------------------


@dataclass
class Result(CpuRates):
    counted: ClassVar[str] = "ok"
    server: str
    n: int
    ok: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0
    cpu_s: float = 0.0
    #: live only: CPU seconds of its embedded Redis over the same interval.
    redis_cpu_s: float | None = None
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    client_cpu_s: float = 0.0
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def client_plan(total: int, clients: int) -> list[tuple[int, int]]:
    """(first, count) of each client process (``clients`` 0: max(2, total / MAX_PER_WORKER))."""
    per = math.ceil(total / (clients or max(2, math.ceil(total / MAX_PER_WORKER))))
    return [(first, min(per, total - first)) for first in range(0, total, per)]


async def start_clients(
    children: Children, args: argparse.Namespace, proto: str, port: int, total: int, env: dict[str, str]
) -> list[Worker]:
    plan = client_plan(total, args.clients)
    if max(count for _, count in plan) > MAX_PER_WORKER:
        raise SystemExit(f"--clients puts more than {MAX_PER_WORKER} connections in one client process")
    concurrency = max(1, math.ceil(args.concurrency / len(plan)))
    workers = []
    for first, count in plan:
        argv = [
            sys.executable, str(Path(__file__).resolve()), "_worker", "--proto", proto, "--port", str(port),
            "--first", str(first), "--count", str(count), "--concurrency", str(concurrency),
            "--sources", str(args.sources), "--timeout", str(args.connect_timeout), "--room", args.room,
        ]  # fmt: skip
        proc = await children.spawn(argv, env={**os.environ, **env}, pipes=True)
        workers.append(Worker(f"client {len(workers)}", proc))
    await asyncio.gather(*(w.expect("prepared", 120) for w in workers))
    return workers


def live_settings(args: argparse.Namespace, connections: int) -> dict[str, Any]:
    """The limits a benchmark from few addresses, all at once, must raise (printed)."""
    room = connections + 1000
    return {
        "max_connections": max(15_000, room),
        "max_connections_per_ip": max(15_000, room),
        "max_pending_connections_per_ip": max(1000, room),
    }


class Bench:
    def __init__(self, args: argparse.Namespace, children: Children) -> None:
        self.args = args
        self.children = children
        self.logs = Path(args.log_dir)
        self.logs.mkdir(parents=True, exist_ok=True)

    async def run_server(self, name: str) -> Result:
        if name == "live":
            return await self.run_live()
        port = free_port()
        node_dir = Path(self.args.node_dir)
        argv, note = peer_command(name, port, 1, node_dir)  # (it never gets "go")
        if note:
            return Result(name, self.args.connections, note=note)
        proc = await self.children.spawn(
            argv, env=peer_env(node_dir), log=self.logs / f"handshakes-{name}.log"
        )
        try:
            await wait_port(port, proc)
            proto = "sio" if name.endswith("socketio") else "plain"
            workers = await start_clients(self.children, self.args, proto, port, self.args.connections, {})
            result = await self.measure(name, workers, lambda: (cpu_seconds(proc.pid), 0.0))
        finally:
            await self.children.stop(proc)
        return result

    async def run_live(self) -> Result:
        settings = live_settings(self.args, self.args.connections)
        server = LiveServer(self.children, self.args.live_python, settings, workers=self.args.live_workers)
        try:
            await server.start()
            await server.create_room(self.args.room)
            env = {"LIVEBENCH_SECRET": server.secret}
            workers = await start_clients(
                self.children, self.args, "live", server.port, self.args.connections, env
            )
            result = await self.measure("live", workers, server.cpu)
            result.redis_cpu_s = result.extra.pop("redis_cpu_s")
            result.extra["settings"] = " ".join(f"LIVE_{k.upper()}={v}" for k, v in settings.items())
        finally:
            problems = await server.finish(self.logs / "handshakes-live.log")
        if problems:
            result.extra["log_lines"] = len(problems)
            result.extra["log_sample"] = problems[:3]
        return result

    async def measure(self, name: str, workers: list[Worker], cpu: Any) -> Result:
        try:
            await asyncio.sleep(self.args.settle)
            c0, r0 = cpu()
            t0 = time.monotonic()
            for w in workers:
                w.send(cmd="go")
            reports = await asyncio.gather(*(w.expect("done", self.args.timeout) for w in workers))
            c1, r1 = cpu()
        finally:
            await stop_workers(self.children, workers)
        latencies = sorted(x for r in reports for x in r["latency_ms"])
        failures: Counter[str] = Counter()
        for r in reports:
            failures.update(r["failures"])
        result = Result(
            name,
            self.args.connections,
            ok=sum(r["ok"] for r in reports),
            failures=dict(failures),
            wall_s=max(r["last"] for r in reports) - t0,
            cpu_s=c1 - c0,
            p50_ms=pct(latencies, 50),
            p99_ms=pct(latencies, 99),
            client_cpu_s=sum(r["cpu_s"] for r in reports),
        )
        if name == "live":
            result.extra["redis_cpu_s"] = r1 - r0
        if failures:
            result.note = f"FAILED connections: {json.dumps(dict(failures))}"
        return result


HEADERS = [
    "server", "N", "ok", "wall s", "server CPU s", "handshakes/CPU-s", "vs ws", "p50 ms", "p99 ms",
    "client CPU s",
]  # fmt: skip


def print_results(results: list[Result]) -> None:
    ws = next((r.per_cpu for r in results if r.server == "ws" and r.ok), None)

    def ratio(rate: float) -> str:
        return f"{rate / ws:.0%}" if ws else "-"

    rows = []
    for r in results:
        if not r.ok:
            rows.append([r.server, str(r.n), "0", *["-"] * 7])
            continue
        rows.append(
            [
                r.server, str(r.n), str(r.ok), f"{r.wall_s:.2f}", f"{r.cpu_s:.2f}", fmt_int(r.per_cpu),
                ratio(r.per_cpu), f"{r.p50_ms:.1f}", f"{r.p99_ms:.1f}", f"{r.client_cpu_s:.2f}",
            ]
        )  # fmt: skip
        if r.redis_cpu_s is not None:
            rows.append(
                [
                    r.server + " + redis", str(r.n), str(r.ok), f"{r.wall_s:.2f}",
                    f"{r.cpu_s + r.redis_cpu_s:.2f}", fmt_int(r.per_cpu_combined), ratio(r.per_cpu_combined),
                    "", "", "",
                ]
            )  # fmt: skip
    print(table(HEADERS, rows))
    live = next((r for r in results if r.server == "live" and r.ok), None)
    if live and ws:
        print(
            f"- live / websockets: {live.per_cpu / ws:.2f} (live process alone), "
            f"{live.per_cpu_combined / ws:.2f} with its Redis; websockets {fmt_int(ws)}, "
            f"live {fmt_int(live.per_cpu)} handshakes per server CPU-second"
        )
    for r in results:
        if r.note:
            print(f"- {r.server}: {r.note}")
        if r.redis_cpu_s is not None:
            print(f"- {r.server}: valkey-server (embedded Redis) CPU {r.redis_cpu_s:.2f} s (not in its row)")
        for key, value in r.extra.items():
            print(f"- {r.server}: {key}: {value}")
    sys.stdout.flush()


async def run_handshakes(args: argparse.Namespace, children: Children) -> int:
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = set(servers) - set(SERVERS)
    if unknown:
        raise SystemExit(f"unknown servers: {', '.join(sorted(unknown))} (known: {', '.join(SERVERS)})")
    bench = Bench(args, children)
    nclients = len(client_plan(args.connections, args.clients))
    print(
        f"# handshakes: N={args.connections} connections per server, opened {args.concurrency} at a time "
        f"from {nclients} client processes over {args.sources} source address(es); "
        f"live --workers {args.live_workers}"
    )
    print_facts(args)
    results = []
    for name in servers:
        print(f"... {name}", file=sys.stderr, flush=True)
        try:
            results.append(await bench.run_server(name))
        except (RuntimeError, OSError) as exc:
            results.append(Result(name, args.connections, note=f"FAILED: {exc}"))
    print()
    print_results(results)
    if args.json:
        data = {"facts": machine_facts(), "args": vars(args), "results": [asdict(r) for r in results]}
        Path(args.json).write_text(json.dumps(data, indent=1, ensure_ascii=False))
    return 1 if any(r.failures or (not r.ok and "skipped" not in r.note) for r in results) else 0


def print_facts(args: argparse.Namespace) -> None:
    print("machine: " + ", ".join(f"{k} {v}" for k, v in machine_facts().items()))
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions(Path(args.node_dir)).items()))
    sys.stdout.flush()


# -- the reconnect storm --------------------------------------------------------------------------


class Host:
    """The room's host connection: counts the acks of its host messages."""

    def __init__(self) -> None:
        self.acks: set[str] = set()
        self.errors: Counter[str] = Counter()
        self.ws: WsConnection | None = None

    def on_frame(self, ws: WsConnection, payload: bytes, now: float) -> None:
        if payload.startswith(b'{"type":"ack"'):
            self.acks.add(json.loads(payload).get("rid", ""))
        elif payload.startswith(b'{"type":"error"'):
            self.errors[json.loads(payload).get("code", "?")] += 1

    async def publish(self, k: int, timeout_s: float = 15.0) -> None:
        assert self.ws is not None
        for i in range(k):
            text = f"{STORM_TAG}{i} 断线重连 reconnect storm, missed message {i}"
            self.ws.send(json.dumps({"type": "host_message", "rid": f"h{i}", "text": text}).encode())
        deadline = time.monotonic() + timeout_s
        while len(self.acks) < k and time.monotonic() < deadline and not self.errors:
            await asyncio.sleep(0.02)
        if len(self.acks) < k:
            raise RuntimeError(f"the host got {len(self.acks)} of {k} acks (errors {dict(self.errors)})")


async def run_storm(args: argparse.Namespace, children: Children) -> int:
    v = args.viewers
    settings: dict[str, Any] = {} if args.default_limits else live_settings(args, v)
    if args.handshake_timeout:
        settings["handshake_timeout_s"] = args.handshake_timeout
    nclients = len(client_plan(v, args.clients))
    print(
        f"# reconnect storm: {v} viewers in one room from {nclients} client processes over "
        f"{args.sources} source address(es), live --workers {args.live_workers}, "
        f"{args.host_messages} host messages missed"
    )
    print_facts(args)
    if settings:
        print(
            "live limits raised for the storm (all viewers come from a few addresses, all at once): "
            + ", ".join(f"LIVE_{k.upper()}={val}" for k, val in settings.items())
        )
    else:
        print("live limits: the defaults (--default-limits)")
    sys.stdout.flush()
    server = LiveServer(children, args.live_python, settings, workers=args.live_workers)
    workers: list[Worker] = []
    try:
        await server.start()
        await server.create_room(args.room)
        host = Host()
        host.ws = await connect(
            Endpoint("127.0.0.1", server.port, f"/ws/rooms/{args.room}?token={server.host_token}"),
            host.on_frame,
            subprotocol=SUBPROTOCOL,
        )
        env = {"LIVEBENCH_SECRET": server.secret}
        workers = await start_clients(children, args, "live", server.port, v, env)
        t_connect = time.monotonic()
        for w in workers:
            w.send(cmd="connect")
        ready = await asyncio.gather(*(w.expect("ready", args.timeout) for w in workers))
        connect_s = time.monotonic() - t_connect
        connected = sum(r["ok"] for r in ready)
        first_failures: Counter[str] = Counter()
        for r in ready:
            first_failures.update(r["failures"])
        seqs = [s for r in ready for s in r["seqs"].values()]
        print(
            f"\n{connected} of {v} viewers connected in {connect_s:.1f} s"
            + (f"; failed: {dict(first_failures)}" if first_failures else "")
            + (f"; welcome seq {min(seqs)}..{max(seqs)}" if seqs else "")
        )
        sys.stdout.flush()
        if not connected:
            raise RuntimeError("no viewer connected")
        await host.publish(args.host_messages)
        await asyncio.sleep(args.settle)  # the host messages reach everyone before the drop
        c0, r0 = server.cpu()
        t_drop = time.monotonic() + 0.5
        for w in workers:
            w.send(cmd="drop", t=t_drop)
        storms = await asyncio.gather(*(w.expect("storm", args.timeout) for w in workers))
        c1, r1 = server.cpu()
        for w in workers:
            w.send(cmd="verify", k=args.host_messages, wait_s=args.replay_wait)
        replays = await asyncio.gather(*(w.expect("replays", args.replay_wait + 30) for w in workers))
        host_alive = host.ws.is_open
    finally:
        await stop_workers(children, workers)
        problems = await server.finish(Path(args.log_dir) / "handshakes-storm-live.log")
    failures: Counter[str] = Counter()
    for s in storms:
        failures.update(s["failures"])
    seen: Counter[int] = Counter()
    for rep in replays:
        seen.update({int(n): c for n, c in rep["seen"].items()})
    welcomed = sum(s["ok"] for s in storms)
    resumed = sum(s["resumed"] for s in storms)
    got_all = sum(c for n, c in seen.items() if n >= args.host_messages)
    first = min((s["first"] for s in storms if s["first"]), default=t_drop)
    last = max(s["last"] for s in storms)
    storm_s = last - first
    latencies = sorted(x for s in storms for x in s["latency_ms"])
    lat = f"{pct(latencies, 50):.0f} / {pct(latencies, 99):.0f} / {latencies[-1] if latencies else 0:.0f} ms"
    refused = sum(failures.values())
    refusals = f"{refused:,}" + (f" {json.dumps(dict(failures))}" if failures else "")
    k = args.host_messages
    rows = [
        ["viewers dropped and reconnecting", f"{connected:,}", ""],
        ["first reconnect attempt -> last welcome", f"{storm_s:.2f} s", "<= 5 s"],
        ["  from the drop to the first attempt", f"{(first - t_drop) * 1000:.0f} ms", ""],
        ["reconnect latency p50 / p99 / max (attempt -> welcome)", lat, ""],
        ["welcomes", f"{welcomed:,}", f"{connected:,}"],
        ["  of them resumed: true", f"{resumed:,}", f"{connected:,}"],
        ["refused or failed (no retries)", refusals, "0"],
        [f"clients that got all {k} missed host messages after it", f"{got_all:,}", f"{connected:,}"],
        ["  host messages received: clients by count",
         ", ".join(f"{n}: {c:,}" for n, c in sorted(seen.items())) or "-", ""],
        ["connections lost after the welcome (before the check)", str(sum(r["lost"] for r in replays)), "0"],
        ["live CPU, drop -> last welcome (supervisor + workers)", f"{c1 - c0:.2f} s", ""],
        ["valkey-server CPU, same interval", f"{r1 - r0:.2f} s", ""],
        ["client processes CPU, drop -> last welcome", f"{sum(s['cpu_s'] for s in storms):.2f} s", ""],
    ]  # fmt: skip
    print(f"\n## reconnect storm ({connected:,} viewers, live --workers {args.live_workers})")
    print(table(["measure", "value", "target"], rows, right=False))
    if not host_alive:
        print("- the host's connection was lost during the storm")
    if problems:
        print(f"- server log: {len(problems)} lines at warning or above; first: {problems[:3]}")
    if failures.get("closed by the server before any HTTP answer"):
        timeout_s = settings.get("handshake_timeout_s", "the default 10")
        print(
            "- closed before any HTTP answer: live closes a connection whose handshake is not done "
            f"within handshake_timeout_s ({timeout_s} s; --handshake-timeout S raises it)"
        )
    ok = storm_s <= 5 and resumed == connected and not refused and got_all == connected
    verdict = {True: "met", False: "NOT met"}
    print(
        f"- targets: <= 5 s {verdict[storm_s <= 5]} ({storm_s:.2f} s); all resumed "
        f"{verdict[resumed == connected]} ({resumed:,}/{connected:,}); none refused {verdict[not refused]} "
        f"({refused:,}); all got the missed messages {verdict[got_all == connected]} "
        f"({got_all:,}/{connected:,})"
    )
    if args.json:
        data = {
            "facts": machine_facts(), "args": vars(args), "settings": settings, "connected": connected,
            "connect_s": connect_s, "storm_s": storm_s, "welcomed": welcomed, "resumed": resumed,
            "failures": dict(failures), "got_all": got_all, "seen": dict(seen), "live_cpu_s": c1 - c0,
            "redis_cpu_s": r1 - r0, "latency_ms": {str(p): pct(latencies, p) for p in (50, 90, 99, 100)},
        }  # fmt: skip
        Path(args.json).write_text(json.dumps(data, indent=1, ensure_ascii=False))
    return 0 if ok else 1


async def main(args: argparse.Namespace) -> int:
    install_sigterm(asyncio.current_task())  # type: ignore[arg-type]
    raise_nofile()
    Path(args.log_dir).mkdir(parents=True, exist_ok=True)
    children = Children()
    try:
        return await (run_storm(args, children) if args.storm else run_handshakes(args, children))
    finally:
        await children.stop_all()


def worker_args(argv: list[str]) -> argparse.Namespace:
    """A client process's command line (what start_clients gives it)."""
    w = argparse.ArgumentParser(prog="handshakes.py _worker")
    w.add_argument("--proto", choices=("plain", "sio", "live"), required=True)
    for option in ("--port", "--first", "--count", "--concurrency", "--sources"):
        w.add_argument(option, type=int, required=True)
    w.add_argument("--timeout", type=float, required=True)
    w.add_argument("--room", required=True)
    return argparse.Namespace(**vars(w.parse_args(argv)), worker=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    if argv[:1] == ["_worker"]:
        return worker_args(argv[1:])
    p = orchestrator_parser(__doc__)
    p.add_argument("--connections", "-n", type=int, default=5000, help="handshakes per server (5000)")
    p.add_argument("--concurrency", "-c", type=int, default=100, help="connects in flight (100)")
    p.add_argument("--servers", default=",".join(SERVERS), help=f"comma-separated, of {', '.join(SERVERS)}")
    p.add_argument("--storm", action="store_true", help="the reconnect storm instead of the handshake table")
    p.add_argument("--viewers", type=int, default=20_000, help="--storm: viewers (default 20000)")
    p.add_argument("--host-messages", type=int, default=5, help="--storm: host messages to replay (5)")
    p.add_argument("--replay-wait", type=float, default=10.0, help="--storm: s to wait for the replays")
    p.add_argument("--default-limits", action="store_true", help="--storm: leave live's limits as they are")
    p.add_argument("--handshake-timeout", type=float, help="--storm: LIVE_HANDSHAKE_TIMEOUT_S (default 10)")
    p.add_argument("--live-workers", type=int, default=None, help="live serve --workers (1; --storm: 2)")
    p.add_argument("--clients", type=int, default=0, help=f"client processes (max(2, N/{MAX_PER_WORKER}))")
    p.add_argument("--sources", type=int, default=16, help="source addresses 127.0.0.1..S (default 16)")
    p.add_argument("--settle", type=float, default=1.0, help="s before the measurement starts")
    p.add_argument("--timeout", type=float, default=300.0, help="s a whole phase may take")
    p.add_argument("--connect-timeout", type=float, default=30.0, help="s one connection may take")
    p.add_argument("--room", default=ROOM, help=argparse.SUPPRESS)
    add_run_options(p, node=True)
    args = p.parse_args(argv)
    args.worker = False
    if args.live_workers is None:
        args.live_workers = 2 if args.storm else 1
    if min(args.connections, args.concurrency, args.viewers, args.sources) < 1 or args.host_messages < 1:
        p.error("--connections, --concurrency, --viewers, --sources and --host-messages must be >= 1")
    if args.sources > 254:
        p.error("--sources: at most 254 (127.0.0.1..127.0.0.254)")
    return args


if __name__ == "__main__":
    run_script(sys.argv[1:], parse_args, worker, main)
