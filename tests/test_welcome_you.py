"""The welcome's ``you`` end to end, over real sockets and a real Valkey: a buyer who connects
on another device learns their open holds, recent orders, claimed coupons and teams in this
room; expired holds, other rooms' holds and guests get nothing; a resumed welcome is current;
a hold made through one `live serve` process shows in a welcome from another."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import bearer
from nodes import Api, LiveNodes, Viewer
from test_gateway import token
from test_sales import ask, open_sale
from wsclient import MSGPACK, Client

from live.server import Running

NOTHING = {"holds": [], "orders": [], "coupons": [], "teams": []}


@pytest.fixture
async def shop(server: Running, http: aiohttp.ClientSession, host_token: str) -> dict[str, str]:
    """Two rooms of one host (the second open to guests), a product in each."""
    ids = {}
    for room in ("shop", "other"):
        await server.services.rooms.create(
            room, host_id="host1", room_id=room, allow_anonymous=room == "other"
        )
        async with http.post(
            f"/api/rooms/{room}/products",
            json={"title": "茶叶", "price_cents": 1500},
            headers=bearer(host_token),
        ) as resp:
            assert resp.status == 201
            ids[room] = (await resp.json())["id"]
    return {"room": "shop", "product": ids["shop"], "other_product": ids["other"]}


async def welcome_of(http: aiohttp.ClientSession, server: Running, user: str, room: str = "shop") -> Any:
    """A fresh connection's welcome (another device of the user), closed again."""
    device = await Client.connect(http, room, token(server, user, room=room), framing=MSGPACK)
    await device.close()
    return device.welcome


async def test_holds_orders_coupons_and_teams_in_the_welcome(
    server: Running, http: aiohttp.ClientSession, host_token: str, shop: dict[str, str]
) -> None:
    sale = await open_sale(http, host_token, shop, stock=10, per_user_limit=3)
    group = await open_sale(http, host_token, shop, group={"size": 3, "price_cents": 1000, "team_s": 60})
    ann = await Client.connect(http, "shop", token(server, "ann"))
    assert ann.welcome["you"] == NOTHING  # signed in, with nothing yet: empty lists

    held = await ask(ann, {"type": "reserve", "rid": "r1", "sale_id": sale["id"], "quantity": 2})
    you = (await welcome_of(http, server, "ann"))["you"]
    assert you == {
        **NOTHING,
        "holds": [
            {
                "hold_id": held["hold_id"],
                "sale_id": sale["id"],
                "product_id": shop["product"],
                "quantity": 2,
                "price_cents": 1500,
                "expires_at_ms": held["expires_at_ms"],
                "status": "held",
                "team_code": None,
            }
        ],
    }

    async with http.post(
        f"/api/sales/{sale['id']}/coupons",
        json={"count": 5, "discount_cents": 200},
        headers=bearer(host_token),
    ) as r:
        batch = await r.json()
    claim = {"type": "claim_coupon", "sale_id": sale["id"], "batch_id": batch["batch_id"]}
    coupon = await ask(ann, {**claim, "rid": "k1"})
    other_coupon = await ask(ann, {**claim, "rid": "k2"})  # the same coupon again: listed once
    assert other_coupon["coupon_id"] == coupon["coupon_id"]
    paid = await ask(ann, {"type": "confirm", "rid": "c1", "hold_id": held["hold_id"]})
    team = await ask(ann, {"type": "open_team", "rid": "t1", "sale_id": group["id"]})
    second = await ask(ann, {"type": "reserve", "rid": "r2", "sale_id": sale["id"], "quantity": 1})

    you = (await welcome_of(http, server, "ann"))["you"]
    # the paid hold moved to the orders, as its order_status shows it
    assert you["orders"] == [paid["order"]]
    # soonest to expire first: the team's deadline (60 s) before the hold's (the sale's 5 min)
    assert [(h["hold_id"], h["status"], h["team_code"]) for h in you["holds"]] == [
        (team["hold_id"], "team", team["code"]),
        (second["hold_id"], "held", None),
    ]
    assert you["coupons"] == [
        {
            "coupon_id": coupon["coupon_id"],
            "sale_id": sale["id"],
            "batch_id": batch["batch_id"],
            "discount_cents": 200,
            "used": False,
        }
    ]
    assert you["teams"] == [
        {
            "code": team["code"],
            "sale_id": group["id"],
            "hold_id": team["hold_id"],
            "state": "open",
            "deadline_ms": team["deadline_ms"],
            "members": 1,
            "size": 3,
            "completed": False,
            "price_cents": 1000,
        }
    ]
    # nobody else sees ann's
    assert (await welcome_of(http, server, "bob"))["you"] == NOTHING
    await ann.close()


