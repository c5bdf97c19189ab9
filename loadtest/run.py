"""The coordinator: set the room up, drive the workers, merge what they measure, audit.

    target (spawned or --url) -> room, product -> workers ready -> sales opened on the shared
    timeline -> go -> per-second ticks (progress, timeline) -> finals -> audit -> result

Workers are separate processes (see worker.py) so a run can hold more connections than one
process may open and use more than one core; their histograms are merged exactly here.

Several nodes (``--url A --url B ...``): every node must be ready before anything starts (a
node that is not is named, exit 2); the room, its product and its sales are set up once, on the
first node; the connections are dealt over the nodes by ``loadtest.nodes``; the audit reads
each sale and its ledger once, from the first node that is ready afterwards, and holds it
against the orders confirmed to every buyer on every node.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import math
import os
import platform
import resource
import secrets
import shutil
import socket
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from hdrh.histogram import HdrHistogram

from loadtest import audit, hist, nodes, shortfall, tools_audit
from loadtest.api import Api, ApiError, mint, not_ready
from loadtest.plan import Plan, PlanError
from loadtest.procfs import CpuMeter, listening_pids
from loadtest.progress import Progress
from loadtest.result import SCHEMA
from loadtest.spawn import LocalServer
from loadtest.worker import WorkerSpec
from loadtest.wsclient import Endpoint

HOST_USER = "lt-host"
#: Time for workers to start (import, connect the host) before the timeline begins.
READY_TIMEOUT_S = 60.0
#: After the load phase: time for workers to close their connections and report.
FINAL_TIMEOUT_S = 60.0
#: A gated stream whose senders came in late starts this long after the last worker said so,
#: time for the word to reach every worker.
START_MARGIN_S = 0.05
#: After a node dropped its connections mid-run: how long the audit waits for the ledger to catch
#: up with the counters (the server's ledger consumers claim another node's unwritten orders once
#: they have been idle 30 s, inventory/ledger.py's claim_idle_ms, and look every 15 s), and how
#: often it reads again meanwhile.
LEDGER_SETTLE_S = 60.0
SETTLE_POLL_S = 1.0
#: How long the audit waits for a tool to close (its close comes with the server's next tick).
TOOL_SETTLE_S = 10.0


@dataclass(frozen=True)
class Target:
    """Where the load goes: ``urls`` (one per node; the setup on the first) or a spawned
    server. ``data_dir``: the local server's data dir (secret, reconcile)."""

    urls: tuple[str, ...] = ()
    spawn: bool = False
    secret: str | None = None
    data_dir: Path | None = None
    server_workers: int | None = None


