"""Fan-out benchmark: deliveries per server CPU-second, live side by side with its peers.

    python bench/fanout.py [--viewers 2000] [--messages 200] [--servers raw,ws,...] [--repeat 1]

For each server in turn (same N and M, one run, one process tree): start it, open N WebSocket
connections from client worker processes, let things settle, then make the server send M
messages to every connection and time it until every connection has received all M. The
figure of merit is deliveries (N x M) per CPU-second of the server process, from
/proc/PID/stat before the trigger and after the last delivery; "vs raw" divides it by the raw
baseline's (one pre-encoded frame written with ``transport.write`` to every connection).

Servers (method and payload from shared/peer-bench, copied into bench/peers/):
  raw           websockets handshakes + transport.write of one prebuilt frame per message
  ws            websockets broadcast()
  aiohttp       aiohttp send_str to each connection
  socketio      python-socketio (on aiohttp)
  node-socketio Node socket.io 4 (skipped with a note when node or `npm install` fails)
  live          ``live serve`` (embedded Redis); a host connection sends M host_message
                commands (~150-byte text) back to back; each goes through Redis (Lua script +
                pub/sub) and is written to every member. The live row counts the live process;
                the "live + redis" row adds the CPU of its valkey-server child.

The clients are the peer-bench client (aiohttp, one reader task per connection), spread
over several worker processes (``python fanout.py _worker ...``), each well under the
20,000 open-file limit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
from loadtest.procfs import cpu_seconds

from common import (
    Children,
    Control,
    CpuRates,
    LiveServer,
    Worker,
    add_run_options,
    fmt_int,
    free_port,
    install_sigterm,
    machine_facts,
    mint,
    nofile_limit,
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

SERVERS = ("raw", "ws", "aiohttp", "socketio", "node-socketio", "live")
ROOM = "bench"
#: Connections per client worker process at most (the file limit is 20,000 per process).
MAX_PER_WORKER = 5000
SETTLE_S = 2.0


def host_text(i: int) -> str:
    """A ~150-byte (UTF-8) host message, numbered."""
    text = f"#{i:05d} " + "这个多少钱\uff1f好看\uff01" * 3 + " flash sale soon: "
    return text + "x" * (150 - len(text.encode()))


@dataclass
class Result(CpuRates):
    counted: ClassVar[str] = "deliveries"
    server: str
    n: int
    m: int
    deliveries: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    #: live only: CPU seconds of its embedded Redis (valkey-server) over the same interval.
    redis_cpu_s: float | None = None
    payload_bytes: int = 0
    complete: bool = True
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


# -- the orchestrator -----------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, children: Children) -> None:
        self.args = args
        self.children = children
        self.n: int = args.viewers
        self.m: int = args.messages
        self.workers_n: int = args.clients or max(2, math.ceil(self.n / 2500))
        if math.ceil(self.n / self.workers_n) > MAX_PER_WORKER:
            raise SystemExit(f"--clients {self.workers_n} puts more than {MAX_PER_WORKER} connections in one")
        self.logs = Path(args.log_dir)
        self.logs.mkdir(parents=True, exist_ok=True)

    async def run_server(self, name: str) -> Result:
        if name == "live":
            return await self.run_live()
        port = free_port()
        log = self.logs / f"{name}.log"
        argv, note = peer_command(name, port, self.m, Path(self.args.node_dir))
        if note:
            return Result(name, self.n, self.m, complete=False, note=note)
        proc = await self.children.spawn(argv, env=peer_env(Path(self.args.node_dir)), log=log)
        try:
            await wait_port(port, proc)
            proto = "sio" if name in ("socketio", "node-socketio") else "plain"
            workers = await self.start_workers(proto, port, {})

            async def trigger() -> None:
                workers[0].send(cmd="go")

            def cpu() -> tuple[float, float]:
                return cpu_seconds(proc.pid), 0.0

            result = await self.measure(name, workers, trigger, cpu)
        finally:
            await self.children.stop(proc)
        return result

    async def run_live(self) -> Result:
        settings = {
            "message_rate_per_s": 100_000,
            "message_burst": 100_000,
            "max_connections": max(15_000, self.n + 100),
            "max_connections_per_ip": max(15_000, self.n + 100),
        }
        server = LiveServer(self.children, self.args.live_python, settings, workers=self.args.live_workers)
        try:
            await server.start()
            await server.create_room(ROOM)
            async with aiohttp.ClientSession() as session:
                host = await session.ws_connect(server.ws_url(ROOM, server.host_token), max_msg_size=0)
                drain = asyncio.create_task(drain_host(host))
                env = {"LIVEBENCH_SECRET": server.secret}
                workers = await self.start_workers("live", server.port, env)
                before = await server.metrics()

                async def trigger() -> None:
                    # back to back, without waiting for acks: the server serialises them
                    for i in range(self.m):
                        await host.send_str(json.dumps({"type": "host_message", "text": host_text(i)}))

                result = await self.measure("live", workers, trigger, server.cpu)
                after = await server.metrics()
                drain.cancel()
                await host.close()
            result.extra = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
        finally:
            problems = await server.finish(self.logs / "live.log")
        if problems:
            result.extra["log_lines"] = len(problems)
            result.extra["log_sample"] = problems[:5]
        return result

    async def start_workers(self, proto: str, port: int, env: dict[str, str]) -> list[Worker]:
        """Start the client workers and wait until all their connections are open."""
        per = math.ceil(self.n / self.workers_n)
        workers = []
        first = 0
        while first < self.n:
            count = min(per, self.n - first)
            argv = [
                sys.executable, str(Path(__file__).resolve()), "_worker", "--proto", proto,
                "--port", str(port), "--count", str(count), "--messages", str(self.m),
                "--first", str(first),
            ]  # fmt: skip
            proc = await self.children.spawn(argv, env={**os.environ, **env}, pipes=True)
            workers.append(Worker(f"client worker {len(workers)}", proc))
            first += count
        await asyncio.gather(*(w.expect("ready", self.args.connect_timeout) for w in workers))
        return workers

    async def measure(self, name: str, workers: list[Worker], trigger: Any, cpu: Any) -> Result:
        try:
            await asyncio.sleep(SETTLE_S)
            c0, r0 = cpu()
            t0 = time.monotonic()
            await trigger()
            deadline = t0 + self.args.timeout
            reports: list[dict[str, Any]] = []
            timed_out = False
            for w in workers:
                try:
                    reports.append(await w.expect("done", max(0.1, deadline - time.monotonic())))
                except RuntimeError:
                    if workers_alive(workers):
                        timed_out = True
                        break
                    raise
            if timed_out:
                # ask the rest for what they have, so the row shows how far it got
                for w in workers[len(reports) :]:
                    w.send(cmd="finish")
                for w in workers[len(reports) :]:
                    reports.append(await w.expect("done", 10))
            c1, r1 = cpu()
        finally:
            await stop_workers(self.children, workers)
        received = sum(r["received"] for r in reports)
        complete = sum(r["complete"] for r in reports)
        closed = sum(r["closed"] for r in reports)
        result = Result(
            name,
            self.n,
            self.m,
            deliveries=received,
            wall_s=max(r["t"] for r in reports) - t0,
            cpu_s=c1 - c0,
            redis_cpu_s=(r1 - r0) if name == "live" else None,
            payload_bytes=max(r["payload_bytes"] for r in reports),
            complete=complete == self.n,
        )
        if not result.complete:
            result.note = (
                f"INCOMPLETE: {complete}/{self.n} connections got all {self.m} messages"
                f" ({closed} closed early{', timed out' if timed_out else ''})"
            )
        return result


def workers_alive(workers: list[Worker]) -> bool:
    return all(w.proc.returncode is None for w in workers)


async def drain_host(ws: aiohttp.ClientWebSocketResponse) -> None:
    """Read (and drop) what the server sends the host: its own messages and acks."""
    async for _ in ws:
        pass


# -- output ---------------------------------------------------------------------------------------


def result_rows(results: list[Result], raw_rate: float | None) -> list[list[str]]:
    rows = []
    for r in results:
        if r.deliveries == 0 and r.note:
            rows.append([r.server, str(r.n), str(r.m), "-", "-", "-", "-", "-", "-"])
            continue

        def ratio(rate: float) -> str:
            return f"{rate / raw_rate:.0%}" if raw_rate else "-"

        name = r.server + ("" if r.complete else " (incomplete)")
        rows.append(
            [
                name, str(r.n), str(r.m), fmt_int(r.deliveries), str(r.payload_bytes), f"{r.wall_s:.2f}",
                f"{r.cpu_s:.2f}", fmt_int(r.per_cpu), ratio(r.per_cpu),
            ]
        )  # fmt: skip
        if r.redis_cpu_s is not None:
            rows.append(
                [
                    r.server + " + redis", str(r.n), str(r.m), fmt_int(r.deliveries), str(r.payload_bytes),
                    f"{r.wall_s:.2f}", f"{r.cpu_s + r.redis_cpu_s:.2f}", fmt_int(r.per_cpu_combined),
                    ratio(r.per_cpu_combined),
                ]
            )  # fmt: skip
    return rows


HEADERS = [
    "server", "N", "M", "deliveries", "payload B", "wall s", "server CPU s", "deliveries/CPU-s", "vs raw"
]  # fmt: skip


def print_round(results: list[Result]) -> None:
    raw = next((r.per_cpu for r in results if r.server == "raw" and r.complete), None)
    print(table(HEADERS, result_rows(results, raw)))
    for r in results:
        if r.note:
            print(f"- {r.server}: {r.note}")
        if r.redis_cpu_s is not None:
            share = r.redis_cpu_s / r.cpu_s if r.cpu_s else 0
            print(
                f"- {r.server}: valkey-server (embedded Redis) CPU {r.redis_cpu_s:.2f} s "
                f"= {share:.0%} of the live process's {r.cpu_s:.2f} s"
            )
        if r.extra:
            print(f"- {r.server}: server counters during the run: {json.dumps(r.extra, ensure_ascii=False)}")
    sys.stdout.flush()


def print_summary(rounds: list[list[Result]]) -> None:
    """Median over rounds of each server's deliveries per CPU-second, with the range."""
    names = [r.server for r in rounds[0]]
    rows = []
    raw_rates = [r.per_cpu for rnd in rounds for r in rnd if r.server == "raw" and r.complete]
    raw_median = statistics.median(raw_rates) if raw_rates else None
    for name in names:
        for combined in (False, True):
            rs = [r for rnd in rounds for r in rnd if r.server == name and r.complete and r.deliveries]
            if not rs or (combined and rs[0].redis_cpu_s is None):
                continue
            rates = [r.per_cpu_combined if combined else r.per_cpu for r in rs]
            ratios = []
            for rnd in rounds:  # the ratio within each round, then its median
                raw = next((r.per_cpu for r in rnd if r.server == "raw" and r.complete), None)
                mine = next((r for r in rnd if r.server == name and r.complete and r.deliveries), None)
                if raw and mine:
                    ratios.append((mine.per_cpu_combined if combined else mine.per_cpu) / raw)
            rows.append(
                [
                    name + (" + redis" if combined else ""),
                    str(len(rs)),
                    fmt_int(statistics.median(rates)),
                    f"{fmt_int(min(rates))} - {fmt_int(max(rates))}",
                    f"{statistics.median(ratios):.0%}" if ratios else "-",
                    f"{min(ratios):.0%} - {max(ratios):.0%}" if ratios else "-",
                ]
            )
    print(table(["server", "runs", "median deliveries/CPU-s", "range", "median vs raw", "range"], rows))
    if raw_median:
        print(f"(raw baseline median: {fmt_int(raw_median)} deliveries per CPU-second)")


