"""Shared by the benchmarks: child processes, the live server, tokens, tables.

Everything here is Linux-only (it reads /proc, through the project's ``loadtest.procfs``). Child
processes are started through ``live.parent_death``, registered in a ``Children`` set, and
stopped (SIGTERM, then SIGKILL) when the benchmark ends, even on an error or Ctrl-C. The live
server is the load-test harness's ``loadtest.spawn.LocalServer``. The benchmarks need the
project installed in their environment (docs/benchmarks.md, "Running them").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, ClassVar, NoReturn

import aiohttp
import jwt
from loadtest.procfs import (
    cpu_model,
    cpu_seconds,
    exe_name,
    listening_pids,
    process_alive,
    rss_bytes,
    with_descendants,
)
from loadtest.spawn import LocalServer

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


def machine_facts() -> dict[str, str]:
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "load_avg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "commit": source_state(),
    }


def source_state() -> str:
    """The commit of the server code measured, with "+dirty" when live/ or gateway/ differ from it
    (someone may be editing them while a benchmark runs)."""
    import subprocess

    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "live", "gateway", "inventory"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def raise_nofile() -> None:
    """Use the hard limit of open files (the machine allows at most 20,000 per process)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def nofile_limit() -> int:
    import resource

    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


# -- child processes ------------------------------------------------------------------------------


class Children:
    """The processes a benchmark started; ``stop_all`` ends every one still running."""

    def __init__(self) -> None:
        self.procs: list[asyncio.subprocess.Process] = []
        #: Grandchildren we must make sure are gone (live's valkey-server), by pid.
        self.extra_pids: list[int] = []

    async def spawn(
        self,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        log: Path | None = None,
        pipes: bool = False,
        cwd: Path | None = None,
    ) -> asyncio.subprocess.Process:
        """Start ``argv`` under live.parent_death, which SIGKILLs it if the benchmark dies (even
        by SIGKILL): a load generator has nothing to flush. With ``pipes``, stdin/stdout are
        pipes (the client workers' control channel); otherwise stdout+stderr go to ``log``."""
        command = [sys.executable, "-m", "live.parent_death", "--signal=KILL", str(os.getpid()), *argv]
        out: Any = asyncio.subprocess.DEVNULL
        if log is not None:
            out = log.open("ab")
        try:
            proc = await asyncio.create_subprocess_exec(
                *command,
                env=env,
                cwd=cwd,
                stdin=asyncio.subprocess.PIPE if pipes else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE if pipes else out,
                stderr=out if log is not None else None,
                limit=16 * 1024 * 1024,  # worker reports are one (long) JSON line
                # not in the terminal's process group: a Ctrl-C reaches only the benchmark,
                # which then stops its children in order (live.parent_death covers a crash)
                start_new_session=True,
            )
        finally:
            if log is not None:
                out.close()
        self.procs.append(proc)
        return proc

    async def stop(self, proc: asyncio.subprocess.Process, timeout_s: float = 15.0) -> int | None:
        """SIGTERM, wait up to ``timeout_s``, then SIGKILL."""
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), timeout_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        with contextlib.suppress(ValueError):
            self.procs.remove(proc)
        return proc.returncode

    async def stop_all(self) -> None:
        await asyncio.gather(*(self.stop(p) for p in list(self.procs)), return_exceptions=True)
        for pid in self.extra_pids:
            await stop_pid(pid)
        self.extra_pids.clear()


async def stop_pid(pid: int, timeout_s: float = 10.0) -> None:
    """Stop a process we started indirectly (not our child), by pid."""
    if not process_alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while process_alive(pid) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    if process_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


async def wait_port(port: int, proc: asyncio.subprocess.Process, timeout_s: float = 30.0) -> None:
    """Wait until something accepts TCP connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before listening")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return
    raise RuntimeError(f"nothing listens on port {port} after {timeout_s:g} s")


def install_sigterm(task: asyncio.Task[Any]) -> None:
    """SIGTERM cancels the benchmark's main task, so its cleanup runs (SIGINT already does)."""
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)


# -- worker control channel -----------------------------------------------------------------------


