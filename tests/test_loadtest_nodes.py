"""`live-loadtest --url A --url B --url C`: load spread over several nodes (issue 13, item 5).

Connection i of the plan's order goes to node i mod N (the host's to the first), every worker
deals its share the same way, and the result says what each node had; a node that is not
ready at the start is named (exit 2); a node that dies mid-run costs its connections (lost,
reconnected to the next node) and the audit reads the one ledger from a node still alive.

The multi-node runs here are against the fake of tests/broken_server.py served on several
ports at once, one state behind them all, as real nodes share one Redis and one database: a
node that dies is one whose listening socket and connections are cut. The same against real
`live serve` nodes: tests/test_loadtest_scaleout.py.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import broken_server
import pytest
from aiohttp import web
from broken_server import BrokenServer
from polling import until

from loadtest import nodes
from loadtest.cli import _parser, _settings
from loadtest.cli import main as loadtest_main
from loadtest.plan import Plan, PlanError
from loadtest.tools import TOOL_ROLES
from loadtest.worker import Worker, WorkerSpec
from loadtest.wsclient import Endpoint

SECRET = "loadtest-nodes-secret-" + "x" * 32
EXIT_FAILED, EXIT_ERROR = 1, 2

# -- the assignment -----------------------------------------------------------------------------

BIG_NIGHT = Plan(
    viewers=101, buyers=53, teams=7, team_size=3, duration_s=30, draw_entrants=11, bidders=5, voters=7,
    qna_users=4, askers=2,
)  # fmt: skip


@pytest.mark.parametrize("count", [1, 2, 3, 5])
def test_every_connection_has_one_node_and_each_kind_is_spread_within_one(count: int) -> None:
    urls = [f"http://127.0.0.1:{9000 + i}" for i in range(count)]
    given = nodes.assignment(BIG_NIGHT, urls)

    assert [n["url"] for n in given] == urls
    # (big night's tools: 11 draw entrants, 5 bidders, 7 voters, 4 Q&A users)
    assert sum(n["connections"] for n in given) == BIG_NIGHT.connections == 101 + 53 + 21 + 27 + 1
    for kind, total in (("viewers", 101), ("buyers", 53), ("team_members", 21), ("tool_users", 27)):
        shares = [n[kind] for n in given]
        assert sum(shares) == total, kind
        assert max(shares) - min(shares) <= 1, (kind, shares)
    # The host's console is on the first node, where the room is set up.
    assert [n["host"] for n in given] == [True] + [False] * (count - 1)


def test_connection_i_goes_to_node_i_mod_n_in_the_plans_order() -> None:
    plan = Plan(scenarios=("audience", "rush", "group-buy"), viewers=4, buyers=3, teams=2, team_size=2)
    order = [nodes.viewer_index(i) for i in range(4)]
    order += [nodes.buyer_index(plan, i) for i in range(3)]
    order += [nodes.member_index(plan, t, m) for t in range(2) for m in range(2)]
    assert order == list(range(11))  # v0..v3, b0..b2, t0m0, t0m1, t1m0, t1m1
    assert [nodes.node_of(i, 3) for i in order] == [0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1]
    assert nodes.assignment(plan, ["a", "b", "c"]) == [
        {
            "url": "a",
            "connections": 4,
            "viewers": 2,
            "buyers": 1,
            "team_members": 1,
            "tool_users": 0,
            "host": False,
        },
        {
            "url": "b",
            "connections": 4,
            "viewers": 1,
            "buyers": 1,
            "team_members": 2,
            "tool_users": 0,
            "host": False,
        },
        {
            "url": "c",
            "connections": 3,
            "viewers": 1,
            "buyers": 1,
            "team_members": 1,
            "tool_users": 0,
            "host": False,
        },
    ]


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_the_workers_deal_their_connections_as_the_coordinator_reports(workers: int) -> None:
    endpoints = tuple(Endpoint("127.0.0.1", 9000 + i, "/ws/rooms/r") for i in range(3))
    seen: Counter[tuple[int, str]] = Counter()
    for index in range(workers):
        worker = Worker(WorkerSpec(index, workers, BIG_NIGHT, endpoints, SECRET, "r"), lambda _: None)
        for client in worker.everyone():
            kind = {"buyer": "buyers", "team": "team_members", "host": "host"}.get(client.role, "viewers")
            kind = "tool_users" if client.role in TOOL_ROLES else kind
            seen[client.node, kind] += 1
    for node, given in enumerate(nodes.assignment(BIG_NIGHT, [str(e) for e in endpoints])):
        for kind in ("viewers", "buyers", "team_members", "tool_users"):
            assert seen[node, kind] == given[kind], (node, kind)
        assert seen[node, "host"] == int(given["host"])


# -- the command line ---------------------------------------------------------------------------


def test_url_may_be_given_once_per_node() -> None:
    args = _parser().parse_args(["--url", "http://127.0.0.1:1", "--url", "http://127.0.0.2:2", "rush"])
    _, outside = _settings(args)
    assert outside["url"] == ["http://127.0.0.1:1", "http://127.0.0.2:2"]
    _, one = _settings(_parser().parse_args(["--url", "http://127.0.0.1:1", "rush"]))
    assert one["url"] == ["http://127.0.0.1:1"]


def test_a_toml_file_gives_one_url_or_a_list(tmp_path: Path) -> None:
    config = tmp_path / "night.toml"
    config.write_text('url = ["http://127.0.0.1:1", "http://127.0.0.1:2"]\n')
    _, outside = _settings(_parser().parse_args(["--config", str(config), "rush"]))
    assert outside["url"] == ["http://127.0.0.1:1", "http://127.0.0.1:2"]
    config.write_text('url = "http://127.0.0.1:1"\n')
    _, outside = _settings(_parser().parse_args(["--config", str(config), "rush"]))
    assert outside["url"] == ["http://127.0.0.1:1"]
    config.write_text("url = [1, 2]\n")
    with pytest.raises(PlanError, match="url must be a URL or a list of URLs"):
        _settings(_parser().parse_args(["--config", str(config), "rush"]))


def test_every_url_must_be_loopback(capsys: pytest.CaptureFixture[str]) -> None:
    status = loadtest_main(
        ["--url", "http://127.0.0.1:1", "--url", "http://10.0.0.1:8080", "--secret", SECRET, "rush"]
    )
    assert status == EXIT_ERROR
    err = capsys.readouterr().err
    assert "10.0.0.1" in err and "only targets loopback" in err


def test_spawn_and_url_are_one_or_the_other(capsys: pytest.CaptureFixture[str]) -> None:
    assert loadtest_main(["--spawn", "--url", "http://127.0.0.1:1", "rush"]) == EXIT_ERROR
    assert "--spawn" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_a_node_that_is_not_ready_at_the_start_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    fake = BrokenServer(SECRET, "honest")
    up = await fake.start()
    down = f"http://127.0.0.1:{_free_port()}"  # nothing listens there

    async def unready(_: web.Request) -> web.Response:
        return web.json_response({"status": "not_ready", "redis": "down"}, status=503)

    app = web.Application()
    app.router.add_get("/readyz", unready)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    sick = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        argv = ["--url", up, "--url", down, "--url", sick, "--secret", SECRET, "rush", "--quiet"]
        status = await asyncio.to_thread(loadtest_main, argv)
    finally:
        await runner.cleanup()
        await fake.stop()
    assert status == EXIT_ERROR
    err = capsys.readouterr().err
    assert f"node 2 of 3 {down} is not ready: not reachable" in err
    assert f"node 3 of 3 {sick} is not ready: /readyz answered HTTP 503" in err
    assert "node 1" not in err
    assert fake.rooms == {}  # nothing was set up


# -- several nodes, one state -------------------------------------------------------------------


class Node:
    """One more port in front of a fake's state, that can die: its listening socket closed and
    every connection it has cut (no close frame), as a node killed with SIGKILL; or refuse new
    WebSocket connections (503, as a node at its connection limit) and serve the rest."""

    def __init__(self, fake: BrokenServer) -> None:
        self.fake = fake
        #: The WebSocket connections it took.
        self.transports: set[asyncio.BaseTransport] = set()
        self.refusing = False
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> str:
        @web.middleware
        async def track(request: web.Request, handler: Any) -> web.StreamResponse:
            if request.path.startswith("/ws/") and self.refusing:
                return web.Response(status=503, text="full")
            if request.path.startswith("/ws/") and request.transport is not None:
                self.transports.add(request.transport)
            response: web.StreamResponse = await handler(request)
            return response

        fake = self.fake
        app = web.Application(middlewares=[track, broken_server._errors])
        app.router.add_get("/readyz", fake.readyz)
        app.router.add_post("/api/rooms", fake.create_room)
        app.router.add_post("/api/rooms/{room}/products", fake.create_product)
        app.router.add_post("/api/rooms/{room}/sales", fake.open_sale)
        app.router.add_get("/api/sales/{sale}", fake.get_sale)
        app.router.add_get("/api/sales/{sale}/orders", fake.sale_orders)
        app.router.add_get("/ws/rooms/{room}", fake.websocket)
        self.runner = web.AppRunner(app, shutdown_timeout=1)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
        return self.url

    def open_connections(self) -> int:
        return sum(1 for t in self.transports if not t.is_closing())

    async def kill(self) -> None:
        assert self.runner is not None
        for site in list(self.runner.sites):
            await site.stop()
        for transport in self.transports:
            transport.abort()  # type: ignore[attr-defined]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def harness(urls: list[str], tmp_path: Path, *flags: str) -> asyncio.subprocess.Process:
    url_flags = [part for url in urls for part in ("--url", url)]
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "loadtest", *url_flags, "--secret", SECRET, "rush", "--buyers", "120",
        "--stock", "40", "--rush-rate", "200", "--hold", "2", "--ramp", "1", "--duration", "8",
        "--workers", "2", "--json", str(tmp_path / "result.json"), "--quiet", *flags,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip


async def finish(process: asyncio.subprocess.Process, tmp_path: Path) -> tuple[int, str, dict[str, Any]]:
    try:
        output, _ = await asyncio.wait_for(process.communicate(), 75)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    text = output.decode(errors="replace")
    assert process.returncode is not None
    assert process.returncode != EXIT_ERROR, f"the harness could not run:\n{text}"
    return process.returncode, text, json.loads((tmp_path / "result.json").read_text())


async def three_nodes(mode: str) -> tuple[BrokenServer, list[Node]]:
    fake = BrokenServer(SECRET, mode)
    await fake.start()  # its own port is not used: its sweeper expires holds for every node
    cluster = [Node(fake) for _ in range(3)]
    for node in cluster:
        await node.start()
    return fake, cluster


@pytest.mark.harness
@pytest.mark.timeout(90)
async def test_a_rush_over_three_nodes_is_spread_and_audited_once(tmp_path: Path) -> None:
    fake, cluster = await three_nodes("honest")
    urls = [n.url for n in cluster]
    try:
        status, output, result = await finish(await harness(urls, tmp_path), tmp_path)
    finally:
        for node in cluster:
            await node.stop()
        await fake.stop()
    assert status == 0, output
    assert result["target"]["urls"] == urls and result["target"]["url"] == urls[0]
    assert result["audit"]["passed"] and result["audit"]["read_from"] == urls[0]
    plan = Plan(scenarios=("rush",), buyers=120, stock=40, rush_rate=200, hold_s=2, ramp_s=1, duration_s=8)
    given = nodes.assignment(plan, urls)
    for node, expected in zip(result["nodes"], given, strict=True):
        assert {k: node[k] for k in expected} == expected
        assert node["buyers"] == node["connected"] == node["open_at_end"] == 40
        assert node["lost"] == node["reconnected"] == node["lost_orders"] == 0
        assert node["errors"] == {}
    # Every node's buyers bought, and what they heard is what the one ledger has.
    sale = result["audit"]["sales"][0]
    assert all(node["acked_orders"] > 0 for node in result["nodes"])
    heard = sum(node["acked_orders"] for node in result["nodes"])
    assert heard == sale["acked_orders"] == sale["ledger_orders"]
    assert "3 nodes" in output and urls[2] in output


@pytest.mark.harness
@pytest.mark.timeout(90)
async def test_lost_orders_are_found_across_nodes_and_told_by_node(tmp_path: Path) -> None:
    fake, cluster = await three_nodes("drop")  # every third confirmed order never reaches the ledger
    try:
        status, _, result = await finish(await harness([n.url for n in cluster], tmp_path), tmp_path)
    finally:
        for node in cluster:
            await node.stop()
        await fake.stop()
    assert status == EXIT_FAILED
    audit = result["audit"]
    assert audit["lost_orders"] == fake.bugs["dropped_orders"] > 0
    assert sum(node["lost_orders"] for node in result["nodes"]) == audit["lost_orders"]


@pytest.mark.harness
@pytest.mark.timeout(90)
async def test_a_node_that_dies_mid_run_costs_its_connections_and_the_audit_reads_another(
    tmp_path: Path,
) -> None:
    fake, cluster = await three_nodes("honest")
    urls = [n.url for n in cluster]
    first = cluster[0]  # the setup's node, and the one the audit would read
    try:
        process = await harness(urls, tmp_path, "--allow-shortfall")
        # Once every node's 40 buyers are in (the ramp's end; waiting for the first node's
        # alone let a late buyer of the next one meet its refusal), the first node dies, and the
        # next one is full: it keeps its own connections and answers /readyz, but lets no one
        # else in.
        await until(lambda: all(node.open_connections() == 40 for node in cluster), timeout_s=30)
        cluster[1].refusing = True
        await first.kill()
        status, output, result = await finish(process, tmp_path)
    finally:
        for node in cluster:
            await node.stop()
        await fake.stop()
    assert status == 0, output
    audit = result["audit"]
    assert audit["passed"], audit
    assert audit["read_from"] == urls[1]  # the first node is gone: the next one that is ready
    dead, full, last = result["nodes"]
    assert dead["connected"] == dead["lost"] == 40 and dead["open_at_end"] == 0
    assert dead["errors"]["close:dropped"] == 40
    # Its buyers tried the next node of the list, were refused there, and came back on the
    # one after; the full node's own buyers were not disturbed.
    assert full["errors"] == {"reconnect:http_503": 40}
    assert full["reconnected"] == full["lost"] == 0 and full["open_at_end"] == 40
    assert last["reconnected"] == 40 and last["lost"] == 0 and last["open_at_end"] == 80
    assert result["counts"]["reconnects"] == 40
    assert result["errors"]["close:dropped"] == result["errors"]["reconnect:http_503"] == 40


# -- the report ---------------------------------------------------------------------------------


def test_the_report_has_a_row_per_node_and_survives_odd_entries(tmp_path: Path) -> None:
    from test_loadtest_report import make_result

    from loadtest.report import write_report

    result = make_result()
    plan = Plan(scenarios=("rush",), buyers=10, duration_s=30)
    result["target"]["urls"] = ["http://127.0.0.1:1", "http://127.0.0.1:2"]
    result["nodes"] = nodes.assignment(plan, result["target"]["urls"])
    for node in result["nodes"]:
        node.update(connected=5, lost=0, reconnected=0, open_at_end=5, acked_orders=2, lost_orders=0)
        node["errors"] = {}
    result["nodes"][1].update(lost=5, open_at_end=0, errors={"close:dropped": 5, "<script>": 1})
    html = write_report(result, tmp_path / "two").read_text()
    assert "<h2>Nodes</h2>" in html and "2 nodes: http://127.0.0.1:1, http://127.0.0.1:2" in html
    assert "http://127.0.0.1:2</td>" in html and "close:dropped 5, &lt;script&gt; 1" in html
    # Entries of the wrong shape, or no nodes at all (a result from before), are no error.
    result["nodes"] = [1, {"url": 3, "errors": [1]}, None]
    assert "<h2>Nodes</h2>" in write_report(result, tmp_path / "odd").read_text()
    del result["nodes"]
    assert "<h2>Nodes</h2>" not in write_report(result, tmp_path / "none").read_text()


# -- the audit after a node died ----------------------------------------------------------------


async def test_the_audit_reads_again_while_the_ledger_catches_up_after_a_node_died() -> None:
    """A dead node's confirmed orders reach the ledger late (another node's consumer claims
    them): the audit reads again, up to its bound, rather than call them lost; without the
    wait (no node died) the first read is judged."""
    from loadtest.api import Api
    from loadtest.progress import Progress
    from loadtest.run import Run, Target

    orders = [{"order_id": f"o{i}", "user_id": f"b{i}", "quantity": 1} for i in range(3)]
    reads = Counter[str]()

    async def sale(_: web.Request) -> web.Response:
        reads["sale"] += 1
        body = {"id": "s1", "total": 10, "sold": 3, "available": 7, "held": 0, "per_user_limit": 2}
        return web.json_response(body)

    async def ledger(_: web.Request) -> web.Response:
        reads["ledger"] += 1  # one more order written each time it is read
        return web.json_response({"orders": orders[: reads["ledger"]], "more": False, "cursor": "x"})

    app = web.Application()
    app.router.add_get("/api/sales/s1", sale)
    app.router.add_get("/api/sales/s1/orders", ledger)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    plan = Plan(scenarios=("rush",), buyers=3, duration_s=30)
    run = Run(plan, Target(urls=(url,)), Progress(plan.duration_s, quiet=True))
    api = Api(url, "token")
    heard = [{**o, "sale_id": "s1"} for o in orders]
    try:
        at_once, _ = await run._read_sale(api, "s1", heard, settle_s=0)
        assert at_once["lost_orders"] == 2 and reads["ledger"] == 1
        reads.clear()
        settled, ledger_read = await run._read_sale(api, "s1", heard, settle_s=30)
    finally:
        await api.close()
        await runner.cleanup()
    assert reads["ledger"] == 3 and len(ledger_read) == 3
    assert settled["lost_orders"] == 0 and settled["sold"] == settled["ledger_units"] == 3
    assert any("caught up" in note for note in settled["notes"])
