"""The interaction tools' users in one worker: the draw's entrants, the bidders, the voters and
the Q&A users (docs/loadtest.md, scenarios ``draw``, ``auction``, ``poll``, ``qna``).

The coordinator opens the tools over HTTP before the go (two draws, one entered by commenting
a keyword and one by ``enter_draw``; an auction; a poll) and hands their ids and times to every
worker (``ToolSpec``). Each stream is open-loop like the others and gated on its senders:
entries and votes are spread over the tools' window, bids concentrate in the auction's last
``snipe_s`` seconds and through its extensions, questions come in its first half and upvotes in
its second. What the users were told (acks) and heard (the tools' events) goes into the
worker's final (``ToolUsers.final``) for the coordinator's audit (loadtest/tools_audit.py).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import defaultdict
from collections.abc import Callable, Coroutine
from functools import partial
from typing import TYPE_CHECKING, Any

from loadtest.schedule import Schedule, paced

if TYPE_CHECKING:
    from loadtest.worker import Client, Request, Worker

#: Roles of the tools' users (loadtest.worker.Client.role).
TOOL_ROLES = frozenset({"entrant", "bidder", "voter", "qna"})
#: Events the tools' users read (everything else they skip).
TOOL_EVENTS = frozenset(
    {"draw_closed", "auction_bid", "auction_won", "auction_offer", "auction_ended", "auction_sold",
     "poll_closed", "qna_top"}
)  # fmt: skip
#: Refusals each tool command expects (the tool decides them); anything else is an error.
EXPECTED_BY_METRIC: dict[str, frozenset[str]] = {
    "enter_draw": frozenset({"keyword_required", "draw_closed", "draw_full"}),
    "draw_comment": frozenset({"rate_limited"}),
    "bid": frozenset({"bid_too_low", "auction_ended", "rate_limited", "invalid_amount"}),
    "pay_auction": frozenset({"not_your_offer", "offer_expired"}),
    "vote": frozenset({"poll_closed", "already_voted"}),
    "ask": frozenset({"rate_limited"}),
    "upvote": frozenset({"own_question"}),
}
#: A retry's answer is a decision (the same every time for one rid) unless it is one of these.
NOT_DECISIONS = frozenset({"rate_limited", "unavailable", "duplicate", "internal"})
#: The fields that identify an ack's decision, per retried command.
DECISION_FIELDS = {"bid_retry": ("bid_seq", "amount_cents"), "vote_retry": ("option",)}


def _event_key(message: dict[str, Any], fields: tuple[str, ...]) -> str:
    return json.dumps({k: message.get(k) for k in fields}, sort_keys=True)


class ToolUsers:
    """The tools' streams of one worker and what their users were told."""

    def __init__(self, worker: Worker, clients: dict[str, list[Client]]) -> None:
        self.w = worker
        self.plan = worker.plan
        self.clients = clients
        self.spec: dict[str, Any] = worker.spec.tools or {}
        # What the users were told, for the audit.
        self.attempted: dict[str, set[str]] = defaultdict(set)
        self.entered: dict[str, set[str]] = defaultdict(set)
        self.bypassed: dict[str, int] = defaultdict(int)
        self.draw_closed: dict[str, set[str]] = defaultdict(set)
        self.acked_bids: list[dict[str, Any]] = []
        self.paid: list[dict[str, Any]] = []
        self.pushed: list[dict[str, Any]] = []
        self.paying: set[str] = set()
        self.probed = False
        self.auction_events: dict[str, set[str]] = defaultdict(set)
        self.votes: dict[str, int] = {}
        self.poll_closed: set[str] = set()
        self.asked: list[dict[str, Any]] = []
        self.known: dict[str, str] = {}
        self.upvoted: dict[str, set[str]] = defaultdict(set)
        self.retry_violations = 0
        # The auction as this worker last heard it.
        self.bid_seq = 0
        self.min_bid = 0

    def loops(self) -> list[Coroutine[Any, Any, None]]:
        out: list[Coroutine[Any, Any, None]] = []
        if self.spec.get("draws") and self.plan.entrant_count:
            out.append(self._entries())
        if self.spec.get("auction") and self.plan.bidder_count:
            out.append(self._bids())
        if self.spec.get("poll") and self.plan.voter_count:
            out.append(self._votes())
        if self.spec.get("qna") and self.plan.qna_count:
            out.append(self._questions())
        return out

    # -- helpers --------------------------------------------------------------------------------

    def _later(
        self, client: Client, metric: str, message: dict[str, Any], then: Callable[..., None] | None
    ) -> None:
        """A follow-up request (a second entry, a changed vote), a short think time after."""
        think = self.w.rng.uniform(0.05, 0.3)
        self.w._spawn(self.w._later(think, client, metric, message, then))

    def _retry(self, client: Client, rid: str | None, message: dict[str, Any], metric: str) -> None:
        """The same request again at once with the same rid: it must get the first answer."""
        from loadtest.worker import Request

        first = self.w.pending.get(rid) if rid is not None else None
        if first is None or client.conn is None:
            return
        self.w.pending[f"retry:{rid}"] = Request(
            metric, time.monotonic(), client, {"first": first}, self._check_retry, node=client.node
        )
        client.conn.send(self.w._encode({**message, "rid": rid}))

    def _check_retry(self, request: Request, message: dict[str, Any]) -> None:
        self.w.stats.outcome(request.metric, str(message.get("code", "ok")))
        first = request.fields["first"].reply
        if first is None or not (_decision(first) and _decision(message)):
            return
        fields = DECISION_FIELDS.get(request.metric, ())
        if first.get("code") != message.get("code") or any(first.get(f) != message.get(f) for f in fields):
            self.retry_violations += 1
            self.w._error(request.node, "idempotency:different_answer")

    def _window(self, start: float, stop: float, count: int) -> Schedule:
        """``count`` events evenly over [start, stop)."""
        return Schedule(start, count / max(stop - start, 0.1), count, max(stop, start + 0.1))

    # -- draws ----------------------------------------------------------------------------------

    async def _entries(self) -> None:
        plan, w = self.plan, self.w
        draws = self.spec["draws"]
        keyword = next((d for d in draws if d.get("keyword")), None)
        explicit = next((d for d in draws if not d.get("keyword")), None)
        entrants = self.clients["entrant"]
        # Each entrant's way in is decided by its index alone, so the plan is known up front.
        mine_indices = range(w.spec.index, plan.entrant_count, w.spec.workers)
        by_comment = {i: self._by_comment(i, keyword, explicit) for i in mine_indices}
        w.planned["draw_comment"] += sum(by_comment.values())
        w.planned["enter_draw"] += sum(1 for i, c in by_comment.items() if not c or i % 10 == 0)
        start = await w._gate("enter", w.t0 + plan.tools_at_s, entrants)
        stop = min(float(d["closes_at"]) for d in draws) - 1.0
        schedule = self._window(start, stop, plan.entrant_count)
        mine = iter(entrants)
        async for i, intended in paced(schedule, w.spec.index, w.spec.workers):
            entrant = next(mine, None)
            if entrant is None:
                return
            if by_comment[i]:
                assert keyword is not None
                self._comment(entrant, keyword, i, intended, first=True)
                if i % 10 == 0:  # an enter_draw on the keyword draw: must be refused
                    self._enter(entrant, keyword, intended, first=True)
            else:
                assert explicit is not None
                self._enter(entrant, explicit, intended, first=True)

    def _by_comment(self, i: int, keyword: dict[str, Any] | None, explicit: dict[str, Any] | None) -> bool:
        if keyword is None or explicit is None:
            return explicit is None
        return random.Random(f"{self.plan.seed}:entrant:{i}").random() < self.plan.draw_comment_share

    def _comment(self, entrant: Client, draw: dict[str, Any], i: int, intended: float, first: bool) -> None:
        from loadtest.worker import COMMENT_MARK

        word = str(draw["keyword"])
        text = f"{COMMENT_MARK}{int(intended * 1_000_000)} {word.upper() if i % 2 else word}!"
        self.attempted[draw["id"]].add(entrant.user)
        message = {"type": "comment", "text": text}
        then = partial(self._commented, draw, i, first)
        if first:
            self.w._request(entrant, "draw_comment", message, intended, then)
        else:
            self.w._react(entrant, "draw_comment", message, intended, then)

    def _commented(
        self, draw: dict[str, Any], i: int, first: bool, request: Request, reply: dict[str, Any]
    ) -> None:
        if reply.get("type") != "ack":
            return
        self.entered[draw["id"]].add(request.client.user)
        if first and self.w.rng.random() < self.plan.draw_repeat_share:
            again = partial(self._comment, request.client, draw, i + 1)
            self.w._spawn(self._again(lambda: again(time.monotonic(), False)))

    async def _again(self, send: Callable[[], None]) -> None:
        await asyncio.sleep(self.w.rng.uniform(0.05, 0.3))
        send()

    def _enter(self, entrant: Client, draw: dict[str, Any], intended: float, first: bool) -> None:
        self.attempted[draw["id"]].add(entrant.user)
        message = {"type": "enter_draw", "draw_id": draw["id"]}
        then = partial(self._entered, draw, first)
        if first:
            self.w._request(entrant, "enter_draw", message, intended, then)
        else:
            self.w._react(entrant, "enter_draw", message, intended, then)

    def _entered(self, draw: dict[str, Any], first: bool, request: Request, reply: dict[str, Any]) -> None:
        if reply.get("type") != "ack":
            return
        if draw.get("keyword"):
            self.bypassed[draw["id"]] += 1
        self.entered[draw["id"]].add(request.client.user)
        if first and self.w.rng.random() < self.plan.draw_repeat_share:
            self._later(request.client, "enter_draw", request.fields, partial(self._entered, draw, False))

    # -- the auction ----------------------------------------------------------------------------

    async def _bids(self) -> None:
        plan, w = self.plan, self.w
        auction = self.spec["auction"]
        self.min_bid = int(auction["start_cents"])
        bidders = self.clients["bidder"]
        end = float(auction["ends_at"])
        first = w.t0 + plan.tools_at_s
        calm_stop = max(first, end - plan.snipe_s)
        last = round(plan.bids * plan.last_bid_share) if calm_stop - first >= 0.2 else plan.bids
        calm = self._window(first, calm_stop, plan.bids - last)
        # (through the extensions and half a second past their cap: those must be refused)
        rush = self._window(calm_stop, end + plan.max_extension_s + 0.5, last)
        w.planned["bid"] += w._share(calm) + w._share(rush)
        await w._gate("bid", first, bidders)
        if not bidders:
            return
        n = 0
        for schedule in (calm, rush):
            async for _, intended in paced(schedule, w.spec.index, w.spec.workers):
                self._bid(bidders[n % len(bidders)], auction, intended, schedule.stop)
                n += 1

    def _bid(self, bidder: Client, auction: dict[str, Any], intended: float, until: float) -> None:
        w, increment = self.w, int(auction["increment_cents"])
        if w.rng.random() < self.plan.low_bid_share:
            amount = self.min_bid - increment  # too low: bid_too_low (or invalid_amount at <= 0)
        else:
            amount = self.min_bid + increment * w.rng.choice((0, 0, 0, 1, 2))
        message = {"type": "bid", "auction_id": auction["id"], "amount_cents": amount}
        rid = w._request(bidder, "bid", message, intended, self._bid_answered, until=until)
        if rid is not None and w.rng.random() < self.plan.bid_retry_share:
            self._retry(bidder, rid, message, "bid_retry")

    def _bid_answered(self, request: Request, reply: dict[str, Any]) -> None:
        increment = int(self.spec["auction"]["increment_cents"])
        if reply.get("type") == "ack":
            amount, seq = int(reply["amount_cents"]), int(reply["bid_seq"])
            self.acked_bids.append({"user": request.client.user, "amount_cents": amount, "bid_seq": seq})
            self._heard(seq, amount + increment)
        elif reply.get("code") == "bid_too_low":
            data = reply.get("data") if isinstance(reply.get("data"), dict) else reply
            if isinstance(data, dict) and "min_bid_cents" in data:
                self.min_bid = max(self.min_bid, int(data["min_bid_cents"]))

    def _heard(self, seq: int, min_bid: int) -> None:
        if seq > self.bid_seq:
            self.bid_seq = seq
            self.min_bid = max(self.min_bid, min_bid)

    def _pay(self, client: Client) -> None:
        if client.user in self.paying:
            return
        self.paying.add(client.user)
        message = {"type": "pay_auction", "auction_id": self.spec["auction"]["id"]}
        self.w._react(client, "pay_auction", message, time.monotonic(), self._paid)

    def _paid(self, request: Request, reply: dict[str, Any]) -> None:
        if reply.get("type") == "ack" and isinstance(reply.get("order"), dict):
            self.paid.append({"user": request.client.user, "order": reply["order"]})

    # -- the poll -------------------------------------------------------------------------------

    async def _votes(self) -> None:
        plan, w = self.plan, self.w
        poll = self.spec["poll"]
        voters = self.clients["voter"]
        w.planned["vote"] += len(voters)
        start = await w._gate("vote", w.t0 + plan.tools_at_s, voters)
        schedule = self._window(start, float(poll["closes_at"]) - 1.5, plan.voter_count)
        mine = iter(voters)
        async for _, intended in paced(schedule, w.spec.index, w.spec.workers):
            voter = next(mine, None)
            if voter is None:
                return
            option = w.rng.randrange(int(poll["options"]))
            message = {"type": "vote", "poll_id": poll["id"], "option": option}
            rid = w._request(voter, "vote", message, intended, partial(self._voted, True))
            if rid is not None and w.rng.random() < 0.1:
                self._retry(voter, rid, message, "vote_retry")

    def _voted(self, first: bool, request: Request, reply: dict[str, Any]) -> None:
        if reply.get("type") != "ack":
            return
        option = int(reply.get("option", request.fields["option"]))
        self.votes[request.client.user] = option
        if not first:
            return
        choice, plan = self.w.rng.random(), self.plan
        if choice < plan.vote_change_share:
            other = (option + self.w.rng.randrange(1, int(self.spec["poll"]["options"]))) % int(
                self.spec["poll"]["options"]
            )
            change = {**request.fields, "option": other}
            self._later(request.client, "vote", change, partial(self._voted, False))
        elif choice < plan.vote_change_share + plan.vote_repeat_share:
            self._later(request.client, "vote", dict(request.fields), partial(self._voted, False))

    # -- Q&A ------------------------------------------------------------------------------------

    async def _questions(self) -> None:
        plan, w = self.plan, self.w
        users = self.clients["qna"]
        askers = [c for c in users if int(c.user[1:]) < plan.askers]
        w.planned["ask"] += len(askers)
        start = await w._gate("ask", w.t0 + plan.tools_at_s, users)
        middle = start + (w.t0 + plan.tools_close_s - start) / 2
        asks = self._window(start, middle, plan.askers)
        mine = iter(askers)
        async for i, intended in paced(asks, w.spec.index, w.spec.workers):
            asker = next(mine, None)
            if asker is None:
                break
            self._ask(asker, i, intended, first=True)
        upvotes = self._window(middle, w.t0 + plan.tools_close_s, plan.upvotes)
        w.planned["upvote"] += w._share(upvotes)
        n = 0
        async for _, intended in paced(upvotes, w.spec.index, w.spec.workers):
            voter = users[n % len(users)] if users else None
            n += 1
            name = voter.user if voter is not None else None
            candidates = sorted(q for q, user in self.known.items() if user != name)
            if voter is None or not candidates:
                w.planned["upvote"] -= 1  # nothing to upvote yet: not an event the plan could make
                w.stats.outcome("upvote", "no_question_known")
                continue
            question = w.rng.choice(candidates)
            message = {"type": "upvote", "question_id": question}
            w._request(voter, "upvote", message, intended, partial(self._upvoted, True))

    def _ask(self, asker: Client, i: int, intended: float, first: bool) -> None:
        message = {"type": "ask", "text": f"lt-q {asker.user} #{i}: does it come in blue?"}
        then = partial(self._asked, i, first)
        if first:
            self.w._request(asker, "ask", message, intended, then)
        else:
            self.w._react(asker, "ask", message, intended, then)

    def _asked(self, i: int, first: bool, request: Request, reply: dict[str, Any]) -> None:
        if reply.get("type") != "ack" or not isinstance(reply.get("question"), dict):
            return
        question = reply["question"]
        self.asked.append({"user": request.client.user, "question": question})
        self.known[str(question["id"])] = request.client.user
        if first and self.w.rng.random() < self.plan.ask_repeat_share:
            again = partial(self._ask, request.client, i + 100_000)
            self.w._spawn(self._again(lambda: again(time.monotonic(), False)))

    def _upvoted(self, first: bool, request: Request, reply: dict[str, Any]) -> None:
        if reply.get("type") != "ack":
            return
        self.upvoted[str(request.fields["question_id"])].add(request.client.user)
        if first and self.w.rng.random() < self.plan.upvote_repeat_share:
            self._later(request.client, "upvote", dict(request.fields), partial(self._upvoted, False))

    # -- events ---------------------------------------------------------------------------------

    def on_event(self, client: Client, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "draw_closed":
            key = _event_key(message, ("seed", "commitment", "winner_ids", "entrants", "eligible"))
            self.draw_closed[str(message.get("draw_id"))].add(key)
        elif kind == "auction_bid":
            self._heard(int(message.get("bid_seq", 0)), int(message.get("min_bid_cents", 0)))
        elif (kind == "auction_won" and client.role == "bidder") or (
            kind == "auction_offer" and message.get("user_id") == client.user
        ):
            self._pay(client)
        elif kind in ("auction_ended", "auction_sold"):
            fields = ("state", "winner_id", "user_id", "amount_cents", "order_id")
            self.auction_events[kind].add(_event_key(message, fields))
            if kind == "auction_ended" and not self.probed:
                self._probe(message)
        elif kind == "poll_closed":
            self.poll_closed.add(_event_key(message, ("tallies", "votes")))
        elif kind == "qna_top":
            for q in message.get("questions") or ():
                if isinstance(q, dict) and "id" in q:
                    self.known.setdefault(str(q["id"]), str(q.get("user_id")))

    def on_order(self, client: Client, message: dict[str, Any]) -> None:
        """An order pushed to a tool user (``order_status``): one for the auction is a charge,
        held against the winner like a ``pay_auction`` ack."""
        order, auction = message.get("order"), self.spec.get("auction")
        ours = isinstance(order, dict) and auction is not None and order.get("sale_id") == auction["id"]
        if ours and message.get("status") == "confirmed":
            self.pushed.append({"user": client.user, "order": order})

    def _probe(self, ended: dict[str, Any]) -> None:
        """A bidder that did not win tries to pay: it must be refused (not_your_offer)."""
        self.probed = True
        loser = next((c for c in self.clients.get("bidder", ()) if c.user != ended.get("winner_id")), None)
        if loser is not None:
            self._pay(loser)

    def final(self) -> dict[str, Any]:
        return {
            "attempted": {k: sorted(v) for k, v in self.attempted.items()},
            "entered": {k: sorted(v) for k, v in self.entered.items()},
            "bypassed": dict(self.bypassed),
            "draw_closed": {k: sorted(v) for k, v in self.draw_closed.items()},
            "acked_bids": self.acked_bids,
            "paid": self.paid,
            "pushed": self.pushed,
            "auction_events": {k: sorted(v) for k, v in self.auction_events.items()},
            "votes": self.votes,
            "poll_closed": sorted(self.poll_closed),
            "asked": self.asked,
            "upvoted": {k: sorted(v) for k, v in self.upvoted.items()},
            "retry_violations": self.retry_violations,
        }


def _decision(reply: dict[str, Any]) -> bool:
    if reply.get("type") == "ack":
        return True
    return reply.get("type") == "error" and reply.get("code") not in NOT_DECISIONS
