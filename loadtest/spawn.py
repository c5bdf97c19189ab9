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


class LocalServer:
    def __init__(self, connections: int, workers: int | None = None, keep_data: bool = False) -> None:
        self.workers = workers or max(1, math.ceil(connections / CONNECTIONS_PER_SERVER_WORKER))
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.secret = secrets.token_urlsafe(48)
        self.data_dir = Path(tempfile.mkdtemp(prefix="live-loadtest-"))
        self.keep_data = keep_data
        self.process: asyncio.subprocess.Process | None = None
        self._log = self.data_dir / "server.log"

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
            "LIVE_MAX_CONNECTIONS": "15000",
            "LIVE_MAX_CONNECTIONS_PER_IP": "15000",
            # Every harness connection comes from one or a few addresses, all at once in the ramp.
            "LIVE_MAX_PENDING_CONNECTIONS_PER_IP": "15000",
            "LIVE_BUY_IP_BURST": "1000000",
            "LIVE_BUY_IP_RATE_PER_S": "1000000",
        }
        log = self._log.open("wb")
        self.process = await asyncio.create_subprocess_exec(
            # live.parent_death: the kernel stops the server if the harness dies unexpectedly.
            sys.executable, "-m", "live.parent_death", str(os.getpid()),
            sys.executable, "-m", "live", "serve", "--host", "127.0.0.1", "--port", str(self.port),
            "--data-dir", str(self.data_dir),
            env=env, stdout=log, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
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
            return "\n".join(self._log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    async def stop(self) -> None:
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
