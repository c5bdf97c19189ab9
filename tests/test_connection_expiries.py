"""gateway.connection.Expiries: the credentials' deadlines of a loop's connections, one timer."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.close_codes import Close
from gateway.connection import Expiries


class FakeConn:
    def __init__(self, name: str, log: list[tuple[str, float]]) -> None:
        self.name = name
        self.log = log
        self._expiry: Any = None

    def close(self, kind: Close) -> None:
        assert kind is Close.TOKEN_EXPIRED
        self.log.append((self.name, asyncio.get_running_loop().time()))


async def test_each_connection_is_closed_at_its_own_deadline_in_order() -> None:
    loop = asyncio.get_running_loop()
    log: list[tuple[str, float]] = []
    expiries = Expiries()
    start = loop.time()
    for name, delay in (("c", 0.15), ("a", 0.05), ("b", 0.10), ("now", -1.0)):
        expiries.add(FakeConn(name, log), delay)  # type: ignore[arg-type]
    assert len(expiries) == 4
    await asyncio.sleep(0.3)
    assert [name for name, _ in log] == ["now", "a", "b", "c"]
    for (_, at), delay in zip(log, (0.0, 0.05, 0.10, 0.15), strict=True):
        assert at - start >= delay - 0.002  # (a loop timer may run a little early)
    assert len(expiries) == 0


async def test_a_cancelled_one_is_not_closed_and_the_rest_are() -> None:
    log: list[tuple[str, float]] = []
    expiries = Expiries()
    first = expiries.add(FakeConn("first", log), 0.05)  # type: ignore[arg-type]
    expiries.add(FakeConn("second", log), 0.08)  # type: ignore[arg-type]
    expiries.cancel(first)
    expiries.cancel(first)  # (twice is once)
    assert len(expiries) == 1
    await asyncio.sleep(0.15)
    assert [name for name, _ in log] == ["second"]


async def test_cancelling_every_one_leaves_no_timer_and_many_cancelled_ones_are_dropped() -> None:
    log: list[tuple[str, float]] = []
    expiries = Expiries()
    entries = [expiries.add(FakeConn(str(i), log), 3600) for i in range(500)]  # type: ignore[arg-type]
    for entry in entries[:400]:
        expiries.cancel(entry)
    assert len(expiries) == 100
    assert len(expiries._heap) <= 2 * 100 + 64
    for entry in entries[400:]:
        expiries.cancel(entry)
    assert len(expiries) == 0 and not expiries._heap and expiries._handle is None
    assert log == []
