"""After the load: did the room's interaction tools keep their promises? (docs/loadtest.md)

Each audit holds what the server published (the events its users heard, the HTTP reads
afterwards) against what the harness's users were told (their acks), and returns a report
whose ``violations`` list says, one line each, what is wrong; an empty list passes.

- draw: the revealed seed hashes to the commitment published at the open, the winners are the
  documented function of the seed and the eligible list (docs/draws.md), the same in the
  ``draw_closed`` event and the HTTP read; every entrant once; every user told ``entered`` (or
  whose keyword comment was acknowledged) is among the entries; nobody else is.
- auction: the accepted bids (``GET .../bids``) rise by at least the increment from the start
  price; none came at or after the end as it stood; the end equals the anti-sniping rule
  applied to them (with its cap); the winner is the highest bid; every bid acknowledged to a
  bidder is in the list; only the winner was charged, once, at the winning price.
- poll: the final tallies (``poll_closed`` and the HTTP read) equal the votes the voters had
  acknowledged, each voter's last one counting.
- qna: every acknowledged question is in the queue as asked; each question's upvotes equal
  the users whose upvote was acknowledged.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

#: The audit's counts, one per tool: its violations.
TOOL_COUNTS = ("draw_violations", "auction_violations", "poll_violations", "qna_violations")
#: Lists cut to this many names in a violation's text.
_SHOW = 5


def _names(values: Iterable[Any]) -> str:
    items = sorted(str(v) for v in values)
    more = f" and {len(items) - _SHOW} more" if len(items) > _SHOW else ""
    return ", ".join(items[:_SHOW]) + more


# -- draws ----------------------------------------------------------------------------------------


def commitment_of(seed_hex: str) -> str:
    """The commitment a draw publishes at its open: the SHA-256 of its seed's hex text."""
    return hashlib.sha256(seed_hex.encode("ascii")).hexdigest()


def draw_winners(seed_hex: str, eligible: Sequence[str], winners: int) -> list[str]:
    """The winners (docs/draws.md): the eligible users sorted by their UTF-8 bytes, then a partial
    Fisher-Yates shuffle whose k-th swap index comes from SHA-256(f"{seed}:{k}")."""
    pool = sorted(eligible, key=lambda user: user.encode("utf-8"))
    n = min(winners, len(pool))
    for k in range(n):
        digest = hashlib.sha256(f"{seed_hex}:{k}".encode()).hexdigest()
        j = k + int(digest, 16) % (len(pool) - k)
        pool[k], pool[j] = pool[j], pool[k]
    return pool[:n]


