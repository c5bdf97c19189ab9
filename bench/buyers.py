"""Flash-sale buyers for bench/flash_sale.py: one client process of many WebSocket buyers.

    python bench/buyers.py --port P --room R --first F --count N [--framing msgpack|json]

Started (several at once) by bench/flash_sale.py, which drives it over stdin/stdout (JSON lines,
common.Control): it connects ``count`` buyers (users ``b<first>`` ... ) to the room at a
bounded rate, reports "ready", then for every "phase" command sends ``reserve`` commands
open-loop at its share of the target rate and reports what came back.

Open loop: reservation k of a phase is due at ``t0 + k / rate`` (the intended time) and is
sent as soon as the process gets to it, whatever the server answered; its latency is taken
from the intended time to the arrival of the answer (``ack`` or ``error`` with its rid), so a
client or server that falls behind shows up as latency (no coordinated omission). Buyers take
turns (reservation k goes to buyer k mod count). The rid, which the server also uses as the
idempotency key, is ``<phase>.<k>``: the answer alone tells which phase and which intended time.

Frames without a rid (welcome, sale_stock, presence, batches) are counted by type and
otherwise ignored.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import os
import resource
import struct
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import msgpack
import uvloop
from hdrh.histogram import HdrHistogram
from live.auth import Auth, Role
from loadtest.wsclient import OP_BINARY, OP_TEXT, Endpoint, WsConnection, connect

from common import Control, raise_nofile

#: HDR histogram of latencies in microseconds: 1 us to 60 s, 3 significant digits.
HDR_ARGS = (1, 60_000_000, 3)
HDR_MAX = HDR_ARGS[1]
FRAMINGS = {"msgpack": "live.v1.msgpack", "json": "live.v1.json"}


def cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def frame_unmasked(opcode: int, payload: bytes) -> bytes:
    """A client frame with the all-zero masking key: legal (RFC 6455 5.3 asks for an
    unpredictable key, which only matters against proxies), and the server unmasks it at the
    same cost; it saves the load generator the XOR."""
    n = len(payload)
    if n < 126:
        return struct.pack("!BB4x", 0x80 | opcode, 0x80 | n) + payload
    return struct.pack("!BBH4x", 0x80 | opcode, 0x80 | 126, n) + payload


@dataclass
class Phase:
    """One open-loop phase of this process: its schedule and what came back."""

    index: int
    t0: float
    t1: float
    rate: float  # reservations/s of this process
    sale_id: str
    overload_s: float  # stop sending once this many seconds' worth of requests are unanswered
    sent: int = 0
    acks: int = 0
    answered: int = 0  # acks + errors
    answered_in_window: int = 0  # answers that had arrived when sending stopped
    last_answer: float = 0.0  # when the last answer arrived
    t_end: float = 0.0  # when sending stopped: t1, or earlier if the server fell too far behind
    overloaded_at: float | None = None  # seconds after t0 when sending was cut short
    errors: Counter[str] = field(default_factory=Counter)
    hist: HdrHistogram = field(default_factory=lambda: HdrHistogram(*HDR_ARGS))
    max_lag: float = 0.0  # how late the process got to a due reservation (s)
    skipped: int = 0  # due while its buyer's connection was closed: not sent
    cpu_s: float = 0.0
    reported: bool = False  # answers after the report count as late
    #: second of the phase (by intended send time) -> worst latency (us) of its requests
    worst: dict[int, int] = field(default_factory=dict)


class Buyers:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.json = args.framing == "json"
        self.opcode = OP_TEXT if self.json else OP_BINARY
        self.phases: dict[int, Phase] = {}
        self.clients: list[WsConnection] = []
        self.other: Counter[str] = Counter()  # frames without a rid, by type
        self.late = 0  # answers that arrived after their phase was reported
        self.unmatched = 0  # answers whose rid is not ours

    # -- receiving ----------------------------------------------------------------------------

    def on_message(self, client: WsConnection, payload: bytes, now: float) -> None:
        message = json.loads(payload) if self.json else msgpack.unpackb(payload, raw=False)
        rid = message.get("rid") if isinstance(message, dict) else None
        if not isinstance(rid, str):
            kind = message.get("type") if isinstance(message, dict) else None
            self.other[str(kind)] += 1
            return
        head, _, k = rid.partition(".")
        phase = self.phases.get(int(head)) if head.isdigit() and k.isdigit() else None
        if phase is None:
            self.unmatched += 1
            return
        if phase.reported:
            self.late += 1
            return
        offset = int(k) / phase.rate
        latency_us = min(max(1, round((now - phase.t0 - offset) * 1e6)), HDR_MAX)
        phase.hist.record_value(latency_us)
        second = int(offset)
        if latency_us > phase.worst.get(second, 0):
            phase.worst[second] = latency_us
        if message.get("type") == "ack":
            phase.acks += 1
        else:
            phase.errors[str(message.get("code", message.get("type")))] += 1
        phase.answered += 1
        phase.last_answer = now

    # -- connecting ---------------------------------------------------------------------------

    async def connect_all(self) -> None:
        """Connect every buyer: at most ``concurrency`` handshakes at once and ``connect_rate``
        started per second; three tries each."""
        a = self.args
        auth = Auth.hs256(os.environ["LIVEBENCH_SECRET"])
        subprotocol = FRAMINGS[a.framing]
        sem = asyncio.Semaphore(a.concurrency)
        start = time.monotonic()

        async def one(i: int) -> WsConnection:
            await asyncio.sleep(max(0.0, start + i / a.connect_rate - time.monotonic()))
            token = auth.mint(f"b{a.first + i}", a.room, Role.VIEWER, 3600)
            path = f"/ws/rooms/{a.room}?token={token}"
            for attempt in range(3):
                async with sem:
                    try:
                        endpoint = Endpoint("127.0.0.1", a.port, path)
                        return await connect(endpoint, self.on_message, subprotocol=subprotocol)
                    except (OSError, TimeoutError) as exc:
                        if attempt == 2:
                            raise ConnectionError(f"buyer {a.first + i}: {exc!r}") from exc
                await asyncio.sleep(0.5 * (attempt + 1))
            raise AssertionError("unreachable")

        self.clients = list(await asyncio.gather(*(one(i) for i in range(a.count))))

    # -- sending ------------------------------------------------------------------------------

    def reserve_frame(self, rid: str, sale_id: str) -> bytes:
        message = {"type": "reserve", "rid": rid, "sale_id": sale_id, "quantity": 1}
        payload = json.dumps(message, separators=(",", ":")).encode() if self.json else msgpack.packb(message)
        return frame_unmasked(self.opcode, payload)

    async def run_phase(self, phase: Phase) -> None:
        """Send reservation k at t0 + k / rate (as soon after as the loop gets there), until t1,
        or until more than ``overload_s`` seconds' worth of requests are unanswered: past that
        the server is overloaded, and sending on would only pile up a backlog that takes the
        next phase's time to drain."""
        clients, n = self.clients, len(self.clients)
        backlog_limit = max(100, phase.rate * phase.overload_s)
        await asyncio.sleep(max(0.0, phase.t0 - time.monotonic()))
        phase.cpu_s = cpu_self()  # the phase's CPU, from t0 to the end of its drain: see worker()
        total = math.floor((phase.t1 - phase.t0) * phase.rate)
        k = 0
        while k < total:
            now = time.monotonic()
            if now >= phase.t1:
                break
            if phase.sent - phase.answered > backlog_limit:
                phase.overloaded_at = now - phase.t0
                break
            due = min(total, math.floor((now - phase.t0) * phase.rate) + 1)
            if due > k:
                phase.max_lag = max(phase.max_lag, now - (phase.t0 + k / phase.rate))
            while k < due:
                client = clients[k % n]
                transport = client.transport
                if client.is_open and transport is not None and not transport.is_closing():
                    transport.write(self.reserve_frame(f"{phase.index}.{k}", phase.sale_id))
                    phase.sent += 1
                else:
                    phase.skipped += 1
                k += 1
            await asyncio.sleep(0.001)
        phase.t_end = min(time.monotonic(), phase.t1)
        phase.answered_in_window = phase.answered

    async def drain(self, phase: Phase, drain_s: float) -> None:
        """Wait for the answers still due: until every request is answered, or ``drain_s``
        after t1 at most."""
        deadline = max(phase.t_end, phase.t1) + drain_s
        while phase.answered < phase.sent and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    def report(self, phase: Phase) -> dict[str, Any]:
        lost = [c for c in self.clients if c.lost.done()]
        out = {
            "phase": phase.index,
            "sent": phase.sent,
            "skipped": phase.skipped,
            "acks": phase.acks,
            "errors": dict(phase.errors),
            "answered": phase.answered,
            "answered_in_window": phase.answered_in_window,
            "duration_s": phase.t_end - phase.t0,
            "last_answer_s": phase.last_answer - phase.t0 if phase.answered else 0.0,
            "overloaded_at": phase.overloaded_at,
            "hdr": base64.b64encode(phase.hist.encode()).decode(),
            "max_lag_s": phase.max_lag,
            "worst_by_second_us": phase.worst,
            "cpu_s": phase.cpu_s,
            "lost": len(lost),
            "close_codes": dict(Counter(str(c.close_code) for c in lost)),
            "other_frames": dict(self.other),
            "late": self.late,
            "unmatched": self.unmatched,
        }
        phase.reported = True
        self.other = Counter()
        return out


