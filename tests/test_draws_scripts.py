"""The lucky-draw scripts (interact/lua/draw_*.lua) called directly on the real Redis: an entry
atomic and once, every refusal changing nothing, the close's exclusions and exactly
min(winners, eligible) winners each once (the same as interact/draw_verify.py recomputes, for
any entries, non-ASCII ids too), the same close twice, claims and their window."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from interact.draw_verify import commitment_of, draw_winners, problems
from interact.draws import DrawBox, DrawSpec, Step, new_seed
from interact.errors import InteractError

ROOM = "r1"
BANNED = "{r1}:banned-draw-test"
MUTES = "{r1}:mutes-draw-test"


@pytest.fixture
async def box(redis_url: str) -> AsyncIterator[DrawBox]:
    client = aioredis.Redis.from_url(redis_url)
    b = DrawBox(client, f"t{uuid.uuid4().hex[:12]}")
    await b.load()
    yield b
    await client.delete(BANNED, MUTES)
    await client.aclose()


def spec(**overrides: Any) -> DrawSpec:
    fields: dict[str, Any] = {
        "id": f"d_{uuid.uuid4().hex[:10]}",
        "room_id": ROOM,
        "prize": {"product_id": "p1", "title": "福袋", "price_cents": 100},
        "winners": 3,
        "keyword": None,
        "signed_in": False,
        "present_at_close": False,
        "min_watch_ms": 0,
        "claim_ms": 60_000,
        "duration_ms": 60_000,
        "seed": new_seed(),
    }
    fields.update(overrides)
    return DrawSpec(**fields)


async def snapshot(box: DrawBox, s: DrawSpec) -> tuple[Any, ...]:
    k = box.keys(s.room_id, s.id)
    r = box.redis
    return (
        await r.hgetall(k.tool),
        await r.lrange(k.part("order"), 0, -1),
        await r.hgetall(k.part("ip")),
        await r.zrange(k.part("eligible"), 0, -1),
        await r.hgetall(k.part("claims")),
    )


async def refused(box: DrawBox, s: DrawSpec, code: str, call: Any) -> None:
    before = await snapshot(box, s)
    with pytest.raises(InteractError) as info:
        await call()
    assert info.value.code == code
    assert await snapshot(box, s) == before


async def close_now(box: DrawBox, s: DrawSpec, per_ip: int = 0, grace_ms: int = 3000) -> Step:
    deadline = time.monotonic() + 5
    while True:
        step = await box.close(ROOM, s.id, BANNED, MUTES, per_ip, grace_ms)
        if step.kind != "later":
            return step
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)


async def test_open_once_and_the_seed_stays_secret(box: DrawBox) -> None:
    s = spec()
    first = await box.open(s)
    assert await box.open(s) == first
    draw = await box.get(ROOM, s.id)
    assert draw is not None and draw.state == "open" and draw.entrants == 0
    public = draw.public()
    assert "seed" not in public and public["commitment"] == commitment_of(s.seed)
    assert public["closes_at_ms"] - public["opened_at_ms"] == 60_000
    assert await box.get(ROOM, "d_missing") is None
    restored = spec(duration_ms=5000)
    assert await box.open(restored, opened_at_ms=1000) == (1000, 6000)


async def test_an_entry_is_atomic_once_and_refusals_change_nothing(box: DrawBox) -> None:
    s = spec()
    await box.open(s)
    assert await box.enter(ROOM, s.id, "ann", "10.0.0.1", False, False, 2) == (True, 1)
    before = await snapshot(box, s)
    assert await box.enter(ROOM, s.id, "ann", "10.0.0.9", True, False, 2) == (False, 1)  # again
    assert await snapshot(box, s) == before
    assert await box.enter(ROOM, s.id, "李", "10.0.0.1", False, False, 2) == (True, 2)
    await refused(box, s, "draw_full", lambda: box.enter(ROOM, s.id, "bob", "x", False, False, 2))
    await refused(box, s, "draw_not_found", lambda: box.enter(ROOM, "d_none", "bob", "x", False, False, 0))
    keyword = spec(keyword="lucky", signed_in=True)
    await box.open(keyword)
    await refused(
        box, keyword, "keyword_required", lambda: box.enter(ROOM, keyword.id, "bob", "x", False, False, 0)
    )
    await refused(
        box, keyword, "sign_in_required", lambda: box.enter(ROOM, keyword.id, "anon_1", "x", True, True, 0)
    )
    assert await box.enter(ROOM, keyword.id, "bob", "x", True, False, 0) == (True, 1)
    short = spec(duration_ms=20)
    await box.open(short)
    await asyncio.sleep(0.05)
    await refused(box, short, "draw_closed", lambda: box.enter(ROOM, short.id, "bob", "x", False, False, 0))

    # many at once: each once, the count exact
    many = spec()
    await box.open(many)
    users = [f"u{n}" for n in range(200)]
    calls = [box.enter(ROOM, many.id, u, "ip", False, False, 0) for u in users * 2]
    for start in range(0, len(calls), 50):  # (the client's pool: 50 at once)
        await asyncio.gather(*calls[start : start + 50])
    draw = await box.get(ROOM, many.id)
    assert draw is not None and draw.entrants == 200
    order = await box.redis.lrange(box.keys(ROOM, many.id).part("order"), 0, -1)
    assert sorted(o.decode() for o in order) == sorted(users)


async def test_the_close_excludes_draws_exactly_min_winners_and_runs_once(box: DrawBox) -> None:
    # (its close time comes when the test says so, not 200 ms after the open: the entries and
    # samples before it take as long as the machine makes them)
    s = spec(winners=3, present_at_close=True, min_watch_ms=50)
    await box.open(s)
    for user, ip in (
        ("ann", "a"),
        ("bob", "a"),
        ("cat", "a"),
        ("dan", "b"),
        ("eve", "c"),
        ("fay", "d"),
        ("gus", "e"),
    ):
        await box.enter(ROOM, s.id, user, ip, False, False, 0)
    await box.redis.sadd(BANNED, "eve")
    await box.redis.hset(MUTES, mapping={"fay": int(time.time() * 1000) + 60_000, "dan": 1})  # dan's ran out
    assert await box.record_presence(ROOM, s.id, ["ann", "bob", "cat", "dan", "fay"])
    await asyncio.sleep(0.1)
    assert await box.record_presence(ROOM, s.id, ["ann", "bob", "cat", "dan", "fay", "gus"])  # gus: just came
    assert (await box.close(ROOM, s.id, BANNED, MUTES, 2, 3000)).kind == "later"
    await box.redis.hset(box.keys(ROOM, s.id).tool, "closes_at", 0)  # its time came
    step = await close_now(box, s, per_ip=2)
    assert step.kind == "closed" and step.closed is not None
    closed = step.closed
    assert closed.seed == s.seed and closed.entrants == 7 and closed.eligible == 3
    assert closed.excluded == {"banned": 1, "muted": 1, "address_limit": 1, "not_present": 0, "watch_time": 1}
    result = await box.result(ROOM, s.id)
    assert result["excluded"] == {
        "eve": "banned",
        "fay": "muted",
        "cat": "address_limit",
        "gus": "watch_time",
    }
    assert result["eligible"] == ["ann", "bob", "dan"]
    assert sorted(closed.winner_ids) == ["ann", "bob", "dan"] == sorted(result["winner_ids"])
    assert closed.winner_ids == draw_winners(s.seed, result["eligible"], 3)
    again = await box.close(ROOM, s.id, BANNED, MUTES, 2, 3000)
    assert (again.kind, again.state) == ("state", "closed")
    assert await box.result(ROOM, s.id) == result
    assert not await box.record_presence(ROOM, s.id, ["zed"])  # closed: nothing recorded
    draw = await box.get(ROOM, s.id)
    assert draw is not None
    full = {**draw.public(), **result, "winners": s.winners}
    assert problems(full) == []
    with pytest.raises(InteractError):
        await box.close(ROOM, "d_none", BANNED, MUTES, 0, 0)

    gone = spec(present_at_close=True, duration_ms=20)
    await box.open(gone)
    await box.enter(ROOM, gone.id, "ann", "a", False, False, 0)
    await box.record_presence(ROOM, gone.id, ["ann"])
    await asyncio.sleep(0.05)
    step = await close_now(box, gone, grace_ms=10)  # last seen > 10 ms before the close
    assert (
        step.closed is not None and step.closed.excluded["not_present"] == 1 and step.closed.winner_ids == []
    )


async def test_claims_once_and_their_window(box: DrawBox) -> None:
    # (a claim window far longer than the calls inside it take; the second draw's window is
    # ended by moving its claim_by into the past, not by a sleep that must outlast it)
    s = spec(winners=1, duration_ms=20, claim_ms=60_000)
    await box.open(s)
    await refused(box, s, "not_a_winner", lambda: box.check_claim(ROOM, s.id, "ann"))  # not yet drawn
    await box.enter(ROOM, s.id, "ann", "a", False, False, 0)
    await box.enter(ROOM, s.id, "bob", "b", False, False, 0)
    step = await close_now(box, s)
    assert step.closed is not None
    (winner,) = step.closed.winner_ids
    loser = "bob" if winner == "ann" else "ann"
    await refused(box, s, "not_a_winner", lambda: box.check_claim(ROOM, s.id, loser))
    await refused(box, s, "draw_not_found", lambda: box.check_claim(ROOM, "d_none", winner))
    assert await box.check_claim(ROOM, s.id, winner) is None
    assert (await box.expire(ROOM, s.id)).kind == "later"
    order, made = await box.claim(ROOM, s.id, winner, "c1.1")
    assert made and f'"user":"{winner}"' in order and '"amount":0' in order and '"coupon":"c1.1"' in order
    assert await box.claim(ROOM, s.id, winner, "") == (order, False)  # again: the same order
    assert await box.check_claim(ROOM, s.id, winner) == order
    assert (await box.result(ROOM, s.id))["claims"] == {winner: f"{s.id}.1"}

    other = spec(winners=2, duration_ms=20, claim_ms=60_000)
    await box.open(other)
    for user in ("ann", "bob"):
        await box.enter(ROOM, other.id, user, user, False, False, 0)
    closed = (await close_now(box, other)).closed
    assert closed is not None and len(closed.winner_ids) == 2
    closed_at = int(await box.redis.hget(box.keys(ROOM, other.id).tool, "closed_at"))
    assert closed.claim_by_ms == closed_at + 60_000  # the window: claim_ms from the close
    first, second = closed.winner_ids
    await box.claim(ROOM, other.id, first, None)
    assert (await box.expire(ROOM, other.id)).kind == "later"
    await box.redis.hset(box.keys(ROOM, other.id).tool, "claim_by", closed_at)  # its window ended
    await refused(box, other, "claim_expired", lambda: box.check_claim(ROOM, other.id, second))
    expired = await box.expire(ROOM, other.id)
    assert expired.kind == "expired" and expired.unclaimed == (second,)
    assert (await box.expire(ROOM, other.id)).state == "expired"
    await refused(box, other, "claim_expired", lambda: box.claim(ROOM, other.id, second, None))
    assert (await box.claim(ROOM, other.id, first, None))[1] is False  # claimed before: kept
    draw = await box.get(ROOM, other.id)
    assert draw is not None and not draw.claims_open
    assert other.id not in {m.decode() for m in await box.redis.smembers(box.keys(ROOM, other.id).room_tools)}
    with pytest.raises(InteractError):
        await box.expire(ROOM, "d_none")
    assert (await box.expire(ROOM, s.id)).kind == "later"
    await box.retire(ROOM, other.id)
    assert await box.redis.pttl(box.keys(ROOM, other.id).tool) > 0


async def test_an_open_draw_does_not_expire(box: DrawBox) -> None:
    s = spec()
    _, closes = await box.open(s)
    step = await box.expire(ROOM, s.id)
    assert (step.kind, step.at_ms) == ("later", closes)


ids = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    entries=st.lists(ids, max_size=40),
    winners=st.integers(1, 12),
    extra=st.sampled_from(["", "é", "😀", "\uffff"]),
)
async def test_the_scripts_winners_are_the_pure_recomputation(
    box: DrawBox, entries: list[str], winners: int, extra: str
) -> None:
    s = spec(winners=winners)
    await box.open(s)
    for n, user in enumerate(entries):
        await box.enter(ROOM, s.id, user + extra, f"ip{n % 3}", False, False, 0)
    await box.redis.hset(box.keys(ROOM, s.id).tool, "closes_at", 0)  # its time came
    step = await close_now(box, s)
    assert step.closed is not None
    result = await box.result(ROOM, s.id)
    assert set(result["eligible"]) == {u + extra for u in entries}
    expected = draw_winners(s.seed, result["eligible"], winners)
    assert step.closed.winner_ids == expected == result["winner_ids"]
    assert len(expected) == min(winners, len(set(entries))) == len(set(expected))


def test_problems_names_what_is_wrong() -> None:
    seed = "ab" * 32
    good = {
        "id": "d_x",
        "state": "closed",
        "seed": seed,
        "commitment": commitment_of(seed),
        "winners": 2,
        "entries": ["b", "a", "c"],
        "excluded": {"c": "banned"},
        "eligible": ["a", "b"],
        "winner_ids": draw_winners(seed, ["a", "b"], 2),
    }
    assert problems(good) == [] and problems(good, commitment_of(seed)) == []
    assert "not closed" in problems({**good, "state": "open"})[0]
    assert problems({**good, "seed": None}) == ["the draw has no seed or no commitment"]
    assert problems({**good, "eligible": None})[-1] == "the draw has no eligible list"
    assert problems({**good, "winner_ids": None})[-1] == "the draw has no winner_ids or no winners count"
    assert any("not sorted" in p for p in problems({**good, "eligible": ["b", "a"]}))
    assert any("unknown rules" in p for p in problems({**good, "excluded": {"c": "rude"}}))
    assert any("less the excluded" in p for p in problems({**good, "excluded": {}}))
    assert draw_winners(seed, ["a"], 0) == []


def test_verify_reads_stdin_and_only_local_urls(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import io
    import json
    import socket

    from live import cli

    seed = "cd" * 32
    draw = {
        "id": "d_y",
        "state": "closed",
        "seed": seed,
        "commitment": commitment_of(seed),
        "winners": 1,
        "eligible": ["李", "a"][::-1],
        "winner_ids": draw_winners(seed, ["a", "李"], 1),
    }
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(draw)))
    assert cli.main(["draw", "verify", "-"]) == 0
    assert "ok: draw d_y" in capsys.readouterr().out
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    assert cli.main(["draw", "verify", f"http://localhost:{port}/x"]) == 2
    assert "cannot read it" in capsys.readouterr().err
    assert cli.main(["draw", "verify", "http://10.1.2.3/x"]) == 2