def audit_draw(
    draw: Mapping[str, Any],
    opened: Mapping[str, Any],
    announced: Sequence[Mapping[str, Any]],
    entered: Iterable[str],
    attempted: Iterable[str],
) -> dict[str, Any]:
    """One draw: ``draw`` is its HTTP read after the close, ``opened`` the draw as the open
    answered it (its commitment then), ``announced`` the distinct ``draw_closed`` events its
    users heard, ``entered`` the users whose entry was acknowledged (an ``entered`` ack, or a
    keyword comment's ack), ``attempted`` every user that tried to enter."""
    violations: list[str] = []
    entered_set, attempted_set = set(entered), set(attempted)
    entries = [str(u) for u in draw.get("entries") or []]
    eligible = [str(u) for u in draw.get("eligible") or []]
    excluded = {str(k): str(v) for k, v in (draw.get("excluded") or {}).items()}
    seed = str(draw.get("seed") or "")
    winner_ids = [str(u) for u in draw.get("winner_ids") or []]
    winners = int(draw.get("winners") or opened.get("winners") or 0)
    if draw.get("state") != "closed":
        violations.append(f"the draw is {draw.get('state')!r} after its close time, not closed")
    commitment = str(opened.get("commitment") or "")
    if draw.get("commitment") != commitment:
        violations.append("the commitment read after the close is not the one published at the open")
    if not seed or commitment_of(seed) != commitment:
        violations.append("the seed does not match the commitment")
    expected = draw_winners(seed, eligible, winners) if seed else []
    if winner_ids != expected:
        violations.append(f"the winners are not the recomputation from the seed: {winner_ids} != {expected}")
    if len(set(winner_ids)) != len(winner_ids):
        violations.append("a user won twice")
    if len(winner_ids) != min(winners, len(eligible)):
        violations.append(f"{len(winner_ids)} winners, not min({winners}, {len(eligible)} eligible)")
    duplicates = [u for u, n in Counter(entries).items() if n > 1]
    if duplicates:
        violations.append(f"{len(duplicates)} users entered more than once: {_names(duplicates)}")
    if int(draw.get("entrants", len(entries))) != len(entries):
        violations.append(f"entrants says {draw.get('entrants')}, the entries are {len(entries)}")
    if eligible != sorted(eligible, key=lambda user: user.encode("utf-8")):
        violations.append("the eligible list is not sorted by UTF-8 bytes")
    if set(eligible) != set(entries) - set(excluded):
        violations.append("the eligible users are not the entries less the excluded ones")
    missing = entered_set - set(entries)
    if missing:
        violations.append(f"{len(missing)} users told they entered are not in the entries: {_names(missing)}")
    strangers = set(entries) - attempted_set
    if strangers:
        violations.append(f"{len(strangers)} entries from users that never entered: {_names(strangers)}")
    for event in announced:
        said = {k: event.get(k) for k in ("seed", "commitment", "winner_ids")}
        if said != {"seed": seed, "commitment": commitment, "winner_ids": winner_ids}:
            violations.append(f"draw_closed announced another result than the HTTP read: {said}")
    if not announced:
        violations.append("no entrant heard draw_closed within the load phase")
    return {
        "draw_id": draw.get("id", opened.get("id")),
        "keyword": opened.get("rules", {}).get("keyword") if isinstance(opened.get("rules"), dict) else None,
        "state": draw.get("state"),
        "entries": len(entries),
        "eligible": len(eligible),
        "excluded": dict(Counter(excluded.values())),
        "acked_entrants": len(entered_set),
        "winners": winner_ids,
        "announcements": len(announced),
        "violations": violations,
    }


# -- auctions -------------------------------------------------------------------------------------


def ends_by_rule(planned_end_ms: int, snipe_ms: int, max_extension_ms: int, bids: Sequence[int]) -> list[int]:
    """The auction's end after each accepted bid (``bids``: their times, in order), by the
    anti-sniping rule: a bid less than ``snipe_ms`` before the end moves it to the bid's time
    plus ``snipe_ms``, never past the planned end plus ``max_extension_ms``."""
    cap = planned_end_ms + max_extension_ms
    end, out = planned_end_ms, []
    for at in bids:
        if end - at < snipe_ms:
            end = max(end, min(at + snipe_ms, cap))
        out.append(end)
    return out