async def test_an_expired_hold_is_not_listed(
    server: Running, http: aiohttp.ClientSession, host_token: str, shop: dict[str, str]
) -> None:
    sale = await open_sale(http, host_token, shop, hold_s=1)
    ann = await Client.connect(http, "shop", token(server, "ann"))
    held = await ask(ann, {"type": "reserve", "rid": "r1", "sale_id": sale["id"], "quantity": 1})
    assert [h["hold_id"] for h in (await welcome_of(http, server, "ann"))["you"]["holds"]] == [
        held["hold_id"]
    ]
    deadline = time.monotonic() + 30
    while (await welcome_of(http, server, "ann"))["you"]["holds"]:
        assert time.monotonic() < deadline, "an expired hold is still in the welcome"
        await asyncio.sleep(0.2)
    assert (await welcome_of(http, server, "ann"))["you"] == NOTHING
    await ann.close()


async def test_guests_get_no_you_and_other_rooms_holds_stay_there(
    server: Running, http: aiohttp.ClientSession, host_token: str, shop: dict[str, str]
) -> None:
    sale = await open_sale(http, host_token, shop)
    ann = await Client.connect(http, "shop", token(server, "ann"))
    await ask(ann, {"type": "reserve", "rid": "r1", "sale_id": sale["id"], "quantity": 1})
    guest = await Client.connect(http, "other")
    assert guest.welcome["user"]["id"].startswith("anon_") and "you" not in guest.welcome
    await guest.close()
    # ann in another room (with a sale of its own): nothing of the first room's
    other = {"room": "other", "product": shop["other_product"]}
    await open_sale(http, host_token, other)
    assert (await welcome_of(http, server, "ann", room="other"))["you"] == NOTHING
    await ann.close()


async def test_a_resumed_welcome_is_current(
    server: Running, http: aiohttp.ClientSession, host_token: str, shop: dict[str, str]
) -> None:
    sale = await open_sale(http, host_token, shop)
    ann = await Client.connect(http, "shop", token(server, "ann"))
    seq = ann.welcome["seq"]
    await ann.close()
    phone = await Client.connect(http, "shop", token(server, "ann"))
    held = await ask(phone, {"type": "reserve", "rid": "r1", "sale_id": sale["id"], "quantity": 1})
    back = await Client.connect(http, "shop", token(server, "ann"), last_seq=seq)
    assert back.welcome["resumed"] is True
    assert [h["hold_id"] for h in back.welcome["you"]["holds"]] == [held["hold_id"]]
    await ask(phone, {"type": "cancel", "rid": "x1", "hold_id": held["hold_id"]})
    again = await Client.connect(http, "shop", token(server, "ann"), last_seq=back.welcome["seq"])
    assert again.welcome["resumed"] is True and again.welcome["you"] == NOTHING
    for client in (phone, back, again):
        await client.close()


@pytest.fixture
async def two_nodes(tmp_path: Path, redis_url: str, database_url: str) -> AsyncIterator[LiveNodes]:
    group = LiveNodes(tmp_path / "nodes", redis_url, f"t{uuid.uuid4().hex[:10]}", database_url)
    try:
        await group.start(2)
        yield group
    finally:
        group.stop_all()


@pytest.mark.timeout(240)
async def test_a_hold_made_through_one_process_is_in_the_welcome_of_another(two_nodes: LiveNodes) -> None:
    a, b = two_nodes.nodes
    async with aiohttp.ClientSession() as http:
        api = Api(http, a.url, two_nodes.host_token())
        await api.call("POST", "/api/rooms", {"id": "shop", "title": "shop"}, status=201)
        product = await api.call("POST", "/api/rooms/shop/products", {"title": "茶", "price_cents": 800}, 201)
        sale = await api.call(
            "POST",
            "/api/rooms/shop/sales",
            {"product_id": product["id"], "stock": 5, "per_user_limit": 2},
            201,
        )
        on_a = Viewer(http, "shop", two_nodes.viewer_token("ann", "shop"), "ann-a")
        await on_a.connect(a)
        held = await on_a.ask({"type": "reserve", "sale_id": sale["id"], "quantity": 1})
        assert held["type"] == "ack", held
        on_b = Viewer(http, "shop", two_nodes.viewer_token("ann", "shop"), "ann-b")
        welcome = await on_b.connect(b)
        assert [(h["hold_id"], h["status"]) for h in welcome["you"]["holds"]] == [(held["hold_id"], "held")]
        await on_a.ask({"type": "confirm", "hold_id": held["hold_id"]})
        await on_b.close()
        welcome = await on_b.connect(b)
        assert welcome["you"]["holds"] == [] and [o["order_id"] for o in welcome["you"]["orders"]] == [
            held["hold_id"]
        ]
        await on_a.close()
        await on_b.close()
