"""A multi-node harness: N `live serve` processes as separate machines would run them.

Each node has its own data dir, port and ``--node-name``; all share one Redis (a cluster's seed
URL), one store of record (``--database-url``), one LIVE_SECRET and one key prefix. Logs go to
a file per node (never a pipe a busy node could fill); ``LiveNodes.stop_all`` prints their tails
so a failing test shows them (pytest shows a test's captured output only when it fails).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from live.auth import ANY_ROOM, Auth, Role

#: No LIVE_* setting leaks in from the environment of the test run.
BASE_ENV = {k: v for k, v in os.environ.items() if not k.startswith("LIVE_")}
SECRET = "scaleout-secret-" + "s" * 40


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveNode:
    """One `live serve` process; ``start`` again after a kill restarts it on its port and name."""

    def __init__(self, root: Path, name: str, argv: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.port = free_port()
        self.data_dir = root / name
        self.log_path = root / f"{name}.log"
        self._argv = argv
        self._env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} is running"
        self.starts += 1
        command = [
            sys.executable,
            "-m",
            "live",
            "serve",
            "--data-dir",
            str(self.data_dir),
            "--port",
            str(self.port),
            "--node-name",
            self.name,
            *self._argv,
        ]
        with self.log_path.open("ab") as log:
            log.write(f"--- start {self.starts}: {' '.join(command)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                command, env=self._env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def ready(self, timeout_s: float = 90.0) -> None:
        """Until /readyz answers 200; fails at once (with the log) if the process exits."""
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession() as http:
            while True:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise AssertionError(
                        f"node {self.name} exited with {self.proc.returncode}:\n{self.log_tail(30)}"
                    )
                try:
                    async with http.get(self.url + "/readyz", timeout=aiohttp.ClientTimeout(total=3)) as resp:
                        if resp.status == 200:
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"node {self.name} not ready in {timeout_s} s:\n{self.log_tail(30)}")
                await asyncio.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL, as a machine that loses power: no shutdown, nothing flushed or released."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    async def terminate(self, timeout_s: float = 60.0) -> int:
        """SIGTERM and wait for the graceful exit; returns its exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait(timeout=30)
                raise AssertionError(f"node {self.name} did not stop in {timeout_s} s")
            await asyncio.sleep(0.05)
        return int(self.proc.returncode)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class LiveNodes:
    """The nodes of one test, sharing one Redis and one store of record."""

    def __init__(
        self,
        root: Path,
        redis_url: str,
        key_prefix: str,
        database_url: str | None = None,
        settings: dict[str, Any] | None = None,
    ) -> None:
        """``settings``: more settings for every node, as LIVE_* variables (``{"sweep_interval_ms": 50}``)."""
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.redis_url = redis_url
        self.database_url = database_url
        self.key_prefix = key_prefix
        self.env = {**BASE_ENV, "LIVE_SECRET": SECRET, "LIVE_KEY_PREFIX": key_prefix}
        for name, value in (settings or {}).items():
            self.env["LIVE_" + name.upper()] = str(value).lower() if isinstance(value, bool) else str(value)
        self.argv = ["--redis-url", redis_url, "--log-level", "info"]
        if database_url is not None:
            self.argv += ["--database-url", database_url]
        self.nodes: list[LiveNode] = []
        self.auth = Auth.hs256(SECRET)

    def add(self, name: str) -> LiveNode:
        node = LiveNode(self.root, name, self.argv, self.env)
        self.nodes.append(node)
        return node

    async def start(self, count: int, prefix: str = "node") -> list[LiveNode]:
        """Start ``count`` nodes at once and wait until each is ready."""
        started = [self.add(f"{prefix}-{i}") for i in range(len(self.nodes), len(self.nodes) + count)]
        for node in started:
            node.start()
        await asyncio.gather(*(node.ready() for node in started))
        return started

    async def restart(self, node: LiveNode, attempts: int = 30) -> int:
        """Start a stopped node again under its name, as a process manager would: while the
        name is still claimed by its killed predecessor (until the claim's TTL passes) the node
        exits 1 saying so, and is started again a second later. Returns the refusals seen."""
        for refused in range(attempts):
            node.start()
            try:
                await node.ready()
                return refused
            except AssertionError:
                assert node.proc is not None
                if node.proc.poll() != 1 or "is held by a running node" not in node.log_tail(2):
                    raise
            await asyncio.sleep(1.0)
        raise AssertionError(f"node {node.name} refused its own name {attempts} times:\n{node.log_tail()}")

    def host_token(self) -> str:
        return self.auth.mint("host1", ANY_ROOM, Role.HOST, 3600)

    def viewer_token(self, user: str, room: str) -> str:
        return self.auth.mint(user, room, Role.VIEWER, 3600)

    def reconcile(self, *extra: str) -> subprocess.CompletedProcess[str]:
        """`live reconcile` from a data dir of its own (as on any machine), on the shared engines."""
        command = [
            sys.executable,
            "-m",
            "live",
            "reconcile",
            "--data-dir",
            str(self.root / "reconcile"),
            "--redis-url",
            self.redis_url,
        ]
        if self.database_url is not None:
            command += ["--database-url", self.database_url]
        return subprocess.run([*command, *extra], env=self.env, capture_output=True, text=True, timeout=120)

    def stop_all(self) -> None:
        """Kill every node still running (SIGTERM, then SIGKILL after a grace) and print the
        tail of each log, shown when the test failed."""
        for node in self.nodes:
            if node.alive:
                assert node.proc is not None
                node.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for node in self.nodes:
            if node.proc is None:
                continue
            try:
                node.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait(timeout=30)
        for node in self.nodes:
            print(f"===== {node.name} (port {node.port}, started {node.starts}x) =====")
            print(node.log_tail(40))