def audit_auction(
    auction: Mapping[str, Any],
    bids: Sequence[Mapping[str, Any]],
    planned_end_ms: int,
    acked: Sequence[Mapping[str, Any]],
    paid: Sequence[Mapping[str, Any]],
    ledger: Sequence[Mapping[str, Any]] | None,
) -> dict[str, Any]:
    """One auction: ``auction`` and ``bids`` its HTTP reads after the end, ``planned_end_ms`` its
    end as opened (before any extension), ``acked`` the bids acknowledged to bidders (``user``,
    ``amount_cents``, ``bid_seq``), ``paid`` every order a ``pay_auction`` ack gave a user
    (``user``, ``order``), ``ledger`` the ledger's orders for the auction (None: not readable)."""
    violations: list[str] = []
    start, increment = int(auction["start_cents"]), int(auction["increment_cents"])
    snipe_ms, max_extension_ms = int(auction["snipe_ms"]), int(auction["max_extension_ms"])
    seqs = [int(b["seq"]) for b in bids]
    if seqs != list(range(1, len(bids) + 1)):
        violations.append("the accepted bids are not numbered 1, 2, 3, ... in order")
    if int(auction.get("bids", len(bids))) != len(bids) or int(auction.get("bid_seq") or 0) != len(bids):
        violations.append(f"the auction counts {auction.get('bids')} bids, its list has {len(bids)}")
    previous: int | None = None
    for bid in bids:
        amount = int(bid["amount_cents"])
        floor = start if previous is None else previous + increment
        if amount < floor:
            violations.append(f"bid {bid['seq']} of {amount} is below the minimum {floor}")
        previous = amount
    ends = ends_by_rule(planned_end_ms, snipe_ms, max_extension_ms, [int(b["at_ms"]) for b in bids])
    end = planned_end_ms
    for bid, rule_end in zip(bids, ends, strict=True):
        if int(bid["at_ms"]) >= end:
            violations.append(f"bid {bid['seq']} was accepted at {bid['at_ms']}, at or after the end {end}")
        if "ends_at_ms" in bid and int(bid["ends_at_ms"]) != rule_end:
            violations.append(
                f"bid {bid['seq']} set the end to {bid['ends_at_ms']}, the rule says {rule_end}"
            )
        end = rule_end
    if int(auction["ends_at_ms"]) != end:
        violations.append(f"the auction ended at {auction['ends_at_ms']}, the rule says {end}")
    top = max(bids, key=lambda b: int(b["amount_cents"]), default=None)
    winner = str(top["user_id"]) if top is not None else None
    winning = int(top["amount_cents"]) if top is not None else None
    if (auction.get("leader_id"), auction.get("amount_cents")) != (winner, winning):
        violations.append(
            f"the leader is {auction.get('leader_id')} at {auction.get('amount_cents')}, the highest bid "
            f"is {winner} at {winning}"
        )
    by_seq = {int(b["seq"]): b for b in bids}
    lost = 0
    for a in acked:
        listed = by_seq.get(int(a["bid_seq"]))
        told = (a["user"], int(a["amount_cents"]))
        if listed is None or (str(listed["user_id"]), int(listed["amount_cents"])) != told:
            lost += 1
    if lost:
        violations.append(f"{lost} acknowledged bids are not in the list as acknowledged")
    payers = Counter(str(p["user"]) for p in paid)
    strangers = [u for u in payers if u != winner]
    if strangers:
        violations.append(f"{len(strangers)} users that did not win were charged: {_names(strangers)}")
    order_ids = {str(p["order"].get("order_id")) for p in paid}
    if len(order_ids) > 1:
        violations.append(f"the winner's payments gave {len(order_ids)} different orders")
    for p in paid:
        order = p["order"]
        unit = order.get("unit_price_cents", order.get("price_cents"))
        if unit is not None and winning is not None and int(unit) != winning:
            violations.append(f"the order {order.get('order_id')} is at {unit}, the winning bid {winning}")
    record = auction.get("result")
    result: Mapping[str, Any] = record if isinstance(record, dict) else {}
    if result.get("winner_id") not in (None, winner):
        violations.append(f"the auction's record names {result.get('winner_id')} the winner, not {winner}")
    if result.get("order_id") is not None and paid and str(result["order_id"]) not in order_ids:
        violations.append(f"the auction's record has the order {result['order_id']}, not the one paid")
    if paid and auction.get("state") != "sold":
        violations.append(f"the winner paid but the auction is {auction.get('state')!r}")
    if ledger is not None:
        ledger_users = Counter(str(o.get("user_id")) for o in ledger)
        if any(u != winner for u in ledger_users) or sum(ledger_users.values()) > 1:
            violations.append(f"the ledger has orders for the auction by {dict(ledger_users)}")
        if paid and not ({str(o.get("order_id")) for o in ledger} & order_ids):
            violations.append("the order paid is not in the ledger")
    return {
        "auction_id": auction.get("id"),
        "state": auction.get("state"),
        "bids": len(bids),
        "acked_bids": len(acked),
        "winner_id": winner,
        "amount_cents": winning,
        "planned_end_ms": planned_end_ms,
        "ends_at_ms": auction.get("ends_at_ms"),
        "extended_ms": int(auction["ends_at_ms"]) - planned_end_ms,
        "paid_orders": sorted(order_ids),
        "ledger_read": ledger is not None,
        "violations": violations,
    }


# -- polls ----------------------------------------------------------------------------------------


