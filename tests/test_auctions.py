"""Live auctions end to end: the host API over HTTP, bidders over WebSocket, the coalesced
fan-out and the private notices, the close, the offers, the payment and the order in the
ledger; a bidding war of thousands of bids in an auction's last seconds; a restart mid-auction,
and a Redis that lost the auction."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from conftest import bearer
from test_gateway import token
from wsclient import MSGPACK, Client

from inventory.payments import SimulatedPayments
from live.auth import ANY_ROOM, Role
from live.server import Running, running
from live.settings import Settings


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, bid_burst=20, bid_rate_per_s=20.0, tools_tick_ms=50)


@pytest.fixture
async def shop(server: Running, http: aiohttp.ClientSession, host_token: str) -> dict[str, str]:
    return await make_shop(server, http, host_token)


async def make_shop(server: Running, http: aiohttp.ClientSession, host_token: str) -> dict[str, str]:
    await server.services.rooms.create("shop", host_id="host1", room_id="shop")
    async with http.post(
        "/api/rooms/shop/products", json={"title": "翡翠", "price_cents": 90_000}, headers=bearer(host_token)
    ) as resp:
        assert resp.status == 201
        product = await resp.json()
    return {"room": "shop", "product": product["id"]}


async def open_auction(http: aiohttp.ClientSession, host_token: str, product: str, **body: Any) -> Any:
    fields = {"product_id": product, "start_cents": 1000, "increment_cents": 100, "duration_s": 60, **body}
    async with http.post("/api/rooms/shop/auctions", json=fields, headers=bearer(host_token)) as resp:
        assert resp.status == 201, await resp.text()
        return await resp.json()


async def get_auction(http: aiohttp.ClientSession, host_token: str, auction_id: str, tail: str = "") -> Any:
    async with http.get(f"/api/rooms/shop/auctions/{auction_id}{tail}", headers=bearer(host_token)) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def ask(client: Client, message: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    await client.send(message)
    return await client.recv_until(
        lambda m: m.get("rid") == message["rid"] and m["type"] in ("ack", "error"), timeout
    )


def bid(rid: str, auction_id: str, amount: Any) -> dict[str, Any]:
    return {"type": "bid", "rid": rid, "auction_id": auction_id, "amount_cents": amount}


async def wait_for(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_bad_bids_are_refused_with_a_code_and_change_nothing(
    server: Running, http: aiohttp.ClientSession, host_token: str, shop: dict[str, str]
) -> None:
    ann = await Client.connect(http, "shop", token(server, "ann"), framing=MSGPACK)
    auction = await open_auction(http, host_token, shop["product"], reserve_cents=5000)
    assert auction["reserve_cents"] == 5000 and auction["state"] == "open"
    opened = await ann.recv_type("auction_opened")
    assert opened["auction"]["id"] == auction["id"] and "reserve_cents" not in opened["auction"]
    aid = auction["id"]
    host = await Client.connect(http, "shop", host_token)
    moderator_host = await Client.connect(http, "shop", token(server, "host1", Role.MODERATOR))

    cases = [
        (ann, bid("b1", aid, 999), "bid_too_low"),
        (ann, bid("b2", aid, -1000), "invalid_amount"),
        (ann, bid("b3", aid, 0), "invalid_amount"),
        (ann, bid("b4", aid, 10**13), "invalid_amount"),
        (ann, bid("b5", aid, 1000.5), "invalid_field"),
        (ann, bid("b6", aid, "1000"), "invalid_field"),
        (ann, bid("b7", "a_nothing", 1000), "auction_not_found"),
        (ann, bid("b8", "../x", 1000), "auction_not_found"),
        (host, bid("h1", aid, 5000), "own_auction"),
        (moderator_host, bid("h2", aid, 5000), "own_auction"),  # the room's host_id, in any role
    ]
    for client, message, code in cases:
        answer = await ask(client, message)
        assert (answer["type"], answer["code"]) == ("error", code), (message, answer)
    assert (await ask(ann, bid("b1", aid, 999)))["min_bid_cents"] == 1000
    assert (await ask(ann, bid("b1", aid, 1000)))["code"] == "duplicate"
    state = await get_auction(http, host_token, aid)
    assert (state["bids"], state["leader_id"], state["state"]) == (0, None, "open")
    assert (await get_auction(http, host_token, aid, "/bids"))["bids"] == []

    ok = await ask(ann, bid("b9", aid, 1000))
    assert ok["type"] == "ack" and (ok["amount_cents"], ok["bid_seq"], ok["extended"]) == (1000, 1, False)
    assert await ask(ann, bid("b9", aid, 1000)) == {**ok}  # the same rid: the same decision

    # a payment before the end: nothing offered to anyone
    assert (await ask(ann, {"type": "pay_auction", "rid": "p1", "auction_id": aid}))[
        "code"
    ] == "not_your_offer"
    # the host API's own refusals
    for body, status, code in (
        (
            {"product_id": "p_nothing", "start_cents": 1, "increment_cents": 1, "duration_s": 5},
            404,
            "product_not_found",
        ),
        (
            {"product_id": shop["product"], "start_cents": 0, "increment_cents": 1, "duration_s": 5},
            400,
            "invalid_field",
        ),
        (
            {
                "product_id": shop["product"],
                "start_cents": 10,
                "increment_cents": 1,
                "duration_s": 5,
                "buy_now_cents": 5,
            },
            400,
            "invalid_field",
        ),
        ({"product_id": shop["product"], "start_cents": 10, "increment_cents": 1}, 400, "missing_field"),
    ):
        async with http.post("/api/rooms/shop/auctions", json=body, headers=bearer(host_token)) as resp:
            assert resp.status == status and (await resp.json())["error"]["code"] == code
    async with http.post(
        "/api/rooms/shop/auctions",
        json={"product_id": shop["product"], "start_cents": 1, "increment_cents": 1, "duration_s": 5},
        headers=bearer(token(server, "ann")),
    ) as resp:
        assert resp.status == 403
    async with http.get(f"/api/rooms/shop/auctions/{aid}", headers=bearer(token(server, "ann"))) as resp:
        assert resp.status == 403
    async with http.get("/api/rooms/shop/auctions/a_nothing", headers=bearer(host_token)) as resp:
        assert resp.status == 404 and (await resp.json())["error"]["code"] == "auction_not_found"
    async with http.get("/api/rooms/shop/auctions", headers=bearer(host_token)) as resp:
        assert [a["id"] for a in (await resp.json())["auctions"]] == [aid]

    # a reconnecting viewer sees the auction's current state in the welcome
    again = await Client.connect(http, "shop", token(server, "bob"))
    shown = again.welcome["room"]["auctions"]
    assert [(a["id"], a["leader_id"], a["amount_cents"], a["reserve_met"]) for a in shown] == [
        (aid, "ann", 1000, False)
    ]


async def test_rate_limited_bidders_and_a_bid_after_the_end(settings: Settings) -> None:
    # (a bucket that refills next to never: at 20 a second a slow machine, deciding each of the
    # 25 bids in 50 ms or more, would refill it as fast as they are taken)
    slow_refill = dataclasses.replace(settings, bid_rate_per_s=0.01)
    async with running(slow_refill) as server, aiohttp.ClientSession(base_url=server.url) as http:
        host_token = server.services.auth.mint("host1", ANY_ROOM, Role.HOST, 600)
        await _rate_limited(server, http, host_token, await make_shop(server, http, host_token))


async def _rate_limited(
    server: Running, http: aiohttp.ClientSession, host_token: str, shop: dict[str, str]
) -> None:
    ann = await Client.connect(http, "shop", token(server, "ann"))
    # (seconds beyond the 25 bids sent at once: a slow machine decides them all while it is open)
    auction = await open_auction(
        http, host_token, shop["product"], duration_s=5, snipe_s=0, reserve_cents=10**9
    )
    aid = auction["id"]
    for n in range(25):
        await ann.send(bid(f"r{n}", aid, 1000 + 100 * n))
    answers = [await ann.recv_until(lambda m: m["type"] in ("ack", "error")) for _ in range(25)]
    codes = {a.get("code", "ack") for a in answers}
    assert "rate_limited" in codes and "ack" in codes
    ended = await ann.recv_type("auction_ended", timeout=20)
    assert (ended["auction_id"], ended["state"], ended["winner_id"]) == (aid, "unsold", None)
    bob = await Client.connect(http, "shop", token(server, "bob"))  # (ann's bucket is empty)
    late = await ask(bob, bid("late", aid, 10**9))
    assert late["code"] == "auction_ended"
    state = await get_auction(http, host_token, aid)
    assert state["state"] == "unsold" and state["result"]["state"] == "unsold"


async def test_outbid_notice_an_extension_and_its_cap(
    server: Running, http: aiohttp.ClientSession, host_token: str, shop: dict[str, str]
) -> None:
    ann = await Client.connect(http, "shop", token(server, "ann"))
    bob = await Client.connect(http, "shop", token(server, "bob"))
    watcher = await Client.connect(http, "shop", token(server, "cat"))
    # (seconds beyond the two bids: a slow machine makes them while it is open)
    auction = await open_auction(
        http, host_token, shop["product"], duration_s=5, snipe_s=30, max_extension_s=1
    )
    aid, original = auction["id"], auction["ends_at_ms"]
    first = await ask(ann, bid("a1", aid, 1000))
    assert first["extended"] and first["ends_at_ms"] == original + 1000  # now + 30 s, capped at the end + 1 s
    second = await ask(bob, bid("b1", aid, 1100))
    assert not second["extended"] and second["ends_at_ms"] == original + 1000
    outbid = await ann.recv_type("auction_outbid")
    assert (outbid["auction_id"], outbid["amount_cents"], outbid["your_bid_cents"]) == (aid, 1100, 1000)
    latest = await watcher.recv_until(lambda m: m["type"] == "auction_bid" and m["bid_seq"] == 2)
    assert (latest["leader_id"], latest["amount_cents"], latest["min_bid_cents"]) == ("bob", 1100, 1200)
    assert latest["ends_at_ms"] == original + 1000 and "seq" in latest  # the priority lane
    ended = await watcher.recv_type("auction_ended", timeout=30)
    assert (ended["state"], ended["winner_id"], ended["amount_cents"]) == ("offered", "bob", 1100)
    assert ended["ts_ms"] >= original + 1000
    won = await bob.recv_type("auction_won")
    assert won["amount_cents"] == 1100


async def test_a_winner_who_does_not_pay_and_the_next_bidder_who_does(
    server: Running, http: aiohttp.ClientSession, host_token: str, shop: dict[str, str]
) -> None:
    ann = await Client.connect(http, "shop", token(server, "ann"))
    bob = await Client.connect(http, "shop", token(server, "bob"))
    watcher = await Client.connect(http, "shop", token(server, "cat"))
    # (seconds beyond the two bids, and beyond ann's few calls before she pays within her hold)
    auction = await open_auction(
        http, host_token, shop["product"], duration_s=4, snipe_s=0, hold_s=4, reserve_cents=1000
    )
    aid = auction["id"]
    assert (await ask(ann, bid("a1", aid, 1000)))["type"] == "ack"
    assert (await ask(bob, bid("b1", aid, 1500)))["type"] == "ack"
    won = await bob.recv_type("auction_won", timeout=30)
    assert won["amount_cents"] == 1500
    offer = await watcher.recv_type("auction_offer", timeout=30)
    assert (offer["user_id"], offer["amount_cents"]) == ("bob", 1500)
    # bob lets it lapse: ann is offered it at her highest bid
    nxt = await watcher.recv_until(
        lambda m: m["type"] == "auction_offer" and m["user_id"] == "ann", timeout=30
    )
    assert nxt["amount_cents"] == 1000
    mine = await ann.recv_type("auction_won")
    assert mine["pay_by_ms"] == nxt["pay_by_ms"]
    assert (await ask(bob, {"type": "pay_auction", "rid": "p", "auction_id": aid}))["code"] == "offer_expired"
    assert (await ask(watcher, {"type": "pay_auction", "rid": "p", "auction_id": aid}))[
        "code"
    ] == "not_your_offer"

    other_device = await Client.connect(http, "shop", token(server, "ann"))
    paid = await ask(ann, {"type": "pay_auction", "rid": "p1", "auction_id": aid})
    assert paid["type"] == "ack", paid
    order = paid["order"]
    assert (order["sale_id"], order["quantity"], order["unit_price_cents"], order["amount_cents"]) == (
        aid,
        1,
        1000,
        1000,
    )
    again = await ask(ann, {"type": "pay_auction", "rid": "p2", "auction_id": aid})
    assert again["order"] == order  # paying again: the same order, no second charge
    sold = await watcher.recv_type("auction_sold")
    assert (sold["user_id"], sold["amount_cents"], sold["order_id"]) == ("ann", 1000, order["order_id"])
    status = await other_device.recv_type("order_status")
    assert status["status"] == "confirmed" and status["order"]["order_id"] == order["order_id"]

    async with http.get(f"/api/orders/{order['order_id']}", headers=bearer(token(server, "ann"))) as resp:
        assert resp.status == 200 and (await resp.json())["user_id"] == "ann"  # the buyer reads it
    recorded = await server.services.ledger.order(order["order_id"])
    assert recorded is not None and recorded.user_id == "ann" and recorded.idempotency_key == f"auction:{aid}"
    payments = server.services.settlement.payments
    assert isinstance(payments, SimulatedPayments)
    mine_only = {ref: cents for ref, cents in payments.charged.items() if ref.startswith(f"auction:{aid}")}
    assert mine_only == {f"auction:{aid}:ann": 1000}  # nobody else charged
    row = await server.services.store.tool(aid)
    assert row is not None and row.state == "sold" and row.closed_at_ms is not None
    result = json.loads(row.result or "{}")
    assert (result["winner_id"], result["amount_cents"], result["order_id"]) == (
        "ann",
        1000,
        order["order_id"],
    )
    assert (await ask(bob, bid("late", aid, 99_000)))["code"] == "auction_ended"


async def test_buy_it_now_ends_the_auction_at_once(
    server: Running, http: aiohttp.ClientSession, host_token: str, shop: dict[str, str]
) -> None:
    ann = await Client.connect(http, "shop", token(server, "ann"))
    auction = await open_auction(http, host_token, shop["product"], buy_now_cents=8000)
    done = await ask(ann, bid("a1", auction["id"], 8000))
    assert done["type"] == "ack"
    ended = await ann.recv_type("auction_ended")
    assert (ended["state"], ended["winner_id"], ended["amount_cents"]) == ("offered", "ann", 8000)


async def test_thousands_of_bids_in_the_last_seconds(
    settings: Settings, server: Running, http: aiohttp.ClientSession, host_token: str, shop: dict[str, str]
) -> None:
    users = [f"u{n:03d}" for n in range(200)]
    # (a session of its own: aiohttp's default pool holds 100 connections, each socket one)
    many = aiohttp.ClientSession(base_url=server.url, connector=aiohttp.TCPConnector(limit=0))
    clients = await asyncio.gather(*(Client.connect(many, "shop", token(server, u)) for u in users))
    watcher = await Client.connect(http, "shop", token(server, "watcher"))
    auction = await open_auction(
        http,
        host_token,
        shop["product"],
        # Every bid falls in the anti-sniping window and the cap is far off, so the auction
        # lasts until the bidding stops, however slow the machine: the test counts on all
        # 2,400 bids being decided while it is open (the cap has a test of its own).
        duration_s=3,
        snipe_s=3,
        max_extension_s=120,
        start_cents=100,
        increment_cents=10,
    )
    aid = auction["id"]
    acks: list[dict[str, Any]] = []
    refusals: dict[str, int] = {}
    rng = random.Random(14)

    async def bidder(n: int, client: Client) -> None:
        floor = 100
        for k in range(12):
            amount = floor + 10 * rng.randrange(0, 4)
            answer = await ask(client, bid(f"{n}.{k}", aid, amount), timeout=20)
            if answer["type"] == "ack":
                acks.append(answer)
                floor = answer["amount_cents"] + 10
            else:
                refusals[answer["code"]] = refusals.get(answer["code"], 0) + 1
                floor = max(floor, answer.get("min_bid_cents", floor))
            await asyncio.sleep(rng.random() * 0.2)

    await asyncio.gather(*(bidder(n, c) for n, c in enumerate(clients)))
    ended = await watcher.recv_type("auction_ended", timeout=20)
    assert sum(refusals.values()) + len(acks) == 2400
    assert set(refusals) == {"bid_too_low"}, refusals

    full = await get_auction(http, host_token, aid)
    bids = (await get_auction(http, host_token, aid, "/bids"))["bids"]
    assert len(bids) == len(acks) == full["bids"] and len(bids) > 20
    assert sorted((a["bid_seq"], a["amount_cents"]) for a in acks) == [
        (b["seq"], b["amount_cents"]) for b in bids
    ]
    ends, original, previous = full["original_ends_at_ms"], full["original_ends_at_ms"], None
    for b in bids:  # every accepted bid: before the end, >= the previous + the increment
        assert b["at_ms"] < ends
        assert b["amount_cents"] >= (100 if previous is None else previous + 10)
        if ends - b["at_ms"] < 3000:
            ends = max(ends, min(b["at_ms"] + 3000, original + 120_000))
        assert b["ends_at_ms"] == ends  # the end time is the rule applied to the bids
        previous = b["amount_cents"]
    assert full["ends_at_ms"] == ends and full["state"] == "offered"
    top = bids[-1]
    assert top["amount_cents"] == max(a["amount_cents"] for a in acks)
    assert (ended["winner_id"], ended["amount_cents"]) == (top["user_id"], top["amount_cents"])
    assert full["offer"]["user_id"] == top["user_id"]
    # one close: the watcher hears of it once
    more = await watcher.collect(0.5)
    assert not [m for m in more if m["type"] == "auction_ended"]
    await asyncio.gather(*(c.close() for c in clients))
    await many.close()


async def test_a_restart_mid_auction_and_a_redis_that_lost_it(settings: Settings) -> None:
    async with running(settings) as first, aiohttp.ClientSession(base_url=first.url) as http:
        await first.services.rooms.create("shop", host_id="host1", room_id="shop")
        host_token = first.services.auth.mint("host1", "shop", Role.HOST, 600)
        async with http.post(
            "/api/rooms/shop/products", json={"title": "玉", "price_cents": 500}, headers=bearer(host_token)
        ) as resp:
            product = (await resp.json())["id"]
        # (long enough to be open still when the second process's watcher joins, however slow)
        restarted = await open_auction(http, host_token, product, duration_s=8, snipe_s=0)
        lost = await open_auction(http, host_token, product, duration_s=8, snipe_s=0)
        ann = await Client.connect(http, "shop", token(first, "ann"))
        for rid, aid in (("x", restarted["id"]), ("y", lost["id"])):
            assert (await ask(ann, bid(rid, aid, 1200)))["type"] == "ack"

        async def checkpointed() -> bool:
            row = await first.services.store.tool(lost["id"])
            return row is not None and json.loads(row.result or "{}").get("bid_seq") == 1

        await wait_for(checkpointed)
        await ann.close()
    # the Redis lost one auction (a failover, say) and everything about when it is due
    redis = first.services.redis
    await redis.delete(
        *[k async for k in redis.scan_iter(match=f"{settings.key_prefix}:tool:*{lost['id']}*")]
    )
    await redis.delete(f"{{{settings.key_prefix}:tools}}:due")
    async with running(settings) as second, aiohttp.ClientSession(base_url=second.url) as http:
        watcher = await Client.connect(http, "shop", token(second, "cat"))
        shown = {a["id"]: a for a in watcher.welcome["room"]["auctions"]}
        assert shown[lost["id"]]["leader_id"] == "ann" and shown[lost["id"]]["amount_cents"] == 1200
        endings = {}
        while len(endings) < 2:
            ended = await watcher.recv_type("auction_ended", timeout=30)
            assert ended["auction_id"] not in endings  # each closes once
            endings[ended["auction_id"]] = ended
        for aid in (restarted["id"], lost["id"]):
            assert (endings[aid]["state"], endings[aid]["winner_id"], endings[aid]["amount_cents"]) == (
                "offered",
                "ann",
                1200,
            )
        assert not [m for m in await watcher.collect(0.5) if m["type"] == "auction_ended"]
