"""Issue 11 end to end: one request id, one decision, over two real server processes on one
Redis (4); a quantity over the limit is invalid_quantity before and after a sell-out (17);
made-up sale ids sent to the app cost no memory (8)."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import SECRET, bearer
from test_cli import ENV, free_port
from test_gateway import token
from wsclient import Client

from gateway.commands import Caller
from gateway.messages import Command, ProtocolError
from inventory.keys import SaleKeys
from live.auth import ANY_ROOM, Auth, Role
from live.redis_client import connect
from live.server import Running, running
from live.settings import Settings

AUTH = Auth.hs256(SECRET)


class Process:
    """``live serve`` in a process of its own, on the test's Redis and key prefix."""

    def __init__(self, data_dir: Path, redis_url: str, prefix: str, **settings: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **ENV,
            "LIVE_SECRET": SECRET,
            "LIVE_KEY_PREFIX": prefix,
            "LIVE_BUY_BURST": "100000",
            "LIVE_BUY_RATE_PER_S": "100000",
            "LIVE_MESSAGE_BURST": "100000",
            "LIVE_MESSAGE_RATE_PER_S": "100000",
            **{f"LIVE_{k.upper()}": str(v) for k, v in settings.items()},
        }
        data_dir.mkdir(parents=True)
        self.log = data_dir.parent / f"{data_dir.name}.log"
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "live",
                    "serve",
                    "--data-dir",
                    str(data_dir),
                    "--port",
                    str(self.port),
                    "--redis-url",
                    redis_url,
                ],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    async def ready(self, http: aiohttp.ClientSession, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                async with http.get(f"{self.url}/readyz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        raise AssertionError(f"not ready: {self.log.read_text()}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@dataclasses.dataclass
class Pair:
    a: Process
    b: Process
    http: aiohttp.ClientSession
    prefix: str
    redis_url: str
    host: str  # a host token valid on both

    async def post(self, path: str, body: dict[str, Any]) -> Any:
        async with self.http.post(f"{self.a.url}{path}", json=body, headers=bearer(self.host)) as resp:
            assert resp.status in (200, 201), await resp.text()
            return await resp.json()

    async def viewer(self, process: Process, user: str) -> Client:
        ws = await self.http.ws_connect(
            f"{process.url}/ws/rooms/shop",
            params={"token": AUTH.mint(user, "shop", Role.VIEWER, 600)},
            protocols=("live.v1.json",),
        )
        client = Client(ws)
        client.welcome = await client.recv(timeout=10)
        assert client.welcome["type"] == "welcome", client.welcome
        return client


@pytest.fixture
async def pair(redis_url: str, tmp_path: Path) -> AsyncIterator[Pair]:
    prefix = f"t{uuid.uuid4().hex[:12]}"
    # a batches with a window, b answers at once: copies cross in both orders
    a = Process(tmp_path / "a", redis_url, prefix, reserve_batch_window_ms=20)
    b = Process(tmp_path / "b", redis_url, prefix, reserve_batch_window_ms=0)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            await a.ready(http)
            await b.ready(http)
            p = Pair(a, b, http, prefix, redis_url, AUTH.mint("host1", ANY_ROOM, Role.HOST, 600))
            await p.post("/api/rooms", {"id": "shop", "title": "shop"})
            yield p
    finally:
        a.stop()
        b.stop()


async def open_sale(p: Pair, stock: int, limit: int = 1) -> str:
    product = await p.post("/api/rooms/shop/products", {"title": "tea", "price_cents": 100})
    sale = await p.post(
        "/api/rooms/shop/sales", {"product_id": product["id"], "stock": stock, "per_user_limit": limit}
    )
    return str(sale["id"])


async def ask(client: Client, message: dict[str, Any]) -> dict[str, Any]:
    await client.send(message)
    return await client.recv_until(
        lambda m: m.get("rid") == message["rid"] and m["type"] in ("ack", "error"), timeout=20
    )


async def holds_by_rid(p: Pair, sale_id: str) -> Counter[tuple[str, str]]:
    redis = connect(p.redis_url)
    try:
        raw = await redis.hgetall(SaleKeys(p.prefix, sale_id).holds)
    finally:
        await redis.aclose()
    found: Counter[tuple[str, str]] = Counter()
    for record in raw.values():
        _, _, _, _, klen, rest = record.decode().split("|", 5)
        found[(rest[int(klen) :], rest[: int(klen)])] += 1
    return found


async def test_a_retry_after_a_refill_on_the_other_process_gets_the_first_answer(pair: Pair) -> None:
    """The buyer was told sold_out on one process; units came back; the same rid on the other
    process must be told sold_out again (not get a hold), and a new rid may buy."""
    sale = await open_sale(pair, stock=1)
    zed = await pair.viewer(pair.a, "zed")
    on_a, on_b = await pair.viewer(pair.a, "ann"), await pair.viewer(pair.b, "ann")
    assert (await ask(zed, {"type": "reserve", "rid": "z1", "sale_id": sale, "quantity": 1}))["type"] == "ack"
    request = {"type": "reserve", "rid": "r1", "sale_id": sale, "quantity": 1}
    first = await ask(on_b, request)
    assert (first["type"], first["code"]) == ("error", "sold_out")
    await pair.post(f"/api/sales/{sale}/stock", {"units": 2})
    assert await ask(on_a, request) == first
    assert await ask(on_b, request) == first
    assert (await holds_by_rid(pair, sale))[("ann", "r1")] == 0
    fresh = await ask(on_a, {**request, "rid": "r2"})
    assert fresh["type"] == "ack" and fresh["sale_id"] == sale


async def test_concurrent_copies_over_two_processes_get_one_decision(pair: Pair) -> None:
    """Each buyer sends its reserve on both processes at once, while the sale is live, as it
    sells out, sold out, and while the host adds stock. Every copy of a rid gets the same reply
    (and a later copy too); Redis has at most one hold per rid, the one the buyer was told."""
    sale = await open_sale(pair, stock=10)
    buyers = [f"u{i}" for i in range(45)]
    sockets = {u: await asyncio.gather(pair.viewer(pair.a, u), pair.viewer(pair.b, u)) for u in buyers}

    async def both(user: str) -> list[dict[str, Any]]:
        request = {"type": "reserve", "rid": f"rid-{user}", "sale_id": sale, "quantity": 1}
        return list(await asyncio.gather(*(ask(s, request) for s in sockets[user])))

    told: dict[str, list[dict[str, Any]]] = {}
    # live, selling out on the way
    for user, said in zip(buyers[:15], await asyncio.gather(*(both(u) for u in buyers[:15])), strict=True):
        told[user] = said
    # sold out, and refilled while the copies are on their way
    waves = await asyncio.gather(
        asyncio.gather(*(both(u) for u in buyers[15:45])),
        pair.post(f"/api/sales/{sale}/stock", {"units": 3}),
        pair.post(f"/api/sales/{sale}/stock", {"units": 3}),
    )
    for user, said in zip(buyers[15:45], waves[0], strict=True):
        told[user] = said
    for user in buyers:  # a late copy, on the other process than the first
        told[user].append(
            await ask(
                sockets[user][1], {"type": "reserve", "rid": f"rid-{user}", "sale_id": sale, "quantity": 1}
            )
        )

    differing = {u: said for u, said in told.items() if any(s != said[0] for s in said)}
    assert differing == {}
    holds = await holds_by_rid(pair, sale)
    acked = {u for u, said in told.items() if said[0]["type"] == "ack"}
    for user in buyers:
        assert holds[(user, f"rid-{user}")] == (1 if user in acked else 0), (user, told[user])
        if user not in acked:
            assert told[user][0]["code"] in ("sold_out",), told[user]
    assert 10 <= len(acked) <= 16
    async with pair.http.get(f"{pair.a.url}/api/sales/{sale}", headers=bearer(pair.host)) as resp:
        status = await resp.json()
    assert status["held"] == len(acked) and status["total"] == 16, status


# -- 17 over the WebSocket ------------------------------------------------------------------------


async def test_a_quantity_over_the_limit_is_invalid_before_and_after_the_sell_out(
    server: Running, http: aiohttp.ClientSession, host_token: str
) -> None:
    await server.services.rooms.create("shop", host_id="host1", room_id="shop")
    async with http.post(
        "/api/rooms/shop/products", json={"title": "t", "price_cents": 100}, headers=bearer(host_token)
    ) as resp:
        product = await resp.json()
    async with http.post(
        "/api/rooms/shop/sales",
        json={"product_id": product["id"], "stock": 2, "per_user_limit": 2},
        headers=bearer(host_token),
    ) as resp:
        sale = (await resp.json())["id"]
    fan, other = (
        await Client.connect(http, "shop", token(server, "fan")),
        await Client.connect(http, "shop", token(server, "bob")),
    )
    too_many = {"type": "reserve", "sale_id": sale, "quantity": 3}
    assert (await ask(fan, {**too_many, "rid": "x1"}))["code"] == "invalid_quantity"
    assert (await ask(other, {"type": "reserve", "rid": "b", "sale_id": sale, "quantity": 2}))[
        "type"
    ] == "ack"
    assert (await ask(fan, {"type": "reserve", "rid": "x2", "sale_id": sale, "quantity": 1}))[
        "code"
    ] == "sold_out"
    assert (await ask(fan, {**too_many, "rid": "x3"}))["code"] == "invalid_quantity"
    assert (await ask(fan, {**too_many, "rid": "x1"}))["code"] == "invalid_quantity"


# -- 8 through the app ------------------------------------------------------------------------------


def container_sizes(obj: object) -> dict[str, int]:
    return {name: len(v) for name, v in vars(obj).items() if isinstance(v, dict | set | list)}


async def test_made_up_sale_ids_sent_to_the_app_are_unknown_and_cost_no_memory(settings: Settings) -> None:
    roomy = dataclasses.replace(
        settings, buy_burst=10**6, buy_rate_per_s=10**6, buy_ip_burst=10**6, buy_ip_rate_per_s=10**6
    )
    async with running(roomy) as srv:
        await srv.services.rooms.create("shop", host_id="host1", room_id="shop")
        buying = srv.services.buying
        caller = Caller(room_id="shop", user_id="fan", role="viewer", remote_ip="127.0.0.1", anonymous=False)

        async def reserve(sale_id: str, n: int) -> str:
            try:
                await buying.command(caller, Command("reserve", f"r{n}", {"sale_id": sale_id, "quantity": 1}))
            except ProtocolError as exc:
                return exc.code
            return "ok"

        for start in range(0, 20_000, 250):
            codes = await asyncio.gather(
                *(reserve(f"s_{secrets.token_hex(8)}", n) for n in range(start, start + 250))
            )
            assert set(codes) == {"unknown_sale"}
        # (what the app keeps per sale or per request: the buyer commands, the inventory,
        # the sweeper's watermarks, the payments being settled)
        services = srv.services
        for obj in (buying, buying.inventory, services.sweeper.watermarks, services.settlement):
            sizes = container_sizes(obj)
            assert max(sizes.values(), default=0) <= 16, (type(obj).__name__, sizes)