def audit_poll(
    poll: Mapping[str, Any], announced: Sequence[Mapping[str, Any]], votes: Mapping[str, int]
) -> dict[str, Any]:
    """One poll: ``poll`` its HTTP read after the close, ``announced`` the distinct
    ``poll_closed`` events its voters heard, ``votes`` each voter's last acknowledged option."""
    violations: list[str] = []
    options = len(poll.get("options") or [])
    expected = [0] * options
    for user, option in votes.items():
        if not 0 <= option < options:
            violations.append(f"{user}'s vote for option {option} was acknowledged; the poll has {options}")
            continue
        expected[option] += 1
    tallies = [int(t) for t in poll.get("tallies") or []]
    if poll.get("state") != "closed":
        violations.append(f"the poll is {poll.get('state')!r} after its close time, not closed")
    if tallies != expected or int(poll.get("votes", -1)) != len(votes):
        violations.append(
            f"the poll's tallies {tallies} ({poll.get('votes')} votes) are not the acknowledged votes "
            f"{expected} ({len(votes)})"
        )
    for event in announced:
        said = [int(t) for t in event.get("tallies") or []]
        if said != expected or int(event.get("votes", -1)) != len(votes):
            violations.append(f"poll_closed announced {said}, the acknowledged votes are {expected}")
    if not announced:
        violations.append("no voter heard poll_closed within the load phase")
    return {
        "poll_id": poll.get("id"),
        "state": poll.get("state"),
        "tallies": tallies,
        "acked_tallies": expected,
        "voters": len(votes),
        "announcements": len(announced),
        "violations": violations,
    }


# -- Q&A ------------------------------------------------------------------------------------------


def audit_qna(
    questions: Sequence[Mapping[str, Any]],
    asked: Sequence[Mapping[str, Any]],
    upvoted: Mapping[str, Iterable[str]],
) -> dict[str, Any]:
    """The room's questions: ``questions`` the host's queue after the load, ``asked`` the
    questions acknowledged to askers (``user``, ``question``), ``upvoted`` question id -> the
    users whose upvote of it was acknowledged."""
    violations: list[str] = []
    by_id = {str(q["id"]): q for q in questions}
    missing = [a for a in asked if str(a["question"]["id"]) not in by_id]
    if missing:
        violations.append(f"{len(missing)} acknowledged questions are not in the queue")
    for a in asked:
        q = by_id.get(str(a["question"]["id"]))
        if q is not None and (str(q.get("user_id")), q.get("text")) != (a["user"], a["question"].get("text")):
            violations.append(f"question {q['id']} is not as asked")
    ids = Counter(str(q["id"]) for q in questions)
    if any(n > 1 for n in ids.values()):
        violations.append("a question is in the queue twice")
    wrong = 0
    for question_id, users in upvoted.items():
        q = by_id.get(question_id)
        if q is not None and int(q.get("upvotes", -1)) != len(set(users)):
            wrong += 1
    if wrong:
        violations.append(f"{wrong} questions' upvotes differ from the acknowledged upvoters")
    acked_ids = {str(a["question"]["id"]) for a in asked}
    unknown = [q for q in questions if str(q["id"]) not in acked_ids]
    if unknown:
        violations.append(f"{len(unknown)} questions in the queue were never acknowledged to an asker")
    for q in questions:
        if str(q["id"]) not in upvoted and int(q.get("upvotes", 0)) != 0:
            violations.append(f"question {q['id']} has {q.get('upvotes')} upvotes, none acknowledged")
    return {
        "questions": len(questions),
        "acked_questions": len(asked),
        "upvotes": sum(int(q.get("upvotes", 0)) for q in questions),
        "acked_upvotes": sum(len(set(u)) for u in upvoted.values()),
        "violations": violations,
    }


def counts(tools: Mapping[str, Any]) -> dict[str, int]:
    """The audit's four tool counts from its ``tools`` section."""

    def total(key: str) -> int:
        reports = tools.get(key) or []
        return sum(len(r["violations"]) for r in reports)

    return {
        "draw_violations": total("draws"),
        "auction_violations": total("auctions"),
        "poll_violations": total("polls"),
        "qna_violations": total("qna"),
    }
