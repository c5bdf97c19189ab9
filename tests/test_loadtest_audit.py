"""`live-loadtest`'s audit against a deliberately broken server (tests/broken_server.py).

Each test serves the fake in the test's event loop, runs the real harness as a subprocess
(coordinator and one worker process) through a short rush, and reads its JSON result. The
honest fake must pass: that proves the failures of the broken ones come from their bugs.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from broken_server import BrokenServer

SECRET = "loadtest-audit-secret-" + "x" * 32
#: 200 buyers want ~300 units of 50: the stock runs out, so an oversell shows. The rush starts at
#: 4 s (ramp 2 s + 2 s) and its holds (2 s) end before the 8 s run does.
RUSH = ["rush", "--duration", "8", "--buyers", "200", "--stock", "50", "--rush-rate", "500", "--hold", "2"]
COUNTS = ("oversold", "lost_orders", "duplicate_orders", "over_limit", "chat_unaccounted")

pytestmark = pytest.mark.timeout(60)


async def run_harness(fake: BrokenServer, tmp_path: Path) -> tuple[int, dict[str, Any]]:
    """Run `live-loadtest ... rush` against ``fake``; its exit status and its JSON result."""
    url = await fake.start()
    out = tmp_path / "result.json"
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "loadtest", "--url", url, "--secret", SECRET, *RUSH,
            "--workers", "1", "--json", str(out), "--quiet",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        try:
            output, _ = await asyncio.wait_for(process.communicate(), 45)
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
    return process.returncode, result


def sane_run(result: dict[str, Any]) -> None:
    """The rush really happened: every buyer connected, reserves were made and answered."""
    # 200 buyers, and the worker's host connection (which connections.target does not count).
    assert result["connections"]["peak"] == result["connections"]["target"] == 200
    assert result["connections"]["failed"] == 0
    assert result["connections"]["closed_by_server"] == 0
    reserve = result["outcomes"]["reserve"]
    assert reserve.get("ok", 0) > 0 and sum(reserve.values()) == 200, reserve
    assert result["outcomes"].get("confirm", {}).get("ok", 0) > 0
    assert not [kind for kind in result["errors"] if kind.startswith("no_reply")], result["errors"]
    assert result["load"]["shortfall"] is False, result["load"]


@pytest.mark.harness
async def test_audit_passes_an_honest_server(tmp_path: Path) -> None:
    fake = BrokenServer(SECRET, "honest")
    status, result = await run_harness(fake, tmp_path)
    sane_run(result)
    audit = result["audit"]
    assert {name: audit[name] for name in COUNTS} == dict.fromkeys(COUNTS, 0), audit
    assert audit["passed"] is True, audit["notes"]
    assert audit["notes"] == []
    assert status == 0
    (sale,) = audit["sales"]
    assert 0 < sale["sold"] <= 50
    assert sale["ledger_orders"] == sale["acked_orders"] > 0
    assert result["outcomes"]["reserve"].get("sold_out", 0) > 0  # the stock did run out
    assert result["outcomes"].get("reserve_retry"), "no reserve was retried with its rid"


@pytest.mark.harness
async def test_audit_catches_an_oversell(tmp_path: Path) -> None:
    fake = BrokenServer(SECRET, "oversell")
    status, result = await run_harness(fake, tmp_path)
    sane_run(result)
    audit = result["audit"]
    assert fake.bugs["oversold_holds"] > 0
    (sale,) = audit["sales"]
    assert sale["sold"] > sale["total"] == 50
    assert audit["oversold"] == max(sale["sold"], sale["ledger_units"]) - 50 > 0
    assert audit["lost_orders"] == audit["duplicate_orders"] == audit["over_limit"] == 0
    assert audit["passed"] is False
    assert status == 1


@pytest.mark.harness
async def test_audit_catches_lost_orders(tmp_path: Path) -> None:
    fake = BrokenServer(SECRET, "drop")
    status, result = await run_harness(fake, tmp_path)
    sane_run(result)
    audit = result["audit"]
    assert fake.bugs["dropped_orders"] > 0
    assert audit["lost_orders"] == fake.bugs["dropped_orders"]
    assert audit["oversold"] == audit["duplicate_orders"] == audit["over_limit"] == 0
    (sale,) = audit["sales"]
    assert sale["ledger_orders"] == sale["acked_orders"] - audit["lost_orders"]
    assert audit["passed"] is False
    assert status == 1
