"""Branches of the gateway's small stable modules that the end-to-end tests never take: a
connection handed over with nothing read yet (front.py), and the banned-words character table
at its size cap (words.py)."""

from __future__ import annotations

import asyncio
import unicodedata

from gateway import words
from gateway.front import hand_over


class Recorder(asyncio.Protocol):
    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []
        self.got = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.calls.append(("made", transport))

    def data_received(self, data: bytes) -> None:
        self.calls.append(("data", data))
        self.got.set()


async def test_a_connection_handed_over_before_any_bytes_gets_only_what_comes_next() -> None:
    after = Recorder()

    class First(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            self.transport = transport
            hand_over(transport, after, b"")  # nothing read: nothing replayed

        def data_received(self, data: bytes) -> None:
            raise AssertionError("the first protocol was handed over: it reads nothing")

    listener = await asyncio.get_running_loop().create_server(First, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"late bytes")
        await asyncio.wait_for(after.got.wait(), 10)
        made = [c for c in after.calls if c[0] == "made"]
        assert len(made) == 1 and after.calls[0][0] == "made"  # made once, before any data
        assert b"".join(c[1] for c in after.calls if c[0] == "data") == b"late bytes"  # type: ignore[misc]
        assert made[0][1].get_protocol() is after  # type: ignore[attr-defined]
        writer.close()
    finally:
        listener.close()
        await listener.wait_closed()


def test_the_character_table_stops_growing_at_its_cap_and_still_answers() -> None:
    table = words._LettersAndDigits()
    every = "".join(chr(p) for p in range(0x30000) if not 0xD800 <= p < 0xE000)
    assert len(every) > words._KEPT
    expected = "".join(c for c in every if unicodedata.category(c)[0] in "LN")
    assert every.translate(table) == expected
    assert len(table) == words._KEPT  # the rest were answered without being kept
    assert every.translate(table) == expected  # and are answered the same again
