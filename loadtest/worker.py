"""One worker process: its share of the run's connections and schedules.

Started by the coordinator as ``python -m loadtest.worker``. Protocol, one JSON object per
line: the coordinator writes the ``WorkerSpec`` then ``{"t0": <monotonic s>}`` on stdin; the
worker writes ``{"kind": "ready"}``, one ``{"kind": "tick", "k": k, ...}`` per second of the
run (see ``Stats.tick``), and ``{"kind": "final", ...}`` before it exits. Every worker of a run
is on one machine, so CLOCK_MONOTONIC is shared: timestamps inside messages (host messages and
comments carry their intended send time) mean the same in every worker.

A stream that users send (comments, likes, the rush's reserves, group-buy teams) never starts
before its senders are in: when this worker's senders of a stream have all finished connecting
(connected or failed) it writes ``{"kind": "in", "stream": s, "at": <planned start>}``, and
starts the stream when the coordinator answers ``{"kind": "start", "stream": s, "at": t}``
(the planned start, or later if some worker's senders were still connecting then), so every
worker's share starts together and the whole rate holds. A rehearsal whose rush fires into
buyers that are not connected yet measures nothing.

Every stream counts what it planned and what it sent (``planned``, ``sent`` in the final), so
a run that did not deliver its load says so (see ``loadtest.shortfall``).

Who is who (global indices, worker w of W takes every W-th): the audience's first viewers are
observers (they decode every frame: chat accounting, chat latency, heartbeat round trips),
the next ones comment, the last ones like; buyers and group-buy teams are users of their own.
Worker 0 also holds the host's connection.

Several nodes (``endpoints``, one per ``--url``): each connection goes to the node that
``loadtest.nodes`` assigns it (connection i of the plan's order to node i mod N, the host to the
first), and the final reports per node what it had (``nodes``: connected, lost, reconnected,
errors). A connection the server drops during the load phase (a node that died) reconnects to
the next node of the list (each other node tried once), so a dead node costs its share of
errors, not the rest of the run's users; with one node nothing reconnects, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import re
import resource
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from typing import Any

import msgpack

from loadtest import nodes
from loadtest.api import mint
from loadtest.plan import DRAIN_S, Plan
from loadtest.schedule import Schedule, paced
from loadtest.stats import Stats
from loadtest.tools import EXPECTED_BY_METRIC, TOOL_EVENTS, TOOL_ROLES, ToolUsers
from loadtest.wsclient import Endpoint, HandshakeError, WsConnection, connect

#: Host messages and comments carry their intended send time (monotonic microseconds).
HOST_MARK = "lt:h:"
COMMENT_MARK = "lt:c:"
_HOST_RE = re.compile(rb"lt:h:(\d+)")
#: Refusals a rush expects (the sale decides them); anything else is an error.
EXPECTED_REFUSALS = frozenset({"sold_out", "insufficient_stock", "limit_reached", "payment_failed"})
#: The refusals of a reserve that are decisions: every reply for its rid reports the same one.
RESERVE_DECISIONS = frozenset(
    {"sold_out", "insufficient_stock", "limit_reached", "not_started", "ended", "invalid_quantity"}
)
#: The tools' frequent updates (coalesced per tick), which only the tools' users decode.
_TOOL_GAUGES = (b"draw_entries", b"poll_tally", b"qna_top", b"auction_bid")
#: The load stream a request metric belongs to, where the names differ (the rest are the same).
STREAM_OF = {"host_ack": "host_message", "comment_ack": "comment"}
#: A dropped connection waits up to this long before it reconnects to another node: the
#: connections of a node that died come back spread out, not all in one instant.
RECONNECT_JITTER_S = 0.5


@dataclass
class NodeCounts:
    """What one node did to this worker's connections."""

    #: First connects that got in.
    connected: int = 0
    #: Connections the server closed or dropped during the run (a node that died, say).
    lost: int = 0
    #: Connections that came in here after another node had dropped them.
    reconnected: int = 0
    errors: Counter[str] = field(default_factory=Counter)

    def to_json(self) -> dict[str, Any]:
        return {
            "connected": self.connected,
            "lost": self.lost,
            "reconnected": self.reconnected,
            "errors": dict(self.errors),
        }


