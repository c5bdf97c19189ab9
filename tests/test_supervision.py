"""Background tasks are supervised: a failure is logged with its traceback, counted, the task
restarts with backoff, and /readyz says not ready while it is down."""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import time

import aiohttp
import polling
import pytest
from conftest import bearer
from test_gateway import token
from test_sales import open_sale, shop  # noqa: F401  (shop is a fixture)
from wsclient import Client

from live.server import Running
from live.supervisor import Supervisor

until = functools.partial(polling.until, timeout_s=10.0, every_s=0.01)


async def test_a_failing_loop_is_logged_counted_and_restarted(caplog: pytest.LogCaptureFixture) -> None:
    failed: list[str] = []
    supervisor = Supervisor(on_crash=failed.append)
    runs = 0
    steady = asyncio.Event()

    async def loop() -> None:
        nonlocal runs
        runs += 1
        if runs <= 2:
            raise RuntimeError(f"boom {runs}")
        steady.set()
        await asyncio.Event().wait()

    with caplog.at_level(logging.ERROR):
        supervisor.start("worker", loop)
        await asyncio.wait_for(steady.wait(), 10)
    assert failed == ["worker", "worker"] and supervisor.crashes == {"worker": 2}
    assert supervisor.down() == []
    records = [r for r in caplog.records if r.getMessage() == "background task failed; restarting it"]
    assert len(records) == 2 and all(r.exc_info and r.exc_info[0] is RuntimeError for r in records)
    await supervisor.stop()
    assert supervisor.names() == [] and supervisor.crashes == {"worker": 2}  # a stop is no failure


async def test_a_loop_that_keeps_failing_is_down_between_restarts_with_growing_delays() -> None:
    supervisor = Supervisor()
    starts: list[float] = []

    async def loop() -> None:
        starts.append(time.monotonic())
        raise ValueError("still broken")

    supervisor.start("flaky", loop)
    await until(lambda: len(starts) >= 5)
    assert supervisor.down() == ["flaky"]  # it is waiting for its next start
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps[-1] > gaps[0]  # backoff: each wait is twice the last
    await supervisor.stop()
    assert supervisor.down() == []


async def test_a_loop_that_returns_is_restarted_too() -> None:
    supervisor = Supervisor()
    runs = 0

    async def loop() -> None:
        nonlocal runs
        runs += 1

    supervisor.start("short", loop)
    await until(lambda: runs >= 3)
    assert supervisor.crashes["short"] >= 2
    await supervisor.stop()


async def test_a_running_name_cannot_be_started_twice() -> None:
    supervisor = Supervisor()

    async def loop() -> None:
        await asyncio.Event().wait()

    supervisor.start("once", loop)
    with pytest.raises(ValueError):
        supervisor.start("once", loop)
    await supervisor.stop()


async def test_a_crashed_sweeper_makes_the_server_unready_until_it_runs_again(
    server: Running,
    http: aiohttp.ClientSession,
    host_token: str,
    shop: dict[str, str],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with http.get("/readyz") as resp:
        assert resp.status == 200 and (await resp.json())["tasks"] == "ok"
    sale = await open_sale(http, host_token, shop)
    sweeper = server.services.sweeper

    async def broken_sweep(sale_id: str) -> None:
        raise RuntimeError("a bug in the sweeper")

    monkeypatch.setattr(sweeper, "sweep", broken_sweep)
    # it fails at every start now, and waits longer each time: /readyz says so
    deadline = time.monotonic() + 15
    while True:
        async with http.get("/readyz") as resp:
            body = await resp.json()
            if resp.status == 503:
                break
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.02)
    assert body["status"] == "unready" and "sales-sweeper" in body["tasks"]
    assert body["redis"] == "ok" and body["sqlite"] == "ok"
    async with http.get("/metrics") as resp:
        text = await resp.text()
    assert 'live_task_failures_total{task="sales-sweeper"}' in text

    monkeypatch.undo()  # fixed: the next restart keeps running, and the server is ready again
    deadline = time.monotonic() + 15
    while True:
        async with http.get("/readyz") as resp:
            if resp.status == 200:
                break
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    # and the restarted sweeper does its work: a stopped sale is announced as ended
    viewer = await Client.connect(http, "shop", token(server, "fan"))
    async with http.post(f"/api/sales/{sale['id']}/stop", headers=bearer(host_token)) as resp:
        assert resp.status == 200
    ended = await viewer.recv_type("sale_ended", timeout=15)
    assert ended["sale_id"] == sale["id"]
