"""`live-loadtest --url A --url B --url C rush` against three real `live serve` nodes on a
3-master Valkey cluster and one PostgreSQL (issue 13's done criterion), and the same with the
first node SIGKILLed mid-run: its buyers come back on the next node, the audit reads the one
ledger from a node still alive and finds every confirmed order in it. And a whole big night
over two nodes on one (non-cluster) Valkey and PostgreSQL: the audience, the storms, the host,
the rush and the group buy spread over both, every comment and host message accounted for on
every node.

Slow (processes, a cluster, a database): ``pytest -m scaleout`` runs them (.ci/run does).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cluster import ValkeyCluster
from nodes import SECRET, LiveNode, LiveNodes
from polling import until

from loadtest import nodes as spread
from loadtest.plan import Plan
from loadtest.spawn import LOAD_SETTINGS

pytestmark = [pytest.mark.scaleout, pytest.mark.timeout(360)]

#: The nodes' abuse guards raised for load, as --spawn raises them (every buyer is 127.0.0.1).
NODE_SETTINGS = {name.removeprefix("LIVE_").lower(): value for name, value in LOAD_SETTINGS.items()}
BUYERS, STOCK = 150, 60
#: A short rush: 150 buyers over three nodes, at 150 reserves a second from t = 5 s.
RUSH = [
    "rush", "--buyers", str(BUYERS), "--stock", str(STOCK), "--rush-rate", "150", "--hold", "3",
    "--ramp", "3", "--duration", "16", "--workers", "2",
]  # fmt: skip
PLAN = Plan(scenarios=("rush",), buyers=BUYERS, stock=STOCK, rush_rate=150, hold_s=3, ramp_s=3, duration_s=16)


@pytest.fixture
async def cluster_nodes(
    tmp_path: Path, valkey_cluster: ValkeyCluster, database_url: str
) -> AsyncIterator[LiveNodes]:
    group = LiveNodes(
        tmp_path / "nodes", valkey_cluster.url, f"lt{uuid.uuid4().hex[:10]}", database_url, NODE_SETTINGS
    )
    try:
        yield group
    finally:
        group.stop_all()


def harness_env(group: LiveNodes) -> dict[str, str]:
    """The harness's environment: the shared engines for the `live reconcile` it runs after the
    rush (from a data dir of its own, as on any machine), and no coverage.py hand-down (the
    nodes are measured; the harness's modules are by the faster runs)."""
    handed_down = ("COVERAGE_PROCESS_CONFIG", "COVERAGE_PROCESS_START")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVE_") and k not in handed_down}
    assert group.database_url is not None
    env.update(
        LIVE_REDIS_URL=group.redis_url, LIVE_DATABASE_URL=group.database_url, LIVE_KEY_PREFIX=group.key_prefix
    )
    return env


async def run_harness(
    group: LiveNodes, tmp_path: Path, *flags: str, load: list[str] = RUSH
) -> tuple[asyncio.subprocess.Process, list[str], Path]:
    urls = [node.url for node in group.nodes]
    result = tmp_path / "result.json"
    command = [
        sys.executable, "-m", "loadtest", *(p for url in urls for p in ("--url", url)), "--secret", SECRET,
        "--data-dir", str(tmp_path / "reconcile"), *load, "--json", str(result), "--quiet", *flags,
    ]  # fmt: skip
    print("$", " ".join(command))  # the command line, for the record (shown with -s or on failure)
    process = await asyncio.create_subprocess_exec(
        *command, env=harness_env(group), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    return process, urls, result


async def finish(process: asyncio.subprocess.Process, result: Path) -> tuple[int, str, dict[str, Any]]:
    try:
        output, _ = await asyncio.wait_for(process.communicate(), 240)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    text = output.decode(errors="replace")
    print(text)
    assert process.returncode is not None
    assert result.exists(), f"no result (exit {process.returncode}):\n{text}"
    return process.returncode, text, json.loads(result.read_text())


def check_sale(result: dict[str, Any]) -> dict[str, Any]:
    """The rush's sale as audited: sold within the stock, what every buyer on every node heard is
    what the one ledger has, and `live reconcile` (on the shared engines) clean."""
    audit = result["audit"]
    assert audit["passed"], audit
    (sale,) = audit["sales"]
    assert 0 < sale["sold"] <= STOCK and sale["sold"] == sale["ledger_units"]
    assert sale["lost_orders"] == sale["duplicate_orders"] == sale["over_limit"] == 0
    assert sum(node["acked_orders"] for node in result["nodes"]) == sale["acked_orders"] > 0
    reconcile = audit["reconcile"]
    assert reconcile["ran"] and reconcile["clean"], reconcile
    return dict(sale)


async def test_a_rush_through_three_nodes_on_a_cluster_and_postgresql_passes_its_audit(
    cluster_nodes: LiveNodes, tmp_path: Path
) -> None:
    await cluster_nodes.start(3)
    process, urls, result_file = await run_harness(cluster_nodes, tmp_path)
    status, output, result = await finish(process, result_file)

    assert status == 0, output
    sale = check_sale(result)
    assert result["audit"]["read_from"] == urls[0]
    assert result["errors"] == {}, result["errors"]
    assert result["load"]["shortfall"] is False, result["load"]
    for node, given in zip(result["nodes"], spread.assignment(PLAN, urls), strict=True):
        assert node["url"] == given["url"]
        assert node["buyers"] == node["connected"] == node["open_at_end"] == BUYERS // 3
        assert node["lost"] == node["reconnected"] == node["lost_orders"] == 0 and node["errors"] == {}
        assert node["acked_orders"] > 0  # every node took confirmed orders into the one ledger
    print(
        f"figures: sold {sale['sold']} of {sale['total']}, {sale['ledger_orders']} orders in the ledger, "
        f"reserve p99 {result['metrics']['reserve']['p99_ms']} ms, "
        f"confirm p99 {result['metrics']['confirm']['p99_ms']} ms, outcomes {result['outcomes']['reserve']}"
    )


async def has_connections(node: LiveNode, count: int) -> bool:
    """Whether the node has ``count`` open WebSocket connections, by its /metrics."""
    async with aiohttp.ClientSession() as http, http.get(node.url + "/metrics") as response:
        text = await response.text()
    for line in text.splitlines():
        if line.startswith("live_connections "):
            return int(float(line.split()[1])) == count
    raise AssertionError(f"no live_connections in {node.name}'s /metrics")


async def test_the_first_node_killed_mid_run_costs_its_connections_and_no_order(
    cluster_nodes: LiveNodes, tmp_path: Path
) -> None:
    first, _, _ = await cluster_nodes.start(3)
    process, urls, result_file = await run_harness(cluster_nodes, tmp_path, "--allow-shortfall")
    # Once its buyers are in (before the rush), the first node, where the room was set up, dies.
    await until(lambda: has_connections(first, BUYERS // 3), timeout_s=120)
    first.kill()
    status, output, result = await finish(process, result_file)

    assert status == 0, output
    check_sale(result)
    assert result["audit"]["read_from"] == urls[1]
    dead, nxt, last = result["nodes"]
    assert dead["connected"] == dead["lost"] == BUYERS // 3 and dead["open_at_end"] == 0
    assert nxt["reconnected"] == BUYERS // 3 and nxt["open_at_end"] == 2 * BUYERS // 3
    assert last["lost"] == last["reconnected"] == 0 and last["open_at_end"] == BUYERS // 3
    assert result["counts"]["reconnects"] == BUYERS // 3


async def test_a_big_night_over_two_nodes_on_one_valkey_and_postgresql_is_accounted_on_both(
    tmp_path: Path, redis_url: str, database_url: str
) -> None:
    prefix = f"lt{uuid.uuid4().hex[:10]}"
    group = LiveNodes(tmp_path / "nodes", redis_url, prefix, database_url, NODE_SETTINGS)
    night = [
        "big-night", "--duration", "14", "--ramp", "2", "--viewers", "80", "--chat-rate", "20",
        "--like-rate", "50", "--host-rate", "2", "--buyers", "60", "--stock", "30", "--rush-rate", "120",
        "--hold", "3", "--teams", "4", "--team-deadline", "4", "--workers", "2",
        "--draw-entrants", "20", "--bidders", "10", "--bids", "60", "--voters", "20", "--qna-users", "10",
        "--askers", "4", "--upvotes", "20",
    ]  # fmt: skip
    try:
        await group.start(2)
        process, _, result_file = await run_harness(group, tmp_path, load=night)
        status, output, result = await finish(process, result_file)
    finally:
        group.stop_all()

    assert status == 0, output
    audit = result["audit"]
    assert audit["passed"], audit
    assert audit["reconcile"]["clean"], audit["reconcile"]
    assert result["errors"] == {}, result["errors"]
    connections = 80 + 60 + 4 * 3 + 60 + 1  # (the tools' users: 20 entrants, 10 bidders, 20 voters, 10 Q&A)
    first, second = result["nodes"]
    assert first["connections"] + second["connections"] == connections
    assert first["host"] and not second["host"]
    assert (first["viewers"], second["viewers"]) == (40, 40)
    assert (first["buyers"], second["buyers"]) == (30, 30)
    assert (first["team_members"], second["team_members"]) == (6, 6)  # each team spans both nodes
    assert (first["tool_users"], second["tool_users"]) == (30, 30)
    for node in (first, second):
        assert node["connected"] == node["open_at_end"] == node["connections"]
    # Every connection on either node got every host message, and every observer (half of
    # them on each node) accounts for every comment sent through either node.
    assert result["counts"]["host_deliveries"] == result["counts"]["host_messages"] * (connections - 1)
    chat = audit["chat"]
    assert chat["observers"] == 20 and chat["acked_comments"] > 0 and chat["missing"] == chat["extra"] == 0
    assert {s["sale_id"] for s in audit["sales"]} and all(s["acked_orders"] > 0 for s in audit["sales"])