class Worker:
    """A client worker process: JSON lines in both directions over its stdin/stdout."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name = name
        self.proc = proc

    def send(self, **message: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")

    async def expect(self, event: str, timeout_s: float) -> dict[str, Any]:
        """The next message, which must be ``event`` (a worker reports failures as "error")."""
        assert self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout_s)
        except TimeoutError:
            raise RuntimeError(f"{self.name}: no {event!r} within {timeout_s:g} s") from None
        if not line:
            code = await self.proc.wait()
            raise RuntimeError(f"{self.name} exited (code {code}) before {event!r}")
        message: dict[str, Any] = json.loads(line)
        if message.get("event") != event:
            raise RuntimeError(f"{self.name}: expected {event!r}, got {message}")
        return message


async def stop_workers(children: Children, workers: Sequence[Worker]) -> None:
    """Ask every worker to quit, then stop each (SIGTERM after 10 s, then SIGKILL)."""
    for w in workers:
        with contextlib.suppress(Exception):
            w.send(cmd="quit")
    await asyncio.gather(*(children.stop(w.proc, timeout_s=10) for w in workers), return_exceptions=True)


def cpu_self() -> float:
    """This process's CPU seconds (user + system)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Control:
    """The worker side of the channel: commands from stdin, reports to stdout."""

    def __init__(self) -> None:
        self.reader: asyncio.StreamReader | None = None

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self.reader = asyncio.StreamReader(limit=1024 * 1024)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(self.reader), sys.stdin)

    async def command(self) -> dict[str, Any]:
        assert self.reader is not None
        line = await self.reader.readline()
        if not line:
            return {"cmd": "quit"}  # the benchmark went away
        message: dict[str, Any] = json.loads(line)
        return message

    @staticmethod
    def report(event: str, **fields: Any) -> None:
        sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
        sys.stdout.flush()


# -- the live server ------------------------------------------------------------------------------


def orchestrator_parser(doc: str) -> argparse.ArgumentParser:
    """A benchmark's command line: its docstring's first paragraph as the description."""
    return argparse.ArgumentParser(
        description=doc.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )


def add_run_options(parser: argparse.ArgumentParser, node: bool = False) -> None:
    """The options every benchmark with a live server has: its interpreter, where the logs go,
    a JSON file of the results; with ``node``, where socket.io@4 is installed."""
    parser.add_argument("--live-python", default=default_live_python(), help="python with live installed")
    if node:
        parser.add_argument(
            "--node-dir", default="/tmp/benchnode", help="where socket.io@4 is (or gets) installed"
        )
    parser.add_argument("--log-dir", default="/tmp/livebench-logs", help="server logs are kept here")
    parser.add_argument("--json", help="also write the results to this JSON file")


def run_script(
    argv: list[str],
    parse_args: Callable[[list[str]], Any],
    worker: Callable[[Any], Coroutine[Any, Any, Any]],
    main: Callable[[Any], Coroutine[Any, Any, int]],
) -> NoReturn:
    """A benchmark script's entry point: its client worker (``args.worker`` true, on uvloop)
    or its orchestrator (``run_orchestrator``)."""
    import uvloop

    args = parse_args(argv)
    if args.worker:
        uvloop.run(worker(args))
        raise SystemExit(0)
    run_orchestrator(main(args))


def run_orchestrator(main: Coroutine[Any, Any, int]) -> NoReturn:
    """Run a benchmark's orchestrator on uvloop and exit with its code (130 on Ctrl-C)."""
    import uvloop

    try:
        raise SystemExit(uvloop.run(main))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; every process it started has been stopped", file=sys.stderr)
        raise SystemExit(130) from None


def default_live_python() -> str:
    """The interpreter that has the project installed: $LIVE_PYTHON, else /tmp/venv's, else ours."""
    explicit = os.environ.get("LIVE_PYTHON")
    if explicit:
        return explicit
    if Path("/tmp/venv/bin/python").exists():
        return "/tmp/venv/bin/python"
    return sys.executable


def mint(secret: str, room: str, role: str, user: str, ttl_s: int = 3600) -> str:
    """A live token (the claims ``live token`` signs, HS256 with the data dir's secret)."""
    now = int(time.time())
    claims = {"sub": user, "room": room, "role": role, "iat": now, "exp": now + ttl_s}
    return jwt.encode(claims, secret, algorithm="HS256")