async def main(args: argparse.Namespace) -> int:
    install_sigterm(asyncio.current_task())  # type: ignore[arg-type]
    raise_nofile()
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = set(servers) - set(SERVERS)
    if unknown:
        raise SystemExit(f"unknown servers: {', '.join(sorted(unknown))} (known: {', '.join(SERVERS)})")
    children = Children()
    bench = Bench(args, children)
    facts = machine_facts()
    print(f"# fan-out: N={bench.n} viewers, M={bench.m} messages, {bench.workers_n} client processes")
    print("machine: " + ", ".join(f"{k} {v}" for k, v in facts.items()))
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions(Path(args.node_dir)).items()))
    sys.stdout.flush()
    rounds: list[list[Result]] = []
    try:
        for i in range(args.repeat):
            results = []
            for name in servers:
                print(f"... round {i + 1}/{args.repeat}: {name}", file=sys.stderr, flush=True)
                try:
                    results.append(await bench.run_server(name))
                except (RuntimeError, OSError) as exc:
                    results.append(Result(name, bench.n, bench.m, complete=False, note=f"FAILED: {exc}"))
            rounds.append(results)
            print(f"\n## round {i + 1} of {args.repeat}")
            print_round(results)
        if args.repeat > 1:
            print(f"\n## summary over {args.repeat} rounds")
            print_summary(rounds)
    finally:
        await children.stop_all()
        if args.json:
            data = {
                "facts": facts,
                "viewers": bench.n,
                "messages": bench.m,
                "rounds": [[{**asdict(r), "per_cpu": r.per_cpu} for r in rnd] for rnd in rounds],
            }
            Path(args.json).write_text(json.dumps(data, indent=1, ensure_ascii=False))
    failed = any(not r.complete and "skipped" not in r.note for rnd in rounds for r in rnd)
    return 1 if failed else 0


