"""Q&A end to end: viewers ask and upvote over WebSocket, hosts and moderators answer, pin,
unpin and dismiss over WebSocket and HTTP (viewers refused), the coalesced ``qna_top`` gauge,
the welcome's top and pinned question, and a question asked during a comment storm."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import bearer
from test_gateway import token
from wsclient import MSGPACK, Client

from interact.keys import qna
from live.auth import Role
from live.questions import Questions
from live.server import Running, running
from live.settings import Settings


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    words = tmp_path / "words.txt"
    words.write_text("代购\nscam\n", encoding="utf-8")
    return dataclasses.replace(
        settings,
        banned_words_file=words,
        question_max_chars=30,
        question_burst=3,
        question_rate_per_s=0.01,
        qna_top_n=3,
        tools_tick_ms=100,
    )


@pytest.fixture
async def shop(server: Running) -> str:
    await server.services.rooms.create("shop", host_id="host1", room_id="shop")
    return "shop"


async def ask(client: Client, message: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    await client.send(message)
    return await client.recv_until(
        lambda m: m.get("rid") == message["rid"] and m["type"] in ("ack", "error"), timeout
    )


def question(rid: str, text: str) -> dict[str, Any]:
    return {"type": "ask", "rid": rid, "text": text}


def upvote(rid: str, question_id: str) -> dict[str, Any]:
    return {"type": "upvote", "rid": rid, "question_id": question_id}


def staff(action: str, rid: str, question_id: str) -> dict[str, Any]:
    return {"type": f"{action}_question", "rid": rid, "question_id": question_id}


async def queue(http: aiohttp.ClientSession, host_token: str, room: str = "shop") -> Any:
    async with http.get(f"/api/rooms/{room}/questions", headers=bearer(host_token)) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def post(http: aiohttp.ClientSession, who: str, question_id: str, action: str) -> tuple[int, Any]:
    path = f"/api/rooms/shop/questions/{question_id}/{action}"
    async with http.post(path, headers=bearer(who)) as resp:
        return resp.status, await resp.json()


async def test_ask_and_every_refusal(
    server: Running, http: aiohttp.ClientSession, host_token: str, shop: str
) -> None:
    ann = await Client.connect(http, shop, token(server, "ann"), framing=MSGPACK)
    watcher = await Client.connect(http, shop, token(server, "cat"))
    asked = await ask(ann, question("a1", "  能包邮吗?  "))
    assert asked["type"] == "ack" and asked["of"] == "ask", asked
    q = asked["question"]
    assert (q["room_id"], q["user_id"], q["text"], q["upvotes"], q["state"], q["pinned"]) == (
        "shop",
        "ann",
        "能包邮吗?",
        0,
        "open",
        False,
    )
    assert q["id"].startswith("q_") and q["asked_at_ms"] > 0
    assert await ask(ann, question("a1", "能包邮吗?")) == asked  # a retry: the same question
    top = await watcher.recv_type("qna_top")
    assert top["questions"] == [q] and "ts_ms" in top and "seq" not in top  # the chat lane

    for rid, text, code in (
        ("t1", "x" * 31, "invalid_text"),
        ("t2", "   ", "invalid_text"),
        ("t3", "找代 购", "banned_words"),
        ("t4", "SCAM?", "banned_words"),
        ("t5", "另一个问题", "duplicate"),  # a1's rid names another question already
    ):
        refused = await ask(ann, question(rid if rid != "t5" else "a1", text))
        assert (refused["type"], refused["code"]) == ("error", code), (text, refused)
        assert refused["message"]
    assert (await ask(ann, question("a2", "x" * 30)))["type"] == "ack"  # at the limit
    await asyncio.sleep(0.002)  # a later ms: ranked after it
    assert (await ask(ann, question("a3", "第三个")))["type"] == "ack"
    limited = await ask(ann, question("a4", "第四个"))  # burst 3, refilled at 0.01/s
    assert limited["code"] == "rate_limited"
    assert (await ask(ann, question("a3", "第三个")))["type"] == "ack"  # a retry is answered still
    listed = await queue(http, host_token)
    assert [x["text"] for x in listed["questions"]] == ["能包邮吗?", "x" * 30, "第三个"]
    assert listed["pinned"] is None

    # a muted user does not ask; an anonymous viewer signs in first
    host = await Client.connect(http, shop, host_token)
    await host.send({"type": "mute", "rid": "m", "user_id": "troll", "duration_s": 60})
    await host.recv_until(lambda m: m.get("rid") == "m")
    troll = await Client.connect(http, shop, token(server, "troll"))
    assert (await ask(troll, question("t", "hello")))["code"] == "muted"
    await server.services.rooms.create("open", host_id="h", room_id="open", allow_anonymous=True)
    anon = await Client.connect(http, "open")
    assert (await ask(anon, question("x", "hello")))["code"] == "sign_in_required"
    assert (await ask(anon, upvote("y", q["id"])))["code"] == "sign_in_required"
    assert len((await queue(http, host_token))["questions"]) == 3  # nothing refused got in


async def test_upvote_once_and_its_refusals(
    server: Running, http: aiohttp.ClientSession, host_token: str, shop: str
) -> None:
    ann = await Client.connect(http, shop, token(server, "ann"))
    bob = await Client.connect(http, shop, token(server, "bob"))
    qid = (await ask(ann, question("a", "尺码偏大吗?")))["question"]["id"]
    voted = await ask(bob, upvote("u1", qid))
    assert (voted["type"], voted["question_id"], voted["upvotes"]) == ("ack", qid, 1)
    again = await ask(bob, upvote("u2", qid))
    assert (again["type"], again["upvotes"]) == ("ack", 1)  # not counted twice
    assert (await ask(ann, upvote("u3", qid)))["code"] == "own_question"
    assert (await ask(bob, upvote("u4", "q_nothing")))["code"] == "question_not_found"
    assert (await ask(bob, upvote("u5", "../x|u")))["code"] == "question_not_found"
    await bob.send({"type": "upvote", "rid": "u6"})
    assert (await bob.recv_until(lambda m: m.get("rid") == "u6"))["code"] == "missing_field"
    assert (await queue(http, host_token))["questions"][0]["upvotes"] == 1
    status, _ = await post(http, host_token, qid, "answer")
    assert status == 200
    assert (await ask(bob, upvote("u7", qid)))["code"] == "question_closed"
    cat = await Client.connect(http, shop, token(server, "cat"))
    assert (await ask(cat, upvote("u8", qid)))["code"] == "question_closed"


async def test_staff_pin_answer_dismiss_over_websocket_and_http(
    server: Running, http: aiohttp.ClientSession, host_token: str, shop: str
) -> None:
    ann = await Client.connect(http, shop, token(server, "ann"))
    bob = await Client.connect(http, shop, token(server, "bob"))
    watcher = await Client.connect(http, shop, token(server, "cat"))
    moderator = await Client.connect(http, shop, token(server, "mod", Role.MODERATOR))
    a = (await ask(ann, question("a", "什么时候发货?")))["question"]["id"]
    await asyncio.sleep(0.002)  # a later ms: ranked after it
    b = (await ask(bob, question("b", "有优惠券吗?")))["question"]["id"]

    # viewers are refused, over both
    for action in ("answer", "pin", "unpin", "dismiss"):
        refused = await ask(ann, staff(action, f"v{action}", a))
        assert refused["code"] == "forbidden", refused
        status, body = await post(http, token(server, "ann"), a, action)
        assert (status, body["error"]["code"]) == (403, "forbidden")
    async with http.get("/api/rooms/shop/questions", headers=bearer(token(server, "ann"))) as resp:
        assert resp.status == 403
    async with http.get("/api/rooms/shop/questions") as resp:
        assert resp.status == 401
    other_room = token(server, "mod", Role.MODERATOR, room="elsewhere")
    status, body = await post(http, other_room, a, "pin")
    assert (status, body["error"]["code"]) == (403, "wrong_room")
    listed = await queue(http, host_token)
    assert [q["id"] for q in listed["questions"]] == [a, b] and listed["pinned"] is None

    # a moderator pins over WebSocket: a priority event
    pinned = await ask(moderator, staff("pin", "p1", a))
    assert pinned["type"] == "ack" and pinned["changed"] and pinned["question"]["pinned"]
    event = await watcher.recv_type("question_pinned")
    assert event["question"]["id"] == a and event["by"] == "mod" and "seq" in event
    again = await ask(moderator, staff("pin", "p2", a))
    assert again["type"] == "ack" and not again["changed"]
    assert (await queue(http, host_token))["pinned"]["id"] == a

    # the host pins another over HTTP: the first is unpinned
    status, body = await post(http, host_token, b, "pin")
    assert status == 200 and body["changed"] and body["question"]["pinned"]
    unpinned = await watcher.recv_type("question_unpinned")
    assert unpinned["question_id"] == a and unpinned["by"] == "host1"
    assert (await watcher.recv_type("question_pinned"))["question"]["id"] == b

    # answering the pinned one: answered, and unpinned
    status, body = await post(http, host_token, b, "answer")
    assert status == 200 and body["question"]["state"] == "answered" and not body["question"]["pinned"]
    answered = await watcher.recv_type("question_answered")
    assert answered["question"]["id"] == b and "seq" in answered
    assert (await watcher.recv_type("question_unpinned"))["question_id"] == b
    status, body = await post(http, host_token, b, "answer")
    assert status == 200 and not body["changed"]  # again: nothing
    status, body = await post(http, host_token, b, "dismiss")
    assert (status, body["error"]["code"]) == (409, "question_closed")
    status, body = await post(http, host_token, "q_nothing", "pin")
    assert (status, body["error"]["code"]) == (404, "question_not_found")

    # a moderator dismisses over WebSocket; the unpin of a question not pinned is a no-op
    assert not (await ask(moderator, staff("unpin", "u1", a)))["changed"]
    dismissed = await ask(moderator, staff("dismiss", "d1", a))
    assert dismissed["changed"] and dismissed["question"]["state"] == "dismissed"
    assert (await ask(moderator, staff("answer", "d2", a)))["code"] == "question_closed"
    assert (await ask(moderator, staff("pin", "d3", a)))["code"] == "question_closed"
    assert (await ask(moderator, staff("pin", "d4", "q_nothing")))["code"] == "question_not_found"
    listed = await queue(http, host_token)
    assert listed == {"questions": [], "pinned": None}
    async with http.get("/api/rooms/nowhere/questions", headers=bearer(host_token)) as resp:
        assert resp.status == 404 and (await resp.json())["error"]["code"] == "room_not_found"
    async with http.get("/api/rooms/shop/questions?limit=0", headers=bearer(host_token)) as resp:
        assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_field"
    # no priority event for a dismissal: the top tells it
    later = await watcher.collect(0.4)
    assert not [m for m in later if m["type"].startswith("question_")]
    assert [m for m in later if m["type"] == "qna_top"][-1]["questions"] == []


async def tops_until(watcher: Client, expected: list[Any], timeout: float = 30) -> list[dict[str, Any]]:
    """The qna_top frames a watcher gets until one shows ``expected``, then any more within half
    a second (there should be none: nothing changed)."""
    frames: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while not frames or frames[-1]["questions"] != expected:
        frames += [m for m in await watcher.collect(0.1) if m["type"] == "qna_top"]
        assert time.monotonic() < deadline, frames
    frames += [m for m in await watcher.collect(0.5) if m["type"] == "qna_top"]
    return frames


async def test_qna_top_is_coalesced_correct_and_sent_only_on_a_change(
    settings: Settings, server: Running, http: aiohttp.ClientSession, host_token: str, shop: str
) -> None:
    askers = [await Client.connect(http, shop, token(server, f"u{n}")) for n in range(6)]
    watcher = await Client.connect(http, shop, token(server, "watcher"))
    tick = settings.tools_tick_ms / 1000
    started = time.monotonic()
    answers = await asyncio.gather(*(ask(c, question(f"q{n}", f"问题 {n}")) for n, c in enumerate(askers)))
    burst = time.monotonic() - started
    ids = [a["question"]["id"] for a in answers]
    expected = (await queue(http, host_token, "shop"))["questions"][:3]
    assert len(expected) == 3
    frames = await tops_until(watcher, expected)
    # six asks within a tick or two (on a fast machine): one or two gauges; at most one a tick
    assert 1 <= len(frames) <= burst / tick + 2, (frames, burst)

    # the last one asked gets upvotes: it rises to the top
    last = ids[-1]
    voters = askers[:3]
    started = time.monotonic()
    await asyncio.gather(*(ask(v, upvote(f"v{n}", last)) for n, v in enumerate(voters)))
    burst = time.monotonic() - started
    expected = (await queue(http, host_token))["questions"][:3]
    assert expected[0]["id"] == last and expected[0]["upvotes"] == 3
    frames = await tops_until(watcher, expected)
    assert 1 <= len(frames) <= burst / tick + 2, (frames, burst)

    # no change, no gauge: an upvote again, a pin of one outside the top three
    assert (await ask(askers[0], upvote("again", last)))["upvotes"] == 3
    outside = (await queue(http, host_token))["questions"][4]["id"]
    status, _ = await post(http, host_token, outside, "pin")
    assert status == 200
    quiet = await watcher.collect(0.5)
    assert not [m for m in quiet if m["type"] == "qna_top"]
    assert [m["question"]["id"] for m in quiet if m["type"] == "question_pinned"] == [outside]

    # a welcome shows the top three and the pinned one
    fresh = await Client.connect(http, shop, token(server, "fresh"))
    shown = fresh.welcome["room"]["questions"]
    listed = (await queue(http, host_token))["questions"]
    assert [q["id"] for q in shown] == [q["id"] for q in listed[:3]] + [outside]
    assert [q["pinned"] for q in shown] == [False, False, False, True]
    # pinning one in the top changes it: a gauge
    status, _ = await post(http, host_token, last, "pin")
    frame = await watcher.recv_type("qna_top")
    assert frame["questions"][0]["id"] == last and frame["questions"][0]["pinned"]
    again = await Client.connect(http, shop, token(server, "again"))
    assert [q["id"] for q in again.welcome["room"]["questions"]] == [q["id"] for q in listed[:3]]
    assert settings.qna_top_n == 3


async def test_an_ask_during_a_comment_storm_is_never_dropped(
    settings: Settings, http: aiohttp.ClientSession, server: Running, host_token: str, shop: str
) -> None:
    many = aiohttp.ClientSession(base_url=server.url, connector=aiohttp.TCPConnector(limit=0))
    stormers = await asyncio.gather(*(Client.connect(many, shop, token(server, f"s{n}")) for n in range(40)))
    watcher = await Client.connect(http, shop, token(server, "watcher"))
    ann = await Client.connect(http, shop, token(server, "ann"))
    stop = asyncio.Event()

    async def storm(n: int, client: Client) -> None:
        k = 0
        while not stop.is_set():
            await client.send({"type": "comment", "text": f"冲冲冲 {n}.{k}"})
            k += 1
            await asyncio.sleep(0.01)

    tasks = [asyncio.create_task(storm(n, c)) for n, c in enumerate(stormers)]
    try:
        skipped = 0
        deadline = time.monotonic() + 30
        while not skipped:  # the storm is on: the watcher's chat is sampled (at any speed)
            message = await watcher.recv(timeout=30)
            skipped += message.get("skipped", 0) if message["type"] == "batch" else 0
            assert time.monotonic() < deadline, "the chat was never sampled"
        asked = await ask(ann, question("storm", "主播身高多少?"))
        assert asked["type"] == "ack", asked
        qid = asked["question"]["id"]
        while True:  # the question reaches a viewer whose chat is sampled
            message = await watcher.recv(timeout=5)
            skipped += message.get("skipped", 0) if message["type"] == "batch" else 0
            if message["type"] == "qna_top" and any(q["id"] == qid for q in message["questions"]):
                break
        await asyncio.sleep(0.3)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    assert skipped > 0  # the chat was sampled meanwhile
    assert [q["id"] for q in (await queue(http, host_token))["questions"]] == [qid]
    await asyncio.gather(*(c.close() for c in stormers))
    await many.close()


async def test_two_processes_send_each_change_of_the_top_once(settings: Settings, tmp_path: Path) -> None:
    first = dataclasses.replace(settings, node_name="qna-a")
    second = dataclasses.replace(settings, data_dir=tmp_path / "second", node_name="qna-b")
    async with running(first) as a, running(second) as b:
        await a.services.rooms.create("shop", host_id="host1", room_id="shop")
        async with aiohttp.ClientSession(base_url=a.url) as ha, aiohttp.ClientSession(base_url=b.url) as hb:
            on_a = await Client.connect(ha, "shop", token(a, "ann"))
            on_b = await Client.connect(hb, "shop", token(b, "bob"))
            watch_a = await Client.connect(ha, "shop", token(a, "wa"))
            watch_b = await Client.connect(hb, "shop", token(b, "wb"))
            qid = (await ask(on_a, question("a", "从哪里发货?")))["question"]["id"]
            assert (await ask(on_b, upvote("v", qid)))["upvotes"] == 1  # the other process
            heard: list[list[dict[str, Any]]] = [[], []]
            deadline = time.monotonic() + 30
            for watcher, frames in zip((watch_a, watch_b), heard, strict=True):
                while not frames or [(q["id"], q["upvotes"]) for q in frames[-1]["questions"]] != [(qid, 1)]:
                    frames += [m for m in await watcher.collect(0.1) if m["type"] == "qna_top"]
                    assert time.monotonic() < deadline, frames
            assert (await ask(on_b, upvote("v2", qid)))["upvotes"] == 1  # again: no change
            for watcher, frames in zip((watch_a, watch_b), heard, strict=True):
                frames += [m for m in await watcher.collect(0.5) if m["type"] == "qna_top"]
                assert [[(q["id"], q["upvotes"]) for q in f["questions"]] for f in frames][-1] == [(qid, 1)]
                assert len(frames) <= 2  # the ask, the upvote: each once, from whichever process
            host = a.services.auth.mint("host1", "shop", Role.HOST, 600)
            async with hb.post(f"/api/rooms/shop/questions/{qid}/pin", headers=bearer(host)) as resp:
                assert resp.status == 200
            assert (await watch_a.recv_type("question_pinned"))["question"]["id"] == qid


async def test_a_top_that_could_not_be_sent_is_sent_at_a_later_tick(
    server: Running, http: aiohttp.ClientSession, shop: str, caplog: pytest.LogCaptureFixture
) -> None:
    tool = next(t for t in server.services.tools if isinstance(t, Questions))
    assert await tool.due("shop", "anything") is None  # never scheduled: no due steps
    watcher = await Client.connect(http, shop, token(server, "cat"))
    top_key = qna(server.services.settings.key_prefix, "shop", "top")
    await server.services.redis.hset(top_key, "x", "1")  # the check's read of it fails (WRONGTYPE)
    ann = await Client.connect(http, shop, token(server, "ann"))
    with caplog.at_level(logging.WARNING, logger="live.questions"):
        qid = (await ask(ann, question("a", "还有货吗?")))["question"]["id"]
        top = await watcher.recv_type("qna_top")
    assert [q["id"] for q in top["questions"]] == [qid]
    assert any(r.getMessage() == "qna_top not sent" for r in caplog.records)
