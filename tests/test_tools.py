"""The interaction tools' shared parts: the due set and its loop (live/tools.py), the store's
tools table, and the gateway's hooks the tools use (comment observers, present users)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from postgres import StoreDb
from test_gateway import token
from wsclient import Client

from gateway.chat import Posted
from gateway.commands import Registry
from interact import keys
from live.auth import Role
from live.server import Running
from live.store import LimitExceeded, RoomRow, Store, ToolRow
from live.supervisor import Supervisor
from live.tools import TOOLS_TASK, Tools, ToolsConfig


class Steps:
    """A tool that records its due steps: each answers the next due time it is given (or None)."""

    welcome_key = "things"
    id_prefix = "t_"

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.answers: dict[str, list[int | Exception | None]] = {}
        self.ticks = 0
        self.started = False

    def register(self, commands: Registry[Any]) -> None:
        raise AssertionError("not called by Tools")

    def add_routes(self, app: web.Application) -> None:
        raise AssertionError("not called by Tools")

    async def start(self) -> None:
        self.started = True

    async def due(self, room_id: str, tool_id: str) -> int | None:
        self.calls.append((room_id, tool_id))
        answers = self.answers.get(tool_id) or [None]
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def welcome(self, room_id: str, tool_ids: list[str]) -> list[dict[str, Any]]:
        return [{"id": i, "room": room_id} for i in tool_ids]

    async def tick(self) -> None:
        self.ticks += 1


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def make_tools(redis: aioredis.Redis, prefix: str) -> tuple[Tools, Steps, Supervisor]:
    supervisor = Supervisor()
    tools = Tools(ToolsConfig(tick_ms=10), redis, prefix, supervisor)
    steps = Steps()
    tools.add(steps)
    await tools.start()
    return tools, steps, supervisor


async def until(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_a_due_step_is_taken_by_one_process_and_rescheduled_as_it_answers(
    redis: aioredis.Redis,
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    one, steps_one, sup_one = await make_tools(redis, prefix)
    two, steps_two, sup_two = await make_tools(redis, prefix)
    try:
        assert steps_one.started and steps_two.started
        now = int(time.time() * 1000)
        # one list of answers for both processes: whichever takes a step gives the next answer
        steps_one.answers = steps_two.answers = {"t_a": [now + 100, None]}
        await one.schedule("r1", "t_a", now)
        await until(lambda: len(steps_one.calls) + len(steps_two.calls) == 2)
        await until(lambda: steps_one.ticks > 3 and steps_two.ticks > 3)
        # each step once (leased to the process that took it), and gone once it answered None
        assert sorted(steps_one.calls + steps_two.calls) == [("r1", "t_a"), ("r1", "t_a")]
        assert await redis.zscore(keys.due(prefix), "r1/t_a") is None
    finally:
        await one.stop()
        await two.stop()
        await sup_one.stop()
        await sup_two.stop()


async def test_a_failing_step_is_logged_and_tried_again_and_an_unknown_kind_dropped(
    redis: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    tools, steps, supervisor = await make_tools(redis, prefix)
    try:
        steps.answers["t_b"] = [RuntimeError("a bug"), None]
        now = int(time.time() * 1000)
        await redis.zadd(keys.due(prefix), {"r1/x_unknown": now})
        with caplog.at_level(logging.WARNING):
            await tools.schedule("r1", "t_b", now)
            await until(lambda: len(steps.calls) == 2)  # failed, then again after the retry delay
        assert any("step failed" in r.message and r.exc_info for r in caplog.records)
        assert any("no known kind" in r.message for r in caplog.records)
        await until(lambda: steps.ticks > 3)
        assert await redis.zcard(keys.due(prefix)) == 0
        assert not supervisor.down()
    finally:
        await tools.stop()
        await supervisor.stop()


async def test_the_welcome_gives_each_tool_the_rooms_ids_of_its_kind(redis: aioredis.Redis) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    tools, _, supervisor = await make_tools(redis, prefix)
    try:
        assert await tools.welcome("r1") == {"things": []}
        await redis.sadd(keys.room_tools(prefix, "r1"), "t_2", "t_1", "z_other")
        things = [{"id": "t_1", "room": "r1"}, {"id": "t_2", "room": "r1"}]
        assert await tools.welcome("r1") == {"things": things}
        assert [t.welcome_key for t in tools] == ["things"]
    finally:
        await tools.stop()
        await supervisor.stop()
    assert TOOLS_TASK not in supervisor.down()


async def test_tools_are_recorded_capped_per_room_and_kind_and_updated(store_db: StoreDb) -> None:
    store = await Store.open(store_db.path, database_url=store_db.url)
    try:
        await store.insert_room(RoomRow("r1", "room", "host", False, 1))
        spec = json.dumps({"winners": 3})
        for i in range(2):
            await store.insert_tool(ToolRow(f"d_{i}", "r1", "draw", spec, "open", None, 10 + i), max_open=2)
        with pytest.raises(LimitExceeded):
            await store.insert_tool(ToolRow("d_x", "r1", "draw", spec, "open", None, 20), max_open=2)
        # another kind counts apart
        await store.insert_tool(ToolRow("p_0", "r1", "poll", spec, "open", None, 30), max_open=2)
        await store.update_tool("d_0", "closed", json.dumps({"winner_ids": ["a"]}), 99)
        await store.insert_tool(ToolRow("d_2", "r1", "draw", spec, "open", None, 40), max_open=2)
        closed = await store.tool("d_0")
        assert closed is not None and (closed.state, closed.closed_at_ms) == ("closed", 99)
        assert json.loads(closed.result or "") == {"winner_ids": ["a"]}
        assert await store.tool("nope") is None
        assert [t.id for t in await store.tools("r1", kind="draw")] == ["d_0", "d_1", "d_2"]
        assert [t.id for t in await store.tools(state="open")] == ["d_1", "p_0", "d_2"]
        assert len(await store.tools()) == 4
    finally:
        await store.close()


@pytest.fixture
async def room(server: Running) -> str:
    await server.services.rooms.create("room", host_id="host1", room_id="shop")
    return "shop"


async def test_comment_observers_hear_admitted_comments_only(
    server: Running, http: aiohttp.ClientSession, room: str, caplog: pytest.LogCaptureFixture
) -> None:
    heard: list[Posted] = []
    hub = server.services.hub

    def broken(posted: list[Posted]) -> None:
        raise RuntimeError("an observer's bug")

    hub.observe_comments(broken)
    hub.observe_comments(heard.extend)
    host = await Client.connect(http, room, token(server, "host1", Role.HOST))
    fan = await Client.connect(http, room, token(server, "fan"))
    troll = await Client.connect(http, room, token(server, "troll"))
    assert hub.present_users(room) == {"host1", "fan", "troll"}
    assert hub.present_users("elsewhere") == set()
    await host.send({"type": "mute", "user_id": "troll", "duration_s": 60, "rid": "m"})
    await host.recv_type("ack")
    with caplog.at_level(logging.ERROR):
        await troll.send({"type": "comment", "text": "spam", "rid": "t"})
        assert (await troll.recv_type("error"))["code"] == "muted"
        await fan.send({"type": "comment", "text": "  I want one  ", "rid": "f"})
        assert (await fan.recv_type("ack"))["rid"] == "f"  # answered despite the broken observer
    assert [(p.room_id, p.user_id, p.role, p.text, p.anonymous) for p in heard] == [
        (room, "fan", "viewer", "I want one", False)
    ]
    assert heard[0].remote_ip == "127.0.0.1"
    assert any("observer failed" in r.message and r.exc_info for r in caplog.records)


def test_tools_config_defaults_are_the_settings_defaults(tmp_path: Path) -> None:
    from live.settings import Settings

    assert Settings(data_dir=tmp_path).tools_config() == ToolsConfig()


async def test_due_lua_leases_what_is_due_and_a_second_call_takes_nothing(redis: aioredis.Redis) -> None:
    from interact.scripts import Scripts

    prefix = f"t{uuid.uuid4().hex[:8]}"
    scripts = Scripts(redis, ("due",))
    await scripts.load()
    due = keys.due(prefix)
    now = int(time.time() * 1000)
    await redis.zadd(due, {"r/t_1": now - 10, "r/t_2": now - 5, "r/t_3": now + 60_000})
    first = await scripts.call("due", [due], [5000, 1])  # at most one
    assert first[1:] == [b"r/t_1"] and abs(int(first[0]) - now) < 60_000
    second = await scripts.call("due", [due], [5000, 10])
    assert second[1:] == [b"r/t_2"]  # t_1 is leased, t_3 not due
    assert (await scripts.call("due", [due], [5000, 10]))[1:] == []
    leased = await redis.zscore(due, "r/t_1")
    assert leased is not None and leased >= int(first[0]) + 5000