def check_loopback(url: str) -> tuple[str, int]:
    """Host and port of an http:// URL that resolves only to loopback addresses."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise PlanError(f"--url must be http://HOST:PORT of a live server, not {url!r}")
    port = parts.port or 80
    try:
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise PlanError(f"cannot resolve {parts.hostname}: {exc}") from exc
    addresses = {str(info[4][0]) for info in infos}
    if not addresses or not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses):
        raise PlanError(
            f"{parts.hostname} resolves to {', '.join(sorted(addresses))}: live-loadtest only targets "
            "loopback addresses (127.0.0.0/8, ::1)"
        )
    return parts.hostname, port


def secret_of(target: Target) -> str:
    if target.secret:
        return target.secret
    if os.environ.get("LIVE_SECRET"):
        return os.environ["LIVE_SECRET"]
    if target.data_dir is not None:
        try:
            return (target.data_dir / "secret").read_text().strip()
        except OSError as exc:
            raise PlanError(f"cannot read the server's secret in {target.data_dir}: {exc}") from exc
    raise PlanError("tokens need the server's HS256 secret: give --secret, LIVE_SECRET or --data-dir")


def machine() -> dict[str, Any]:
    try:
        version = metadata.version("live-commerce")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return {
        "hostname": socket.gethostname(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "harness_version": version,
        "open_files_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
    }


@dataclass
class Second:
    """What all workers reported for one second of the run."""

    reports: int = 0
    connections: int = 0
    hists: dict[str, HdrHistogram] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)


class Aggregate:
    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.seconds: dict[int, Second] = defaultdict(Second)
        self.totals: dict[str, HdrHistogram] = {}
        self.counts: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.finals: list[dict[str, Any]] = []

    def add_tick(self, tick: dict[str, Any]) -> Second:
        second = self.seconds[int(tick["k"])]
        second.reports += 1
        second.connections += int(tick["connections"])
        for name, encoded in tick["hists"].items():
            h = hist.decode(encoded)
            second.hists.setdefault(name, hist.new_histogram()).add(h)
            self.totals.setdefault(name, hist.new_histogram()).add(h)
        second.counts.update(tick["counts"])
        second.errors.update(tick["errors"])
        self.counts.update(tick["counts"])
        self.errors.update(tick["errors"])
        return second

    def complete(self, second: Second) -> bool:
        return second.reports >= self.workers

    def timeline(self) -> dict[str, Any]:
        ks = sorted(self.seconds)
        names = sorted({n for s in self.seconds.values() for n in s.hists})
        counted = sorted({n for s in self.seconds.values() for n in s.counts})
        latency: dict[str, dict[str, list[float | None]]] = {}
        for name in names:
            series: dict[str, list[float | None]] = {"p50_ms": [], "p99_ms": [], "max_ms": []}
            for k in ks:
                h = self.seconds[k].hists.get(name)
                summary = hist.summary(h, mean=False) if h is not None else {}
                for key in series:
                    series[key].append(summary.get(key))
            latency[name] = series
        return {
            "t_s": ks,
            "connections": [self.seconds[k].connections for k in ks],
            "throughput": {n: [self.seconds[k].counts.get(n, 0) for k in ks] for n in counted},
            "latency": latency,
        }


class Run:
    def __init__(self, plan: Plan, target: Target, progress: Progress) -> None:
        plan.check_capacity()
        self.plan = plan
        self.target = target
        self.progress = progress
        self.run_id = secrets.token_hex(3)
        self.room = plan.room or f"lt-{self.run_id}"
        self.server: LocalServer | None = None
        self.workers: list[asyncio.subprocess.Process] = []
        self.aggregate = Aggregate(plan.worker_count)
        self.t0 = 0.0
        #: Gated streams: the planned starts the workers reported, then when each started.
        self._gates: dict[str, list[float]] = defaultdict(list)
        self.starts: dict[str, dict[str, float]] = {}
        #: Per node: acknowledged orders the ledger lacks, by the node their buyer was on.
        self.lost_by_node: Counter[int] = Counter()
        #: The interaction tools opened for the run (loadtest.tools), with what the audit needs.
        self.tools: dict[str, Any] = {}
        # Workers' stderr goes to files, not pipes: a chatty worker must never block on a full pipe.
        self._logs = Path(tempfile.mkdtemp(prefix="live-loadtest-workers-"))

    async def execute(self) -> dict[str, Any]:
        if self.target.spawn:
            self.server = LocalServer(self.plan.connections, self.target.server_workers)
            self.progress.say(f"starting live serve ({self.server.workers} worker(s), embedded Redis) ...")
            await self.server.start()
        try:
            return await self._execute()
        finally:
            await self._stop_workers()
            if self.server is not None:
                await self.server.stop()

    @property
    def urls(self) -> list[str]:
        """The nodes, in the order given: the first one has the setup."""
        if self.server is not None:
            return [self.server.url]
        assert self.target.urls
        return list(self.target.urls)

    @property
    def url(self) -> str:
        return self.urls[0]

    async def _execute(self) -> dict[str, Any]:
        plan = self.plan
        addresses = [check_loopback(url) for url in self.urls]
        await self._check_nodes()
        secret = self.server.secret if self.server is not None else secret_of(self.target)
        token = mint(secret, HOST_USER, self.room, "host")
        api = Api(self.url, token)
        server_cpu = self._server_meter([port for _, port in addresses])
        try:
            await api.create_room(self.room, f"live-loadtest {plan.name} {self.run_id}")
            product = await api.create_product(self.room, "live-loadtest item", plan.price_cents)
            await self._start_workers(addresses, secret)
            t0 = self.t0 = time.monotonic() + 1.0
            sales: dict[str, Any] = dict(await self._open_sales(api, product, t0))
            self.tools = await self._open_tools(api, t0)
            sales["tools"] = self.tools
            started_at_ms = int(time.time() * 1000 + (t0 - time.monotonic()) * 1000)
            if server_cpu is not None:
                server_cpu.start()
            for worker in self.workers:
                assert worker.stdin is not None
                worker.stdin.write((json.dumps({"t0": t0, **sales}) + "\n").encode())
                await worker.stdin.drain()
            await self._collect(server_cpu)
            duration = time.monotonic() - t0
            if server_cpu is not None:
                server_cpu.sample()
            # Every harness process from its start (setup included) to the end of the load.
            harness_cpu = _own_cpu() + sum(float(f["cpu_s"]) for f in self.aggregate.finals)
            self.progress.say("auditing ...")
            verdict = await self._audit(token, sales)
        finally:
            await api.close()
        return self._result(started_at_ms, duration, harness_cpu, server_cpu, verdict)

    async def _check_nodes(self) -> None:
        """Every node ready before anything is set up: a run that would spread its users over a
        dead node measures that node's absence, not the server."""
        urls = self.urls
        reasons = await asyncio.gather(*(not_ready(url) for url in urls))
        down = [(i, url, why) for i, (url, why) in enumerate(zip(urls, reasons, strict=True)) if why]
        if down:
            n = len(urls)
            names = [f"node {i + 1} of {n}" for i in range(n)] if n > 1 else ["the server"]
            raise PlanError("; ".join(f"{names[i]} {url} is not ready: {why}" for i, url, why in down))

    def _server_meter(self, ports: list[int]) -> CpuMeter | None:
        if self.server is not None:
            return CpuMeter([self.server.pid])
        pids = sorted({pid for port in ports for pid in listening_pids(port)})
        return CpuMeter(pids) if pids else None

    async def _open_sales(self, api: Api, product: str, t0: float) -> dict[str, str | None]:
        plan = self.plan
        wall_of = time.time() - time.monotonic()
        sales: dict[str, str | None] = {"rush_sale": None, "group_sale": None}
        if plan.wants("rush"):
            sale = await api.open_sale(
                self.room,
                product_id=product,
                stock=plan.stock,
                price_cents=plan.price_cents,
                per_user_limit=plan.per_user_limit,
                starts_at_ms=int((t0 + plan.rush_at_s + wall_of) * 1000),
                duration_s=math.ceil(plan.duration_s) + 600,
                hold_s=plan.hold_s,
            )
            sales["rush_sale"] = sale["id"]
        if plan.wants("group-buy"):
            size = plan.team_size
            sale = await api.open_sale(
                self.room,
                product_id=product,
                stock=plan.teams * size,
                price_cents=plan.price_cents,
                per_user_limit=1,
                duration_s=math.ceil(plan.duration_s) + 600,
                hold_s=plan.team_s + 60,
                group={"size": size, "price_cents": plan.price_cents * 8 // 10, "team_s": plan.team_s},
            )
            sales["group_sale"] = sale["id"]
        return sales

    async def _open_tools(self, api: Api, t0: float) -> dict[str, Any]:
        """Open the run's interaction tools now (before the go): two draws and a poll closing at
        ``tools_close_s``, an auction ending at ``auction_end_s`` (by the server's clock: the
        workers get each one's times as monotonic times). Each on a product of its own."""
        plan = self.plan
        wall_of = time.time() - time.monotonic()
        tools: dict[str, Any] = {}

        def seconds_until(at_s: float) -> int:
            return max(1, int(t0 + at_s - time.monotonic()))

        def monotonic(ms: Any) -> float:
            return int(ms) / 1000 - wall_of

        if plan.wants("draw"):
            prize = await api.create_product(self.room, "live-loadtest lucky bag", plan.price_cents)
            draws = []
            for keyword in (plan.draw_keyword, None):
                fields: dict[str, Any] = {
                    "prize": {"product_id": prize},
                    "winners": plan.draw_winners,
                    "duration_s": seconds_until(plan.tools_close_s),
                }
                if keyword is not None:
                    fields["keyword"] = keyword
                draw = await api.open_draw(self.room, **fields)
                draws.append(
                    {
                        "id": draw["id"],
                        "keyword": keyword,
                        "closes_at": monotonic(draw["closes_at_ms"]),
                        "opened": draw,
                    }
                )
            tools["draws"] = draws
        if plan.wants("auction"):
            item = await api.create_product(self.room, "live-loadtest auction lot", plan.start_cents)
            auction = await api.open_auction(
                self.room,
                product_id=item,
                start_cents=plan.start_cents,
                increment_cents=plan.increment_cents,
                duration_s=seconds_until(plan.auction_end_s),
                snipe_s=plan.snipe_s,
                max_extension_s=plan.max_extension_s,
            )
            tools["auction"] = {
                "id": auction["id"],
                "ends_at": monotonic(auction["ends_at_ms"]),
                "ends_at_ms": int(auction["ends_at_ms"]),
                "start_cents": plan.start_cents,
                "increment_cents": plan.increment_cents,
            }
        if plan.wants("poll"):
            options = [f"option {k + 1}" for k in range(plan.poll_options)]
            poll = await api.open_poll(
                self.room,
                question="live-loadtest: which one?",
                options=options,
                duration_s=seconds_until(plan.tools_close_s),
                allow_change=True,
            )
            tools["poll"] = {
                "id": poll["id"],
                "options": len(options),
                "closes_at": monotonic(poll["closes_at_ms"]),
            }
        if plan.wants("qna"):
            tools["qna"] = True
        return tools

    # -- workers ------------------------------------------------------------------------------

    async def _start_workers(self, addresses: list[tuple[str, int]], secret: str) -> None:
        plan = self.plan
        # 127.0.0.x source addresses can only reach IPv4 loopback targets.
        ipv4 = all("." in host or host == "localhost" for host, _ in addresses)
        sources = plan.source_count if ipv4 else 1
        path = f"/ws/rooms/{self.room}"
        for index in range(plan.worker_count):
            source = f"127.0.0.{2 + index % sources}" if sources > 1 else None
            spec = WorkerSpec(
                index=index,
                workers=plan.worker_count,
                plan=plan,
                endpoints=tuple(Endpoint(host, port, path, source) for host, port in addresses),
                secret=secret,
                room=self.room,
            )
            with (self._logs / f"worker-{index}.log").open("wb") as log:
                process = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "live.parent_death", str(os.getpid()),
                    sys.executable, "-m", "loadtest.worker",
                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log,
                    limit=64 * 1024 * 1024,
                )  # fmt: skip
            assert process.stdin is not None
            process.stdin.write((spec.to_json() + "\n").encode())
            self.workers.append(process)
        self.progress.say(f"{plan.worker_count} worker process(es) starting ...")
        for index in range(len(self.workers)):
            line = await self._line(index, READY_TIMEOUT_S)
            if line.get("kind") != "ready":
                raise PlanError(f"a worker did not start: {line}")

    async def _line(self, index: int, timeout_s: float) -> dict[str, Any]:
        process = self.workers[index]
        assert process.stdout is not None
        try:
            raw = await asyncio.wait_for(process.stdout.readline(), timeout_s)
        except TimeoutError:
            raise PlanError(f"a worker said nothing for {timeout_s:g} s") from None
        if not raw:
            await process.wait()
            log = (self._logs / f"worker-{index}.log").read_text(errors="replace")
            raise PlanError(f"worker {index} exited early ({process.returncode}):\n{log[-3000:]}")
        message: dict[str, Any] = json.loads(raw)
        return message

    async def _collect(self, server_cpu: CpuMeter | None) -> None:
        deadline = time.monotonic() + self.plan.duration_s + FINAL_TIMEOUT_S

        async def follow(index: int) -> None:
            while True:
                message = await self._line(index, max(1.0, deadline - time.monotonic()))
                if message["kind"] == "tick":
                    second = self.aggregate.add_tick(message)
                    if self.aggregate.complete(second):
                        if server_cpu is not None:
                            server_cpu.sample()
                        self.progress.second(int(message["k"]), second, self.aggregate)
                elif message["kind"] == "in":
                    await self._stream_in(str(message["stream"]), float(message["at"]))
                elif message["kind"] == "final":
                    self.aggregate.finals.append(message)
                    return

        await asyncio.gather(*(follow(i) for i in range(len(self.workers))))

    async def _stream_in(self, stream: str, planned_at: float) -> None:
        """A worker's senders of ``stream`` are in; once every worker's are, start it everywhere:
        as planned, or at once if the last senders came in after the planned start."""
        reports = self._gates[stream]
        reports.append(planned_at)
        if len(reports) < len(self.workers):
            return
        planned = max(reports)
        start = max(planned, time.monotonic() + START_MARGIN_S)
        late = start - planned
        self.starts[stream] = {
            "planned_s": round(planned - self.t0, 3),
            "started_s": round(start - self.t0, 3),
            "late_s": round(late, 3),
        }
        if late:
            self.progress.say(f"{stream} starts {late:.2f} s late: its senders were still connecting")
        line = (json.dumps({"kind": "start", "stream": stream, "at": start}) + "\n").encode()
        for process in self.workers:
            assert process.stdin is not None
            with contextlib.suppress(ConnectionError):  # a dead worker is reported by its stdout
                process.stdin.write(line)
                await process.stdin.drain()

    async def _stop_workers(self) -> None:
        for process in self.workers:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
            await process.wait()
        shutil.rmtree(self._logs, ignore_errors=True)

    # -- audit and result ---------------------------------------------------------------------

    async def _audit_node(self) -> str:
        """The node the audit reads: the first of the list that is ready now (a node may have
        died during the run; the ledger is one, whichever node serves it)."""
        reasons = []
        for url in self.urls:
            why = await not_ready(url)
            if why is None:
                return url
            reasons.append(f"{url}: {why}")
        raise ApiError("no node is ready for the audit: " + "; ".join(reasons))

    async def _audit(self, token: str, sales: dict[str, str | None]) -> dict[str, Any]:
        finals = self.aggregate.finals
        acked = [o for f in finals for o in f["orders"]]
        sale_reports = []
        tool_reports = await self._audit_tools(token) if self.tools else None
        sales = {k: v for k, v in sales.items() if k != "tools"}
        read_from = await self._audit_node() if any(sales.values()) else None
        api = Api(read_from or self.url, token)
        # A node that dropped its connections mid-run (died, say) may have left confirmed
        # orders in Redis that it had not written yet: another node's ledger consumer takes
        # them over, after they have been idle for its claim time. Give it that long.
        dropped = any(int(node["lost"]) for f in finals for node in f["nodes"])
        settle_s = LEDGER_SETTLE_S if dropped else 0.0
        try:
            for sale_id in (s for s in sales.values() if s):
                heard = [o for o in acked if o["sale_id"] == sale_id]
                report, ledger = await self._read_sale(api, sale_id, heard, settle_s)
                sale_reports.append(report)
                in_ledger = {str(o["order_id"]) for o in ledger}
                # Which node's buyers heard of the orders the ledger lacks (once per order id).
                lost = {str(o["order_id"]): int(o.get("node", 0)) for o in heard}
                self.lost_by_node.update(node for oid, node in lost.items() if oid not in in_ledger)
        finally:
            await api.close()
        chat = None
        if self.plan.commenters:
            observers = [o for f in finals for o in f["observers"]]
            chat = audit.audit_chat(
                # (a draw's keyword comments are comments too: observers see them)
                sum(
                    int(f["outcomes"].get(name, {}).get("ok", 0))
                    for f in finals
                    for name in ("comment_ack", "draw_comment")
                ),
                observers,
                self.aggregate.counts.get("likes_sent", 0),
                max((int(f["likes_seen"]) for f in finals), default=0),
            )
        reconcile = await self._reconcile() if any(sales.values()) else None
        verdict = audit.verdict(sale_reports, chat, reconcile, tool_reports)
        verdict["read_from"] = read_from
        return verdict

    async def _audit_tools(self, token: str) -> dict[str, Any]:
        """Each tool's audit (loadtest.tools_audit): its HTTP reads from the first node ready
        now, against what every worker's users were told and heard."""
        finals = [f.get("tools") or {} for f in self.aggregate.finals]
        api = Api(await self._audit_node(), token)
        out: dict[str, Any] = {}
        try:
            if "draws" in self.tools:
                out["draws"] = [await self._audit_draw(api, draw, finals) for draw in self.tools["draws"]]
            if "auction" in self.tools:
                out["auctions"] = [await self._audit_auction(api, finals)]
            if "poll" in self.tools:
                out["polls"] = [await self._audit_poll(api, finals)]
            if "qna" in self.tools:
                asked = [a for f in finals for a in f.get("asked", [])]
                upvoted: dict[str, set[str]] = defaultdict(set)
                for f in finals:
                    for question, users in f.get("upvoted", {}).items():
                        upvoted[question].update(users)
                out["qna"] = [tools_audit.audit_qna(await api.questions(self.room), asked, upvoted)]
        finally:
            await api.close()
        return out

    async def _settled(self, read: Any, done: Any) -> dict[str, Any]:
        """Read a tool until ``done(it)`` (its close is decided by the server's loop, a tick
        after its time), for up to TOOL_SETTLE_S."""
        deadline = time.monotonic() + TOOL_SETTLE_S
        while True:
            value: dict[str, Any] = await read()
            if done(value) or time.monotonic() >= deadline:
                return value
            await asyncio.sleep(0.2)

    async def _audit_draw(
        self, api: Api, draw: dict[str, Any], finals: list[dict[str, Any]]
    ) -> dict[str, Any]:
        draw_id = draw["id"]
        read = await self._settled(lambda: api.draw(self.room, draw_id), lambda d: d.get("state") == "closed")
        announced = sorted({e for f in finals for e in f.get("draw_closed", {}).get(draw_id, [])})
        report = tools_audit.audit_draw(
            read,
            draw["opened"],
            [json.loads(e) for e in announced],
            {u for f in finals for u in f.get("entered", {}).get(draw_id, [])},
            {u for f in finals for u in f.get("attempted", {}).get(draw_id, [])},
        )
        bypassed = sum(int(f.get("bypassed", {}).get(draw_id, 0)) for f in finals)
        if bypassed:
            report["violations"].append(f"{bypassed} enter_draw on the keyword draw were accepted")
        return report

    async def _audit_auction(self, api: Api, finals: list[dict[str, Any]]) -> dict[str, Any]:
        spec = self.tools["auction"]
        auction_id = spec["id"]
        read = await self._settled(
            lambda: api.auction(self.room, auction_id), lambda a: a.get("state") in ("sold", "unsold")
        )
        bids = await api.auction_bids(self.room, auction_id)
        # Every charge a user heard of: a pay_auction ack, or an order pushed to them.
        charges = [p for f in finals for p in (*f.get("paid", []), *f.get("pushed", []))]
        paid = list({(str(p["user"]), str(p["order"].get("order_id"))): p for p in charges}.values())
        acked = [b for f in finals for b in f.get("acked_bids", [])]
        # The ledger's orders of the auction (sale_id = auction id), where the server lets them
        # be read: by sale, else each paid order by its id.
        ledger: list[dict[str, Any]] | None = None
        notes: list[str] = []
        try:
            ledger = await api.orders(auction_id)
        except ApiError as exc:
            notes.append(f"the auction's ledger is not readable by sale ({exc}); read by order id")
            try:
                ledger = [await api.order(i) for i in sorted({str(p["order"]["order_id"]) for p in paid})]
            except ApiError as inner:
                notes.append(f"the paid order is not readable either ({inner})")
                ledger = None
        report = tools_audit.audit_auction(read, bids, int(spec["ends_at_ms"]), acked, paid, ledger)
        report["notes"] = notes
        return report

    async def _audit_poll(self, api: Api, finals: list[dict[str, Any]]) -> dict[str, Any]:
        poll_id = self.tools["poll"]["id"]
        read = await self._settled(lambda: api.poll(self.room, poll_id), lambda p: p.get("state") == "closed")
        votes: dict[str, int] = {}
        for f in finals:
            votes.update({u: int(o) for u, o in f.get("votes", {}).items()})
        announced = sorted({e for f in finals for e in f.get("poll_closed", [])})
        return tools_audit.audit_poll(read, [json.loads(e) for e in announced], votes)

    async def _read_sale(
        self, api: Api, sale_id: str, heard: list[dict[str, Any]], settle_s: float
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The sale's audit and its ledger; read again (every second, up to ``settle_s``) while
        the ledger lags the counters or lacks an order a buyer heard of."""
        deadline = time.monotonic() + settle_s
        first = time.monotonic()
        while True:
            sale = await api.sale(sale_id)
            ledger = await api.orders(sale_id)
            report = audit.audit_sale(sale, ledger, heard)
            settled = report["sold"] == report["ledger_units"] and not report["lost_orders"]
            if settled or time.monotonic() >= deadline:
                waited = time.monotonic() - first
                if settled and waited >= SETTLE_POLL_S:
                    report["notes"].append(
                        f"the ledger caught up with the counters {waited:.1f} s after the audit began "
                        "(a node dropped its connections mid-run; another node wrote its orders)"
                    )
                return report, ledger
            self.progress.say(f"{sale_id}: the ledger is behind the counters, reading again ...")
            await asyncio.sleep(SETTLE_POLL_S)

    async def _reconcile(self) -> dict[str, Any] | None:
        data_dir = self.server.data_dir if self.server is not None else self.target.data_dir
        if data_dir is None:
            return None
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "live", "reconcile", "--data-dir", str(data_dir),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        output, _ = await process.communicate()
        return {
            "ran": True,
            "exit_code": process.returncode,
            "clean": process.returncode == 0,
            "output": output.decode(errors="replace")[-4000:],
        }

    def _result(
        self,
        started_at_ms: int,
        duration: float,
        harness_cpu: float,
        server_cpu: CpuMeter | None,
        verdict: dict[str, Any],
    ) -> dict[str, Any]:
        agg, plan = self.aggregate, self.plan
        outcomes: dict[str, Counter[str]] = defaultdict(Counter)
        for final in agg.finals:
            for command, counts in final["outcomes"].items():
                outcomes[command].update(counts)
        violations = sum(int(f["idempotency_violations"]) for f in agg.finals)
        if violations:
            verdict["notes"].append(f"{violations} reserve retries got another answer than the first")
            verdict["passed"] = False
        errors = dict(agg.errors)
        planned: Counter[str] = Counter()
        sent: Counter[str] = Counter()
        for final in agg.finals:
            planned.update(final.get("planned", {}))
            sent.update(final.get("sent", {}))
        load = shortfall.assess(planned, sent, plan.max_unsent_share, self.starts)
        return {
            "schema": SCHEMA,
            "scenario": plan.name,
            "scenarios": list(plan.scenarios),
            "started_at_ms": started_at_ms,
            "duration_s": round(duration, 3),
            "target": {
                "url": self.url,
                "urls": self.urls,
                "spawned": self.server is not None,
                "server_workers": self.server.workers if self.server is not None else None,
            },
            "parameters": {**plan.parameters(), "room": self.room},
            "machine": machine(),
            "metrics": {name: hist.summary(h) for name, h in sorted(agg.totals.items())},
            "throughput": {name: round(n / duration, 3) for name, n in sorted(agg.counts.items())},
            "counts": dict(sorted(agg.counts.items())),
            "errors": dict(sorted(errors.items())),
            "outcomes": {k: dict(v) for k, v in sorted(outcomes.items())},
            "connections": {
                "target": plan.connections,
                "peak": sum(int(f["peak_connections"]) for f in agg.finals),
                "failed": sum(n for kind, n in errors.items() if kind.startswith("connect:")),
                "closed_by_server": agg.counts.get("closed_by_server", 0),
            },
            "harness_cpu_s": round(harness_cpu, 3),
            "harness_cores": round(harness_cpu / duration, 3) if duration else None,
            "server_cpu_s": server_cpu.used() if server_cpu is not None else None,
            "audit": verdict,
            "nodes": self._nodes(),
            "load": load,
            "timeline": agg.timeline(),
            "histograms": {name: hist.encode(h) for name, h in sorted(agg.totals.items())},
        }

    def _nodes(self) -> list[dict[str, Any]]:
        """Per node: what the plan gave it (``loadtest.nodes``), what every worker saw of it,
        and the confirmed orders its buyers heard of and the ledger lacks."""
        out = nodes.assignment(self.plan, self.urls)
        acked: Counter[int] = Counter(
            int(o.get("node", 0)) for f in self.aggregate.finals for o in f["orders"]
        )
        for index, node in enumerate(out):
            errors: Counter[str] = Counter()
            totals: Counter[str] = Counter()
            for final in self.aggregate.finals:
                seen = final["nodes"][index]
                errors.update(seen["errors"])
                totals.update({k: int(seen[k]) for k in ("connected", "lost", "reconnected", "open_at_end")})
            node.update({k: totals[k] for k in ("connected", "lost", "reconnected", "open_at_end")})
            node["acked_orders"] = acked[index]
            node["lost_orders"] = self.lost_by_node[index]
            node["errors"] = dict(sorted(errors.items()))
        return out


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
