"""`live-loadtest` says when a run did not deliver the load it planned (issue 11, item 19).

A rush whose buyers could not connect passed its audit (nothing was sold wrong: nothing was
sold) and said PASSED. Now every stream counts what it planned and sent; more than
``--max-unsent-share`` (default 1%) of a stream unsent is a shortfall: the summary and the
result's ``load`` section say so, and the command exits 3 unless ``--allow-shortfall``. And a
stream never starts before its senders are in: a rush waits for buyers still connecting.

The harness runs as a subprocess against the fake of tests/broken_server.py, made hard to get
into: handshakes refused (503) or held.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from broken_server import BrokenServer

from loadtest.plan import Plan, PlanError, load_toml
from loadtest.shortfall import assess
from loadtest.worker import Worker, WorkerSpec
from loadtest.wsclient import Endpoint

SECRET = "loadtest-shortfall-secret-" + "x" * 32
#: 200 buyers, ramped in over 2 s; the rush is planned at 4 s (ramp + 2) and takes 0.4 s.
RUSH = ["rush", "--buyers", "200", "--stock", "50", "--rush-rate", "500", "--hold", "2", "--ramp", "2"]
EXIT_SHORTFALL = 3

pytestmark = pytest.mark.timeout(90)


async def run_harness(fake: BrokenServer, tmp_path: Path, *flags: str) -> tuple[int, str, dict[str, Any]]:
    """`live-loadtest --url <fake> ... rush <flags>`: exit status, output and JSON result."""
    url = await fake.start()
    out = tmp_path / "result.json"
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "loadtest", "--url", url, "--secret", SECRET, *RUSH, *flags,
            "--workers", "1", "--json", str(out), "--quiet",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        try:
            output, _ = await asyncio.wait_for(process.communicate(), 75)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise
    finally:
        await fake.stop()
    text = output.decode(errors="replace")
    assert process.returncode is not None
    assert process.returncode != 2, f"the harness could not run:\n{text}"
    assert out.exists(), f"no result file:\n{text}"
    result: dict[str, Any] = json.loads(out.read_text())
    return process.returncode, text, result


@pytest.mark.harness
async def test_refused_buyers_are_a_shortfall_and_the_run_exits_3(tmp_path: Path) -> None:
    fake = BrokenServer(SECRET, "honest", refuse_every=5)  # 40 of 200 buyers never get in
    status, output, result = await run_harness(fake, tmp_path, "--duration", "8")

    assert fake.handshakes == 200
    load = result["load"]
    assert load["shortfall"] is True and load["allowed"] is False
    assert set(load["short"]) == {"connect", "reserve"}
    assert load["streams"]["connect"] == {"planned": 200, "sent": 160, "unsent": 40, "unsent_share": 0.2}
    assert load["streams"]["reserve"] == {"planned": 200, "sent": 160, "unsent": 40, "unsent_share": 0.2}
    assert result["errors"]["not_connected:reserve"] == 40
    # The audit itself is clean: only the load was short, and that is what the run says.
    assert result["audit"]["passed"] is True
    assert "load: SHORTFALL" in output and "reserve 40 of 200 unsent" in output
    assert status == EXIT_SHORTFALL


@pytest.mark.harness
async def test_allow_shortfall_exits_0_and_still_reports_it(tmp_path: Path) -> None:
    fake = BrokenServer(SECRET, "honest", refuse_every=5)
    status, output, result = await run_harness(fake, tmp_path, "--duration", "8", "--allow-shortfall")

    load = result["load"]
    assert load["shortfall"] is True and load["allowed"] is True
    assert load["streams"]["reserve"]["unsent"] == 40
    assert "load: SHORTFALL" in output and "accepted by --allow-shortfall" in output
    assert status == 0


@pytest.mark.harness
async def test_a_server_that_stalls_every_handshake_is_a_shortfall(tmp_path: Path) -> None:
    # Every handshake is held past the harness's connect timeout: nobody gets in.
    fake = BrokenServer(SECRET, "honest", handshake_delay_s=3.0)
    status, output, result = await run_harness(fake, tmp_path, "--duration", "8", "--connect-timeout", "1")

    streams = result["load"]["streams"]
    assert streams["connect"]["sent"] == 0 and streams["connect"]["unsent"] == 200
    assert streams["reserve"]["sent"] == 0 and streams["reserve"]["unsent"] == 200
    assert result["errors"]["connect:timeout"] == 200
    assert "load: SHORTFALL" in output
    assert status == EXIT_SHORTFALL


@pytest.mark.harness
async def test_the_rush_waits_for_buyers_still_connecting(tmp_path: Path) -> None:
    # Every handshake takes 3 s: buyers ramped in over [0, 2] s are in at [3, 5] s, after the
    # rush's planned start at 4 s. It must wait for them, not fire into unconnected buyers.
    fake = BrokenServer(SECRET, "honest", handshake_delay_s=3.0)
    status, output, result = await run_harness(fake, tmp_path, "--duration", "12")

    load = result["load"]
    start = load["starts"]["reserve"]
    assert start["planned_s"] == pytest.approx(4.0, abs=0.01)
    # The last buyer's connect was due at 1.99 s, so it got in at 4.99 s at the earliest.
    assert start["started_s"] >= 4.98 and start["late_s"] >= 0.98
    assert not [kind for kind in result["errors"] if kind.startswith("not_connected")], result["errors"]
    assert load["streams"]["reserve"] == {"planned": 200, "sent": 200, "unsent": 0, "unsent_share": 0.0}
    assert sum(result["outcomes"]["reserve"].values()) == 200
    assert load["shortfall"] is False, load
    assert any("reserve started" in note for note in load["notes"])
    assert status == 0, output


# -- the arithmetic and the settings ------------------------------------------------------------


def test_more_than_the_share_unsent_is_a_shortfall_and_exactly_the_share_is_not() -> None:
    def short(unsent: int, planned: int, limit: float = 0.01) -> bool:
        load = assess({"reserve": planned}, {"reserve": planned - unsent}, limit, {})
        return bool(load["shortfall"])

    assert not short(0, 1000)
    assert not short(10, 1000)  # 1% is not more than 1%
    assert short(11, 1000)
    assert not short(1, 101) and short(2, 101)
    assert short(1, 20)  # 5% of a small stream (team opens) is still a shortfall
    assert not short(400, 1000, limit=0.5) and short(600, 1000, limit=0.5)
    assert short(1, 10**6, limit=0.0)


def test_the_load_section_lists_every_planned_stream() -> None:
    starts = {"reserve": {"planned_s": 4.0, "started_s": 5.5, "late_s": 1.5}}
    load = assess({"connect": 10, "reserve": 10, "confirm": 0}, {"connect": 10, "reserve": 7}, 0.01, starts)
    assert load["streams"] == {
        "connect": {"planned": 10, "sent": 10, "unsent": 0, "unsent_share": 0.0},
        "reserve": {"planned": 10, "sent": 7, "unsent": 3, "unsent_share": 0.3},
    }
    assert load["short"] == ["reserve"] and load["starts"] == starts
    assert load["notes"] == [
        "reserve: 3 of 10 planned never sent (30.0%)",
        "reserve started 1.50 s after its planned start: its senders were connecting",
    ]


def test_the_unsent_share_is_a_checked_setting(tmp_path: Path) -> None:
    assert Plan(max_unsent_share=0.05).parameters()["max_unsent_share"] == 0.05
    with pytest.raises(PlanError, match="max_unsent_share"):
        Plan(max_unsent_share=1.5)
    config = tmp_path / "night.toml"
    config.write_text("max_unsent_share = 0.02\nallow_shortfall = true\n")
    assert load_toml(config) == {"max_unsent_share": 0.02, "allow_shortfall": True}


# -- every client of a worker connects ----------------------------------------------------------


async def test_a_worker_connects_all_its_clients_when_the_shares_are_uneven() -> None:
    """Worker 0 of 2 holds viewer v0 and buyer b0: both of the room's two connections, while the
    room-wide schedule gives it every other event, one. Both must connect anyway (a stream's
    gate waits for its senders, so one left out would hold the rush back for good)."""

    async def handle(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=("live.v1.json",))
        await ws.prepare(request)
        await ws.send_json({"type": "welcome", "seq": 0})
        async for _ in ws:
            pass
        return ws

    app = web.Application()
    app.router.add_get("/ws/rooms/{room}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    plan = Plan(scenarios=("audience", "rush"), duration_s=10, viewers=1, buyers=1, observers=0, ramp_s=0.2)
    spec = WorkerSpec(0, 2, plan, (Endpoint("127.0.0.1", port, "/ws/rooms/r"),), "s" * 32, "r")
    worker = Worker(spec, lambda _: None)
    clients = worker.everyone()
    assert [c.user for c in clients] == ["v0", "b0"]
    try:
        worker.t0 = time.monotonic()
        await worker._ramp()
        async with asyncio.timeout(20):
            for client in clients:
                await client.settled.wait()
        assert [c.conn is not None and c.conn.is_open for c in clients] == [True, True]
        assert worker.sent["connect"] == 2
    finally:
        await worker._close_all()
        await runner.cleanup()


# -- the report and compare ---------------------------------------------------------------------


def _with_load(short: bool, allowed: bool = False) -> dict[str, Any]:
    from test_loadtest_report import make_result

    result = make_result()
    sent = {"connect": 3061, "reserve": 161 if short else 1000}
    result["load"] = {**assess({"connect": 3061, "reserve": 1000}, sent, 0.01, {}), "allowed": allowed}
    return result


def test_the_report_shows_a_shortfall_as_loudly_as_a_failed_audit(tmp_path: Path) -> None:
    from loadtest.report import write_report

    html = write_report(_with_load(short=True), tmp_path / "short").read_text()
    assert "Load SHORTFALL" in html and "reserve 839 of 1,000 unsent" in html
    assert "Load delivered" in html  # the section with every stream
    accepted = write_report(_with_load(short=True, allowed=True), tmp_path / "allowed").read_text()
    assert "accepted by --allow-shortfall" in accepted
    assert "Load SHORTFALL" not in write_report(_with_load(short=False), tmp_path / "ok").read_text()
    # An odd or missing load section is no error.
    odd = _with_load(short=True)
    odd["load"] = {"shortfall": True, "short": "reserve", "streams": [1, 2]}
    assert "Load SHORTFALL" in write_report(odd, tmp_path / "odd").read_text()
    del odd["load"]
    write_report(odd, tmp_path / "none")


def test_compare_calls_a_new_shortfall_a_regression() -> None:
    from loadtest.compare import compare

    good, short = _with_load(short=False), _with_load(short=True)
    assert compare(good, good).regressions == []
    regressions = compare(good, short).regressions
    assert regressions == ["load as planned -> short: reserve"]
    assert compare(short, short).regressions == []  # already short before: reported, not new
    assert any("shortfall" in line and "SHORT: reserve" in line for line in compare(short, short).lines)