async def worker(args: argparse.Namespace) -> None:
    raise_nofile()
    control = Control()
    await control.open()
    buyers = Buyers(args)
    t_connect = time.monotonic()
    try:
        await buyers.connect_all()
    except ConnectionError as exc:
        control.report("error", error=str(exc))
        return
    control.report("ready", connections=len(buyers.clients), connect_s=time.monotonic() - t_connect)
    while True:
        command = await control.command()
        if command["cmd"] == "phase":
            phase = Phase(
                command["index"], command["t0"], command["t1"], command["rate"], command["sale_id"],
                command["overload_s"],
            )  # fmt: skip
            buyers.phases[phase.index] = phase
            await buyers.run_phase(phase)
            await buyers.drain(phase, command["drain_s"])
            phase.cpu_s = cpu_self() - phase.cpu_s
            control.report("phase_done", **buyers.report(phase))
        elif command["cmd"] == "quit":
            break
    await asyncio.gather(*(c.close() for c in buyers.clients), return_exceptions=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--room", required=True)
    p.add_argument("--first", type=int, default=0, help="number of the first buyer (user b<N>)")
    p.add_argument("--count", type=int, required=True, help="buyers (connections) of this process")
    p.add_argument("--framing", choices=sorted(FRAMINGS), default="msgpack")
    p.add_argument("--connect-rate", type=float, default=1000.0, help="connections started per second")
    p.add_argument("--concurrency", type=int, default=50, help="handshakes in flight at once")
    return p.parse_args(argv)


if __name__ == "__main__":
    uvloop.run(worker(parse_args(sys.argv[1:])))