# -- the client worker ----------------------------------------------------------------------------


async def worker(args: argparse.Namespace) -> None:
    """Open ``count`` connections, report "ready", count messages; on every connection having
    ``messages`` of them (or closed), or on "finish", report "done"."""
    raise_nofile()
    control = Control()
    await control.open()
    secret = os.environ.get("LIVEBENCH_SECRET", "")

    def url(i: int) -> str:
        if args.proto == "live":
            token = mint(secret, ROOM, "viewer", f"v{i}")
            return f"http://127.0.0.1:{args.port}/ws/rooms/{ROOM}?token={token}"
        if args.proto == "sio":
            return f"http://127.0.0.1:{args.port}/socket.io/?EIO=4&transport=websocket"
        return f"http://127.0.0.1:{args.port}/"

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    sem = asyncio.Semaphore(100)

    async def connect(i: int) -> aiohttp.ClientWebSocketResponse:
        async with sem:
            ws = await session.ws_connect(url(i), max_msg_size=0, autoping=True)
            if args.proto == "sio":
                await ws.receive()  # Engine.IO open packet
                await ws.send_str("40")  # Socket.IO connect to the default namespace
                await ws.receive()  # its ack
            return ws

    try:
        wss = await asyncio.gather(*(connect(args.first + i) for i in range(args.count)))
    except Exception as exc:
        control.report("error", error=f"connecting: {exc!r}")
        await session.close()
        raise SystemExit(1) from None

    state = {"received": 0, "complete": 0, "closed": 0, "finished": 0, "t": 0.0, "payload_bytes": 0}
    all_finished = asyncio.Event()
    m = args.messages
    live_prefix = '{"type":"host_message"'

    async def reader(ws: aiohttp.ClientWebSocketResponse) -> None:
        got = 0
        try:
            async for msg in ws:
                data = msg.data
                if args.proto == "sio":
                    if data == "2":  # Engine.IO ping
                        await ws.send_str("3")
                        continue
                    if not data.startswith("42"):
                        continue
                elif args.proto == "live" and not data.startswith(live_prefix):
                    continue  # welcome, presence batches: not deliveries of the message
                got += 1
                state["received"] += 1
                if got == 1 and not state["payload_bytes"]:
                    state["payload_bytes"] = len(data.encode()) if isinstance(data, str) else len(data)
                if got == m:
                    state["complete"] += 1
                    state["t"] = time.monotonic()
                    break
            else:
                state["closed"] += 1
        finally:
            state["finished"] += 1
            if state["finished"] == len(wss):
                if not state["t"]:
                    state["t"] = time.monotonic()
                all_finished.set()

    readers = [asyncio.create_task(reader(ws)) for ws in wss]
    control.report("ready", connections=len(wss))
    finish = asyncio.Event()

    async def report_when_done() -> None:
        await asyncio.wait(
            [asyncio.create_task(all_finished.wait()), asyncio.create_task(finish.wait())],
            return_when=asyncio.FIRST_COMPLETED,
        )
        if not state["t"]:
            state["t"] = time.monotonic()
        control.report("done", **state)

    reporter = asyncio.create_task(report_when_done())
    while True:
        command = await control.command()
        if command["cmd"] == "go":
            await wss[0].send_str('42["go"]' if args.proto == "sio" else "go")
        elif command["cmd"] == "finish":
            finish.set()
        elif command["cmd"] == "quit":
            break
    reporter.cancel()
    for task in readers:
        task.cancel()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(asyncio.gather(*(ws.close() for ws in wss), return_exceptions=True), 5)
    await session.close()


