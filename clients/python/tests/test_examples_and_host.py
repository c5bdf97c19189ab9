"""The examples, run against a spawned server; and HostClient's routes and typed errors."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
from conftest import Server, mint, new_room_id, new_user

from live_client import (
    CommentBatch,
    Conflict,
    Forbidden,
    HostClient,
    RoomClient,
    RoomNotFound,
    Unauthorized,
)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


async def _example(name: str, server: Server, room: str, user: str, *args: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "LIVE_URL": server.url, "LIVE_ROOM": room, "LIVE_TOKEN": mint(user)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(EXAMPLES.parent), env.get("PYTHONPATH")]))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLES / name), *args, env=env, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 20)  # it says so once it is in the room
    assert line, f"{name} exited early with {await proc.wait()}"
    return proc


async def test_chat_bot_answers_the_price_of_the_pinned_product(server: Server) -> None:
    host = HostClient(server.url, mint("host1", "host"))
    room_id = (await host.create_room("bot", id=new_room_id())).id
    product = await host.create_product(room_id, "龙井", 12345)
    async with RoomClient(server.ws_url, mint("host1", "host"), room=room_id) as staff:
        await staff.pin_product(product.id)
    bot = await _example("chat_bot.py", server, room_id, "bot", "30")
    try:
        async with RoomClient(server.ws_url, mint(new_user()), room=room_id) as viewer:
            await viewer.comment("多少钱?")
            while True:
                event = await viewer.next_event(15)
                if isinstance(event, CommentBatch) and any(c.user_id == "bot" for c in event.comments):
                    break
            (answer,) = [c.text for c in event.comments if c.user_id == "bot"]
            assert answer == "龙井: ¥123.45"
    finally:
        bot.terminate()
        await bot.wait()


async def test_buyer_buys_when_a_sale_opens(server: Server) -> None:
    host = HostClient(server.url, mint("host1", "host"))
    room_id = (await host.create_room("buyer", id=new_room_id())).id
    product = await host.create_product(room_id, "白茶", 800)
    buyer = await _example("buyer.py", server, room_id, new_user())
    sale = await host.create_sale(room_id, product.id, 5)
    assert buyer.stdout is not None
    out = (await asyncio.wait_for(buyer.stdout.read(), 20)).decode()
    assert await buyer.wait() == 0
    assert out.startswith("bought ") and "800 cents" in out
    orders = (await host.sale_orders(sale.id)).orders
    assert len(orders) == 1 and orders[0].amount_cents == 800 and out.split()[1] == orders[0].order_id


async def test_host_client_rooms_products_sales_orders_and_errors(server: Server) -> None:
    host = HostClient(server.url, mint("host1", "host"))
    room_id = new_room_id()
    room = await host.create_room("春季上新", id=room_id)
    assert (room.id, room.title, room.host_id, room.allow_anonymous) == (room_id, "春季上新", "host1", False)
    product = await host.create_product(room_id, "绿茶", 1999, image_url="https://example.com/t.png")
    assert (await host.get_room(room_id)).products == [product]
    assert [p.id for p in await host.list_products(room_id)] == [product.id]
    assert room_id in [r.id for r in await host.list_rooms(limit=10000)]
    sale = await host.create_sale(room_id, product.id, 10, per_user_limit=2, price_cents=1500)
    assert (sale.phase, sale.total, sale.price_cents, sale.per_user_limit) == ("live", 10, 1500, 2)
    assert [s.id for s in await host.list_sales(room_id)] == [sale.id]
    async with RoomClient(server.ws_url, mint(new_user()), room=room_id) as buyer:
        hold = await buyer.reserve(sale.id, 2)
        await buyer.confirm(hold.hold_id)
    page = await host.sale_orders(sale.id)
    assert [o.order_id for o in page.orders] == [hold.hold_id] and page.cursor
    order = await host.get_order(hold.hold_id)
    assert (order.quantity, order.amount_cents, order.user_id) == (2, 3000, buyer.welcome.user.id)
    assert (await host.get_sale(sale.id)).sold == 2
    assert (await host.add_stock(sale.id, 5)).total == 15
    batch = await host.drop_coupons(sale.id, 3, 100)
    assert (batch.count, batch.discount_cents, batch.remaining) == (3, 100, 3)
    async with RoomClient(server.ws_url, mint(new_user()), room=room_id) as shopper:
        await shopper.claim_coupon(sale.id, batch.batch_id)
    assert (await host.get_coupon_batch(sale.id, batch.batch_id)).remaining == 2
    group_buy = {"size": 2, "price_cents": 1000, "team_s": 600}
    group = await host.create_sale(room_id, product.id, 10, group=group_buy)
    async with RoomClient(server.ws_url, mint(new_user()), room=room_id) as leader:
        team = await leader.open_team(group.id)
    status = await host.get_team(group.id, team.code)
    assert (status.code, status.state, status.members, status.size, status.price_cents) == (
        team.code, "open", 1, 2, 1000,
    )  # fmt: skip
    assert (await host.stop_sale(sale.id)).phase == "ended"
    with pytest.raises(RoomNotFound) as missing:
        await host.get_room("no-such-room")
    assert missing.value.status == 404 and missing.value.message
    with pytest.raises(Conflict):
        await host.create_room("again", id=room_id)
    with pytest.raises(Forbidden):
        await HostClient(server.url, mint(new_user())).create_room("viewer's")
    with pytest.raises(Unauthorized):
        await HostClient(server.url, "bad").list_rooms()
    poll = await host.open_poll(room_id, question="红茶还是绿茶?", options=["红茶", "绿茶"], duration_s=60)
    assert (await host.close_poll(room_id, poll["id"]))["state"] == "closed"
