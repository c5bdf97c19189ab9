"""Locust users for bench/loadgen.py: the chat workload of `live-loadtest audience chat-storm`.

Runs in Locust's own environment, not the project's (``pip install locust websocket-client``
into e.g. /tmp/venv-locust; bench/loadgen.py creates it when missing). It needs nothing from
the project: bench/loadgen.py mints the tokens and passes everything in environment variables.

Every user holds one WebSocket (websocket-client, made cooperative by Locust's gevent) with a
reader greenlet that drains every frame the server sends. The first ``LG_COMMENTERS`` users
comment: together ``LG_RATE`` comments/s from ``LG_RAMP_S`` after the test starts until
``LG_DRAIN_S`` before it ends, on the same intended schedule as the harness (commenter k first
at ``k / rate``, then every ``commenters / rate`` seconds). A comment is a Locust request: send,
wait for its ``ack``, report the time from the send to the ack as request ``comment_ack``. That
is Locust's usual shape, a **closed loop**: the wait time follows the rule of Locust's
``constant_pacing`` (the next comment one period after the last one was due, or at once if the
last one took longer), so a user never has two comments in flight and never catches up.
(``constant_pacing`` itself is not used because it would count the wait for the commenter's
first slot as a long task and send the second comment at once.) Everyone pings (``{"type": "ping"}``) every
``LG_HEARTBEAT_S`` as the harness does, so no connection looks idle.

At the end it writes ``LG_OUT`` (JSON): Locust's own statistics (its percentiles, as its report
prints them) and the raw send and ack times, for loadgen.py to count in its own windows. With
``--processes P`` (``LG_PROCESSES=P``) each worker process writes ``LG_OUT.wI`` with its counts
and times, and the master ``LG_OUT`` with the statistics (which Locust aggregates there);
worker I's users are numbers I, I + P, I + 2P, ...

    LG_WS_URL     ws://127.0.0.1:PORT/ws/rooms/ROOM
    LG_TOKENS     file: one token per line, one per user (users take them in spawn order)
    LG_RATE LG_COMMENTERS LG_RAMP_S LG_DURATION_S LG_DRAIN_S LG_HEARTBEAT_S LG_REPLY_TIMEOUT_S
    LG_OUT        result file
    LG_PROCESSES  Locust's --processes, if given
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import time
from collections import Counter
from typing import Any

import gevent
import websocket
from gevent.event import AsyncResult
from locust import User, events, task

WS_URL = os.environ.get("LG_WS_URL", "")
TOKENS_FILE = os.environ.get("LG_TOKENS", "")
RATE = float(os.environ.get("LG_RATE", "200"))
COMMENTERS = int(os.environ.get("LG_COMMENTERS", "250"))
RAMP_S = float(os.environ.get("LG_RAMP_S", "5"))
DURATION_S = float(os.environ.get("LG_DURATION_S", "20"))
DRAIN_S = float(os.environ.get("LG_DRAIN_S", "2"))
HEARTBEAT_S = float(os.environ.get("LG_HEARTBEAT_S", "15"))
REPLY_TIMEOUT_S = float(os.environ.get("LG_REPLY_TIMEOUT_S", "10"))
OUT = os.environ.get("LG_OUT", "")
PROCESSES = max(1, int(os.environ.get("LG_PROCESSES", "1")))
#: Comments carry their send time like the harness's (monotonic microseconds after the mark).
COMMENT_MARK = "lt:c:"

TOKENS: list[str] = []
if TOKENS_FILE:
    with open(TOKENS_FILE, encoding="ascii") as f:
        TOKENS = [line.strip() for line in f if line.strip()]

_index = itertools.count()
#: Monotonic times of the test's start and the storm window (set by test_start).
CLOCK: dict[str, float] = {}
COUNTS: Counter[str] = Counter()
ERRORS: Counter[str] = Counter()
#: (monotonic send time, ms to the ack or None if it never came, user, when it was due) per comment.
SENDS: list[tuple[float, float | None, int, float]] = []
CONNECTED = {"now": 0, "peak": 0}


@events.test_start.add_listener
def _test_start(environment: Any, **_: Any) -> None:
    start = time.monotonic()
    CLOCK.update(
        test_start=start, storm_start=start + RAMP_S, storm_end=start + DURATION_S - DRAIN_S, wall=time.time()
    )


class ChatUser(User):
    """A viewer; the first COMMENTERS users also comment."""

    def on_start(self) -> None:
        self.index = _worker_index(self.environment) + next(_index) * PROCESSES
        self.commenter = self.index < COMMENTERS
        self.pending: dict[str, AsyncResult] = {}
        self.sent = 0
        self.ws: websocket.WebSocket | None = None
        self.reader: gevent.Greenlet | None = None
        self.stopping = False
        self.last_ping = time.monotonic() - random.uniform(0, HEARTBEAT_S)
        self.period = COMMENTERS / RATE
        self.next_due = CLOCK["storm_start"] + self.index / RATE if self.commenter else 0.0
        if self.index >= len(TOKENS):
            ERRORS["connect:no_token"] += 1
            return
        started = time.perf_counter()
        try:
            self.ws = websocket.create_connection(
                WS_URL,
                header=[f"Authorization: Bearer {TOKENS[self.index]}"],
                subprotocols=["live.v1.json"],
                timeout=15,
                enable_multithread=True,
            )
        except Exception as exc:  # a refused or timed-out handshake: a failed connect request
            ERRORS[f"connect:{type(exc).__name__}"] += 1
            self._fire("connect", started, exc)
            return
        self.ws.settimeout(None)
        self._fire("connect", started)
        CONNECTED["now"] += 1
        CONNECTED["peak"] = max(CONNECTED["peak"], CONNECTED["now"])
        self.reader = gevent.spawn(self._read)

    def on_stop(self) -> None:
        self.stopping = True
        if self.ws is not None:
            with contextlib.suppress(Exception):
                self.ws.close(timeout=1)
        if self.reader is not None:
            self.reader.kill(block=False)

    def wait_time(self) -> float:
        if not self.commenter:
            return HEARTBEAT_S
        now = time.monotonic()
        if self.next_due <= now:  # late (the last ack took longer than a period): go at once
            self.next_due = now
            return 0.0
        return self.next_due - now

    def _fire(self, name: str, started: float, exc: Exception | None = None, length: int = 0) -> None:
        self.environment.events.request.fire(
            request_type="WS",
            name=name,
            response_time=(time.perf_counter() - started) * 1000,
            response_length=length,
            exception=exc,
            context={},
        )

    def _read(self) -> None:
        """Drain every frame; hand replies with a rid to the request waiting for them."""
        ws = self.ws
        assert ws is not None
        while True:
            try:
                data = ws.recv()
            except Exception:
                if not self.stopping:
                    ERRORS["closed_by_server"] += 1
                CONNECTED["now"] -= 1
                return
            now = time.perf_counter()
            COUNTS["frames_in"] += 1
            if not isinstance(data, str) or '"batch"' in data[:40]:
                continue
            if '"lagged"' in data[:40]:  # the server skipped batches: this reader was behind
                COUNTS["lagged"] += 1
                continue
            if '"rid"' not in data:
                continue
            message = json.loads(data)
            waiter = self.pending.pop(str(message.get("rid")), None)
            if waiter is not None:
                waiter.set((now, message))

    def _ping(self) -> None:
        if self.ws is not None and self.ws.connected:
            self.ws.send('{"type":"ping"}')
            COUNTS["pings"] += 1
        self.last_ping = time.monotonic()

    @task
    def act(self) -> None:
        if self.ws is None:
            gevent.sleep(HEARTBEAT_S)
            return
        if time.monotonic() - self.last_ping >= HEARTBEAT_S:
            self._ping()
        if not self.commenter:
            return
        now = time.monotonic()
        if now < self.next_due:  # the first comment, at this commenter's place in the schedule
            gevent.sleep(self.next_due - now)
        if time.monotonic() >= CLOCK["storm_end"]:
            self.next_due = time.monotonic() + HEARTBEAT_S
            return
        due = self.next_due
        self.next_due = max(self.next_due, time.monotonic()) + self.period
        self.sent += 1
        rid = f"{self.index}.{self.sent}"
        waiter: AsyncResult = AsyncResult()
        self.pending[rid] = waiter
        sent_at = time.monotonic()
        text = f"{COMMENT_MARK}{int(sent_at * 1_000_000)}"
        started = time.perf_counter()
        try:
            self.ws.send(json.dumps({"type": "comment", "text": text, "rid": rid}, separators=(",", ":")))
        except Exception as exc:
            self.pending.pop(rid, None)
            ERRORS[f"send:{type(exc).__name__}"] += 1
            self._fire("comment_ack", started, exc)
            return
        COUNTS["comments_sent"] += 1
        entry = len(SENDS)
        SENDS.append((sent_at, None, self.index, due))
        try:
            arrived, reply = waiter.get(timeout=REPLY_TIMEOUT_S)
        except gevent.Timeout:
            self.pending.pop(rid, None)
            ERRORS["no_reply:comment_ack"] += 1
            self._fire("comment_ack", started, TimeoutError("no ack"))
            return
        elapsed_ms = (arrived - started) * 1000
        if reply.get("type") == "ack":
            COUNTS["acks"] += 1
            SENDS[entry] = (sent_at, elapsed_ms, self.index, due)
            self.environment.events.request.fire(
                request_type="WS",
                name="comment_ack",
                response_time=elapsed_ms,
                response_length=0,
                exception=None,
                context={},
            )
        else:
            code = str(reply.get("code"))
            ERRORS[f"error:{code}"] += 1
            self.environment.events.request.fire(
                request_type="WS",
                name="comment_ack",
                response_time=elapsed_ms,
                response_length=0,
                exception=RuntimeError(code),
                context={},
            )


def _worker_index(environment: Any) -> int:
    """This process's index among Locust's worker processes (0 when it runs alone)."""
    return int(getattr(environment.runner, "worker_index", 0)) if PROCESSES > 1 else 0


def _is_worker(environment: Any) -> bool:
    return type(environment.runner).__name__ == "WorkerRunner"


def _entry(environment: Any, name: str) -> dict[str, Any]:
    entry = environment.stats.get(name, "WS")
    if not entry.num_requests and not entry.num_failures:
        return {"count": 0, "failures": 0}
    return {
        "count": entry.num_requests,
        "failures": entry.num_failures,
        "avg_ms": entry.avg_response_time,
        "p50_ms": entry.get_response_time_percentile(0.50),
        "p90_ms": entry.get_response_time_percentile(0.90),
        "p99_ms": entry.get_response_time_percentile(0.99),
        "p999_ms": entry.get_response_time_percentile(0.999),
        "max_ms": entry.max_response_time,
    }


def _write(environment: Any) -> None:
    if not OUT:
        return
    worker = _is_worker(environment)
    path = f"{OUT}.w{_worker_index(environment)}" if worker else OUT
    result = {
        "clock": CLOCK,
        "locust": {
            "comment_ack": _entry(environment, "comment_ack"),
            "connect": _entry(environment, "connect"),
        },
        "counts": dict(COUNTS),
        "errors": dict(ERRORS),
        "connections": {"peak": CONNECTED["peak"], "target": len(TOKENS)},
        "sends": SENDS,
    }
    if worker:
        result["locust"] = None  # the master has the statistics
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(result, f)
    os.replace(tmp, path)


@events.test_stop.add_listener
def _test_stop(environment: Any, **_: Any) -> None:
    _write(environment)


@events.quitting.add_listener
def _quitting(environment: Any, **_: Any) -> None:
    _write(environment)
