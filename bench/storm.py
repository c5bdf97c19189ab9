"""Comment storm: a 10,000-viewer live room under 2,000 comments/s, and memory per connection.

    python bench/storm.py [--viewers 10000] [--senders 200] [--comment-rate 2000] [--duration 20]
    python bench/storm.py --memory-only          # only the idle-connection memory figure
    python bench/storm.py --viewers 20000 --workers 2

What it does, in one run of ``live serve`` (embedded Redis):
1. a host connection joins the room; the live process's RSS is read (before);
2. the viewers connect from several client processes and sit idle; after a settle the RSS is
   read again (after): (after - before) / viewers is the memory per idle connection;
3. sender connections (viewers too, in their own process) comment open-loop at a steady
   aggregate rate (on schedule, never waiting for replies), and the host sends a host_message
   carrying its send time (monotonic clock, same machine) --host-rate times a second;
4. for ``--duration`` seconds, a sample of viewers (every k-th; the rest only drain their
   sockets) counts every frame it gets by type, the comments shown and skipped in batches,
   and records host-message latency (host send -> viewer receipt) in an HDR histogram;
   the histograms of all client processes are merged. The live process's and its Redis's CPU
   are read at the start and end of the window.

Between 2 and 3, the floor (``--floor-rounds``): a raw server (``_raw``; one per live worker)
gets as many connections again from the same viewer processes, and writes one host-message-sized
frame to all of them with ``transport.write`` a few times; the median first-to-last receipt is
the floor the host-message p99 is reported against. Each measured viewer also keeps its frames'
arrival times (its busiest one-second window), and live's garbage collections (its
``live_gc_*`` series in /metrics) are read while the viewers connect and around the window.
``--workers N`` runs ``live serve --workers N``; ``--gc-python-defaults`` runs it with Python's
own collector settings, to compare (docs/benchmarks.md, section 2).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import math
import os
import socket
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import uvloop
from hdrh.histogram import HdrHistogram
from loadtest.procfs import machine_busy, rss_bytes
from loadtest.wsclient import OP_PING, Endpoint, WsConnection, connect

from common import (
    Children,
    Control,
    LiveServer,
    Worker,
    add_run_options,
    cpu_self,
    free_port,
    install_sigterm,
    machine_facts,
    mint,
    raise_nofile,
    run_orchestrator,
    stop_workers,
    table,
)
from raw_ws_server import RawWebSocket, header

ROOM = "storm"
#: HDR histogram of latencies in microseconds: 1 us to 60 s, 3 significant digits.
HDR_ARGS = (1, 60_000_000, 3)
PER_VIEWER_WORKER = 2500
HERE = Path(__file__).resolve().parent
KEEPALIVE_S = 20.0  # < live's ping_interval_s (25): a drain-only socket must still speak


def host_text(k: int, sent: float) -> str:
    """A ~150-byte host message with its send time (time.monotonic(), seconds)."""
    text = f"t={sent:.6f} k={k} 限时秒杀马上开始\uff01flash sale starts now, "
    return text + "x" * max(0, 150 - len(text.encode()))


def parse_sent(text: str) -> tuple[float, int]:
    fields = dict(part.split("=", 1) for part in text.split(" ", 2)[:2])
    return float(fields["t"]), int(fields["k"])


def frame_type(payload: bytes) -> str:
    """The ``type`` of a live JSON frame (the server writes it first) without parsing it all."""
    if payload.startswith(b'{"type":"'):
        end = payload.find(b'"', 9)
        return payload[9:end].decode()
    return "?"


def ignore(conn: WsConnection, payload: bytes, now: float) -> None:
    """The frame callback of a drain-only connection (``discard``: it is never called)."""


async def connect_all(
    port: int, paths: list[str], make: Any, concurrency: int = 100, retries: int = 3
) -> list[WsConnection]:
    """Open one connection per path (``make(i)`` -> (on_frame, discard)), a few at a time."""
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int, path: str) -> WsConnection:
        on_frame, discard = make(i)
        for attempt in range(retries):
            async with sem:
                try:
                    endpoint = Endpoint("127.0.0.1", port, path)
                    return await connect(endpoint, on_frame, subprotocol=None, discard=discard)
                except (OSError, TimeoutError) as exc:
                    if attempt == retries - 1:
                        raise ConnectionError(f"connection {i}: {exc!r}") from exc
            await asyncio.sleep(0.5 * (attempt + 1))
        raise AssertionError("unreachable")

    return list(await asyncio.gather(*(one(i, p) for i, p in enumerate(paths))))


async def keepalive(clients: list[WsConnection], slices: int = 20) -> None:
    """Ping each connection once per KEEPALIVE_S, a slice at a time, so the server sees a steady
    trickle (as from real clients' independent timers), never 10,000 pings at once."""
    step = 0
    while True:
        await asyncio.sleep(KEEPALIVE_S / slices)
        for c in clients[step % slices :: slices]:
            c.send_frame(OP_PING, b"")
        step += 1


# -- viewer workers -------------------------------------------------------------------------------


class Window:
    """The measurement window [t0, t1) in time.monotonic() seconds, set by "start"."""

    def __init__(self) -> None:
        self.t0 = math.inf
        self.t1 = math.inf

    def inside(self, t: float) -> bool:
        return self.t0 <= t < self.t1


class ViewerStats:
    __slots__ = ("frames", "host_seen", "lagged", "lagged_comments", "shown", "skipped", "times")

    def __init__(self) -> None:
        self.frames: Counter[str] = Counter()
        self.times: list[float] = []  # when each frame of the window arrived
        self.shown = 0
        self.skipped = 0
        self.lagged = 0
        self.lagged_comments = 0
        self.host_seen: set[int] = set()


async def viewer_worker(args: argparse.Namespace) -> None:
    raise_nofile()
    control = Control()
    await control.open()
    secret = os.environ["LIVEBENCH_SECRET"]
    window = Window()
    hist = HdrHistogram(*HDR_ARGS)
    late_host = [0]  # host messages that arrived for messages sent before the window
    #: host message k -> [first, last] latency (us) among this worker's measured viewers
    spread: dict[int, list[int]] = {}

    def on_message(st: ViewerStats, payload: bytes, now: float) -> None:
        kind = frame_type(payload)
        if kind == "host_message":
            sent, k = parse_sent(json.loads(payload)["text"])
            if sent >= window.t0:
                latency = max(1, round((now - sent) * 1e6))
                hist.record_value(latency)
                st.host_seen.add(k)
                first_last = spread.setdefault(k, [latency, latency])
                first_last[0] = min(first_last[0], latency)
                first_last[1] = max(first_last[1], latency)
            else:
                late_host[0] += 1
        if not window.inside(now):
            return
        st.frames[kind] += 1
        st.times.append(now)
        if kind == "batch":
            batch = json.loads(payload)
            st.shown += len(batch.get("comments", ()))
            st.skipped += batch.get("skipped", 0)
        elif kind == "lagged":
            lagged = json.loads(payload)
            st.lagged += 1
            st.lagged_comments += lagged.get("dropped_comments", 0)

    indexes = range(args.first, args.first + args.count)
    paths = [f"/ws/rooms/{ROOM}?token={mint(secret, ROOM, 'viewer', f'v{i}')}" for i in indexes]
    sampled = [i % args.sample_every == 0 for i in indexes]
    #: per connection: its stats if it is measured, None if it only drains its socket
    stats = [ViewerStats() if s else None for s in sampled]

    def make(n: int) -> tuple[Any, bool]:
        st = stats[n]
        if st is None:
            return ignore, True
        return (lambda conn, payload, now: on_message(st, payload, now)), False

    try:
        clients = await connect_all(args.port, paths, make)
    except ConnectionError as exc:
        control.report("error", error=str(exc))
        return
    pinger = asyncio.create_task(keepalive(clients))
    control.report("ready", connections=len(clients), sampled=sum(sampled))
    cpu0 = cpu1 = 0.0
    #: the floor: round k -> [first receipt, last receipt, receipts] over the raw connections
    rounds: dict[int, list[float]] = {}
    raw: list[WsConnection] = []

    def on_raw(conn: WsConnection, payload: bytes, now: float) -> None:
        k = json.loads(payload)["seq"]
        got = rounds.setdefault(k, [now, now, 0])
        got[0], got[1], got[2] = min(got[0], now), max(got[1], now), got[2] + 1

    while True:
        command = await control.command()
        if command["cmd"] == "raw_connect":  # as many connections again, to the raw server
            try:
                raw = await connect_all(command["port"], ["/raw"] * len(clients), lambda n: (on_raw, False))
            except ConnectionError as exc:
                control.report("error", error=str(exc))
                return
            control.report("raw_ready", connections=len(raw))
        elif command["cmd"] == "raw_report":
            control.report("raw_rounds", rounds=rounds)
            await asyncio.gather(*(c.close() for c in raw), return_exceptions=True)
            raw = []
        elif command["cmd"] == "start":
            window.t0, window.t1 = command["t0"], command["t1"]
            await asyncio.sleep(max(0.0, window.t0 - time.monotonic()))
            cpu0 = cpu_self()
            await asyncio.sleep(max(0.0, window.t1 - time.monotonic()))
            cpu1 = cpu_self()
        elif command["cmd"] == "report":
            measured = [st for st in stats if st is not None]
            lost = [c for c in clients if c.lost.done()]
            control.report(
                "stats",
                frames=[sum(st.frames.values()) for st in measured],
                windows=[busiest_second(st.times, window.t0) for st in measured],
                by_type=dict(sum((st.frames for st in measured), Counter())),
                host_seen=[len(st.host_seen) for st in measured],
                shown=sum(st.shown for st in measured),
                skipped=sum(st.skipped for st in measured),
                lagged=sum(st.lagged for st in measured),
                lagged_comments=sum(st.lagged_comments for st in measured),
                late_host=late_host[0],
                lost=len(lost),
                close_codes=dict(Counter(str(c.close_code) for c in lost)),
                drained_bytes=sum(c.bytes_in for c, st in zip(clients, stats, strict=True) if st is None),
                hdr=base64.b64encode(hist.encode()).decode(),
                spread=spread,
                cpu_s=cpu1 - cpu0,
            )
        elif command["cmd"] == "quit":
            break
    pinger.cancel()
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


def busiest_second(times: list[float], t0: float) -> tuple[int, int]:
    """The most frames (``times``: arrivals, in order) in one second: (of the whole seconds
    from ``t0``, of any second-long interval)."""
    aligned = max(Counter(int(t - t0) for t in times).values(), default=0)
    sliding, j = 0, 0
    for i, t in enumerate(times):
        while t - times[j] >= 1.0:
            j += 1
        sliding = max(sliding, i - j + 1)
    return aligned, sliding


# -- the floor: a raw server ----------------------------------------------------------------------


class RawMember(RawWebSocket):
    """bench/raw_ws_server.py's connection, in the set of the raw server's members."""

    members: ClassVar[set[RawMember]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        RawMember.members.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        RawMember.members.discard(self)


async def raw_worker(args: argparse.Namespace) -> None:
    """The floor's server: holds the viewers' second connections; on "round", writes one
    pre-encoded host-message-sized frame to every one of them with ``transport.write``, in one
    loop (the least a Python asyncio server can do to deliver a frame to the room)."""
    raise_nofile()
    control = Control()
    await control.open()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # --workers: one per live worker
    sock.bind(("127.0.0.1", args.port))
    sock.listen(4096)
    server = await asyncio.get_running_loop().create_server(RawMember, sock=sock)
    control.report("ready")
    while True:
        command = await control.command()
        if command["cmd"] == "round":
            k, started = command["k"], time.monotonic()
            payload = json.dumps({"type": "host_message", "seq": k, "text": host_text(k, started)}).encode()
            data = header(0x1, len(payload)) + payload
            written = 0
            for member in list(RawMember.members):
                if member.upgraded and member.transport is not None:
                    member.transport.write(data)
                    written += 1
            control.report("round", k=k, at=started, written=written, write_s=time.monotonic() - started)
        elif command["cmd"] == "quit":
            break
    server.close()


async def measure_floor(
    children: Children, viewers: list[Worker], processes: int, rounds: int
) -> dict[str, Any]:
    """The floor of a host message's fan-out, measured now: ``processes`` raw servers (one per
    live worker, sharing a port) get as many connections as live has viewers, from the same
    viewer processes; ``rounds`` times, every raw server writes one frame to all of its own, and
    the viewers time its first and last receipt. The raw connections are closed afterwards."""
    port = free_port()
    raws = []
    for i in range(processes):
        argv = [sys.executable, str(Path(__file__).resolve()), "_raw", "--port", str(port), "--count", "0"]
        proc = await children.spawn(argv, env=dict(os.environ), pipes=True)
        raws.append(Worker(f"raw server {i}", proc))
    try:
        await asyncio.gather(*(w.expect("ready", 30) for w in raws))
        for w in viewers:
            w.send(cmd="raw_connect", port=port)
        connected = sum(
            r["connections"] for r in await asyncio.gather(*(w.expect("raw_ready", 180) for w in viewers))
        )
        await asyncio.sleep(2.0)
        written: list[list[dict[str, Any]]] = []
        for k in range(rounds):
            for w in raws:
                w.send(cmd="round", k=k)
            written.append(list(await asyncio.gather(*(w.expect("round", 30) for w in raws))))
            await asyncio.sleep(1.0)
        for w in viewers:
            w.send(cmd="raw_report")
        got = [(await w.expect("raw_rounds", 30))["rounds"] for w in viewers]
    finally:
        for w in raws:
            with contextlib.suppress(Exception):
                w.send(cmd="quit")
        await asyncio.gather(*(children.stop(w.proc, timeout_s=5) for w in raws), return_exceptions=True)
    spans, after_write, received = [], [], []
    for k in range(rounds):
        mine = [g[str(k)] for g in got if str(k) in g]
        first, last = min(m[0] for m in mine), max(m[1] for m in mine)
        spans.append(last - first)
        after_write.append(last - min(r["at"] for r in written[k]))
        received.append(sum(int(m[2]) for m in mine))
    return {
        "connections": connected, "rounds": rounds, "first_to_last_s": spans,
        "write_to_last_s": after_write, "received": received,
        "write_loop_s": [max(r["write_s"] for r in rs) for rs in written],
        "floor_s": statistics.median(spans),
    }  # fmt: skip


# -- sender workers -------------------------------------------------------------------------------


async def sender_worker(args: argparse.Namespace) -> None:
    raise_nofile()
    control = Control()
    await control.open()
    secret = os.environ["LIVEBENCH_SECRET"]
    errors: Counter[str] = Counter()

    def on_message(client: WsConnection, payload: bytes, now: float) -> None:
        if payload.startswith(b'{"type":"error"'):
            errors[json.loads(payload).get("code", "?")] += 1

    indexes = range(args.first, args.first + args.count)
    paths = [f"/ws/rooms/{ROOM}?token={mint(secret, ROOM, 'viewer', f's{i}')}" for i in indexes]
    try:
        clients = await connect_all(args.port, paths, lambda n: (on_message, False))
    except ConnectionError as exc:
        control.report("error", error=str(exc))
        return
    pinger = asyncio.create_task(keepalive(clients))
    control.report("ready", connections=len(clients))
    sent = 0
    max_backlog = 0
    cpu_s = 0.0
    while True:
        command = await control.command()
        if command["cmd"] == "start":
            t0, t1 = command["t0"], command["t1"]
            await asyncio.sleep(max(0.0, t0 - time.monotonic()))
            cpu0 = cpu_self()
            # Open loop: by time t, rate * (t - t0) comments are due; send whatever is due now,
            # round-robin over the connections, whatever the server answered.
            while (now := time.monotonic()) < t1:
                due = int((now - t0) * args.rate)
                max_backlog = max(max_backlog, due - sent)
                while sent < due:
                    text = f"comment {sent} 好看\uff01多少钱\uff1f"  # full-width ! and ?
                    clients[sent % len(clients)].send(
                        json.dumps({"type": "comment", "text": text}, ensure_ascii=False).encode()
                    )
                    sent += 1
                await asyncio.sleep(0.005)
            cpu_s = cpu_self() - cpu0
        elif command["cmd"] == "report":
            lost = [c for c in clients if c.lost.done()]
            control.report(
                "stats",
                sent=sent,
                errors=dict(errors),
                max_backlog=max_backlog,
                lost=len(lost),
                close_codes=dict(Counter(str(c.close_code) for c in lost)),
                cpu_s=cpu_s,
            )
        elif command["cmd"] == "quit":
            break
    pinger.cancel()
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


# -- the orchestrator -----------------------------------------------------------------------------


class Host:
    """The room's host: sends timed host messages; reads the full comment stream (staff get
    every comment), which tells how many comments the server published."""

    def __init__(self) -> None:
        self.window = Window()
        self.published = 0
        self.frames: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.client: WsConnection | None = None
        self.max_lag = 0.0
        self.sent = 0
        self.sent_at: dict[int, float] = {}  # k -> seconds after t0

    def on_message(self, client: WsConnection, payload: bytes, now: float) -> None:
        kind = frame_type(payload)
        if kind == "error":
            self.errors[json.loads(payload).get("code", "?")] += 1
        if not self.window.inside(now):
            return
        self.frames[kind] += 1
        if kind == "batch":
            self.published += len(json.loads(payload).get("comments", ()))

    async def send_timed(self, rate: float) -> None:
        """Open loop: message k at t0 + k / rate, until t1; the text carries the real send time."""
        assert self.client is not None
        k = 0
        while (at := self.window.t0 + k / rate) < self.window.t1:
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            now = time.monotonic()
            self.max_lag = max(self.max_lag, now - at)
            self.client.send(json.dumps({"type": "host_message", "text": host_text(k, now)}).encode())
            self.sent_at[k] = now - self.window.t0
            self.sent += 1
            k += 1


def kib(n: float) -> str:
    return f"{n / 1024:,.1f} KiB"


def mib(n: float) -> str:
    return f"{n / 1024 / 1024:,.1f} MiB"


async def start_workers(
    children: Children, kind: str, total: int, per: int, port: int, env: dict[str, str], extra: list[str]
) -> list[Worker]:
    workers = []
    first = 0
    while first < total:
        count = min(per, total - first)
        argv = [
            sys.executable, str(Path(__file__).resolve()), f"_{kind}", "--port", str(port),
            "--first", str(first), "--count", str(count), *extra,
        ]  # fmt: skip
        proc = await children.spawn(argv, env={**os.environ, **env}, pipes=True)
        workers.append(Worker(f"{kind} worker {len(workers)}", proc))
        first += count
    return workers


async def main(args: argparse.Namespace) -> int:
    install_sigterm(asyncio.current_task())  # type: ignore[arg-type]
    raise_nofile()
    children = Children()
    per_sender = args.comment_rate / args.senders if args.senders else 0
    settings = {
        "max_connections": args.viewers + args.senders + 100,
        "max_connections_per_ip": args.viewers + args.senders + 100,
        # the senders' own limits must not be what throttles the storm
        "comment_rate_per_s": max(20, math.ceil(per_sender * 2)),
        "comment_burst": max(40, math.ceil(per_sender * 4)),
        "message_rate_per_s": max(100, math.ceil(per_sender * 4)),
        "message_burst": max(200, math.ceil(per_sender * 8)),
        "tick_ms": args.tick_ms,
    }
    facts = machine_facts()
    print(f"# storm: {args.viewers} viewers, {args.senders} senders, {args.comment_rate:g} comments/s, "
          f"host {args.host_rate:g} msg/s, {args.duration:g} s")  # fmt: skip
    print("machine: " + ", ".join(f"{k} {v}" for k, v in facts.items()))
    print("live settings: " + ", ".join(f"LIVE_{k.upper()}={v}" for k, v in settings.items())
          + f"; live serve --workers {args.workers}"
          + ("; Python's GC defaults (--gc-python-defaults)" if args.gc_python_defaults else ""))  # fmt: skip
    sys.stdout.flush()
    out: dict[str, Any] = {"facts": facts, "args": vars(args), "settings": settings}
    server = LiveServer(children, args.live_python, settings, workers=args.workers)
    workers: list[Worker] = []
    try:
        pythonpath = os.environ.get("PYTHONPATH")
        if args.gc_python_defaults:  # for the server only (its environment is ours, at its start)
            os.environ["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(HERE / "gc_defaults"), pythonpath) if p
            )
        try:
            await server.start()
        finally:
            if pythonpath is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = pythonpath
        await server.create_room(ROOM)
        env = {"LIVEBENCH_SECRET": server.secret}
        host = Host()
        host.client = await connect(
            Endpoint("127.0.0.1", server.port, f"/ws/rooms/{ROOM}?token={server.host_token}"),
            host.on_message,
            subprotocol=None,
        )
        await asyncio.sleep(1.0)
        rss0, redis_rss0 = server.rss(), rss_bytes(server.redis_pid or 0)
        gc0 = await server.metrics(with_gc=True)

        # -- idle viewers: memory ----------------------------------------------------------------
        sample_every = max(1, args.viewers // args.sample) if args.sample else 1
        per = math.ceil(args.viewers / (args.clients or math.ceil(args.viewers / PER_VIEWER_WORKER)))
        t_connect = time.monotonic()
        viewers = await start_workers(
            children, "viewers", args.viewers, per, server.port, env, ["--sample-every", str(sample_every)]
        )
        workers += viewers
        ready = await asyncio.gather(*(w.expect("ready", args.connect_timeout) for w in viewers))
        connect_s = time.monotonic() - t_connect
        out["sampled"] = sum(r["sampled"] for r in ready)
        await asyncio.sleep(args.settle)
        rss1, redis_rss1 = server.rss(), rss_bytes(server.redis_pid or 0)
        gc1 = await server.metrics(with_gc=True)
        gc_connect = gc_window(gc0, gc1)
        out["gc_connect"] = gc_connect
        per_conn = (rss1 - rss0) / args.viewers
        out["memory"] = {
            "viewers": args.viewers, "rss_before": rss0, "rss_after": rss1, "per_connection": per_conn,
            "redis_rss_before": redis_rss0, "redis_rss_after": redis_rss1, "connect_s": connect_s,
        }  # fmt: skip
        print(f"\n## memory per idle connection ({args.viewers} viewers, opened in {connect_s:.1f} s)")
        print(
            table(
                ["process", "RSS before", "RSS after", "delta", "per connection", "target"],
                [
                    ["live", mib(rss0), mib(rss1), mib(rss1 - rss0), kib(per_conn), "<= 4 KiB"],
                    ["valkey-server", mib(redis_rss0), mib(redis_rss1), mib(redis_rss1 - redis_rss0),
                     kib((redis_rss1 - redis_rss0) / args.viewers), ""],
                ],
            )
        )  # fmt: skip
        print(
            "- live GCs while the viewers connected and settled, gen 0 / 1 / 2: "
            + " / ".join(f"{gc_connect[g]['collections']:.0f}" for g in ("0", "1", "2"))
            + f"; gen 2 pauses: total {gc_connect['2']['pause_s'] * 1000:.1f} ms, "
            f"longest {gc_connect['2']['longest_s'] * 1000:.1f} ms; "
            f"frozen objects (gc.freeze) {gc0.get('gc:frozen_objects', 0):,.0f} -> "
            f"{gc1.get('gc:frozen_objects', 0):,.0f}"
        )
        sys.stdout.flush()
        if args.memory_only:
            if args.json:
                Path(args.json).write_text(json.dumps(out, indent=1, ensure_ascii=False))
            return 0

        # -- the floor: one raw round of writing a frame to as many sockets ----------------------
        floor: dict[str, Any] | None = None
        if args.floor_rounds:
            floor = await measure_floor(children, viewers, args.workers, args.floor_rounds)
            out["floor"] = floor
            print(
                f"\n## floor: a raw server writes one frame to {floor['connections']} connections "
                f"({args.workers} process{'es' if args.workers > 1 else ''}), {floor['rounds']} rounds"
            )
            print(
                table(
                    ["round", "first -> last receipt", "write -> last receipt", "write loop", "received"],
                    [
                        [k, f"{a * 1000:.1f} ms", f"{b * 1000:.1f} ms", f"{c * 1000:.1f} ms", n]
                        for k, (a, b, c, n) in enumerate(
                            zip(floor["first_to_last_s"], floor["write_to_last_s"], floor["write_loop_s"],
                                floor["received"], strict=True)
                        )
                    ],
                )
            )  # fmt: skip
            sys.stdout.flush()

        # -- the storm ---------------------------------------------------------------------------
        senders: list[Worker] = []
        if args.senders:
            per_s = math.ceil(args.senders / args.sender_clients)
            senders = await start_workers(
                children, "senders", args.senders, per_s, server.port, env,
                ["--rate", str(args.comment_rate / math.ceil(args.senders / per_s))],
            )  # fmt: skip
            workers += senders
            await asyncio.gather(*(w.expect("ready", args.connect_timeout) for w in senders))
        await asyncio.sleep(1.0)
        before = await server.metrics(with_gc=True)
        t0 = time.monotonic() + 1.0
        t1 = t0 + args.duration
        host.window.t0, host.window.t1 = t0, t1
        for w in workers:
            w.send(cmd="start", t0=t0, t1=t1)
        await asyncio.sleep(t0 - time.monotonic())
        live0, redis0 = server.cpu()
        busy0, total0 = machine_busy()
        sending = asyncio.create_task(host.send_timed(args.host_rate))
        timeline = []
        last = (time.monotonic(), live0, redis0)
        while time.monotonic() < t1:
            await asyncio.sleep(min(1.0, max(0.0, t1 - time.monotonic())))
            now, (live_c, redis_c) = time.monotonic(), server.cpu()
            timeline.append(((live_c - last[1]) / (now - last[0]), (redis_c - last[2]) / (now - last[0])))
            last = (now, live_c, redis_c)
        live1, redis1 = server.cpu()
        busy1, total1 = machine_busy()
        await sending
        await asyncio.sleep(args.drain)  # host messages in flight at t1 still count
        after = await server.metrics(with_gc=True)
        for w in workers:
            w.send(cmd="report")
        measured = Measured(
            duration=args.duration,
            t0=t0,
            host=host,
            viewers=[await w.expect("stats", 30) for w in viewers],
            senders=[await w.expect("stats", 30) for w in senders],
            live_cpu_s=live1 - live0,
            redis_cpu_s=redis1 - redis0,
            machine_busy=(busy1 - busy0) / (total1 - total0),
            timeline=timeline,
            counters={
                k: v - before.get(k, 0)
                for k, v in after.items()
                if v != before.get(k, 0) and not k.startswith("gc:")
            },
            gc=gc_window(before, after),
            floor=floor,
        )
    finally:
        await stop_workers(children, workers)
        problems = await server.finish(Path(args.log_dir) / "storm-live.log")
        await children.stop_all()
    measured.log_problems = problems
    report(args, measured, out)
    return 0


# -- results --------------------------------------------------------------------------------------


@dataclass
class Measured:
    """What one storm window measured, before any arithmetic."""

    duration: float
    t0: float
    host: Host
    viewers: list[dict[str, Any]]  # the viewer workers' "stats" reports
    senders: list[dict[str, Any]]  # the sender workers' "stats" reports
    live_cpu_s: float
    redis_cpu_s: float
    machine_busy: float  # share of all CPUs
    timeline: list[tuple[float, float]]  # per second: (live, redis) CPU share of a core
    counters: dict[str, float]  # live's /metrics counters: after - before
    gc: dict[str, dict[str, float]]  # live's garbage collections in the window, by generation
    floor: dict[str, Any] | None  # measure_floor's
    log_problems: list[str] = field(default_factory=list)


def gc_window(before: dict[str, float], after: dict[str, float]) -> dict[str, dict[str, float]]:
    """Per generation: the collections in the window, their total pause, and the longest (the
    upper bound of the smallest histogram bucket that holds them all; exact when the process's
    longest pause so far was set in the window)."""
    out: dict[str, dict[str, float]] = {
        "frozen": {
            "before": before.get("gc:frozen_objects", 0.0),
            "after": after.get("gc:frozen_objects", 0.0),
        }
    }
    for g in ("0", "1", "2"):

        def delta(key: str) -> float:
            return after.get(key, 0.0) - before.get(key, 0.0)

        count = delta(f'gc:collections_total{{generation="{g}"}}')
        longest = 0.0
        if count:
            bounds = sorted(
                float(k.split('le="')[1].rstrip('"}'))
                for k in after
                if k.startswith(f'gc:pause_seconds_bucket{{generation="{g}"') and "+Inf" not in k
            )
            longest = next(
                (
                    b
                    for b in bounds
                    if delta(f'gc:pause_seconds_bucket{{generation="{g}",le="{b}"}}') == count
                ),
                math.inf,
            )
            max_key = f'gc:pause_max_seconds{{generation="{g}"}}'
            if after.get(max_key, 0.0) > before.get(max_key, 0.0):
                longest = after[max_key]
        out[g] = {
            "collections": count,
            "pause_s": delta(f'gc:pause_seconds_sum{{generation="{g}"}}'),
            "longest_s": longest,
        }
    return out


def ms(us: float) -> str:
    return f"{us / 1000:.1f} ms"


def report(args: argparse.Namespace, m: Measured, out: dict[str, Any]) -> None:
    """Print the storm's table and notes; write the JSON file if asked."""
    d, host, v_stats, s_stats = m.duration, m.host, m.viewers, m.senders
    hist = HdrHistogram(*HDR_ARGS)
    for s in v_stats:
        hist.add(HdrHistogram.decode(base64.b64decode(s["hdr"])))
    frames = sorted(f / d for s in v_stats for f in s["frames"])
    by_type: Counter[str] = Counter()
    for s in v_stats:
        by_type.update(s["by_type"])
    host_seen = [n for s in v_stats for n in s["host_seen"]]
    # per host message: when the first and the last measured viewer got it
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for s in v_stats:
        for k, (lo, hi) in s["spread"].items():
            first[k] = min(first.get(k, lo), lo)
            last[k] = max(last.get(k, hi), hi)
    fan_out_ms = sorted((last[k] - first[k]) / 1000 for k in first)
    shown = sum(s["shown"] for s in v_stats)
    skipped = sum(s["skipped"] for s in v_stats)
    sent = sum(s["sent"] for s in s_stats)
    refused: Counter[str] = Counter()
    for s in s_stats:
        refused.update(s["errors"])
    lost_v = sum(s["lost"] for s in v_stats)
    close_codes: Counter[str] = Counter()
    for s in v_stats:
        close_codes.update(s["close_codes"])
    lost_s = sum(s["lost"] for s in s_stats)
    client_cpu = sum(s["cpu_s"] for s in v_stats + s_stats)
    n = len(frames)

    def pct(p: float) -> float:
        return frames[min(n - 1, int(p / 100 * n))] if n else 0.0

    expected_host = host.sent * n
    p99 = hist.get_value_at_percentile(99)
    mean_frames = statistics.fmean(frames) if frames else 0.0
    windows = [w for s in v_stats for w in s["windows"]]
    aligned_max = max((a for a, _ in windows), default=0)
    sliding_max = max((b for _, b in windows), default=0)
    over = sum(1 for a, _ in windows if a > 10)
    batches = by_type.get("batch", 0) / n / d if n else 0.0
    tick_rate = 1000 / args.tick_ms
    floor_s = m.floor["floor_s"] if m.floor else 0.0
    floor_rounds = m.floor["first_to_last_s"] if m.floor else []
    ratio = p99 / 1e6 / floor_s if floor_s else math.nan
    gen2 = m.gc["2"]
    rows = [
        ["viewers connected / measured (sample)", f"{args.viewers} / {n}", ""],
        ["comments sent by the senders", f"{sent:,} ({sent / d:,.0f}/s)", f"{args.comment_rate:g}/s"],
        ["comments refused (error frames)", json.dumps(dict(refused)) if refused else "0", ""],
        ["comments published (the host sees all)", f"{host.published:,} ({host.published / d:,.0f}/s)", ""],
        ["frames/s per viewer: mean / p50 / p99 / max",
         f"{mean_frames:.2f} / {pct(50):.2f} / {pct(99):.2f} / {frames[-1] if n else 0:.2f}", "<= 10"],
        ["frames per viewer in one second, max: whole seconds / any second",
         f"{aligned_max} / {sliding_max} ({over} of {n} viewers over 10 in a whole second)", "<= 10"],
        ["batches/s per viewer vs the tick rate", f"{batches:.2f} vs {tick_rate:.2f} "
         f"(LIVE_TICK_MS={args.tick_ms}; {batches / tick_rate:.0%})", f"{tick_rate:.2f}"],
        ["  of which, per viewer per s",
         ", ".join(f"{k} {v / n / d:.2f}" for k, v in sorted(by_type.items())) if n else "-", ""],
        ["host messages sent (host schedule lag max)", f"{host.sent} ({host.max_lag * 1000:.1f} ms)",
         f"{args.host_rate:g}/s"],
        ["host messages received / expected", f"{hist.get_total_count():,} / {expected_host:,}"
         + (f" (min per viewer {min(host_seen)})" if host_seen else ""), ""],
        ["host message latency p50 / p90 / p99 / p99.9 / max",
         " / ".join(ms(hist.get_value_at_percentile(p)) for p in (50, 90, 99, 99.9))
         + f" / {ms(hist.get_max_value())}", "p99 <= 150 ms"],
        ["first / last measured viewer gets a host message, p50",
         f"{ms(statistics.median(first.values()))} / {ms(statistics.median(last.values()))}"
         if first else "-", ""],
        ["  spread (last - first), p50 / max",
         f"{fan_out_ms[len(fan_out_ms) // 2]:.1f} ms / {fan_out_ms[-1]:.1f} ms" if fan_out_ms else "-", ""],
        ["floor: raw write of one frame to all, first -> last receipt (median)",
         f"{floor_s * 1000:.1f} ms (rounds: {', '.join(f'{x * 1000:.0f}' for x in floor_rounds)})"
         if m.floor else "not measured", ""],
        ["host-message p99 / floor", f"{ratio:.2f}x" if m.floor else "-", "<= 1.5x"],
        ["live GCs in the window, gen 0 / 1 / 2",
         " / ".join(f"{m.gc[g]['collections']:.0f}" for g in ("0", "1", "2")), ""],
        ["full (gen 2) GC pauses: total / longest",
         f"{gen2['pause_s'] * 1000:.1f} / {gen2['longest_s'] * 1000:.1f} ms" if gen2["collections"] else "-",
         ""],
        ["gen 0 / 1 GC pauses: total",
         f"{m.gc['0']['pause_s'] * 1000:.1f} / {m.gc['1']['pause_s'] * 1000:.1f} ms", ""],
        ["objects frozen (gc.freeze), start / end of the window",
         f"{m.gc['frozen']['before']:,.0f} / {m.gc['frozen']['after']:,.0f}", ""],
        ["comments shown per viewer per s", f"{shown / n / d:.1f}" if n else "-", ""],
        ["comments skipped per viewer per s", f"{skipped / n / d:.1f}" if n else "-", ""],
        ["shown + skipped, as share of published",
         f"{(shown + skipped) / n / host.published:.1%}" if n and host.published else "-", ""],
        ["lagged notices / comments dropped (sample)",
         f"{sum(s['lagged'] for s in v_stats)} / {sum(s['lagged_comments'] for s in v_stats)}", ""],
        ["connections lost: viewers / senders", f"{lost_v} / {lost_s}"
         + (f" (viewers' close codes: {json.dumps(dict(close_codes))})" if close_codes else ""), "0"],
        ["live process CPU (mean / max 1-s)",
         f"{m.live_cpu_s / d:.0%} / {max((a for a, _ in m.timeline), default=0):.0%} of a core", ""],
        ["valkey-server CPU (mean / max 1-s)",
         f"{m.redis_cpu_s / d:.0%} / {max((b for _, b in m.timeline), default=0):.0%} of a core", ""],
        ["client processes CPU (mean)", f"{client_cpu / d:.0%} of a core", ""],
        ["whole machine busy", f"{m.machine_busy:.0%} of {os.cpu_count()} cores", ""],
    ]  # fmt: skip
    print(f"\n## storm ({d:g} s window, {n} of {args.viewers} viewers measured)")
    print(table(["measure", "value", "target"], rows, right=False))
    print(f"- server counters during the window: {json.dumps(m.counters, ensure_ascii=False)}")
    if m.log_problems:
        print(f"- server log: {len(m.log_problems)} lines at warning or above; first: {m.log_problems[:3]}")
    if batches < 0.9 * tick_rate:
        print(
            f"- batches reached viewers {batches:.2f} times a second, not every {args.tick_ms} ms: "
            "the server's tick fell behind"
        )
    if host.errors:
        print(f"- the host got error frames: {dict(host.errors)}")
    slowest = sorted(first, key=lambda k: last[k], reverse=True)[:5]
    if slowest:
        print(
            "- slowest host messages (sent at +s: first / last measured viewer): "
            + ", ".join(
                f"+{host.sent_at.get(int(k), 0):.1f}: {ms(first[k])} / {ms(last[k])}" for k in slowest
            )
        )
    late = sum(s["late_host"] for s in v_stats)
    if late:
        print(f"- {late} host-message receipts were for messages sent before the window")
    out["storm"] = {
        "t0_monotonic": m.t0,
        "sent": sent, "refused": dict(refused), "published": host.published, "frames_per_s": frames,
        "by_type": dict(by_type), "shown": shown, "skipped": skipped, "host_sent": host.sent,
        "host_received": hist.get_total_count(), "expected_host": expected_host,
        "host_first_last_us": {k: [host.sent_at.get(int(k)), first[k], last[k]] for k in first},
        "latency_us": {str(p): hist.get_value_at_percentile(p) for p in (50, 90, 99, 99.9, 100)},
        "live_cpu_s": m.live_cpu_s, "redis_cpu_s": m.redis_cpu_s, "client_cpu_s": client_cpu,
        "machine_busy": m.machine_busy, "timeline": m.timeline, "lost_viewers": lost_v,
        "lost_senders": lost_s, "lost_close_codes": dict(close_codes), "counters": m.counters,
        "log_lines": len(m.log_problems),
        "windows": windows, "batches_per_s": batches, "tick_rate": tick_rate, "floor_s": floor_s,
        "p99_over_floor": ratio, "gc": m.gc,
    }  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, ensure_ascii=False))
    verdict = {True: "met", False: "NOT met"}
    print(
        f"- targets: <= 10 frames/s per viewer {verdict[mean_frames <= 10]} ({mean_frames:.2f}); "
        f"host-message p99 <= 150 ms {verdict[p99 <= 150_000]} ({ms(p99)}); "
        f"p99 <= 1.5x the floor {verdict[ratio <= 1.5] if m.floor else 'not measured'} ({ratio:.2f}x); "
        f"<= 10 frames in any whole second {verdict[aligned_max <= 10]} ({aligned_max}); "
        f"no viewer lost {verdict[not lost_v]} ({lost_v})"
    )


def parse_args(argv: list[str]) -> argparse.Namespace:
    if argv[:1] in (["_viewers"], ["_senders"], ["_raw"]):
        p = argparse.ArgumentParser(prog=f"storm.py {argv[0]}")
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--first", type=int, default=0)
        p.add_argument("--count", type=int, required=True)
        p.add_argument("--sample-every", type=int, default=1)
        p.add_argument("--rate", type=float, default=0.0, help="comments/s of this sender worker")
        args = p.parse_args(argv[1:])
        args.role = argv[0][1:]
        return args
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--viewers", type=int, default=10_000)
    p.add_argument("--senders", type=int, default=200, help="extra connections that comment")
    p.add_argument("--comment-rate", type=float, default=2000.0, help="comments/s of all senders together")
    p.add_argument("--host-rate", type=float, default=2.0, help="host messages per second")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of storm measured")
    p.add_argument(
        "--workers", type=int, default=1, help="live serve --workers (and raw servers for the floor)"
    )
    p.add_argument("--tick-ms", type=int, default=125, help="LIVE_TICK_MS (live's default: 125)")
    p.add_argument(
        "--gc-python-defaults",
        action="store_true",
        help="the server keeps Python's GC thresholds and freezes nothing (bench/gc_defaults)",
    )
    p.add_argument("--floor-rounds", type=int, default=5, help="raw rounds that measure the floor (0: none)")
    p.add_argument("--sample", type=int, default=1000, help="viewers measured in detail (0: all)")
    p.add_argument("--clients", type=int, default=0, help="viewer client processes (default N/2500)")
    p.add_argument("--sender-clients", type=int, default=1, help="sender client processes")
    p.add_argument("--settle", type=float, default=3.0, help="seconds after connecting, before RSS")
    p.add_argument("--drain", type=float, default=2.0, help="seconds after the window for late frames")
    p.add_argument("--connect-timeout", type=float, default=180.0)
    p.add_argument("--memory-only", action="store_true", help="only measure memory per idle connection")
    add_run_options(p)
    args = p.parse_args(argv)
    args.role = "main"
    if args.viewers < 1 or args.duration <= 0 or args.host_rate <= 0 or args.senders < 0:
        p.error("--viewers >= 1, --senders >= 0, --duration and --host-rate > 0")
    return args


if __name__ == "__main__":
    arguments = parse_args(sys.argv[1:])
    if arguments.role == "viewers":
        uvloop.run(viewer_worker(arguments))
    elif arguments.role == "senders":
        uvloop.run(sender_worker(arguments))
    elif arguments.role == "raw":
        uvloop.run(raw_worker(arguments))
    else:
        run_orchestrator(main(arguments))
