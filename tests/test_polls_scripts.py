"""The poll scripts (interact/lua/poll_*.lua) called directly on the real Redis: votes and their
changes moving the tallies, the same call twice, every refusal changing nothing, the room's
tally gate, the close once, and a poll put back from its record."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from interact.errors import InteractError
from interact.polls import Close, Poll, PollBox, PollSpec, Tally, check_spec, gate_key

ROOM = "r1"


@pytest.fixture
async def box(redis_url: str) -> AsyncIterator[PollBox]:
    client = aioredis.Redis.from_url(redis_url)
    b = PollBox(client, f"t{uuid.uuid4().hex[:12]}", gate_ms=200)
    await b.load()
    yield b
    await client.aclose()


def spec(**overrides: Any) -> PollSpec:
    fields: dict[str, Any] = {
        "id": f"p_{uuid.uuid4().hex[:10]}",
        "room_id": ROOM,
        "question": "哪个颜色?",
        "options": ["红", "绿", "蓝"],
        "allow_change": True,
        "duration_ms": 60_000,
    }
    fields.update(overrides)
    return PollSpec(**fields)


async def snapshot(box: PollBox, s: PollSpec) -> tuple[Any, ...]:
    k = box.keys(s.room_id, s.id)
    return (await box.redis.hgetall(k.tool), await box.redis.hgetall(k.part("votes")))


async def refused(box: PollBox, s: PollSpec, code: str, call: Any) -> InteractError:
    before = await snapshot(box, s)
    with pytest.raises(InteractError) as info:
        await call()
    assert info.value.code == code
    assert await snapshot(box, s) == before
    return info.value


async def tallies(box: PollBox, s: PollSpec) -> tuple[list[int], int]:
    poll = await box.get(s.room_id, s.id)
    assert poll is not None
    return poll.tallies, poll.votes


async def free_gate(box: PollBox, room: str = ROOM) -> None:
    await box.redis.delete(gate_key(box.prefix, room))


async def test_open_twice_answers_the_same(box: PollBox) -> None:
    s = spec()
    first = await box.open(s)
    assert await box.open(s) == first
    poll = await box.get(ROOM, s.id)
    assert poll is not None and poll.state == "open" and poll.tallies == [0, 0, 0] and poll.votes == 0
    assert poll.closes_at_ms - poll.opened_at_ms == 60_000 and poll.spec == s
    assert poll.public()["options"] == ["红", "绿", "蓝"] and poll.public()["closed_at_ms"] is None
    assert await box.redis.sismember(box.keys(ROOM, s.id).room_tools, s.id)
    assert await box.get(ROOM, "p_missing") is None


async def test_a_vote_counts_once_and_a_change_moves_the_tallies(box: PollBox) -> None:
    s = spec()
    await box.open(s)
    first = await box.vote(ROOM, s.id, "ann", 0)
    assert (first.option, first.changed) == (0, True)
    assert first.tally == Tally(1, 1, [1, 0, 0])  # the gate was free: publish now
    before = await snapshot(box, s)
    same = await box.vote(ROOM, s.id, "ann", 0)  # the same vote twice: an ack changing nothing
    assert (same.option, same.changed, same.tally) == (0, False, None)
    assert await snapshot(box, s) == before
    moved = await box.vote(ROOM, s.id, "ann", 2)
    assert moved.changed and moved.tally is None  # the gate is taken: a tick publishes it
    assert await tallies(box, s) == ([0, 0, 1], 1)
    await box.vote(ROOM, s.id, "bob", 2)
    await box.vote(ROOM, s.id, "cat", 1)
    await box.vote(ROOM, s.id, "bob", 1)
    assert await tallies(box, s) == ([0, 2, 1], 3)
    assert await box.ballots(ROOM, s.id) == {"ann": 2, "bob": 1, "cat": 1}


async def test_refusals_change_nothing(box: PollBox) -> None:
    s = spec(allow_change=False)
    await box.open(s)
    await box.vote(ROOM, s.id, "ann", 1)
    for option in (3, 99, -1, 10**18):
        await refused(box, s, "invalid_option", lambda o=option: box.vote(ROOM, s.id, "bob", o))
    again = await refused(box, s, "already_voted", lambda: box.vote(ROOM, s.id, "ann", 0))
    assert again.data == {"option": 1}
    same = await box.vote(ROOM, s.id, "ann", 1)  # the same option: an ack, nothing changed
    assert not same.changed
    await refused(box, s, "poll_not_found", lambda: box.vote(ROOM, "p_none", "ann", 0))
    assert await tallies(box, s) == ([0, 1, 0], 1)
    await box.close(ROOM, s.id, now=True)
    await refused(box, s, "poll_closed", lambda: box.vote(ROOM, s.id, "bob", 0))
    await refused(box, s, "poll_closed", lambda: box.vote(ROOM, s.id, "ann", 1))


async def test_a_vote_after_the_close_time_is_refused_before_the_close_runs(box: PollBox) -> None:
    s = spec(duration_ms=30)
    await box.open(s)
    await asyncio.sleep(0.06)
    await refused(box, s, "poll_closed", lambda: box.vote(ROOM, s.id, "ann", 0))


async def test_the_gate_lets_one_tally_out_per_window_room_wide(box: PollBox) -> None:
    # (a window of 2 s, not the fixture's 200 ms: the calls that must fall inside one window
    # take as long as the machine makes them)
    box = PollBox(box.redis, box.prefix, gate_ms=2000)
    await box.load()
    a, b = spec(), spec()
    await box.open(a)
    await box.open(b)
    assert (await box.vote(ROOM, a.id, "ann", 0)).tally is not None
    assert (await box.vote(ROOM, b.id, "ann", 0)).tally is None  # another poll, the same room
    assert await box.flush(ROOM, b.id) == "wait"
    assert await box.flush(ROOM, a.id) == "done"  # nothing unpublished
    await free_gate(box)
    assert await box.flush(ROOM, b.id) == Tally(1, 1, [1, 0, 0])
    assert await box.flush(ROOM, b.id) == "done"  # the same call twice: published once
    await box.vote(ROOM, a.id, "bob", 1)
    await box.vote(ROOM, a.id, "cat", 1)
    assert await box.flush(ROOM, a.id) == "wait"
    deadline = time.monotonic() + 30
    while (out := await box.flush(ROOM, a.id)) == "wait":  # the gate opens by itself
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    assert out == Tally(3, 3, [1, 2, 0])  # the last change, never lost
    # another room has a gate of its own
    other = spec(room_id="r2")
    await box.open(other)
    assert (await box.vote("r2", other.id, "ann", 0)).tally is not None
    assert await box.flush(ROOM, "p_none") == "done"


async def test_close_once(box: PollBox) -> None:
    s = spec(duration_ms=60_000)
    await box.open(s)
    await box.vote(ROOM, s.id, "ann", 1)
    later = await box.close(ROOM, s.id)
    assert later.kind == "later" and later.at_ms > 0
    closed = await box.close(ROOM, s.id, now=True)
    assert closed.kind == "closed" and closed.tally is not None
    assert (closed.tally.tallies, closed.tally.votes) == ([0, 1, 0], 1)
    assert await box.close(ROOM, s.id, now=True) == Close("state", state="closed")  # once
    assert await box.close(ROOM, s.id) == Close("state", state="closed")
    assert not await box.redis.sismember(box.keys(ROOM, s.id).room_tools, s.id)
    assert await box.flush(ROOM, s.id) == "done"
    poll = await box.get(ROOM, s.id)
    assert poll is not None and poll.state == "closed" and poll.closed_at_ms == closed.at_ms
    assert not await box.announced(ROOM, s.id)
    await box.mark_announced(ROOM, s.id)
    assert await box.announced(ROOM, s.id)
    await box.retire(ROOM, s.id)
    assert await box.redis.pttl(box.keys(ROOM, s.id).tool) > 0
    with pytest.raises(InteractError) as info:
        await box.close(ROOM, "p_none")
    assert info.value.code == "poll_not_found"


async def test_a_due_close_waits_for_the_close_time_then_closes_once(box: PollBox) -> None:
    s = spec(duration_ms=50)
    await box.open(s)
    await box.vote(ROOM, s.id, "ann", 2)
    await box.vote(ROOM, s.id, "ann", 0)  # moved
    deadline = time.monotonic() + 5
    while (done := await box.close(ROOM, s.id)).kind == "later":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    assert done.kind == "closed" and done.tally is not None and done.tally.tallies == [1, 0, 0]
    results = await asyncio.gather(*(box.close(ROOM, s.id) for _ in range(10)))
    assert {r.kind for r in results} == {"state"}


async def test_a_lost_poll_is_put_back_from_its_record(box: PollBox) -> None:
    s = spec(allow_change=False)
    record = Poll(s, opened_at_ms=1000, closes_at_ms=10**13, state="open", tallies=[], votes=0)
    ballots = {"ann": 0, "bob": 2, "cat": 2, "bad": 7}
    assert await box.open(s, record, ballots) == (1000, 10**13)
    assert await box.open(s, record, ballots) == (1000, 10**13)  # again: the same, nothing changes
    assert await tallies(box, s) == ([1, 0, 2], 3)  # an option out of range is dropped
    with pytest.raises(InteractError):
        await box.vote(ROOM, s.id, "bob", 1)  # without allow_change: already_voted
    closed = spec()
    gone = Poll(closed, 1000, 2000, "closed", [], 0, closed_at_ms=1500)
    await box.open(closed, gone, {"ann": 1})
    poll = await box.get(ROOM, closed.id)
    assert poll is not None and (poll.state, poll.closed_at_ms, poll.tallies) == ("closed", 1500, [0, 1, 0])
    assert not await box.redis.sismember(box.keys(ROOM, closed.id).room_tools, closed.id)


def test_check_spec() -> None:
    assert check_spec("q", ["a", "b"]) is None
    assert check_spec("", ["a", "b"]) is not None
    assert check_spec("q" * 201, ["a", "b"]) is not None
    assert check_spec("q", ["a"]) is not None
    assert check_spec("q", ["a"] * 7) is not None
    assert check_spec("q", ["a", ""]) is not None
    assert check_spec("q", ["a", "b" * 81]) is not None
