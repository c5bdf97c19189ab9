"""`live-loadtest`'s interaction tools (issue 14): the audits of draws, auctions, polls and Q&A
(loadtest/tools_audit.py), each passing an honest result and failing a forged one, the plan's
limits for the tools, and short `--spawn draw` and `--spawn auction` runs against a real server
that pass their audits."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from loadtest import audit, nodes
from loadtest.cli import summary
from loadtest.plan import SCENARIOS, Plan, PlanError
from loadtest.report import write_report
from loadtest.tools_audit import (
    audit_auction,
    audit_draw,
    audit_poll,
    audit_qna,
    commitment_of,
    draw_winners,
    ends_by_rule,
)

# -- draws ----------------------------------------------------------------------------------------

SEED = "5eed" * 16


def honest_draw() -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    entries = sorted(f"d{i}" for i in range(30))
    excluded = {"d7": "banned"}
    eligible = sorted((u for u in entries if u not in excluded), key=lambda u: u.encode())
    winners = draw_winners(SEED, eligible, 5)
    opened = {"id": "d_x", "winners": 5, "commitment": commitment_of(SEED), "rules": {"keyword": "lucky"}}
    read = {
        "id": "d_x",
        "state": "closed",
        "winners": 5,
        "commitment": commitment_of(SEED),
        "seed": SEED,
        "entrants": len(entries),
        "entries": entries,
        "eligible": eligible,
        "excluded": excluded,
        "winner_ids": winners,
    }
    announced = [{"seed": SEED, "commitment": commitment_of(SEED), "winner_ids": winners}]
    return read, opened, announced


def test_the_winners_are_the_documented_fisher_yates_of_the_seed() -> None:
    eligible = ["b", "a", "é", "c"]
    pool = sorted(eligible, key=lambda u: u.encode())
    for k in range(2):
        j = k + int(hashlib.sha256(f"{SEED}:{k}".encode()).hexdigest(), 16) % (len(pool) - k)
        pool[k], pool[j] = pool[j], pool[k]
    assert draw_winners(SEED, eligible, 2) == pool[:2]
    assert sorted(draw_winners(SEED, eligible, 10)) == sorted(eligible)  # fewer entrants: all win
    assert draw_winners(SEED, [], 3) == []
    assert commitment_of(SEED) == hashlib.sha256(SEED.encode()).hexdigest()


def test_an_honest_draw_passes() -> None:
    read, opened, announced = honest_draw()
    report = audit_draw(read, opened, announced, {"d1", "d2"}, set(read["entries"]))
    assert report["violations"] == []
    assert report["entries"] == 30 and report["eligible"] == 29 and report["excluded"] == {"banned": 1}


def test_a_forged_seed_fails_the_draw() -> None:
    read, opened, announced = honest_draw()
    forged = "f" * 64
    read["seed"] = forged
    read["winner_ids"] = draw_winners(forged, read["eligible"], 5)  # consistent with itself
    announced = [{**announced[0], "seed": forged, "winner_ids": read["winner_ids"]}]
    violations = audit_draw(read, opened, announced, set(), set(read["entries"]))["violations"]
    assert "the seed does not match the commitment" in violations


def test_a_draw_with_other_winners_a_duplicate_entry_or_a_lost_entrant_fails() -> None:
    read, opened, announced = honest_draw()
    bad = copy.deepcopy(read)
    bad["winner_ids"] = [*read["winner_ids"][:-1], "d7"]
    violations = audit_draw(bad, opened, announced, set(), set(read["entries"]))["violations"]
    assert any("not the recomputation" in v for v in violations)
    assert any("announced another result" in v for v in violations)

    bad = copy.deepcopy(read)
    bad["entries"] = sorted([*read["entries"], "d3"])
    bad["entrants"] = len(bad["entries"])
    violations = audit_draw(bad, opened, announced, set(), set(read["entries"]))["violations"]
    assert any("more than once" in v for v in violations)

    violations = audit_draw(read, opened, announced, {"d99"}, {*read["entries"], "d99"})["violations"]
    assert any("told they entered are not in the entries" in v for v in violations)
    violations = audit_draw(read, opened, announced, set(), {"d1"})["violations"]
    assert any("never entered" in v for v in violations)
    violations = audit_draw({**read, "state": "open"}, opened, [], set(), set(read["entries"]))["violations"]
    assert any("not closed" in v for v in violations) and any("heard draw_closed" in v for v in violations)
    violations = audit_draw(read, {**opened, "commitment": "0" * 64}, announced, set(), set(read["entries"]))[
        "violations"
    ]
    assert any("published at the open" in v for v in violations)


# -- auctions -------------------------------------------------------------------------------------

END = 1_000_000


def honest_auction() -> tuple[
    dict[str, Any], list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]
]:
    times = [END - 5000, END - 1500, END + 400, END + 1900]
    ends = ends_by_rule(END, 2000, 2000, times)
    amounts = [1000, 1100, 1300, 1400]
    bids = [
        {"seq": k + 1, "user_id": f"a{k}", "amount_cents": amounts[k], "at_ms": t, "ends_at_ms": ends[k]}
        for k, t in enumerate(times)
    ]
    auction = {
        "id": "a_x",
        "state": "sold",
        "start_cents": 1000,
        "increment_cents": 100,
        "snipe_ms": 2000,
        "max_extension_ms": 2000,
        "ends_at_ms": ends[-1],
        "leader_id": "a3",
        "amount_cents": 1400,
        "bids": 4,
        "bid_seq": 4,
    }
    acked = [{"user": b["user_id"], "amount_cents": b["amount_cents"], "bid_seq": b["seq"]} for b in bids]
    order = {"order_id": "o1", "sale_id": "a_x", "quantity": 1, "unit_price_cents": 1400}
    paid = [{"user": "a3", "order": order}]
    return auction, bids, acked, paid


def test_the_anti_sniping_rule_extends_to_the_bid_plus_the_window_up_to_the_cap() -> None:
    # A bid before the window changes nothing; one in it moves the end; the cap holds.
    assert ends_by_rule(END, 2000, 3000, [END - 5000, END - 1000, END + 900, END + 2500]) == [
        END,
        END + 1000,
        END + 2900,
        END + 3000,
    ]
    assert ends_by_rule(END, 2000, 0, [END - 1]) == [END]


def test_an_honest_auction_passes() -> None:
    auction, bids, acked, paid = honest_auction()
    ledger = [{"order_id": "o1", "user_id": "a3"}]
    report = audit_auction(auction, bids, END, acked, paid, ledger)
    assert report["violations"] == [], report
    assert report["winner_id"] == "a3" and report["amount_cents"] == 1400
    assert report["extended_ms"] == 2000
    assert audit_auction(auction, bids, END, acked, paid, None)["violations"] == []


def test_a_bid_below_the_increment_fails_the_auction() -> None:
    auction, bids, acked, paid = honest_auction()
    bids[2]["amount_cents"] = 1150  # only 50 over the previous
    violations = audit_auction(auction, bids, END, acked, paid, None)["violations"]
    assert any("below the minimum 1200" in v for v in violations)
    auction, bids, acked, paid = honest_auction()
    bids[0]["amount_cents"] = 900
    violations = audit_auction(auction, bids, END, acked, paid, None)["violations"]
    assert any("below the minimum 1000" in v for v in violations)


def test_an_auction_with_a_wrong_end_a_late_bid_a_wrong_winner_or_a_stranger_charged_fails() -> None:
    auction, bids, acked, paid = honest_auction()
    violations = audit_auction({**auction, "ends_at_ms": END + 5000}, bids, END, acked, paid, None)[
        "violations"
    ]
    assert any("the rule says" in v for v in violations)

    auction, bids, acked, paid = honest_auction()
    late = {"seq": 5, "user_id": "a9", "amount_cents": 1500, "at_ms": END + 2500, "ends_at_ms": END + 2000}
    auction = {**auction, "bids": 5, "bid_seq": 5, "leader_id": "a9", "amount_cents": 1500}
    violations = audit_auction(auction, [*bids, late], END, acked, [], None)["violations"]
    assert any("at or after the end" in v for v in violations)

    auction, bids, acked, paid = honest_auction()
    violations = audit_auction({**auction, "leader_id": "a2"}, bids, END, acked, paid, None)["violations"]
    assert any("the highest bid is a3" in v for v in violations)

    auction, bids, acked, paid = honest_auction()
    stranger = {"user": "a1", "order": {"order_id": "o2", "unit_price_cents": 1400}}
    ledger = [{"order_id": "o1", "user_id": "a3"}, {"order_id": "o2", "user_id": "a1"}]
    violations = audit_auction(auction, bids, END, acked, [*paid, stranger], ledger)["violations"]
    assert any("did not win were charged: a1" in v for v in violations)
    assert any("ledger has orders" in v for v in violations)

    auction, bids, acked, paid = honest_auction()
    acked.append({"user": "a5", "amount_cents": 1500, "bid_seq": 5})
    violations = audit_auction(auction, bids, END, acked, paid, [])["violations"]
    assert any("acknowledged bids are not in the list" in v for v in violations)
    assert any("not in the ledger" in v for v in violations)
    bids[1]["seq"] = 7
    violations = audit_auction({**auction, "state": "unsold"}, bids, END, acked[:4], paid, None)["violations"]
    assert any("numbered" in v for v in violations) and any("unsold" in v for v in violations)


# -- polls and Q&A --------------------------------------------------------------------------------


def test_a_poll_passes_when_its_tallies_are_the_acknowledged_votes_and_fails_otherwise() -> None:
    votes = {"p0": 0, "p1": 2, "p2": 2, "p3": 1}
    poll = {"id": "p_x", "state": "closed", "options": ["a", "b", "c"], "tallies": [1, 1, 2], "votes": 4}
    announced = [{"tallies": [1, 1, 2], "votes": 4}]
    assert audit_poll(poll, announced, votes)["violations"] == []

    # A change not applied (p3 moved from 2 to 1): the tallies are off by one.
    off = {**poll, "tallies": [1, 0, 3]}
    violations = audit_poll(off, [{"tallies": [1, 0, 3], "votes": 4}], votes)["violations"]
    assert len(violations) == 2 and all("[1, 1, 2]" in v for v in violations)
    violations = audit_poll({**poll, "state": "open"}, [], {**votes, "p4": 5})["violations"]
    assert any("not closed" in v for v in violations) and any("heard poll_closed" in v for v in violations)
    assert any("the poll has 3" in v for v in violations)


def test_qna_passes_when_every_acked_question_and_upvote_is_there_and_fails_otherwise() -> None:
    asked = [
        {"user": "q0", "question": {"id": "q_1", "text": "blue?"}},
        {"user": "q1", "question": {"id": "q_2", "text": "red?"}},
    ]
    queue = [
        {"id": "q_1", "user_id": "q0", "text": "blue?", "upvotes": 2},
        {"id": "q_2", "user_id": "q1", "text": "red?", "upvotes": 0},
    ]
    upvoted = {"q_1": ["q2", "q3", "q3"]}
    assert audit_qna(queue, asked, upvoted)["violations"] == []

    violations = audit_qna([{**queue[0], "upvotes": 3}], asked, upvoted)["violations"]
    assert any("not in the queue" in v for v in violations) and any("upvotes differ" in v for v in violations)
    stranger = {"id": "q_9", "user_id": "x", "text": "?", "upvotes": 1}
    violations = audit_qna([*queue, {**queue[1], "text": "green?"}, stranger], asked, upvoted)["violations"]
    assert any("twice" in v for v in violations) and any("never acknowledged" in v for v in violations)
    assert any("none acknowledged" in v for v in violations) and any("not as asked" in v for v in violations)


def test_the_verdict_fails_on_a_tool_violation_and_the_report_and_summary_show_it(tmp_path: Path) -> None:
    auction, bids, acked, paid = honest_auction()
    bids[2]["amount_cents"] = 1150
    tools = {"auctions": [audit_auction(auction, bids, END, acked, paid, None)]}
    verdict = audit.verdict([], None, None, tools)
    assert verdict["passed"] is False and verdict["auction_violations"] >= 1
    assert verdict["draw_violations"] == verdict["poll_violations"] == verdict["qna_violations"] == 0
    assert any(n.startswith("auctions: bid 3") for n in verdict["notes"])
    assert audit.verdict([], None, None, {"auctions": []})["passed"] is True

    result = {
        "scenario": "auction",
        "duration_s": 1.0,
        "target": {"url": "http://127.0.0.1:1"},
        "connections": {"peak": 1, "target": 1, "failed": 0},
        "metrics": {},
        "errors": {},
        "harness_cpu_s": 0.1,
        "harness_cores": 0.1,
        "server_cpu_s": None,
        "audit": verdict,
        "load": {"shortfall": False, "notes": [], "max_unsent_share": 0.01},
    }
    assert "tools: draw_violations 0, auction_violations " in summary(result)
    html = write_report(result, tmp_path).read_text()
    assert "auction violations" in html and "acked_bids" in html


# -- the plan ---------------------------------------------------------------------------------------


def test_the_tools_join_big_night_with_users_of_their_own() -> None:
    plan = Plan(
        viewers=100, buyers=5, teams=1, team_size=2, draw_entrants=7, bidders=3, voters=4, qna_users=2,
        askers=1, duration_s=20,
    )  # fmt: skip
    assert plan.name == "big-night" and {"draw", "auction", "poll", "qna"} <= set(plan.scenarios)
    assert plan.tool_users == 7 + 3 + 4 + 2 and plan.connections == 100 + 5 + 2 + 16 + 1
    given = nodes.assignment(plan, ["a", "b"])
    assert sorted(n["tool_users"] for n in given) == [8, 8]
    everything = Plan(
        scenarios=SCENARIOS, viewers=100, buyers=5, teams=1, team_size=2, draw_entrants=7, bidders=3,
        voters=4, qna_users=2, askers=1, duration_s=20,
    )  # fmt: skip
    assert everything.tool_users == 16 and everything.connections == 100 + 5 + 2 + 16 + 1
    alone = Plan(scenarios=("auction",), bidders=3, duration_s=15)
    assert alone.connections == 3 and alone.audience == 0
    assert nodes.tool_index(alone, 0) == 0


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"scenarios": ("auction",), "duration_s": 10, "auction_s": 6}, "does not fit"),
        ({"scenarios": ("draw",), "duration_s": 7, "ramp_s": 0}, "duration_s >= 8"),
        ({"scenarios": ("poll",), "duration_s": 20, "voters": 0}, "voters >= 1"),
        ({"scenarios": ("qna",), "duration_s": 20, "askers": 0}, "askers >= 1"),
        ({"scenarios": ("qna",), "duration_s": 20, "askers": 5, "qna_users": 3}, "askers must be <="),
        ({"scenarios": ("draw",), "duration_s": 9, "ramp_s": 4}, "the tools need 3 s"),
        ({"scenarios": ("auction",), "increment_cents": 2000}, "below start_cents"),
        ({"scenarios": ("poll",), "poll_options": 7}, "poll_options"),
        ({"scenarios": ("draw",), "draw_keyword": " x"}, "draw_keyword"),
        ({"scenarios": ("draw",), "draw_repeat_share": 2.0}, "draw_repeat_share"),
    ],
)
def test_the_plan_refuses_tools_that_cannot_run(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(PlanError, match=message):
        Plan(**fields)


# -- short runs against a spawned server ------------------------------------------------------------


async def spawned(tmp_path: Path, *args: str) -> tuple[int, str, dict[str, Any]]:
    out = tmp_path / "result.json"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "loadtest", "--spawn", *args, "--json", str(out), "--quiet",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await process.communicate()
    text = output.decode(errors="replace")
    assert out.exists(), text
    result: dict[str, Any] = json.loads(out.read_text())
    assert process.returncode is not None
    return process.returncode, text, result


def sane(result: dict[str, Any], text: str) -> None:
    assert result["errors"] == {}, text
    assert result["audit"]["passed"], result["audit"]["notes"]
    assert result["load"]["shortfall"] is False, result["load"]
    assert result["connections"]["peak"] == result["connections"]["target"]


@pytest.mark.harness
@pytest.mark.timeout(90)
async def test_a_spawned_auction_run_passes_its_audit(tmp_path: Path) -> None:
    status, text, result = await spawned(
        tmp_path, "auction", "--duration", "14", "--ramp", "2", "--bidders", "40", "--bids", "300",
        "--auction-duration", "5", "--snipe", "2", "--max-extension", "3", "--workers", "2",
    )  # fmt: skip
    sane(result, text)
    assert status == 0, text
    (auction,) = result["audit"]["tools"]["auctions"]
    assert auction["state"] == "sold" and auction["paid_orders"], auction
    assert auction["bids"] >= 2 and auction["extended_ms"] > 0, auction
    bid = result["outcomes"]["bid"]
    assert bid.get("ok", 0) > 0 and bid.get("bid_too_low", 0) > 0 and bid.get("auction_ended", 0) > 0, bid
    assert result["outcomes"].get("bid_retry"), "no bid was retried with its rid"
    assert result["outcomes"]["pay_auction"].get("ok") == 1
    assert result["outcomes"]["pay_auction"].get("not_your_offer", 0) >= 1


@pytest.mark.harness
@pytest.mark.timeout(90)
async def test_a_spawned_run_of_draws_a_poll_and_qna_passes_its_audits(tmp_path: Path) -> None:
    status, text, result = await spawned(
        tmp_path, "draw", "poll", "qna", "--duration", "14", "--ramp", "2", "--draw-entrants", "60",
        "--voters", "60", "--qna-users", "20", "--askers", "8", "--upvotes", "40", "--workers", "2",
    )  # fmt: skip
    sane(result, text)
    assert status == 0, text
    tools = result["audit"]["tools"]
    assert set(tools) == {"draws", "polls", "qna"}, tools
    keyword, plain = tools["draws"]
    assert keyword["keyword"] and plain["keyword"] is None
    assert keyword["entries"] + plain["entries"] == 60 and all(d["winners"] for d in tools["draws"])
    (poll,) = tools["polls"]
    assert poll["state"] == "closed" and poll["voters"] == 60 and sum(poll["tallies"]) == 60
    (qna,) = tools["qna"]
    assert qna["questions"] >= 8 and qna["upvotes"] > 0
    outcomes = result["outcomes"]
    assert outcomes["enter_draw"].get("keyword_required", 0) > 0  # the tenth of the commenters
    assert outcomes["draw_comment"].get("ok", 0) > 0 and outcomes["vote_retry"].get("ok", 0) > 0
    assert outcomes["upvote"].get("ok", 0) > 0
