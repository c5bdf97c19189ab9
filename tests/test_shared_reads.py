"""Shared reads: the viewers of a room who join at once share the welcome's Redis reads
(gateway/shared_reads.py), and each still gets exactly its own welcome."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis
from test_gateway import token
from wsclient import Client

from gateway.shared_reads import SharedReads
from live.auth import Role
from live.server import Running


class Recorder:
    """A read that answers each argument with its double, and notes every batch it is asked;
    it can be held (a slow Redis) until released."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, list[int]]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail_next: Exception | None = None

    async def read(self, key: str, args: list[int]) -> list[int]:
        self.batches.append((key, list(args)))
        await self.gate.wait()
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc
        return [2 * a for a in args]


async def test_a_lone_caller_reads_at_once() -> None:
    recorder = Recorder()
    shared = SharedReads(recorder.read)
    assert await shared("r1", 21) == 42
    assert recorder.batches == [("r1", [21])]
    assert shared.reads_under_way == 0


async def test_callers_who_ask_while_a_read_is_out_share_the_next_one() -> None:
    recorder = Recorder()
    shared = SharedReads(recorder.read)
    recorder.gate.clear()
    first = asyncio.create_task(shared("r1", 1))
    await asyncio.sleep(0.01)  # the first read is out, held
    assert recorder.batches == [("r1", [1])]
    later = [asyncio.create_task(shared("r1", n)) for n in range(2, 52)]
    other_room = asyncio.create_task(shared("r2", 100))
    await asyncio.sleep(0.01)
    # Nobody joined the read that was out when they asked: it might predate their request.
    assert recorder.batches == [("r1", [1]), ("r2", [100])]
    recorder.gate.set()
    assert await first == 2
    assert await asyncio.gather(*later) == [2 * n for n in range(2, 52)]
    assert await other_room == 200
    assert recorder.batches == [("r1", [1]), ("r2", [100]), ("r1", list(range(2, 52)))]
    assert shared.reads_under_way == 0


async def test_callers_in_the_same_turn_of_the_loop_share_the_first_read() -> None:
    recorder = Recorder()
    shared = SharedReads(recorder.read)
    answers = await asyncio.gather(*(shared("r1", n) for n in range(10)))
    assert answers == [2 * n for n in range(10)]
    assert recorder.batches == [("r1", list(range(10)))]


async def test_a_failed_read_fails_its_callers_only() -> None:
    recorder = Recorder()
    shared = SharedReads(recorder.read)
    recorder.gate.clear()
    recorder.fail_next = ConnectionError("redis went away")
    held = [asyncio.create_task(shared("r1", n)) for n in range(3)]
    await asyncio.sleep(0.01)
    after = asyncio.create_task(shared("r1", 7))  # asks while the failing read is out
    await asyncio.sleep(0.01)
    recorder.gate.set()
    for task in held:
        with pytest.raises(ConnectionError, match="redis went away"):
            await task
    assert await after == 14  # the next read is its own, and it worked
    assert await shared("r1", 5) == 10


async def test_a_read_that_answers_the_wrong_number_of_callers_is_an_error() -> None:
    async def short(key: str, args: list[int]) -> list[int]:
        return args[:-1]

    shared = SharedReads(short)
    with pytest.raises(RuntimeError, match="answered 1 of 2"):
        await asyncio.gather(shared("r1", 1), shared("r1", 2))


async def test_a_caller_that_gives_up_leaves_the_others_their_answers() -> None:
    recorder = Recorder()
    shared = SharedReads(recorder.read)
    recorder.gate.clear()
    impatient = asyncio.create_task(shared("r1", 1))
    patient = asyncio.create_task(shared("r1", 2))
    await asyncio.sleep(0.01)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(impatient, 0.01)
    recorder.gate.set()
    assert await patient == 4


async def test_callers_are_cancelled_with_a_cancelled_read() -> None:
    recorder = Recorder()
    shared = SharedReads(recorder.read)
    recorder.gate.clear()
    out = asyncio.create_task(shared("r1", 1))
    await asyncio.sleep(0.01)
    waiting = asyncio.create_task(shared("r1", 2))  # for the next read, never started
    await asyncio.sleep(0.01)
    shared._reading["r1"].cancel()  # (as the loop's shutdown does)
    for task in (out, waiting):
        with pytest.raises(asyncio.CancelledError):
            await task
    assert shared.reads_under_way == 0
    recorder.gate.set()
    assert await shared("r1", 3) == 6


# -- against a real server and Redis --------------------------------------------------------


def command_calls(stats: dict[str, Any], command: str) -> int:
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


async def test_a_burst_of_viewers_shares_the_welcome_reads_and_each_resumes_where_it_left(
    server: Running, http: aiohttp.ClientSession, redis_url: str
) -> None:
    await server.services.rooms.create("room", host_id="host1", room_id="shop")
    host = await Client.connect(http, "shop", token(server, "host1", Role.HOST))
    first = await Client.connect(http, "shop", token(server, "v0"))
    seqs = []
    for n in range(6):
        await host.send({"type": "host_message", "text": f"news {n}", "rid": f"h{n}"})
        seqs.append((await first.recv_type("host_message"))["seq"])
    await server.services.hub.bus.redis.sadd(server.services.hub.bus.keys("shop").banned, "troll")

    viewers = 90  # (with the host, the first and the troll: under aiohttp's 100 per session)
    redis = Redis.from_url(redis_url)
    try:
        before = await redis.info("commandstats")
        # Redis holds every command for a moment, as a busy one would: the whole burst is
        # in the server before the first read of it comes back.
        await redis.execute_command("CLIENT", "PAUSE", "300", "ALL")
        joined = await asyncio.gather(
            *(
                Client.connect(http, "shop", token(server, f"v{n}"), last_seq=seqs[n % len(seqs)])
                for n in range(1, viewers + 1)
            ),
            Client.connect(http, "shop", token(server, "troll"), welcome=False),
            return_exceptions=True,
        )
        after = await redis.info("commandstats")
    finally:
        await redis.aclose()

    *clients, troll = joined
    assert isinstance(troll, aiohttp.WSServerHandshakeError) and troll.status == 403
    for n, client in enumerate(clients, start=1):
        assert isinstance(client, Client), client
        last_seq = seqs[n % len(seqs)]
        welcome = client.welcome
        assert welcome["resumed"] is True and welcome["seq"] == seqs[-1]
        assert welcome["user"]["id"] == f"v{n}" and welcome["room"]["id"] == "shop"
        assert "you" in welcome and welcome["you"]["holds"] == []
        # exactly the host messages after its own last_seq, in order, then nothing else
        missed = [await client.recv_type("host_message") for _ in range(seqs.index(last_seq) + 1, len(seqs))]
        assert [m["seq"] for m in missed] == [s for s in seqs if s > last_seq]
    # One read of the room's snapshot and ban list per batch, not per viewer.
    for command in ("xrevrange", "smismember"):
        calls = command_calls(after, command) - command_calls(before, command)
        assert 1 <= calls <= 6, (command, calls)
    for client in (host, first, *clients):
        assert isinstance(client, Client)
        await client.close()
