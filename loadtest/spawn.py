"""`--spawn`: a private `live serve` (with its embedded Redis) for one rehearsal.

The server gets a fresh data directory, a random port and secret, and limits raised for load
(connections per address, buy rates), so the run measures the server rather than its
abuse guards. It runs as a child of the harness and is stopped (SIGTERM, then SIGKILL) when
the run ends, whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import aiohttp

from loadtest.plan import PlanError

START_TIMEOUT_S = 60.0
#: A server process keeps well under the machine's 20,000 open files per process.
CONNECTIONS_PER_SERVER_WORKER = 10_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


#: The server's limits raised for load (every harness connection comes from one or a few
#: addresses, all at once in the ramp). The per-user limits (bids, questions) stay as they are:
#: each simulated user keeps within them.
LOAD_SETTINGS = {
    "LIVE_MAX_CONNECTIONS": "15000",
    "LIVE_MAX_CONNECTIONS_PER_IP": "15000",
    "LIVE_MAX_PENDING_CONNECTIONS_PER_IP": "15000",
    "LIVE_BUY_IP_BURST": "1000000",
    "LIVE_BUY_IP_RATE_PER_S": "1000000",
    # every harness user enters the lucky draws from one address (docs/draws.md)
    "LIVE_DRAW_MAX_ENTRIES_PER_IP": "0",
}


class LocalServer:
    """``live serve`` on a fresh data dir. The benchmarks (bench/) start theirs with this too:
    ``python`` is the interpreter that has the project (the harness's by default), ``settings``
    the LIVE_* variables instead of LOAD_SETTINGS, ``args`` more ``live serve`` options, and
    ``in_data_dir`` runs the server in its data dir, so that ``python -m live`` imports the
    package its interpreter (or PYTHONPATH) has rather than one in the caller's directory."""

    def __init__(
        self,
        connections: int,
        workers: int | None = None,
        keep_data: bool = False,
        *,
        python: str = sys.executable,
        settings: Mapping[str, str] = LOAD_SETTINGS,
        args: Sequence[str] = (),
        in_data_dir: bool = False,
    ) -> None:
        self.workers = workers or max(1, math.ceil(connections / CONNECTIONS_PER_SERVER_WORKER))
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.secret = secrets.token_urlsafe(48)
        self.data_dir = Path(tempfile.mkdtemp(prefix="live-loadtest-"))
        self.keep_data = keep_data
        self.python = python
        self.settings = dict(settings)
        self.args = list(args)
        self.in_data_dir = in_data_dir
        self.process: asyncio.subprocess.Process | None = None
        self.log_path = self.data_dir / "server.log"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self) -> None:
        env = {
            **os.environ,
            "LIVE_SECRET": self.secret,
            "LIVE_WORKERS": str(self.workers),
            "LIVE_LOG_LEVEL": "warning",
            **self.settings,
        }
        log = self.log_path.open("wb")
        self.process = await asyncio.create_subprocess_exec(
            # live.parent_death: the kernel stops the server if the harness dies unexpectedly.
            self.python, "-m", "live.parent_death", str(os.getpid()),
            self.python, "-m", "live", "serve", "--host", "127.0.0.1", "--port", str(self.port),
            "--data-dir", str(self.data_dir), *self.args,
            env=env, stdout=log, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
            cwd=self.data_dir if self.in_data_dir else None,
        )  # fmt: skip
        log.close()
        await self._wait_ready()

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                assert self.process is not None
                if self.process.returncode is not None:
                    raise PlanError(f"live serve exited with {self.process.returncode}:\n{self.log_tail()}")
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with http.get(f"{self.url}/readyz") as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.2)
        raise PlanError(f"live serve was not ready within {START_TIMEOUT_S:g} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    async def stop(self) -> int | None:
        """Stop the server (SIGTERM, then SIGKILL after 20 s); its exit code."""
        process = self.process
        if process is not None and process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 20)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
        if not self.keep_data:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        return None if process is None else process.returncode