@dataclass(frozen=True)
class WorkerSpec:
    index: int
    workers: int
    plan: Plan
    #: One per node, in the order of the --url flags.
    endpoints: tuple[Endpoint, ...]
    secret: str
    room: str
    rush_sale: str | None = None
    group_sale: str | None = None
    #: The interaction tools the coordinator opened (loadtest.tools), given with the go.
    tools: dict[str, Any] | None = None

    def to_json(self) -> str:
        data = asdict(self)
        data["plan"] = self.plan.to_json()
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> WorkerSpec:
        data = json.loads(text)
        data["plan"] = Plan.from_json(data["plan"])
        data["endpoints"] = tuple(Endpoint(**e) for e in data["endpoints"])
        return cls(**data)


@dataclass(eq=False)
class Client:
    """One simulated user's connection and what it has seen."""

    user: str
    role: str = "viewer"
    observer: bool = False
    #: Index of the node (endpoint) this connection is on now.
    node: int = 0
    conn: WsConnection | None = None
    connect_intended: float = 0.0
    joined_at: float | None = None
    lost_at: float | None = None
    #: Observer's chat accounting.
    delivered: int = 0
    skipped: int = 0
    dropped: int = 0
    likes: int = 0
    #: Buyer's holds: hold id -> quantity.
    holds: dict[str, int] = field(default_factory=dict)
    #: Set once the connect attempt has ended, either way: what a stream's gate waits for.
    settled: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Request:
    metric: str
    intended: float
    client: Client
    fields: dict[str, Any]
    then: Callable[[Request, dict[str, Any]], None] | None = None
    reply: dict[str, Any] | None = None
    #: The node it went to (its client may have moved on since).
    node: int = 0


