"""Polls end to end: the host API over HTTP, voters over WebSocket (refusals, changes, the same
vote twice), the tallies coalesced on the chat lane, the close once with the final tallies equal
to the acknowledged votes, two processes sharing one Redis, a restart, and a Redis that lost
the poll."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import bearer
from test_gateway import token
from wsclient import MSGPACK, Client

from live.auth import Role
from live.polls import Polls
from live.server import Running, running
from live.settings import Settings


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, tools_tick_ms=50)


@pytest.fixture
async def shop(server: Running) -> str:
    await server.services.rooms.create("shop", host_id="host1", room_id="shop", allow_anonymous=True)
    return "shop"


async def open_poll(http: aiohttp.ClientSession, host_token: str, **body: Any) -> Any:
    fields = {"question": "哪个颜色?", "options": ["红", "绿", "蓝"], "duration_s": 60, **body}
    async with http.post("/api/rooms/shop/polls", json=fields, headers=bearer(host_token)) as resp:
        assert resp.status == 201, await resp.text()
        return await resp.json()


async def api(
    http: aiohttp.ClientSession, method: str, path: str, who: str, body: Any = None
) -> tuple[int, Any]:
    async with http.request(method, f"/api/rooms/shop/polls{path}", json=body, headers=bearer(who)) as resp:
        return resp.status, await resp.json()


async def ask(client: Client, message: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    await client.send(message)
    return await client.recv_until(
        lambda m: m.get("rid") == message["rid"] and m["type"] in ("ack", "error"), timeout
    )


def vote(rid: str, poll_id: str, option: Any) -> dict[str, Any]:
    return {"type": "vote", "rid": rid, "poll_id": poll_id, "option": option}


async def wait_for(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def tallies_of(messages: list[dict[str, Any]], poll_id: str) -> list[dict[str, Any]]:
    """The poll_tally gauges among messages (they come in the chat lane's batches)."""
    out = []
    for m in messages:
        if m["type"] == "poll_tally" and m["poll_id"] == poll_id:
            out.append(m)
        for g in m.get("gauges", []) if m["type"] == "batch" else []:
            if g.get("type") == "poll_tally" and g.get("poll_id") == poll_id:
                out.append(g)
    return out


async def test_open_vote_refusals_change_and_close(
    server: Running, http: aiohttp.ClientSession, host_token: str, shop: str
) -> None:
    ann = await Client.connect(http, "shop", token(server, "ann"), framing=MSGPACK)
    poll = await open_poll(http, host_token)
    assert (poll["state"], poll["tallies"], poll["votes"], poll["allow_change"]) == (
        "open",
        [0, 0, 0],
        0,
        True,
    )
    assert poll["closes_at_ms"] - poll["opened_at_ms"] == 60_000 and poll["id"].startswith("p_")
    opened = await ann.recv_type("poll_opened")
    assert (
        opened["poll"]["id"] == poll["id"] and opened["poll"]["question"] == "哪个颜色?" and "seq" in opened
    )
    pid = poll["id"]
    guest = await Client.connect(http, "shop")
    assert guest.welcome["user"]["role"] == "viewer"

    cases = [
        (guest, vote("g1", pid, 0), "sign_in_required"),
        (ann, vote("a1", pid, 3), "invalid_option"),
        (ann, vote("a2", pid, -1), "invalid_option"),
        (ann, vote("a3", pid, "0"), "invalid_field"),
        (ann, vote("a4", pid, 0.5), "invalid_field"),
        (ann, vote("a5", "p_nothing", 0), "poll_not_found"),
        (ann, vote("a6", "../x", 0), "poll_not_found"),
        (ann, {"type": "vote", "rid": "a7", "poll_id": pid}, "missing_field"),
    ]
    for client, message, code in cases:
        answer = await ask(client, message)
        assert (answer["type"], answer["code"]) == ("error", code), (message, answer)
    status, state = await api(http, "GET", f"/{pid}", host_token)
    assert status == 200 and (state["tallies"], state["votes"]) == ([0, 0, 0], 0)

    ok = await ask(ann, vote("v1", pid, 1))
    assert (ok["type"], ok["poll_id"], ok["option"]) == ("ack", pid, 1)
    assert (await ask(ann, vote("v2", pid, 1)))["type"] == "ack"  # the same vote twice
    bob = await Client.connect(http, "shop", token(server, "bob"))
    assert (await ask(bob, {"type": "vote", "poll_id": pid, "option": 1, "rid": "b"}))["type"] == "ack"
    assert (await ask(ann, vote("v3", pid, 2)))["option"] == 2  # a change moves the vote
    status, state = await api(http, "GET", f"/{pid}", host_token)
    assert (state["tallies"], state["votes"]) == ([0, 1, 1], 2)

    async def shown() -> bool:  # the last change goes out (the gate lets it at the next tick)
        got = await ann.collect(0.3)
        return any(t["tallies"] == [0, 1, 1] for t in tallies_of(got, pid))

    await wait_for(shown)
    # a reconnecting viewer sees the poll and its tallies in the welcome
    again = await Client.connect(http, "shop", token(server, "cat"))
    assert [(p["id"], p["tallies"], p["votes"]) for p in again.welcome["room"]["polls"]] == [
        (pid, [0, 1, 1], 2)
    ]

    # the host API's refusals
    for body, code in (
        ({"options": ["a", "b"], "duration_s": 5}, "missing_field"),
        ({"question": "q", "duration_s": 5}, "missing_field"),
        ({"question": "q", "options": ["a", "b"]}, "missing_field"),
        ({"question": "  ", "options": ["a", "b"], "duration_s": 5}, "invalid_field"),
        ({"question": "q" * 201, "options": ["a", "b"], "duration_s": 5}, "invalid_field"),
        ({"question": "q", "options": ["a"], "duration_s": 5}, "invalid_field"),
        ({"question": "q", "options": ["a"] * 7, "duration_s": 5}, "invalid_field"),
        ({"question": "q", "options": ["a", ""], "duration_s": 5}, "invalid_field"),
        ({"question": "q", "options": ["a", "b" * 81], "duration_s": 5}, "invalid_field"),
        ({"question": "q", "options": "a,b", "duration_s": 5}, "invalid_field"),
        ({"question": "q", "options": ["a", 2], "duration_s": 5}, "invalid_field"),
        ({"question": "q", "options": ["a", "b"], "duration_s": 0}, "invalid_field"),
        ({"question": "q", "options": ["a", "b"], "duration_s": 86_401}, "invalid_field"),
        ({"question": "q", "options": ["a", "b"], "duration_s": 5, "allow_change": 1}, "invalid_field"),
    ):
        status, answer = await api(http, "POST", "", host_token, body)
        assert (status, answer["error"]["code"]) == (400, code), body
    viewer = token(server, "ann")
    assert (await api(http, "POST", "", viewer, {"question": "q", "options": ["a", "b"], "duration_s": 5}))[
        0
    ] == 403
    assert (await api(http, "GET", f"/{pid}", viewer))[0] == 403
    status, answer = await api(http, "GET", "/p_nothing", host_token)
    assert (status, answer["error"]["code"]) == (404, "poll_not_found")
    status, answer = await api(http, "POST", "/p_nothing/close", host_token)
    assert (status, answer["error"]["code"]) == (404, "poll_not_found")
    moderator = token(server, "mod", Role.MODERATOR)
    status, listed = await api(http, "GET", "", moderator)
    assert status == 200 and [p["id"] for p in listed["polls"]] == [pid]

    # an early close by a moderator: once, with the final tallies
    status, closed = await api(http, "POST", f"/{pid}/close", moderator)
    assert status == 200 and (closed["state"], closed["tallies"], closed["votes"]) == ("closed", [0, 1, 1], 2)
    assert closed["closed_at_ms"] is not None
    done = await bob.recv_type("poll_closed")
    assert (done["poll_id"], done["tallies"], done["votes"]) == (pid, [0, 1, 1], 2) and "seq" in done
    status, answer = await api(http, "POST", f"/{pid}/close", host_token)
    assert (status, answer["error"]["code"]) == (409, "poll_closed")
    assert (await ask(ann, vote("late", pid, 0)))["code"] == "poll_closed"
    assert not [m for m in await bob.collect(0.4) if m["type"] == "poll_closed"]  # once
    row = await server.services.store.tool(pid)
    assert row is not None and row.kind == "poll" and row.state == "closed" and row.closed_at_ms
    result = json.loads(row.result or "{}")
    assert (result["tallies"], result["votes"], result["ballots"]) == ([0, 1, 1], 2, {"ann": 2, "bob": 1})
    later = await Client.connect(http, "shop", token(server, "dan"))
    assert later.welcome["room"]["polls"] == []
    # its keys retired from Redis: the record answers, and a vote is still poll_closed
    redis = server.services.redis
    await redis.delete(
        *[k async for k in redis.scan_iter(match=f"{server.services.settings.key_prefix}:tool:*{pid}*")]
    )
    status, state = await api(http, "GET", f"/{pid}", host_token)
    assert (state["state"], state["tallies"], state["votes"]) == ("closed", [0, 1, 1], 2)
    assert (await api(http, "POST", f"/{pid}/close", host_token))[1]["error"]["code"] == "poll_closed"
    assert (await ask(ann, vote("gone", pid, 0)))["code"] == "poll_closed"


async def test_without_allow_change_a_second_vote_is_already_voted(
    server: Running, http: aiohttp.ClientSession, host_token: str, shop: str
) -> None:
    poll = await open_poll(http, host_token, allow_change=False, options=["yes", "no"])
    assert poll["allow_change"] is False
    ann = await Client.connect(http, "shop", token(server, "ann"))
    assert (await ask(ann, vote("1", poll["id"], 0)))["type"] == "ack"
    refused = await ask(ann, vote("2", poll["id"], 1))
    assert (refused["code"], refused["option"]) == ("already_voted", 0)
    assert (await ask(ann, vote("3", poll["id"], 0)))["type"] == "ack"  # the same: an ack
    status, state = await api(http, "GET", f"/{poll['id']}", host_token)
    assert (status, state["tallies"], state["votes"]) == (200, [1, 0], 1)


async def test_a_burst_of_votes_gives_few_tallies_and_the_close_equals_the_acks(
    server: Running, http: aiohttp.ClientSession, host_token: str, shop: str
) -> None:
    users = [f"u{n:03d}" for n in range(150)]
    many = aiohttp.ClientSession(base_url=server.url, connector=aiohttp.TCPConnector(limit=0))
    clients = await asyncio.gather(*(Client.connect(many, "shop", token(server, u)) for u in users))
    watcher = await Client.connect(http, "shop", token(server, "watcher"))
    # (open until the host closes it after the burst, however long the 600 votes take)
    poll = await open_poll(http, host_token, duration_s=600, options=["a", "b", "c", "d"])
    pid = poll["id"]
    await watcher.recv_type("poll_opened")
    rng = random.Random(14)
    acked: dict[str, int] = {}
    frames: list[dict[str, Any]] = []

    async def watch() -> None:
        while True:
            frames.append(await watcher.recv(30))

    watching = asyncio.create_task(watch())

    async def voter(user: str, client: Client) -> None:
        for k in range(4):  # a first vote, then changes
            option = rng.randrange(4)
            answer = await ask(client, vote(f"{user}.{k}", pid, option), timeout=20)
            assert answer["type"] == "ack", answer
            acked[user] = answer["option"]
            await asyncio.sleep(rng.random() * 0.5)

    started = time.monotonic()
    await asyncio.gather(*(voter(u, c) for u, c in zip(users, clients, strict=True)))
    burst = time.monotonic() - started
    expected = [sum(1 for o in acked.values() if o == i) for i in range(4)]

    async def last_change_shown() -> bool:
        seen = tallies_of(frames, pid)
        return bool(seen) and seen[-1]["tallies"] == expected and seen[-1]["votes"] == len(users)

    await wait_for(last_change_shown, timeout=30)
    status, _ = await api(http, "POST", f"/{pid}/close", host_token)
    assert status == 200

    async def closed_shown() -> bool:
        return bool([f for f in frames if f["type"] == "poll_closed"])

    await wait_for(closed_shown, timeout=30)
    watching.cancel()
    seen = tallies_of(frames, pid)
    # 600 votes; at most one tally per 200 ms room-wide (plus one in flight at each end)
    assert 2 <= len(seen) <= (burst / 0.2) + 3, (len(seen), burst)
    assert seen[-1]["tallies"] == expected and seen[-1]["votes"] == len(users)  # the last change
    assert [f["tally_seq"] for f in seen] == sorted(f["tally_seq"] for f in seen)
    closed = next(f for f in frames if f["type"] == "poll_closed")
    assert (closed["tallies"], closed["votes"]) == (expected, len(users))
    assert len([f for f in frames if f["type"] == "poll_closed"]) == 1
    row = await server.services.store.tool(pid)
    assert row is not None and json.loads(row.result or "{}")["ballots"] == acked
    await asyncio.gather(*(c.close() for c in clients))
    await many.close()


async def test_two_processes_share_one_poll(settings: Settings, tmp_path: Path) -> None:
    other = dataclasses.replace(settings, node_name="node-b")
    async with (
        running(dataclasses.replace(settings, node_name="node-a")) as a,
        running(other, worker=True) as b,
    ):
        await a.services.rooms.create("shop", host_id="host1", room_id="shop")
        host_token = a.services.auth.mint("host1", "shop", Role.HOST, 600)
        async with (
            aiohttp.ClientSession(base_url=a.url) as on_a,
            aiohttp.ClientSession(base_url=b.url) as on_b,
        ):
            watchers = [
                await Client.connect(s, "shop", token(a, f"w{i}")) for i, s in enumerate((on_a, on_b))
            ]
            voters = [
                await Client.connect(on_a if n % 2 else on_b, "shop", token(a, f"v{n}")) for n in range(40)
            ]
            # (open until the host closes it once each watcher has the last change, at any speed)
            poll = await open_poll(on_a, host_token, duration_s=600, options=["x", "y"])
            pid = poll["id"]
            acked: dict[str, int] = {}

            async def voter(n: int, client: Client) -> None:
                for k in range(3):
                    answer = await ask(client, vote(f"{k}", pid, (n + k) % 2))
                    assert answer["type"] == "ack", answer
                    acked[f"v{n}"] = answer["option"]

            started = time.monotonic()
            await asyncio.gather(*(voter(n, c) for n, c in enumerate(voters)))
            burst = time.monotonic() - started
            expected = [sum(1 for o in acked.values() if o == i) for i in range(2)]
            heard: list[list[dict[str, Any]]] = [[], []]
            for w, frames in zip(watchers, heard, strict=True):  # whichever process sent it
                while not [t for t in tallies_of(frames, pid) if t["tallies"] == expected]:
                    frames.append(await w.recv(30))
            status, _ = await api(on_b, "POST", f"/{pid}/close", host_token)
            assert status == 200
            for w, frames in zip(watchers, heard, strict=True):
                while not [f for f in frames if f["type"] == "poll_closed"]:
                    frames.append(await w.recv(30))
                frames += await w.collect(0.5)
                closes = [f for f in frames if f["type"] == "poll_closed"]
                assert len(closes) == 1 and (closes[0]["tallies"], closes[0]["votes"]) == (expected, 40)
                seen = tallies_of(frames, pid)
                assert seen and seen[-1]["tallies"] == expected  # whichever process sent it
                assert len(seen) <= burst / 0.2 + 3, (len(seen), burst)
            row = await b.services.store.tool(pid)
            assert row is not None and row.state == "closed"


async def test_a_restart_keeps_the_poll_and_a_lost_one_comes_back_from_its_record(settings: Settings) -> None:
    async with running(settings) as first, aiohttp.ClientSession(base_url=first.url) as http:
        await first.services.rooms.create("shop", host_id="host1", room_id="shop")
        host_token = first.services.auth.mint("host1", "shop", Role.HOST, 600)
        # (their close time well beyond the restart and the vote after it, on a slow machine too)
        kept = await open_poll(http, host_token, duration_s=10)
        lost = await open_poll(http, host_token, duration_s=10)
        ann = await Client.connect(http, "shop", token(first, "ann"))
        for rid, pid in (("x", kept["id"]), ("y", lost["id"])):
            assert (await ask(ann, vote(rid, pid, 2)))["type"] == "ack"

        async def checkpointed() -> bool:
            row = await first.services.store.tool(lost["id"])
            return row is not None and json.loads(row.result or "{}").get("ballots") == {"ann": 2}

        await wait_for(checkpointed)
        await ann.close()
    # the Redis lost one poll (a failover, say) and everything about when they are due
    redis = first.services.redis
    await redis.delete(
        *[k async for k in redis.scan_iter(match=f"{settings.key_prefix}:tool:*{lost['id']}*")]
    )
    await redis.delete(f"{{{settings.key_prefix}:tools}}:due")
    async with running(settings) as second, aiohttp.ClientSession(base_url=second.url) as http:
        watcher = await Client.connect(http, "shop", token(second, "cat"))
        shown = {p["id"]: p for p in watcher.welcome["room"]["polls"]}
        assert shown[kept["id"]]["tallies"] == [0, 0, 1] and shown[lost["id"]]["tallies"] == [0, 0, 1]
        assert shown[lost["id"]]["closes_at_ms"] == lost["closes_at_ms"]
        assert (await ask(watcher, vote("c", lost["id"], 0)))["type"] == "ack"
        closes = {}
        while len(closes) < 2:
            closed = await watcher.recv_type("poll_closed", timeout=40)
            assert closed["poll_id"] not in closes  # each closes once
            closes[closed["poll_id"]] = closed
        assert (closes[kept["id"]]["tallies"], closes[kept["id"]]["votes"]) == ([0, 0, 1], 1)
        assert (closes[lost["id"]]["tallies"], closes[lost["id"]]["votes"]) == ([1, 0, 1], 2)
        assert not [m for m in await watcher.collect(0.5) if m["type"] == "poll_closed"]


def polls_tool(server: Running) -> Polls:
    return next(t for t in server.services.tools if isinstance(t, Polls))


async def test_a_dead_closer_a_poll_lost_while_running_and_polls_waiting_for_the_gate(
    server: Running, http: aiohttp.ClientSession, host_token: str, shop: str
) -> None:
    tool = polls_tool(server)
    redis = server.services.redis
    ann = await Client.connect(http, "shop", token(server, "ann"))
    watcher = await Client.connect(http, "shop", token(server, "cat"))
    first, second, third = [await open_poll(http, host_token, options=["a", "b"]) for _ in range(3)]
    # three polls of one room voted at once: one gets the gate, the others wait their turn
    for n, poll in enumerate((first, second, third)):
        assert (await ask(ann, vote(f"g{n}", poll["id"], 1)))["type"] == "ack"
    got: set[str] = set()
    deadline = time.monotonic() + 30
    while len(got) < 3:  # each poll's last change goes out, one gate after the other
        assert time.monotonic() < deadline, got
        frames = await watcher.collect(0.2)
        got |= {p["id"] for p in (first, second, third) if tallies_of(frames, p["id"])}

    # Redis lost an open poll while this process runs: a vote puts it back from its record
    async def checkpointed() -> bool:
        row = await server.services.store.tool(first["id"])
        return row is not None and json.loads(row.result or "{}").get("ballots") == {"ann": 1}

    await wait_for(checkpointed)
    prefix = server.services.settings.key_prefix
    await redis.delete(*[k async for k in redis.scan_iter(match=f"{prefix}:tool:*{first['id']}*")])
    assert (await ask(watcher, vote("c", first["id"], 0)))["type"] == "ack"
    _, state = await api(http, "GET", f"/{first['id']}", host_token)
    assert (state["tallies"], state["votes"], state["state"]) == ([1, 1], 2, "open")

    # a closer that died between the close and its announcement: a due step announces it later
    pid = second["id"]
    closed = await tool.box.close("shop", pid, now=True)
    assert closed.kind == "closed"
    assert await tool.due("shop", pid) == closed.at_ms + 5000  # give the closer its time
    await redis.hset(tool.box.keys("shop", pid).tool, "closed_at", closed.at_ms - 6000)
    assert await tool.due("shop", pid) is None
    done = await watcher.recv_until(lambda m: m["type"] == "poll_closed" and m["poll_id"] == pid)
    assert (done["tallies"], done["votes"]) == ([0, 1], 1)
    assert await tool.due("shop", pid) is None  # announced: nothing more
    row = await server.services.store.tool(pid)
    assert row is not None and row.state == "closed"
    assert await tool.due("shop", "p_nothing") is None
