"""The Q&A scripts (interact/lua/question_*.lua) called directly on the real Redis: each
decision, the same call twice, the ranking, and every refusal changing nothing."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.keys import RoomKeys
from interact.errors import InteractError
from interact.questions import TTL_MS, QuestionBoard, question_id

ROOM = "r1"


@pytest.fixture
async def board(redis_url: str) -> AsyncIterator[QuestionBoard]:
    client = aioredis.Redis.from_url(redis_url)
    b = QuestionBoard(client, f"t{uuid.uuid4().hex[:12]}")
    await b.load()
    yield b
    await client.aclose()


async def snapshot(board: QuestionBoard, room: str = ROOM) -> tuple[Any, ...]:
    r = board.redis
    return (
        await r.hgetall(board.key(room, "questions")),
        await r.zrange(board.key(room, "queue"), 0, -1, withscores=True),
        await r.smembers(board.key(room, "voters")),
        await r.get(board.key(room, "pinned")),
        await r.get(board.key(room, "top")),
    )


async def refused(board: QuestionBoard, code: str, call: Any) -> None:
    before = await snapshot(board)
    with pytest.raises(InteractError) as info:
        await call()
    assert info.value.code == code and info.value.message
    assert await snapshot(board) == before


async def ask(board: QuestionBoard, user: str, text: str = "多少钱?", qid: str | None = None) -> str:
    question, new = await board.ask(ROOM, qid or f"q_{uuid.uuid4().hex[:10]}", user, text, 0)
    assert new
    await asyncio.sleep(0.002)  # the next one asked a later ms: ranked after this one on a tie
    return question.id


async def test_ask_then_the_same_id_again_answers_the_same_question(board: QuestionBoard) -> None:
    question, new = await board.ask(ROOM, "q_one", "ann", "包邮吗?", 0)
    assert new and question.public() == {
        "id": "q_one",
        "room_id": ROOM,
        "user_id": "ann",
        "text": "包邮吗?",
        "upvotes": 0,
        "state": "open",
        "pinned": False,
        "asked_at_ms": question.asked_at_ms,
    }
    before = await snapshot(board)
    again, new = await board.ask(ROOM, "q_one", "ann", "包邮吗?", 0)
    assert not new and again == question
    assert await snapshot(board) == before
    await refused(board, "duplicate", lambda: board.ask(ROOM, "q_one", "ann", "another text", 0))
    await refused(board, "duplicate", lambda: board.ask(ROOM, "q_one", "bob", "包邮吗?", 0))
    ttl = await board.redis.pttl(board.key(ROOM, "questions"))
    assert 0 < ttl <= TTL_MS


def test_question_ids_from_a_rid_are_stable_and_apart() -> None:
    one = question_id(ROOM, "ann", "r1", "q_random")
    assert one == question_id(ROOM, "ann", "r1", "q_other") and one.startswith("q_")
    assert len({one, question_id(ROOM, "bob", "r1", "x"), question_id("r2", "ann", "r1", "x")}) == 3
    assert question_id(ROOM, "ann", None, "q_random") == "q_random"
    assert question_id(ROOM, "ann", "", "q_random") == "q_random"


async def test_banned_muted_and_a_full_queue_are_refused(board: QuestionBoard) -> None:
    room = RoomKeys(board.prefix, ROOM)
    await board.redis.sadd(room.banned, "bad")
    await board.redis.hset(room.mutes, mapping={"hush": 2**50, "was": 1})
    await refused(board, "banned", lambda: board.ask(ROOM, "q_b", "bad", "hi", 0))
    await refused(board, "muted", lambda: board.ask(ROOM, "q_m", "hush", "hi", 0))
    await ask(board, "was")  # a mute that ended
    await refused(board, "queue_full", lambda: board.ask(ROOM, "q_f", "ann", "hi", 1))
    second, _ = await board.ask(ROOM, "q_f", "ann", "hi", 2)
    assert second.id == "q_f"


async def test_upvote_counts_once_per_user_and_refusals_change_nothing(board: QuestionBoard) -> None:
    qid = await ask(board, "ann")
    await refused(board, "own_question", lambda: board.upvote(ROOM, qid, "ann"))
    await refused(board, "question_not_found", lambda: board.upvote(ROOM, "q_missing", "bob"))
    await refused(board, "question_not_found", lambda: board.upvote("r2", qid, "bob"))  # another room
    assert await board.upvote(ROOM, qid, "bob") == (1, True)
    before = await snapshot(board)
    assert await board.upvote(ROOM, qid, "bob") == (1, False)  # again: not counted twice
    assert await snapshot(board) == before
    assert await board.upvote(ROOM, qid, "cat") == (2, True)
    await board.decide(ROOM, qid, "answer")
    await refused(board, "question_closed", lambda: board.upvote(ROOM, qid, "dan"))
    await refused(board, "question_closed", lambda: board.upvote(ROOM, qid, "bob"))


async def test_many_users_upvoting_at_once_count_each_once(board: QuestionBoard) -> None:
    qid = await ask(board, "ann")
    users = [f"u{n}" for n in range(50)]
    results = await asyncio.gather(*(board.upvote(ROOM, qid, u) for u in users + users))
    assert sorted(counted for _, counted in results) == [False] * 50 + [True] * 50
    top = await board.top(ROOM, 5)
    assert top is not None and top.questions[0].upvotes == 50


async def test_ranking_by_upvotes_then_the_earliest_asked(board: QuestionBoard) -> None:
    ids = []
    for n in range(5):
        ids.append(await ask(board, f"asker{n}", f"question {n}"))
        await asyncio.sleep(0.002)  # distinct asked_at_ms
    for voter in ("v1", "v2"):
        await board.upvote(ROOM, ids[3], voter)
    await board.upvote(ROOM, ids[1], "v1")
    await board.upvote(ROOM, ids[4], "v1")
    top = await board.top(ROOM, 10)
    assert top is not None and top.pinned is None
    assert [q.id for q in top.questions] == [ids[3], ids[1], ids[4], ids[0], ids[2]]
    assert [q.upvotes for q in top.questions] == [2, 1, 1, 0, 0]
    first_two = await board.top(ROOM, 2)
    assert first_two is not None and [q.id for q in first_two.questions] == [ids[3], ids[1]]
    none = await board.top(ROOM, 0)
    assert none is not None and none.questions == []
    await board.decide(ROOM, ids[3], "dismiss")
    top = await board.top(ROOM, 10)
    assert top is not None and [q.id for q in top.questions] == [ids[1], ids[4], ids[0], ids[2]]


async def test_staff_decisions_once_each_and_their_refusals(board: QuestionBoard) -> None:
    a, b = await ask(board, "ann"), await ask(board, "bob")
    await refused(board, "question_not_found", lambda: board.decide(ROOM, "q_missing", "pin"))
    with pytest.raises(ValueError):
        await board.decide(ROOM, a, "delete")

    pinned = await board.decide(ROOM, a, "pin")
    assert pinned.changed and pinned.question.pinned and pinned.unpinned == ""
    before = await snapshot(board)
    again = await board.decide(ROOM, a, "pin")
    assert not again.changed and again.question.pinned and await snapshot(board) == before
    other = await board.decide(ROOM, b, "pin")  # pinning another unpins the first
    assert other.changed and other.unpinned == a
    top = await board.top(ROOM, 10)
    assert top is not None and top.pinned is not None and top.pinned.id == b
    assert [q.pinned for q in top.questions] == [False, True]
    not_pinned = await board.decide(ROOM, a, "unpin")
    assert not not_pinned.changed and not not_pinned.question.pinned

    answered = await board.decide(ROOM, b, "answer")  # answering the pinned one unpins it
    assert answered.changed and answered.question.state == "answered" and answered.unpinned == b
    assert not answered.question.pinned
    before = await snapshot(board)
    assert not (await board.decide(ROOM, b, "answer")).changed
    assert not (await board.decide(ROOM, b, "unpin")).changed
    assert await snapshot(board) == before
    await refused(board, "question_closed", lambda: board.decide(ROOM, b, "dismiss"))
    await refused(board, "question_closed", lambda: board.decide(ROOM, b, "pin"))

    await board.decide(ROOM, a, "pin")
    unpinned = await board.decide(ROOM, a, "unpin")
    assert unpinned.changed and unpinned.unpinned == a and not unpinned.question.pinned
    await board.decide(ROOM, a, "pin")
    dismissed = await board.decide(ROOM, a, "dismiss")
    assert dismissed.changed and dismissed.unpinned == a and dismissed.question.state == "dismissed"
    assert not (await board.decide(ROOM, a, "dismiss")).changed
    await refused(board, "question_closed", lambda: board.decide(ROOM, a, "answer"))
    top = await board.top(ROOM, 10)
    assert top is not None and top.questions == [] and top.pinned is None


async def test_the_top_check_answers_only_a_change(board: QuestionBoard) -> None:
    first = await board.top(ROOM, 2, check=True)  # nothing sent yet: the (empty) top is news
    assert first is not None and first.questions == []
    assert await board.top(ROOM, 2, check=True) is None
    a = await ask(board, "ann")
    shown = await board.top(ROOM, 2, check=True)
    assert shown is not None and [q.id for q in shown.questions] == [a]
    assert await board.top(ROOM, 2, check=True) is None
    await asyncio.sleep(0.002)  # distinct asked_at_ms: the ranking below is by them
    b = await ask(board, "bob")
    await asyncio.sleep(0.002)
    c = await ask(board, "cat")
    assert (await board.top(ROOM, 2, check=True)) is not None  # b joined the top two
    await board.upvote(ROOM, c, "ann")  # c overtakes: a change
    shown = await board.top(ROOM, 2, check=True)
    assert shown is not None and [q.id for q in shown.questions] == [c, a]
    await board.upvote(ROOM, c, "ann")  # counted before: no change
    assert await board.top(ROOM, 2, check=True) is None
    await board.decide(ROOM, b, "pin")  # b is not in the top two: the top is the same
    shown_pin = await board.top(ROOM, 2, check=True)
    assert shown_pin is None
    read = await board.top(ROOM, 2)
    assert read is not None and read.pinned is not None and read.pinned.id == b
    await board.decide(ROOM, a, "pin")  # a is: its pinned flag changed
    shown = await board.top(ROOM, 2, check=True)
    assert shown is not None and [q.pinned for q in shown.questions] == [False, True]
    await board.forget_top(ROOM)
    assert await board.top(ROOM, 2, check=True) is not None  # forgotten: sent again


async def test_past_the_rate_a_new_question_is_refused_and_a_retry_answered(board: QuestionBoard) -> None:
    await refused(board, "rate_limited", lambda: board.ask(ROOM, "q_new", "ann", "hi", 0, limited=True))
    first, _ = await board.ask(ROOM, "q_old", "ann", "hi", 0)
    before = await snapshot(board)
    again, new = await board.ask(ROOM, "q_old", "ann", "hi", 0, limited=True)
    assert (again, new) == (first, False) and await snapshot(board) == before


@settings(max_examples=60, deadline=None)
@given(
    text=st.text(st.characters(codec="utf-8"), min_size=1, max_size=60),
    user=st.text(st.characters(codec="utf-8"), min_size=1, max_size=20),
)
def test_any_text_and_user_come_back_as_asked(redis_url: str, text: str, user: str) -> None:
    """What Redis hands back (bytes, in flat script replies) decodes to the question asked."""

    async def round_trip() -> None:
        client = aioredis.Redis.from_url(redis_url)
        try:
            board = QuestionBoard(client, f"t{uuid.uuid4().hex[:12]}")
            asked, _ = await board.ask(ROOM, "q_x", user, text, 0)
            top = await board.top(ROOM, 5)
            assert top is not None and top.questions == [asked]
            assert (asked.text, asked.user_id, asked.upvotes, asked.state) == (text, user, 0, "open")
            pinned = await board.decide(ROOM, "q_x", "pin")
            assert pinned.question == dataclasses.replace(asked, pinned=True)
            await client.delete(*[k async for k in client.scan_iter(match=f"{board.prefix}:*")])
        finally:
            await client.aclose()

    asyncio.run(round_trip())