class Worker:
    def __init__(
        self, spec: WorkerSpec, emit: Callable[[dict[str, Any]], None], coordinated: bool = False
    ) -> None:
        """``coordinated``: gated streams start when the coordinator says (see the module's
        docstring); otherwise (a worker on its own) as soon as this worker's senders are in."""
        self.spec = spec
        self.plan = spec.plan
        self.emit = emit
        self.coordinated = coordinated
        self.stats = Stats()
        #: Per stream: events this worker's share of the plan has, and how many went out.
        self.planned: Counter[str] = Counter()
        self.sent: Counter[str] = Counter()
        self._starts: dict[str, asyncio.Future[float]] = {}
        self.rng = random.Random(spec.plan.seed * 1000 + spec.index)
        self.pending: dict[str, Request] = {}
        self.orders: dict[str, dict[str, Any]] = {}
        self.idempotency_violations = 0
        self._rid = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self.t0 = 0.0
        msgpack_framing = self.plan.framing == "msgpack"
        self.subprotocol = "live.v1.msgpack" if msgpack_framing else "live.v1.json"
        self._encode: Callable[[dict[str, Any]], bytes] = (
            partial(msgpack.packb, use_bin_type=True)
            if msgpack_framing
            else lambda m: json.dumps(m, separators=(",", ":")).encode()
        )
        self._decode: Callable[[bytes], Any] = (
            partial(msgpack.unpackb, raw=False) if msgpack_framing else json.loads
        )
        self.node_counts = [NodeCounts() for _ in spec.endpoints]
        #: Reconnects' jitter, apart from self.rng so that a dropped connection does not change
        #: the quantities and choices of the rest of the run.
        self._jitter = random.Random(spec.plan.seed * 1000 + spec.index + 500)
        #: Set when the run ends: a connection lost from then on is not reconnected.
        self._ending = False
        self.audience, self.buyers, self.teams, self.host = self._cast()
        self.tool_clients = self._cast_tools()
        self.tools = ToolUsers(self, self.tool_clients)

    # -- who is who ---------------------------------------------------------------------------

    def _cast(self) -> tuple[list[Client], list[Client], list[list[Client]], Client | None]:
        plan, w, n = self.plan, self.spec.index, self.spec.workers
        count = len(self.spec.endpoints)
        audience_size = plan.audience
        observers = min(plan.observers, audience_size)
        audience = []
        for i in range(w, audience_size, n):
            role = "viewer"
            if observers <= i < observers + plan.commenters:
                role = "commenter"
            elif i >= audience_size - plan.likers:
                role = "liker"
            node = nodes.node_of(nodes.viewer_index(i), count)
            audience.append(Client(f"v{i}", role=role, observer=i < observers, node=node))
        buyers = [
            Client(f"b{i}", role="buyer", node=nodes.node_of(nodes.buyer_index(plan, i), count))
            for i in range(w, plan.buyer_count, n)
        ]
        teams = [
            [
                Client(f"t{t}m{m}", role="team", node=nodes.node_of(nodes.member_index(plan, t, m), count))
                for m in range(plan.team_size)
            ]
            for t in range(w, plan.teams if plan.wants("group-buy") else 0, n)
        ]
        host = Client("lt-host", role="host", node=nodes.HOST_NODE) if w == 0 and plan.wants("host") else None
        return audience, buyers, teams, host

    def _cast_tools(self) -> dict[str, list[Client]]:
        """The tools' users, each kind dealt every W-th like the buyers: entrants ``d<i>``,
        bidders ``a<i>``, voters ``p<i>``, Q&A users ``q<i>``, numbered after the teams."""
        plan, w, n = self.plan, self.spec.index, self.spec.workers
        count = len(self.spec.endpoints)
        out: dict[str, list[Client]] = {}
        offset = 0

        def node_of(i: int) -> int:
            return nodes.node_of(nodes.tool_index(plan, i), count)

        for role, prefix, size in (
            ("entrant", "d", plan.entrant_count),
            ("bidder", "a", plan.bidder_count),
            ("voter", "p", plan.voter_count),
            ("qna", "q", plan.qna_count),
        ):
            out[role] = [
                Client(f"{prefix}{i}", role=role, node=node_of(offset + i)) for i in range(w, size, n)
            ]
            offset += size
        return out

    def _error(self, node: int, kind: str) -> None:
        """An error of a connection to ``node``: in the run's errors and in the node's."""
        self.stats.error(kind)
        self.node_counts[node].errors[kind] += 1

    def _token(self, client: Client) -> str:
        role = "host" if client.role == "host" else "viewer"
        return mint(self.spec.secret, client.user, self.spec.room, role)

    # -- the run ------------------------------------------------------------------------------

    async def run(self, t0: float) -> None:
        self.t0 = t0
        plan = self.plan
        end = t0 + plan.duration_s
        self.planned["connect"] += len(self.everyone())
        if self.host is not None:
            await self._connect(self.host, time.monotonic())
        loops = [self._ticker(end), self._ramp(), self._heartbeats()]
        if plan.wants("host") and plan.host_rate:
            loops.append(self._host_messages())  # in every worker: its audience gates the stream
        # Every worker runs every gated stream, even with no senders of its own: the coordinator
        # starts a stream when all workers are in.
        if plan.commenters:
            loops.append(
                self._storm("comment", plan.chat_rate, [c for c in self.audience if c.role == "commenter"])
            )
        if plan.likers:
            loops.append(self._storm("like", plan.like_rate, [c for c in self.audience if c.role == "liker"]))
        if plan.buyer_count and self.spec.rush_sale:
            loops.append(self._rush(self.spec.rush_sale))
        if plan.team_members and self.spec.group_sale:
            loops.append(self._group_buy(self.spec.group_sale))
        loops.extend(self.tools.loops())
        tasks = [asyncio.create_task(loop) for loop in loops]
        try:
            await asyncio.sleep(max(0.0, end - time.monotonic()))
        finally:
            self._ending = True
            for task in [*tasks, *self._tasks]:
                task.cancel()
            outcomes = await asyncio.gather(*tasks, *self._tasks, return_exceptions=True)
        for failure in outcomes:
            if isinstance(failure, Exception):  # a harness bug: counted, and its traceback logged
                self.stats.error(f"harness:{type(failure).__name__}")
                traceback.print_exception(failure, file=sys.stderr)
        self._expire_pending(float("inf"))
        # The ticker's last second is < duration_s, so this one never shares its number.
        self.emit({"kind": "tick", "k": math.ceil(plan.duration_s), **self.stats.tick()})
        open_at_end = Counter(c.node for c in self.everyone() if c.conn is not None and c.conn.is_open)
        await self._close_all()
        self.emit(self._final(open_at_end))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _ticker(self, end: float) -> None:
        k = 1
        while self.t0 + k < end:
            await asyncio.sleep(max(0.0, self.t0 + k - time.monotonic()))
            self._expire_pending(time.monotonic() - self.plan.reply_timeout_s)
            self.emit({"kind": "tick", "k": k, **self.stats.tick()})
            k += 1

    def _expire_pending(self, before: float) -> None:
        late = [rid for rid, r in self.pending.items() if r.intended < before]
        for rid in late:
            request = self.pending.pop(rid)
            self._error(request.node, f"no_reply:{request.metric}")

    # -- connections --------------------------------------------------------------------------

    def _connect_order(self) -> list[Client]:
        """Who connects first: everyone a stream depends on (observers, commenters, likers,
        buyers, team members), then the rest of the audience, so each stream's senders are in
        long before it starts even when the server is slow to let the audience in."""
        active = [c for c in self.audience if c.observer or c.role != "viewer"]
        passive = [c for c in self.audience if not c.observer and c.role == "viewer"]
        members = [m for team in self.teams for m in team]
        tool_users = [c for clients in self.tool_clients.values() for c in clients]
        return [*active, *self.buyers, *members, *tool_users, *passive]

    async def _ramp(self) -> None:
        everyone = self._connect_order()
        plan = self.plan
        # One schedule for the whole room's connections; this worker's are every W-th. Its
        # count is this worker's clients exactly: the audience, buyers and teams are each dealt
        # out every W-th, so a worker may have one more or fewer than every W-th of the total,
        # and every client must connect (a stream's gate waits for its senders).
        total = plan.audience + plan.buyer_count + plan.team_members + plan.tool_users
        rate = total / plan.ramp if plan.ramp > 0 else 1e9
        w, workers = self.spec.index, self.spec.workers
        count = w + (len(everyone) - 1) * workers + 1 if everyone else 0
        schedule = Schedule(self.t0, rate, count, self.t0 + plan.duration_s)
        mine = iter(everyone)
        async for _, intended in paced(schedule, w, workers):
            client = next(mine, None)
            if client is None:
                return
            self._spawn(self._connect(client, intended))
        for client in mine:  # only if the ramp ran past the load phase: never made, never waited for
            client.settled.set()

    async def _connect(self, client: Client, intended: float) -> None:
        # The welcome can arrive with the 101, before connect() returns.
        client.connect_intended = intended
        try:
            conn = await self._open(client, client.node, "connect")
        finally:
            client.settled.set()
        if conn is None:
            return
        self.stats.count("connects")
        self.sent["connect"] += 1
        self.node_counts[client.node].connected += 1

    async def _open(self, client: Client, node: int, what: str) -> WsConnection | None:
        """Connect ``client`` to ``node`` (it is on that node from then on); the connection, or
        None with the error counted as ``<what>:<reason>`` (``connect`` or ``reconnect``) against
        that node."""
        try:
            conn = await connect(
                self.spec.endpoints[node],
                partial(self._frame, client),
                subprotocol=self.subprotocol,
                token=self._token(client),
                timeout_s=self.plan.connect_timeout_s,
            )
        except HandshakeError as exc:
            self._error(node, f"{what}:http_{exc.status}")
            return None
        except TimeoutError:
            self._error(node, f"{what}:timeout")
            return None
        except OSError as exc:
            self._error(node, f"{what}:{type(exc).__name__}")
            return None
        client.node, client.conn = node, conn
        self.stats.opened()
        conn.lost.add_done_callback(lambda _: self._lost(client, conn))
        return conn

    def _lost(self, client: Client, conn: WsConnection) -> None:
        self.stats.closed()
        if conn.closing:  # our own close at the end
            return
        client.lost_at = time.monotonic()
        self._error(client.node, f"close:{conn.close_code or 'dropped'}")
        self.stats.count("closed_by_server")
        self.node_counts[client.node].lost += 1
        if len(self.spec.endpoints) > 1 and not self._ending:
            self._spawn(self._reconnect(client))

    async def _reconnect(self, client: Client) -> None:
        """A connection its node closed or dropped comes back on the next node of the list (and
        the one after, if that one refuses too: each other node once). Observers that lost
        their connection stay out of the chat accounting: they missed what was sent meanwhile."""
        await asyncio.sleep(self._jitter.uniform(0.0, RECONNECT_JITTER_S))
        count = len(self.spec.endpoints)
        # Until it is in elsewhere, what it misses counts against the node that dropped it.
        for step in range(1, count):
            node = (client.node + step) % count
            if await self._open(client, node, "reconnect") is not None:
                self.stats.count("reconnects")
                self.node_counts[node].reconnected += 1
                return

    async def _close_all(self) -> None:
        conns = [c.conn for c in self.everyone() if c.conn is not None and c.conn.is_open]
        await asyncio.gather(*(conn.close() for conn in conns), return_exceptions=True)

    def everyone(self) -> list[Client]:
        teams = [m for team in self.teams for m in team]
        tool_users = [c for clients in self.tool_clients.values() for c in clients]
        return [*([self.host] if self.host else []), *self.audience, *self.buyers, *teams, *tool_users]

    async def _heartbeats(self) -> None:
        """Every connection sends a ping every heartbeat_s, spread evenly over the period."""
        period = self.plan.heartbeat_s
        clients = self.everyone()
        slots = max(1, int(period))
        tick = 0
        while True:
            await asyncio.sleep(period / slots)
            tick += 1
            now = time.monotonic()
            for client in clients[tick % slots :: slots]:
                if client.conn is None or not client.conn.is_open:
                    continue
                if client.observer:
                    self._request(client, "ping_rtt", {"type": "ping"}, now)
                else:
                    client.conn.send(self._encode({"type": "ping"}))

    # -- sending ------------------------------------------------------------------------------

    def _request(
        self,
        client: Client,
        metric: str,
        message: dict[str, Any],
        intended: float,
        then: Callable[[Request, dict[str, Any]], None] | None = None,
        *,
        until: float | None = None,
    ) -> str | None:
        """Send a message with a fresh rid; its reply records ``metric`` from ``intended``.
        Nothing new starts after the load phase (or ``until``, for a stream shifted whole past
        it): the last seconds are for replies to land. (What is not sent is counted by the
        difference between a stream's planned and sent.)"""
        if intended > (self.t0 + self.plan.storm_end_s if until is None else until):
            self.stats.count("not_sent_after_load")
            return None
        if client.conn is None or not client.conn.is_open:
            self._error(client.node, f"not_connected:{metric}")
            return None
        self._rid += 1
        rid = f"{self.spec.index}.{self._rid}"
        self.pending[rid] = Request(metric, intended, client, message, then, node=client.node)
        client.conn.send(self._encode({**message, "rid": rid}))
        self.sent[STREAM_OF.get(metric, metric)] += 1
        self.stats.latency("schedule_lag", time.monotonic() - intended)
        return rid

    def _react(
        self,
        client: Client,
        metric: str,
        message: dict[str, Any],
        intended: float,
        then: Callable[[Request, dict[str, Any]], None] | None = None,
    ) -> str | None:
        """A request made in answer to a reply (confirm, cancel, join): planned when it is due."""
        self.planned[metric] += 1
        return self._request(client, metric, message, intended, then)

    async def _gate(self, stream: str, planned_at: float, senders: list[Client]) -> float:
        """When ``stream`` may start: not before ``planned_at``, nor before its senders are in
        (every connect attempt ended, either way: a failed one is not waited for again, its
        events count as unsent), in every worker."""
        for client in senders:
            await client.settled.wait()
        if not self.coordinated:
            return max(planned_at, time.monotonic())
        self.emit({"kind": "in", "stream": stream, "at": planned_at})
        return await self._start_future(stream)

    def _start_future(self, stream: str) -> asyncio.Future[float]:
        future = self._starts.get(stream)
        if future is None:
            future = self._starts[stream] = asyncio.get_running_loop().create_future()
        return future

    def start(self, stream: str, at: float) -> None:
        """The coordinator's word: every worker is in, ``stream`` starts at monotonic ``at``."""
        future = self._start_future(stream)
        if not future.done():
            future.set_result(at)

    def _share(self, schedule: Schedule) -> int:
        """How many of ``schedule``'s events are this worker's (every W-th from its index)."""
        return len(range(self.spec.index, schedule.until(schedule.stop), self.spec.workers))

    async def _host_messages(self) -> None:
        """The host's messages, gated like a users' stream but on their receivers: every
        connection counts every host message (host_deliveries), so none is sent before the
        whole audience is in. A late start shifts the schedule whole (as the rush does), within
        the load phase."""
        plan = self.plan
        schedule = Schedule(self.t0 + plan.storm_start_s, plan.host_rate, 10**9, self.t0 + plan.storm_end_s)
        receivers = [c for c in self.everyone() if c is not self.host]
        start = await self._gate("host_message", schedule.start, receivers)
        if self.host is None:
            return  # the host's connection is worker 0's
        self.planned["host_message"] += schedule.until(schedule.stop)
        late = start - schedule.start
        # (half the drain still follows the last one, for its deliveries)
        last = self.t0 + plan.duration_s - DRAIN_S / 2
        schedule = replace(schedule, start=start, stop=min(schedule.stop + late, last))
        async for _, intended in paced(schedule):
            text = f"{HOST_MARK}{int(intended * 1_000_000)}"
            message = {"type": "host_message", "text": text}
            if self._request(self.host, "host_ack", message, intended, until=schedule.stop):
                self.stats.count("host_messages")

    async def _storm(self, kind: str, rate: float, senders: list[Client]) -> None:
        plan = self.plan
        schedule = Schedule(self.t0 + plan.storm_start_s, rate, 10**9, self.t0 + plan.storm_end_s)
        self.planned[kind] += self._share(schedule)
        start = await self._gate(kind, schedule.start, senders)
        if not senders:
            return  # more workers than senders: this share of the rate is reported unsent
        # A late start keeps the stop: the storm's events before the late start are not sent.
        schedule = replace(schedule, start=start)
        n = 0
        async for _, intended in paced(schedule, self.spec.index, self.spec.workers):
            sender = senders[n % len(senders)]
            n += 1
            if kind == "comment":
                text = f"{COMMENT_MARK}{int(intended * 1_000_000)}"
                if self._request(sender, "comment_ack", {"type": "comment", "text": text}, intended):
                    self.stats.count("comments_sent")
            elif sender.conn is not None and sender.conn.send(self._encode({"type": "like"})):
                self.stats.count("likes_sent")
                self.sent["like"] += 1
                self.stats.latency("schedule_lag", time.monotonic() - intended)
            else:
                self._error(sender.node, "not_connected:like")

    # -- buying -------------------------------------------------------------------------------

    async def _rush(self, sale: str) -> None:
        plan = self.plan
        self.planned["reserve"] += len(self.buyers)
        start = await self._gate("reserve", self.t0 + plan.rush_at_s, self.buyers)
        # The sale is live from rush_at_s; a rush that waited for its buyers starts later, whole.
        schedule = Schedule(start, plan.rush_rate, plan.buyer_count, self.t0 + plan.duration_s)
        buyers = iter(self.buyers)
        async for _, intended in paced(schedule, self.spec.index, self.spec.workers):
            buyer = next(buyers, None)
            if buyer is None:
                return
            quantity = self.rng.randint(1, min(plan.max_quantity, plan.per_user_limit))
            message = {"type": "reserve", "sale_id": sale, "quantity": quantity}
            rid = self._request(buyer, "reserve", message, intended, self._reserved)
            if rid is not None and self.rng.random() < plan.retry_share:
                self._retry(buyer, rid, message)

    def _retry(self, buyer: Client, rid: str, message: dict[str, Any]) -> None:
        """The same reserve again with the same rid at once, as a client does that did not see
        its reply: it must get the first answer. (Replies to one connection come in order, so
        the first answer is in before this one is checked.)"""
        assert buyer.conn is not None
        first = self.pending[rid]
        self.pending[f"retry:{rid}"] = Request(
            "reserve_retry", time.monotonic(), buyer, {"first": first}, node=buyer.node
        )
        buyer.conn.send(self._encode({**message, "rid": rid}))

    def _reserved(self, request: Request, reply: dict[str, Any]) -> None:
        if reply.get("type") != "ack":
            return
        buyer, hold = request.client, reply["hold_id"]
        buyer.holds[hold] = int(reply["quantity"])
        choice = self.rng.random()
        think = self.rng.uniform(0.05, min(1.0, self.plan.hold_s / 3))
        if choice < self.plan.confirm_share:
            self._spawn(
                self._later(think, buyer, "confirm", {"type": "confirm", "hold_id": hold}, self._confirmed)
            )
        elif choice < self.plan.confirm_share + self.plan.cancel_share:
            self._spawn(self._later(think, buyer, "cancel", {"type": "cancel", "hold_id": hold}))
        else:
            self.stats.outcome("hold", "left_to_expire")

    async def _later(
        self,
        delay: float,
        client: Client,
        metric: str,
        message: dict[str, Any],
        then: Callable[[Request, dict[str, Any]], None] | None = None,
    ) -> None:
        await asyncio.sleep(delay)
        self._react(client, metric, message, time.monotonic(), then)

    def _confirmed(self, request: Request, reply: dict[str, Any]) -> None:
        if reply.get("type") == "ack":
            self._order(request.client, reply["order"])

    def _order(self, client: Client, order: dict[str, Any]) -> None:
        self.orders[order["order_id"]] = {
            "order_id": order["order_id"],
            "sale_id": order["sale_id"],
            "user_id": client.user,
            "quantity": int(order["quantity"]),
            "node": client.node,
        }

    async def _group_buy(self, sale: str) -> None:
        plan = self.plan
        self.planned["team_open"] += len(self.teams)
        start = await self._gate("team_open", self.t0 + plan.teams_at_s, [m for t in self.teams for m in t])
        # Teams open over two seconds; team t is one the plan leaves one member short.
        schedule = Schedule(start, max(plan.teams / 2.0, 1.0), plan.teams, self.t0 + plan.duration_s)
        teams = iter(self.teams)
        async for _, intended in paced(schedule, self.spec.index, self.spec.workers):
            team = next(teams, None)
            if team is None:
                return
            short = self.rng.random() >= plan.team_fill_share
            members = team[1:-1] if short else team[1:]
            self.stats.outcome("team", "left_short" if short else "filled")
            message = {"type": "open_team", "sale_id": sale, "quantity": 1}
            self._request(team[0], "team_open", message, intended, partial(self._team_opened, sale, members))

    def _team_opened(self, sale: str, members: list[Client], _: Request, reply: dict[str, Any]) -> None:
        if reply.get("type") != "ack":
            return
        now = time.monotonic()
        for member in members:
            message = {"type": "join_team", "sale_id": sale, "code": reply["code"], "quantity": 1}
            self._react(member, "team_join", message, now)

    # -- receiving ----------------------------------------------------------------------------

    def _frame(self, client: Client, conn: WsConnection, payload: bytes, now: float) -> None:
        # The hot path: most frames are chat batches most viewers skip unread, and host
        # messages whose timestamp is all a viewer needs. The type comes first in the server's
        # messages, so the first bytes tell them apart without decoding.
        self.stats.frames_in += 1
        if client.joined_at is None:
            client.joined_at = now
            self.stats.latency("connect", now - client.connect_intended)
        head = payload[:32]
        if b"batch" in head or b"sale_stock" in head:
            if client.observer:
                self._observe(client, self._decode(payload))
            return
        if client.role not in TOOL_ROLES and any(marker in head for marker in _TOOL_GAUGES):
            return  # the tools' live counts: only their users read them
        if b"host_message" in head and client.role != "host":
            host = _HOST_RE.search(payload)
            if host is not None:
                self.stats.host_delivery(now - int(host.group(1)) / 1_000_000)
                return
        try:
            message = self._decode(payload)
        except ValueError:
            self._error(client.node, "bad_frame")
            return
        kind = message.get("type") if isinstance(message, dict) else None
        if kind in ("ack", "error", "pong") and "rid" in message:
            self._reply(message, now)
        elif kind in TOOL_EVENTS and client.role in TOOL_ROLES:
            self.tools.on_event(client, message)
        elif kind == "error":
            self._error(client.node, f"error:{message.get('code')}")
        elif kind == "order_status":
            self._order_status(client, message)
        elif kind == "lagged" and client.observer:
            client.dropped += int(message.get("dropped_comments", 0))
            self.stats.count("lagged")

    def _reply(self, message: dict[str, Any], now: float) -> None:
        rid = message["rid"]
        request = self.pending.pop(rid, None)
        retry = self.pending.pop(f"retry:{rid}", None) if request is None else None
        if request is None and retry is not None:
            request = retry
        if request is None:
            return  # a reply after its no_reply was counted, or the answer to a retry's original
        if request.metric == "reserve_retry":
            self._check_retry(request, message)
            return
        if request.metric.endswith("_retry"):  # a tool's retry (loadtest.tools): it checks its own
            if request.then is not None:
                request.then(request, message)
            return
        request.reply = message
        command = request.metric
        # A refusal is an answer too: it counts in the metric's latency and throughput, and
        # the outcomes say how many of each kind there were.
        self.stats.latency(command, now - request.intended)
        self.stats.count(command)
        if message["type"] == "error":
            code = str(message.get("code"))
            self.stats.outcome(command, code)
            if code not in EXPECTED_REFUSALS and code not in EXPECTED_BY_METRIC.get(command, ()):
                self._error(request.node, f"error:{code}")
        else:
            self.stats.outcome(command, "ok")
        if request.then is not None:
            request.then(request, message)

    def _check_retry(self, request: Request, message: dict[str, Any]) -> None:
        """One rid, one decision (docs/protocol.md): a reserve sent again with its rid gets the
        first answer again, the same hold or the same refusal, when both answers are decisions
        (``rate_limited``, say, is not one: the request was not decided)."""
        self.stats.outcome("reserve_retry", str(message.get("code", "ok")))
        first = request.fields["first"].reply
        if first is None or not (_decision(first) and _decision(message)):
            return
        if (first.get("hold_id"), first.get("code")) != (message.get("hold_id"), message.get("code")):
            self.idempotency_violations += 1
            self._error(request.node, "idempotency:different_answer")

    def _order_status(self, client: Client, message: dict[str, Any]) -> None:
        status = str(message.get("status"))
        self.stats.outcome("order_status", status)
        if client.role in TOOL_ROLES:  # an auction's order: the tools' audit has it
            self.tools.on_order(client, message)
        elif status == "confirmed" and "order" in message:
            self._order(client, message["order"])

    def _observe(self, client: Client, batch: dict[str, Any]) -> None:
        if batch.get("type") != "batch":
            return
        now = time.monotonic()
        for comment in batch.get("comments", ()):
            text = comment.get("text", "")
            if text.startswith(COMMENT_MARK):
                client.delivered += 1
                # (a draw's keyword comment carries its keyword after the time)
                sent_us = int(text[len(COMMENT_MARK) :].split(" ", 1)[0])
                self.stats.latency("chat_delivery", now - sent_us / 1_000_000)
        client.skipped += int(batch.get("skipped", 0))
        if "likes" in batch:
            client.likes = int(batch["likes"])

    # -- the end ------------------------------------------------------------------------------

    def _final(self, open_at_end: Counter[int]) -> dict[str, Any]:
        storm_start = self.t0 + self.plan.storm_start_s
        observers = [
            {
                "user": c.user,
                "delivered": c.delivered,
                "skipped": c.skipped,
                "dropped": c.dropped,
                "likes": c.likes,
            }
            for c in self.audience
            if c.observer and c.joined_at is not None and c.joined_at < storm_start and c.lost_at is None
        ]
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "kind": "final",
            "outcomes": {k: dict(v) for k, v in self.stats.outcomes.items()},
            "orders": list(self.orders.values()),
            "observers": observers,
            "likes_seen": max((c.likes for c in self.audience if c.observer), default=0),
            "idempotency_violations": self.idempotency_violations + self.tools.retry_violations,
            "tools": self.tools.final(),
            "planned": dict(self.planned),
            "sent": dict(self.sent),
            "peak_connections": self.stats.peak_connections,
            "nodes": [
                {**counts.to_json(), "open_at_end": open_at_end.get(node, 0)}
                for node, counts in enumerate(self.node_counts)
            ],
            "cpu_s": usage.ru_utime + usage.ru_stime,
        }