class Api:
    """The host's HTTP API on one node (any node serves every room)."""

    def __init__(self, http: aiohttp.ClientSession, base_url: str, token: str) -> None:
        self.http = http
        self.base_url = base_url
        self.headers = {"Authorization": f"Bearer {token}"}

    async def call(
        self, method: str, path: str, body: dict[str, Any] | None = None, status: int = 200
    ) -> Any:
        async with self.http.request(
            method,
            self.base_url + path,
            json=body,
            headers=self.headers,
            timeout=aiohttp.ClientTimeout(total=30),
        ) as resp:
            text = await resp.text()
            assert resp.status == status, f"{method} {path}: {resp.status} {text}"
            return json.loads(text) if text else None

    async def orders(self, sale_id: str) -> list[dict[str, Any]]:
        """Every order of the sale in the ledger, through the paged listing."""
        out: list[dict[str, Any]] = []
        after: str | None = None
        for _ in range(1000):  # bounded: 10,000 orders a page
            query = f"?limit=10000&after={after}" if after else "?limit=10000"
            page = await self.call("GET", f"/api/sales/{sale_id}/orders{query}")
            out += page["orders"]
            after = page["cursor"]
            if not page["more"]:
                return out
        raise AssertionError("orders listing did not end")


class Viewer:
    """A viewer's WebSocket on one node, read by a background task into ``messages``; it can
    move to another node and resume with ``last_seq``, as a client after its node died."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        room: str,
        token: str,
        name: str,
        keep: Callable[[str], bool] | None = None,
    ) -> None:
        """``keep``: of the frames after the welcome, only those whose text it accepts are parsed
        and kept (a crowd of thousands need not parse every chat batch); ``last_seq`` then
        counts the kept frames only (for a viewer that does not resume)."""
        self.http = http
        self.keep = keep
        self.room = room
        self.token = token
        self.name = name
        self.messages: list[dict[str, Any]] = []
        self.welcomes: list[dict[str, Any]] = []
        self.last_seq = 0
        self.closed = asyncio.Event()
        #: The close code of each connection that ended (None: cut off without a close frame).
        self.close_codes: list[int | None] = []
        self.node: LiveNode | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._rid = 0

    async def connect(self, node: LiveNode, resume: bool = False) -> dict[str, Any]:
        params = {"token": self.token}
        if resume:
            params["last_seq"] = str(self.last_seq)
        self._ws = await self.http.ws_connect(
            f"{node.url}/ws/rooms/{self.room}", params=params, protocols=("live.v1.json",), heartbeat=None
        )
        welcome = json.loads((await self._ws.receive(timeout=30)).data)
        assert welcome["type"] == "welcome", welcome
        self.welcomes.append(welcome)
        if not resume or not welcome["resumed"]:
            self.last_seq = max(self.last_seq, int(welcome["seq"]))
        self.node = node
        self.closed.clear()
        self._reader = asyncio.create_task(self._read(self._ws))
        return dict(welcome)

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        try:
            async for msg in ws:
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    break
                if self.keep is not None and not self.keep(msg.data):
                    continue
                message = json.loads(msg.data)
                if "seq" in message and message["type"] != "batch":
                    self.last_seq = max(self.last_seq, int(message["seq"]))
                self.messages.append(message)
        finally:
            self.close_codes.append(ws.close_code)
            self.closed.set()

    async def send(self, message: dict[str, Any]) -> None:
        assert self._ws is not None
        await self._ws.send_str(json.dumps(message))

    async def ask(self, message: dict[str, Any], timeout_s: float = 30.0) -> dict[str, Any]:
        """Send a command with a fresh rid; its ack or error (ConnectionError if the node went
        away before answering)."""
        self._rid += 1
        rid = f"{self.name}-{self._rid}"
        start = len(self.messages)
        await self.send({**message, "rid": rid})
        deadline = time.monotonic() + timeout_s
        while True:
            reply = self.answer(rid, start)
            if reply is not None:
                return reply
            if self.closed.is_set():
                raise ConnectionError(f"{self.name}: connection closed before the answer to {rid}")
            assert time.monotonic() < deadline, f"{self.name}: no answer to {rid}"
            await asyncio.sleep(0.01)

    def answer(self, rid: str, start: int = 0) -> dict[str, Any] | None:
        """The ack or error of the command ``rid`` (among the messages from ``start``), if in."""
        for reply in self.messages[start:]:
            if reply.get("rid") == rid and reply["type"] in ("ack", "error"):
                return reply
        return None

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == kind]

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            await asyncio.wait([self._reader], timeout=5)