def parse_args(argv: list[str]) -> argparse.Namespace:
    if argv[:1] == ["_worker"]:
        p = argparse.ArgumentParser(prog="fanout.py _worker")
        p.add_argument("--proto", choices=("plain", "sio", "live"), required=True)
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--count", type=int, required=True)
        p.add_argument("--messages", type=int, required=True)
        p.add_argument("--first", type=int, default=0)
        args = p.parse_args(argv[1:])
        args.worker = True
        return args
    p = orchestrator_parser(__doc__)
    p.add_argument("--viewers", "-n", type=int, default=2000, help="connections N (default 2000)")
    p.add_argument("--messages", "-m", type=int, default=200, help="messages M (default 200)")
    p.add_argument("--servers", default=",".join(SERVERS), help=f"comma-separated, of {', '.join(SERVERS)}")
    p.add_argument("--repeat", type=int, default=1, help="rounds of all servers; a summary gives medians")
    p.add_argument("--clients", type=int, default=0, help="client processes (default max(2, N/2500))")
    p.add_argument("--live-workers", type=int, default=1, help="live serve --workers (CPU summed over them)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds one server may take to deliver")
    p.add_argument("--connect-timeout", type=float, default=180.0, help="seconds to open all connections")
    add_run_options(p, node=True)
    args = p.parse_args(argv)
    args.worker = False
    if args.viewers < 1 or args.messages < 1 or args.repeat < 1:
        p.error("--viewers, --messages and --repeat must be >= 1")
    peers = [s for s in args.servers.split(",") if s != "live"]
    per_process = max(args.viewers if peers else 0, math.ceil(args.viewers / args.live_workers))
    if per_process + 100 > nofile_limit():
        p.error(
            f"a server process holds {per_process} sockets: past the open-file limit {nofile_limit()} "
            "(more --live-workers, or live alone in --servers)"
        )
    return args


if __name__ == "__main__":
    run_script(sys.argv[1:], parse_args, worker, main)