def _decision(reply: dict[str, Any]) -> bool:
    """Whether a reserve's reply is its decision: a hold, or a refusal that is one."""
    return reply.get("type") == "ack" or reply.get("code") in RESERVE_DECISIONS


def main() -> None:
    spec = WorkerSpec.from_json(sys.stdin.readline())

    def emit(message: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(message, separators=(",", ":")) + "\n")
        sys.stdout.flush()

    async def run() -> None:
        # The rest of stdin is read without blocking: the coordinator's start words come while
        # the run goes. (Nothing is buffered in sys.stdin: the go line is only written after
        # this worker says it is ready.)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1024 * 1024)
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        emit({"kind": "ready", "index": spec.index})
        go = json.loads(await reader.readline())
        sales = {key: go.get(key) for key in ("rush_sale", "group_sale", "tools")}
        worker = Worker(replace(spec, **sales), emit, coordinated=True)

        async def listen() -> None:
            while line := await reader.readline():
                message = json.loads(line)
                if message.get("kind") == "start":
                    worker.start(str(message["stream"]), float(message["at"]))

        listener = asyncio.create_task(listen())
        try:
            await worker.run(float(go["t0"]))
        finally:
            listener.cancel()
            transport.close()

    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    asyncio.run(run())


if __name__ == "__main__":
    main()