class LiveServer(LocalServer):
    """``live serve`` on a fresh data dir, with its embedded Redis, for one benchmark run: the
    harness's LocalServer with the benchmark's LIVE_* ``settings`` (not the harness's raised
    limits), run by ``python``, and registered with ``children`` so that ``stop_all`` stops it.
    With ``workers`` > 1 it is ``live serve --workers N``: ``start`` returns once every worker
    listens, ``live_pids`` are the supervisor and its workers (CPU and RSS are summed over
    them), and ``metrics`` reads every worker's."""

    def __init__(self, children: Children, python: str, settings: dict[str, Any], workers: int = 1) -> None:
        env = {f"LIVE_{k.upper()}": str(v) for k, v in settings.items()}
        # in its data dir: `python -m live` imports the tree that python (or PYTHONPATH) has
        super().__init__(0, workers, python=python, settings=env, keep_data=True, in_data_dir=True)
        self.children = children
        self.redis_pid: int | None = None
        #: The live processes (the server, or the supervisor and its workers), not its Redis.
        self.live_pids: list[int] = []
        self.host_token = ""

    @property
    def proc(self) -> asyncio.subprocess.Process | None:
        return self.process

    def ws_url(self, room: str, token: str) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/rooms/{room}?token={token}"

    async def start(self) -> None:
        try:
            await super().start()
        finally:
            if self.process is not None:
                self.children.procs.append(self.process)
        deadline = time.monotonic() + 60
        while True:  # every worker listens before anyone connects (SO_REUSEPORT spreads over them)
            tree = {p for p in with_descendants([self.pid]) if process_alive(p)}
            if len(listening_pids(self.port) & tree) >= self.workers:
                break
            if self.process is None or self.process.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(f"not all {self.workers} live workers listen: {self.log_tail(5)}")
            await asyncio.sleep(0.1)
        redis = [p for p in tree if p != self.pid and exe_name(p).startswith(("valkey", "redis"))]
        if len(redis) != 1:
            raise RuntimeError(f"expected one embedded Redis child of live, found {redis}")
        self.redis_pid = redis[0]
        self.live_pids = sorted(p for p in tree if p != self.redis_pid)
        self.children.extra_pids.append(self.redis_pid)
        self.host_token = mint(self.secret, "*", "host", "host")

    async def create_room(self, room: str) -> None:
        headers = {"Authorization": f"Bearer {self.host_token}"}
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"http://127.0.0.1:{self.port}/api/rooms", json={"id": room, "title": room}, headers=headers
            ) as resp,
        ):
            if resp.status != 201:
                raise RuntimeError(f"creating room {room}: HTTP {resp.status} {await resp.text()}")

    async def scrape(self) -> dict[str, str]:
        """Every live process's /metrics text, by node name. With workers, each request reaches
        one of them (SO_REUSEPORT), so it asks on new connections until it has heard them all."""
        pages: dict[str, str] = {}
        for _ in range(40 * self.workers):
            async with (
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session,
                session.get(f"http://127.0.0.1:{self.port}/metrics") as resp,
            ):
                text = await resp.text()
            node = next(
                (ln.split('"')[1] for ln in text.splitlines() if ln.startswith("live_node_info{")), ""
            )
            pages[node] = text
            if len(pages) >= self.workers:
                break
        if len(pages) < self.workers:
            raise RuntimeError(f"/metrics answered by {len(pages)} of {self.workers} workers")
        return pages

    async def metrics(self, with_gc: bool = False) -> dict[str, float]:
        """live_* counters from /metrics (errors by kind as ``live_errors{kind}``), summed over
        the workers; ``with_gc``: and the garbage collector's series, as ``gc:<series>{labels}``
        (the pause maximum is the workers' largest)."""
        values: dict[str, float] = {}
        for text in (await self.scrape()).values():
            for line in text.splitlines():
                if with_gc and line.startswith("live_gc_") and "_created" not in line:
                    name, _, value = line.rpartition(" ")
                    key = "gc:" + name.removeprefix("live_gc_")
                    if name.startswith("live_gc_pause_max"):  # a maximum, not a count
                        values[key] = max(values.get(key, 0.0), float(value))
                    else:
                        values[key] = values.get(key, 0.0) + float(value)
                    continue
                # counters only (gauges and the Redis probe histogram say nothing about a run)
                counter = line.startswith(("live_frames", "live_errors", "live_http_responses"))
                if counter and "_created" not in line:
                    name, _, value = line.rpartition(" ")
                    name = name.replace("_total", "").replace('kind="', "").replace('"', "")
                    values[name] = values.get(name, 0.0) + float(value)
        return values

    def rss(self) -> int:
        """Resident memory of the live processes (supervisor and workers), bytes."""
        total = 0
        for pid in self.live_pids:
            with contextlib.suppress(OSError, RuntimeError):
                total += rss_bytes(pid)
        return total

    def cpu(self) -> tuple[float, float]:
        """(live processes, embedded Redis) CPU seconds."""
        assert self.redis_pid is not None
        live = 0.0
        for pid in self.live_pids:
            with contextlib.suppress(OSError):
                live += cpu_seconds(pid)
        return live, cpu_seconds(self.redis_pid)

    def log_problems(self) -> list[str]:
        """Lines of the server's log at warning level or above (it runs with LIVE_LOG_LEVEL=warning)."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []
        return [line for line in lines if line.strip()]

    async def stop(self) -> int | None:
        code = await super().stop()
        if self.process is not None:
            with contextlib.suppress(ValueError):
                self.children.procs.remove(self.process)
        if self.redis_pid is not None:
            # live stops its Redis last; this only matters if live was killed
            deadline = time.monotonic() + 10
            while process_alive(self.redis_pid) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await stop_pid(self.redis_pid)
            with contextlib.suppress(ValueError):
                self.children.extra_pids.remove(self.redis_pid)
        return code

    def cleanup(self) -> None:
        shutil.rmtree(self.data_dir, ignore_errors=True)

    async def finish(self, keep_log: Path) -> list[str]:
        """Stop the server, copy its log to ``keep_log`` and remove its data dir; returns the
        log's lines at warning level or above (read after the stop: shutdown trouble counts
        too), and its exit code if that is not 0."""
        code = await self.stop()
        problems = self.log_problems()
        if code:
            problems.append(f"live exited with code {code}")
        if self.log_path.exists():
            keep_log.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.log_path, keep_log)
        self.cleanup()
        return problems


# -- peers ------------------------------------------------------------------------------------------


def ensure_node(node_dir: Path) -> str:
    """'' when Node and socket.io 4 are usable from ``node_dir``, else why not (a skip note)."""
    if shutil.which("node") is None:
        return "skipped: node is not installed"
    if (node_dir / "node_modules" / "socket.io" / "package.json").exists():
        return ""
    if shutil.which("npm") is None:
        return "skipped: npm is not installed"
    return npm_install(node_dir, "socket.io@4", 300)


def npm_install(directory: Path, package: str, timeout_s: float, env: dict[str, str] | None = None) -> str:
    """``npm install package`` into ``directory``: '' when it worked, else a skip note."""
    directory.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--silent", package],
            cwd=directory,
            env=env,
            check=True,
            timeout=timeout_s,
            capture_output=True,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"skipped: npm install {package} failed ({exc})"
    return ""


def node_socketio_version(node_dir: Path) -> str:
    try:
        package = json.loads((node_dir / "node_modules" / "socket.io" / "package.json").read_text())
    except (OSError, ValueError):
        return "?"
    return str(package.get("version", "?"))


def versions(node_dir: Path) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("websockets", "aiohttp", "python-socketio", "uvloop"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "-"
    found["node"] = (
        subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
        if shutil.which("node")
        else "-"
    )
    found["socket.io (node)"] = node_socketio_version(node_dir)
    return found


def peer_command(name: str, port: int, m: int, node_dir: Path) -> tuple[list[str], str]:
    """The command line of a peer server of bench/peers/ (``name``: ws, aiohttp, socketio,
    node-socketio, raw) on ``port`` that sends ``m`` messages on "go"; or ([], why not)."""
    if name == "raw":
        return [sys.executable, str(HERE / "peers" / "fanout_raw_server.py"), str(port), str(m)], ""
    if name == "node-socketio":
        note = ensure_node(node_dir)
        if note:
            return [], note
        return ["node", str(HERE / "peers" / "socketio_server.js"), str(port), str(m)], ""
    return [sys.executable, str(HERE / "peers" / "fanout_server.py"), name, str(port), str(m)], ""


def peer_env(node_dir: Path) -> dict[str, str]:
    """The environment of a peer server (NODE_PATH for socket.io)."""
    return {**os.environ, "NODE_PATH": str(node_dir / "node_modules")}


# -- output ---------------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], right: bool = True) -> str:
    """A GitHub-flavoured Markdown table (readable as plain text too)."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        # header and first column left-aligned, figures right-aligned
        padded = [
            c.ljust(w) if n == 0 or i == 0 or not right else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("| " + " | ".join(padded) + " |")
        if n == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def per_cpu(count: float, *cpu_s: float | None) -> float:
    """``count`` per CPU-second of these CPU seconds together (0 when they add up to none)."""
    total = sum(c or 0.0 for c in cpu_s)
    return count / total if total > 0 else 0.0


class CpuRates:
    """A result's figures per server CPU-second: ``counted`` names the field with its count;
    ``redis_cpu_s`` (live's embedded Redis, None for a peer) is added in the combined one."""

    counted: ClassVar[str]
    cpu_s: float
    redis_cpu_s: float | None

    @property
    def per_cpu(self) -> float:
        return per_cpu(getattr(self, self.counted), self.cpu_s)

    @property
    def per_cpu_combined(self) -> float:
        return per_cpu(getattr(self, self.counted), self.cpu_s, self.redis_cpu_s)


def fmt_int(x: float) -> str:
    return f"{x:,.0f}"
