"""Node names: defaults, validation, the claim in Redis (a duplicate refused, freed after a kill,
lost and taken back), and the name where it is used (presence, ledger consumer, logs, metrics,
workers)."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from conftest import SECRET, bearer
from nodes import LiveNodes
from polling import until
from test_cli import ENV, free_port
from wsclient import Client

from inventory.keys import SaleKeys
from live.auth import ANY_ROOM, Role
from live.logs import configure
from live.nodes import CLAIM_TTL_MS, NodeClaim, NodeNameTaken, claim_key, default_node_name, worker_name
from live.redis_client import connect
from live.server import running
from live.settings import Settings, SettingsError


def test_the_default_name_is_host_and_pid() -> None:
    name = Settings().node_name
    assert name == default_node_name()
    assert name.endswith(f"-{os.getpid()}")
    host = socket.gethostname().split(".")[0]
    assert name.startswith(re.sub(r"[^A-Za-z0-9._-]", "-", host)[:20])
    assert re.fullmatch(r"[A-Za-z0-9._-]{1,64}", name)


@pytest.mark.parametrize("bad", ["", "has space", "a/b", "é", "n" * 65, "x{y}", "a\nb"])
def test_a_bad_name_is_a_settings_error(bad: str) -> None:
    with pytest.raises(SettingsError, match="node_name must be 1-64 characters"):
        Settings(node_name=bad)


@pytest.mark.parametrize("good", ["a", "node-1", "eu.west_2-b", "N" * 64])
def test_good_names(good: str) -> None:
    assert Settings(node_name=good).node_name == good


def test_the_name_from_env_and_flag() -> None:
    assert Settings.load(environ={"LIVE_NODE_NAME": "from-env"}).node_name == "from-env"
    flagged = Settings.load(flags={"node_name": "from-flag"}, environ={"LIVE_NODE_NAME": "from-env"})
    assert flagged.node_name == "from-flag"
    assert worker_name("edge-1", 3) == "edge-1-w3"


def test_a_name_too_long_for_its_workers_is_refused_before_anything_starts(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "live",
            "serve",
            "--data-dir",
            str(tmp_path / "d"),
            "--workers",
            "12",
            "--node-name",
            "n" * 62,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=ENV,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"live: error: node_name {'n' * 62} is too long for 12 workers: "
        f"{'n' * 62}-w11 would pass 64 characters"
    ]
    assert not (tmp_path / "d" / "redis").exists()  # refused before the data dir or Redis


def test_a_bad_name_on_the_command_line_exits_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "live", "serve", "--data-dir", str(tmp_path / "d"), "--node-name", "no way"],
        capture_output=True,
        text=True,
        timeout=60,
        env=ENV,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "live: error: node_name must be 1-64 characters of letters, digits and ._- (got 'no way')"
    ]


def test_every_log_line_names_the_node() -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        for fmt in ("json", "text"):
            out = io.StringIO()
            configure("info", fmt, out, node="edge-7")
            logging.getLogger("live.test").info("hello", extra={"room": "r"})
            # a record naming a Redis node under "node" keeps it, as redis_node
            logging.getLogger("live.test").info("moved", extra={"node": "127.0.0.1:7001"})
            first, second = out.getvalue().strip().splitlines()
            if fmt == "json":
                assert json.loads(first)["node"] == "edge-7"
                assert json.loads(second)["node"] == "edge-7"
                assert json.loads(second)["redis_node"] == "127.0.0.1:7001"
            else:
                assert first.endswith("INFO live.test hello node=edge-7 room=r")
                assert second.endswith("INFO live.test moved node=edge-7 redis_node=127.0.0.1:7001")
    finally:
        root.handlers[:], root.level = handlers, level


async def test_a_second_node_with_a_running_nodes_name_is_refused(settings: Settings, tmp_path: Path) -> None:
    first = dataclasses.replace(settings, node_name="twin")
    second = dataclasses.replace(first, data_dir=tmp_path / "other")
    async with running(first) as server:
        with pytest.raises(NodeNameTaken) as refused:
            async with running(second):
                raise AssertionError("the second node must not start")
        assert re.fullmatch(
            r"node name twin is held by a running node; pick another with --node-name or wait \d s",
            str(refused.value),
        )
        # the refused node did not release (or touch) the first one's claim
        async with aiohttp.ClientSession(base_url=server.url) as http, http.get("/readyz") as resp:
            assert resp.status == 200
        assert server.services.node is not None and not server.services.node.lost
    # a clean shutdown frees the name at once
    async with running(second) as again:
        assert again.services.hub.node_id == "twin"


async def test_the_name_is_the_presence_key_and_the_ledger_consumer(settings: Settings) -> None:
    settings = dataclasses.replace(settings, node_name="edge-a", sweep_interval_ms=20)
    async with running(settings) as server, aiohttp.ClientSession(base_url=server.url) as http:
        services = server.services
        assert services.hub.node_id == "edge-a"
        assert services.ledger.config.consumer == "edge-a"
        host = bearer(services.auth.mint("host1", ANY_ROOM, Role.HOST, 600))
        async with http.post("/api/rooms", json={"id": "shop", "title": "Shop"}, headers=host) as resp:
            assert resp.status == 201, await resp.text()
        async with http.post(
            "/api/rooms/shop/products", json={"title": "tea", "price_cents": 100}, headers=host
        ) as resp:
            product = await resp.json()
        async with http.post(
            "/api/rooms/shop/sales", json={"product_id": product["id"], "stock": 3}, headers=host
        ) as resp:
            sale = await resp.json()
        buyer = await Client.connect(http, "shop", services.auth.mint("ann", "shop", Role.VIEWER, 600))
        await buyer.send({"type": "reserve", "rid": "r1", "sale_id": sale["id"], "quantity": 1})
        held = await buyer.recv_until(lambda m: m.get("rid") == "r1")
        await buyer.send({"type": "confirm", "rid": "c1", "hold_id": held["hold_id"]})
        confirmed = await buyer.recv_until(lambda m: m.get("rid") == "c1")
        assert confirmed["type"] == "ack", confirmed

        redis = services.redis
        presence = f"{settings.key_prefix}:room:{{shop}}:presence"
        await until(lambda: redis.hexists(presence, "edge-a"))
        stream = SaleKeys(settings.key_prefix, sale["id"]).stream

        async def consumed() -> bool:
            consumers = await redis.xinfo_consumers(stream, "ledger")
            return [c["name"] for c in consumers] == [b"edge-a"]

        await until(consumed)
        async with http.get("/metrics") as resp:
            assert 'live_node_info{node="edge-a"} 1.0' in await resp.text()
        await buyer.close()


async def test_a_node_that_loses_its_name_says_so_and_is_unready_until_it_takes_it_back(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    settings = dataclasses.replace(settings, node_name="edge-b")
    key = claim_key(settings.key_prefix, "edge-b")
    async with running(settings) as server, aiohttp.ClientSession(base_url=server.url) as http:
        redis = server.services.redis
        claim = server.services.node
        assert claim is not None
        await redis.set(key, "someone-else", px=60_000)  # as if another node took the name

        async def unready() -> bool:
            async with http.get("/readyz") as resp:
                body = await resp.json()
                return resp.status == 503 and body.get("node") == (
                    "error: node name edge-b is held by another node"
                )

        await until(unready, timeout_s=CLAIM_TTL_MS / 1000 * 2)
        assert any("NODE NAME LOST" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)

        await redis.delete(key)  # the other holder went away: the next renewal takes it back

        async def ready() -> bool:
            async with http.get("/readyz") as resp:
                return resp.status == 200

        await until(ready, timeout_s=CLAIM_TTL_MS / 1000 * 2)
        assert (await redis.get(key)) == claim.token.encode()
        await redis.set(key, "someone-else", px=60_000)
    # the shutdown deletes the claim only if it is its own: the other holder keeps it
    check = connect(settings.redis_url or "")
    try:
        assert await check.get(key) == b"someone-else"
    finally:
        await check.aclose()


async def test_release_and_renewal_check_the_token(redis_url: str) -> None:
    redis = connect(redis_url)
    prefix = f"t{uuid.uuid4().hex[:12]}"
    try:
        mine = NodeClaim(redis, prefix, "n1", ttl_ms=2000)
        await mine.claim()
        ttl = await redis.pttl(mine.key)
        assert 0 < ttl <= 2000
        other = NodeClaim(redis, prefix, "n1", ttl_ms=2000)
        with pytest.raises(NodeNameTaken, match="wait 2 s"):
            await other.claim()
        await other.release()  # never held: nothing to give back
        assert await redis.get(mine.key) == mine.token.encode()
        # the same token (a worker's replacement) takes the name at once
        successor = NodeClaim(redis, prefix, "n1", token=mine.token, ttl_ms=2000)
        await successor.claim()
        assert await mine.renew() is True
        await redis.set(mine.key, other.token, px=2000)
        assert await mine.renew() is False and mine.lost
        await mine.release()
        assert await redis.get(mine.key) == other.token.encode()
    finally:
        await redis.aclose()


class _Node:
    """`live serve` in its own process on the test Redis."""

    def __init__(self, data_dir: Path, redis_url: str, prefix: str, name: str, *extra: str) -> None:
        self.port = free_port()
        env = {**ENV, "LIVE_SECRET": SECRET, "LIVE_KEY_PREFIX": prefix}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "live",
                "serve",
                "--data-dir",
                str(data_dir),
                "--port",
                str(self.port),
                "--redis-url",
                redis_url,
                "--node-name",
                name,
                *extra,
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    async def ready(self, timeout_s: float = 60.0) -> None:
        async with aiohttp.ClientSession() as http:

            async def answers() -> bool:
                assert self.proc.poll() is None, self.proc.communicate()[1]
                try:
                    async with http.get(f"http://127.0.0.1:{self.port}/readyz") as resp:
                        return resp.status == 200
                except aiohttp.ClientError:
                    return False

            await until(answers, timeout_s=timeout_s, every_s=0.1)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.kill()
        return self.proc.communicate(timeout=30)[1]


@pytest.fixture
def nodes() -> Iterator[list[_Node]]:
    started: list[_Node] = []
    yield started
    for node in started:
        node.stop()


async def test_a_killed_node_frees_its_name_once_the_ttl_passes(
    settings: Settings, tmp_path: Path, nodes: list[_Node]
) -> None:
    assert settings.redis_url is not None
    node = _Node(tmp_path / "n1", settings.redis_url, settings.key_prefix, "edge-c")
    nodes.append(node)
    await node.ready()
    node.proc.send_signal(signal.SIGKILL)
    node.proc.wait(timeout=30)
    killed_at = time.monotonic()

    # at once: still held (nobody released it), and a new process is told how long to wait
    again = subprocess.run(
        [
            sys.executable,
            "-m",
            "live",
            "serve",
            "--data-dir",
            str(tmp_path / "n2"),
            "--port",
            str(free_port()),
            "--redis-url",
            settings.redis_url,
            "--node-name",
            "edge-c",
        ],
        env={**ENV, "LIVE_SECRET": SECRET, "LIVE_KEY_PREFIX": settings.key_prefix},
        capture_output=True,
        text=True,
        timeout=60,
    )
    if time.monotonic() - killed_at < CLAIM_TTL_MS / 1000 * 0.8:  # a loaded box may be slower
        assert again.returncode == 1, again.stderr
        assert re.fullmatch(
            r"live: error: node name edge-c is held by a running node; "
            r"pick another with --node-name or wait \d s",
            again.stderr.strip().splitlines()[-1],
        )

    redis = connect(settings.redis_url)
    try:
        key = claim_key(settings.key_prefix, "edge-c")

        async def freed() -> bool:
            return not await redis.exists(key)

        await until(freed, timeout_s=CLAIM_TTL_MS / 1000 * 3, every_s=0.1)
    finally:
        await redis.aclose()
    async with running(dataclasses.replace(settings, node_name="edge-c", data_dir=tmp_path / "n3")) as srv:
        assert srv.services.hub.node_id == "edge-c"


async def test_workers_are_named_after_the_node_and_each_claims_its_name(
    settings: Settings, tmp_path: Path
) -> None:
    assert settings.redis_url is not None
    group = LiveNodes(tmp_path / "nodes", settings.redis_url, settings.key_prefix, settings={"workers": 2})
    node = group.add("edge-d")
    redis = connect(settings.redis_url)
    try:
        node.start()
        await node.ready()
        names = ["edge-d", "edge-d-w0", "edge-d-w1"]
        keys = [claim_key(settings.key_prefix, n) for n in names]

        async def all_claimed() -> bool:
            return int(await redis.exists(*keys)) == len(keys)

        await until(all_claimed, timeout_s=60, every_s=0.1)
        tokens = [await redis.get(k) for k in keys]
        assert len(set(tokens)) == 3  # each process its own claim
        # a node started with a worker's name is refused too
        with pytest.raises(NodeNameTaken):
            async with running(dataclasses.replace(settings, node_name="edge-d-w1", data_dir=tmp_path / "x")):
                raise AssertionError("must not start")

        # a worker that dies is replaced under its name at once: the supervisor hands the
        # replacement the same token, so it need not wait for the dead one's claim to expire
        started = re.search(r"worker started node=edge-d pid=(\d+) worker=edge-d-w0", node.log())
        assert started, node.log_tail()
        os.kill(int(started.group(1)), signal.SIGKILL)
        await until(lambda: node.log().count("node name claimed node=edge-d-w0") == 2, timeout_s=60)
        assert await redis.get(keys[1]) == tokens[1]
        assert "node name edge-d-w0 is held" not in node.log()
        await node.ready()

        assert await node.terminate() == 0
        log = node.log()
        assert "node=edge-d-w0" in log and "node=edge-d-w1" in log
        assert int(await redis.exists(*keys)) == 0  # all released at shutdown
    finally:
        await redis.aclose()
        group.stop_all()
