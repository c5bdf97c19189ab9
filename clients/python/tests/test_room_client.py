"""RoomClient against a real ``live serve``: framings, welcome, chat, buying, reconnect and
resume, lost replies, refusals, argument checks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
import websockets.asyncio.server
from conftest import Server, mint, new_room_id, new_user
from websockets.typing import Subprotocol

from live_client import (
    Banned,
    CommentBatch,
    Event,
    HostClient,
    HostMessage,
    LimitReached,
    LiveError,
    Reconnected,
    RequestTimeout,
    RoomClient,
    RoomNotFound,
    SaleOpened,
    SoldOut,
    TokenExpired,
    Unauthorized,
    UnknownSale,
    WrongRoom,
    You,
    error_from,
)
from live_client.models import Product, Sale
from live_client.room import SUBPROTOCOLS


async def _room_with_sale(
    server: Server, stock: int = 5, per_user_limit: int = 1
) -> tuple[str, Product, Sale]:
    host = HostClient(server.url, mint("host1", "host"))
    room = (await host.create_room("测试", id=new_room_id())).id
    product = await host.create_product(room, "绿茶", 1999)
    sale = await host.create_sale(room, product.id, stock, per_user_limit=per_user_limit)
    return room, product, sale


async def _until(room: RoomClient, match: Callable[[Event], bool], timeout_s: float = 10.0) -> Event:
    deadline = time.monotonic() + timeout_s
    while True:
        event = await room.next_event(max(0.01, deadline - time.monotonic()))
        if match(event):
            return event


def _texts(event: Event) -> list[str]:
    return [c.text for c in event.comments] if isinstance(event, CommentBatch) else []


@pytest.mark.parametrize("framing", ["json", "msgpack"])
async def test_connects_in_both_framings_with_the_welcome(server: Server, framing: Any) -> None:
    room_id, product, sale = await _room_with_sale(server)
    user = new_user()
    async with RoomClient(server.ws_url, mint(user), room=room_id, framing=framing) as room:
        welcome = room.welcome
        assert welcome.user.id == user and welcome.user.role == "viewer"
        assert welcome.room.id == room_id and welcome.room.host_id == "host1"
        assert [s.id for s in welcome.room.sales] == [sale.id]
        assert welcome.room.sales[0].product is not None and welcome.room.sales[0].product.title == "绿茶"
        assert room.last_seq == welcome.seq
        assert room.connected
        assert await room.ping() > 0
        assert abs(room.now_ms() - time.time() * 1000) < 5000
        hold = await room.reserve(sale.id, 1)
        assert hold.sale_id == sale.id and hold.quantity == 1
    assert product.price_cents == 1999


async def test_a_comment_reaches_another_client(server: Server) -> None:
    host = HostClient(server.url, mint("host1", "host"))
    room_id = (await host.create_room("chat", id=new_room_id())).id
    async with (
        RoomClient(server.ws_url, mint(new_user()), room=room_id, framing="json") as alice,
        RoomClient(server.ws_url, mint(new_user()), room=room_id, framing="msgpack") as bob,
    ):
        seq = await alice.comment("你好 bob")
        assert seq > 0
        event = await _until(bob, lambda e: "你好 bob" in _texts(e))
        assert isinstance(event, CommentBatch)
        (comment,) = [c for c in event.comments if c.text == "你好 bob"]
        assert comment.id == seq and comment.user_id == alice.welcome.user.id
        await alice.like(3)
        likes = await _until(bob, lambda e: isinstance(e, CommentBatch) and e.likes is not None)
        assert isinstance(likes, CommentBatch) and likes.likes is not None and likes.likes >= 3


async def test_reserve_gives_a_hold_then_limit_reached_and_sold_out(server: Server) -> None:
    room_id, _product, sale = await _room_with_sale(server, stock=1, per_user_limit=1)
    async with (
        RoomClient(server.ws_url, mint(new_user()), room=room_id) as first,
        RoomClient(server.ws_url, mint(new_user()), room=room_id) as second,
    ):
        hold = await first.reserve(sale.id, 1)
        assert hold.hold_id and hold.expires_at_ms > time.time() * 1000
        with pytest.raises(LimitReached) as limit:
            await first.reserve(sale.id, 1)
        assert limit.value.code == "limit_reached" and limit.value.message
        with pytest.raises(SoldOut):
            await second.reserve(sale.id, 1)
        with pytest.raises(UnknownSale):
            await second.reserve("s_nope", 1)
        order = await first.confirm(hold.hold_id)
        assert order.order_id == hold.hold_id and order.amount_cents == 1999 and order.quantity == 1
        assert (await first.confirm(hold.hold_id)).order_id == order.order_id  # again: the same order
    host = HostClient(server.url, mint("host1", "host"))
    page = await host.sale_orders(sale.id)
    assert [o.order_id for o in page.orders] == [hold.hold_id]


@pytest.mark.parametrize("framing", ["json", "msgpack"])
async def test_another_device_gets_the_users_holds_orders_and_coupons_in_its_welcome(
    server: Server, framing: Any
) -> None:
    room_id, product, sale = await _room_with_sale(server, stock=5, per_user_limit=2)
    host = HostClient(server.url, mint("host1", "host"))
    batch = await host.drop_coupons(sale.id, 3, 500)
    user = new_user()
    async with RoomClient(server.ws_url, mint(user), room=room_id) as phone:
        assert phone.welcome.you == You()  # signed in, nothing yet
        paid = await phone.confirm((await phone.reserve(sale.id, 1)).hold_id)
        hold = await phone.reserve(sale.id, 1)
        coupon = await phone.claim_coupon(sale.id, batch.batch_id)
    async with RoomClient(server.ws_url, mint(user), room=room_id, framing=framing) as laptop:
        you = laptop.welcome.you
        assert you is not None
        assert [
            (h.hold_id, h.sale_id, h.product_id, h.quantity, h.price_cents, h.status) for h in you.holds
        ] == [(hold.hold_id, sale.id, product.id, 1, 1999, "held")]
        assert you.holds[0].expires_at_ms == hold.expires_at_ms and you.holds[0].team_code is None
        assert [(o.order_id, o.amount_cents) for o in you.orders] == [(paid.order_id, 1999)]
        assert [(c.coupon_id, c.discount_cents, c.used) for c in you.coupons] == [
            (coupon.coupon_id, 500, False)
        ]
        assert you.teams == []


class LosesTheFirstReserveAnswer(RoomClient):
    """Cuts its connection as the first reserve's ack arrives, before reading it."""

    lost: list[dict[str, Any]]

    def _on_message(self, message: dict[str, Any]) -> None:
        if message.get("type") == "ack" and message.get("of") == "reserve" and not self.lost:
            self.lost.append(message)
            assert self._ws is not None
            self._ws.transport.abort()
            return
        super()._on_message(message)


async def test_a_lost_reply_is_retried_with_the_same_rid_and_gives_the_same_hold(server: Server) -> None:
    room_id, _product, sale = await _room_with_sale(server, stock=10, per_user_limit=3)
    room = LosesTheFirstReserveAnswer(server.ws_url, mint(new_user()), room=room_id, backoff_initial_s=0.1)
    room.lost = []
    async with room:
        hold = await room.reserve(sale.id, 2)
        assert room.lost, "the first answer was not cut off"
        assert hold.hold_id == room.lost[0]["hold_id"]
        assert room.stats.reconnects == 1 and room.stats.resent == 1
    current = await HostClient(server.url, mint("host1", "host")).get_sale(sale.id)
    assert (current.held, current.available) == (2, 8)  # one hold of 2, not two


class ResumesFromTheStart(RoomClient):
    """Asks for every event again on a reconnect: the client must drop what it delivered."""

    def resume_from(self) -> int:
        return 0


async def test_reconnects_after_the_servers_1001_and_resumes_without_duplicates(own_server: Server) -> None:
    host = HostClient(own_server.url, mint("host1", "host"))
    room_id = (await host.create_room("restart", id=new_room_id())).id
    viewer = ResumesFromTheStart(own_server.ws_url, mint(new_user()), room=room_id, framing="json")
    async with viewer:
        async with RoomClient(own_server.ws_url, mint("host1", "host"), room=room_id) as staff:
            await staff.host_message("one")
        first = await _until(viewer, lambda e: isinstance(e, HostMessage))
        assert isinstance(first, HostMessage) and first.text == "one" and first.seq is not None
        own_server.restart()  # SIGTERM: the server closes every socket with 1001 and retry_ms
        async with RoomClient(own_server.ws_url, mint("host1", "host"), room=room_id) as staff:
            await staff.host_message("two")
        seen: list[Event] = []
        while not any(isinstance(e, HostMessage) and e.text == "two" for e in seen):
            seen.append(await viewer.next_event(30))
        reconnected = [e for e in seen if isinstance(e, Reconnected)]
        assert len(reconnected) == 1 and reconnected[0].resumed
        assert [e.text for e in seen if isinstance(e, HostMessage)] == ["two"]  # "one" not again
        assert viewer.stats.last_close_code == 1001 and '"retry_ms"' in viewer.stats.last_close_reason
        assert viewer.stats.reconnects == 1 and viewer.stats.duplicates_dropped >= 1
        assert viewer.last_seq is not None and viewer.last_seq > first.seq


@pytest.mark.parametrize(("auth", "status"), [("message", None), ("header", 401)])
async def test_a_refused_token_raises_unauthorized_and_is_not_retried(
    server: Server, auth: Any, status: int | None
) -> None:
    """In-band (an error frame, then 4401) with first-message auth; HTTP 401 with the header."""
    room_id = (await HostClient(server.url, mint("host1", "host")).create_room("auth", id=new_room_id())).id
    started = time.monotonic()
    room = RoomClient(server.ws_url, "not-a-token", room=room_id, auth=auth, backoff_initial_s=0.05)
    with pytest.raises(Unauthorized) as refused:
        async with room:
            pass
    assert type(refused.value) is Unauthorized
    assert refused.value.status == status and refused.value.code == "token_invalid"
    assert refused.value.message  # the server's words
    assert time.monotonic() - started < 5
    if auth == "message":
        assert room.stats.last_close_code == 4401
        assert json.loads(room.stats.last_close_reason)["code"] == "token_invalid"


async def test_an_expired_token_closes_with_4401_and_stops(server: Server) -> None:
    room_id = (await HostClient(server.url, mint("host1", "host")).create_room("exp", id=new_room_id())).id
    async with RoomClient(server.ws_url, mint(new_user(), ttl_s=2), room=room_id) as room:
        with pytest.raises(TokenExpired):
            async for _event in room:
                pass
        assert room.stats.last_close_code == 4401 and room.stats.reconnects == 0
        with pytest.raises(TokenExpired):  # every later command says so too
            await room.comment("still here?")


async def test_a_ban_closes_with_4403_and_raises_banned(server: Server) -> None:
    room_id = (await HostClient(server.url, mint("host1", "host")).create_room("ban", id=new_room_id())).id
    user = new_user()
    async with (
        RoomClient(server.ws_url, mint(user), room=room_id) as viewer,
        RoomClient(server.ws_url, mint("host1", "host"), room=room_id) as staff,
    ):
        await staff.request("ban", {"user_id": user})
        with pytest.raises(Banned):
            await _until(viewer, lambda e: False)
    with pytest.raises(Banned) as again:
        async with RoomClient(server.ws_url, mint(user), room=room_id, auth="header"):
            pass
    assert again.value.status == 403
    with pytest.raises(Banned) as in_band:  # first-message auth: an error frame, then 4403
        async with RoomClient(server.ws_url, mint(user), room=room_id):
            pass
    assert in_band.value.code == "banned" and in_band.value.status is None


async def test_arguments_are_checked_before_sending() -> None:
    room = RoomClient("ws://127.0.0.1:9/ws/rooms/x", "t")  # never connected: nothing is sent
    for bad in ("1", 1.0, True, None):
        with pytest.raises(TypeError):
            await room.reserve("s_1", bad)  # type: ignore[arg-type]
    for out_of_range in (0, -1):
        with pytest.raises(ValueError):
            await room.reserve("s_1", out_of_range)
    with pytest.raises(TypeError):
        await room.reserve(7, 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        await room.comment("   ")
    with pytest.raises(ValueError):
        await room.like(0)
    with pytest.raises(TypeError):
        await room.bid("a_1", 10.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await room.vote("p_1", False)
    with pytest.raises(ValueError):
        RoomClient("http://127.0.0.1/ws/rooms/x")
    with pytest.raises(ValueError):
        RoomClient("ws://127.0.0.1/ws/rooms/x", framing="xml")  # type: ignore[arg-type]


def test_unknown_error_codes_are_live_errors_with_code_message_and_data() -> None:
    error = error_from({"type": "error", "code": "brand_new", "message": "m", "rid": "r", "extra": 1})
    assert type(error) is LiveError and error.code == "brand_new" and error.data == {"extra": 1}
    low = error_from({"code": "bid_too_low", "message": "m", "min_bid_cents": 500})
    assert low.code == "bid_too_low" and getattr(low, "min_bid_cents", None) == 500


async def test_sale_events_are_typed(server: Server) -> None:
    host = HostClient(server.url, mint("host1", "host"))
    room_id = (await host.create_room("events", id=new_room_id())).id
    product = await host.create_product(room_id, "乌龙", 2500)
    async with RoomClient(server.ws_url, mint(new_user()), room=room_id) as room:
        sale = await host.create_sale(room_id, product.id, 3)
        event = await _until(room, lambda e: isinstance(e, SaleOpened))
        assert isinstance(event, SaleOpened) and event.sale.id == sale.id and event.sale.total == 3
        await asyncio.sleep(0)


@pytest.mark.parametrize(
    ("close", "reason", "expected"),
    [
        (4401, '{"code": "token_invalid"}', Unauthorized),
        (4401, '{"code": "token_expired"}', TokenExpired),
        (4401, "", TokenExpired),
        (4403, '{"code": "wrong_room"}', WrongRoom),
        (4403, '{"code": "banned"}', Banned),
        (4404, '{"code": "room_not_found"}', RoomNotFound),
    ],
)
async def test_a_final_close_raises_the_error_its_reason_names_and_is_not_retried(
    close: int, reason: str, expected: type[LiveError]
) -> None:
    """A server (a bare websockets one, on a real socket) that welcomes and then closes with a
    code retrying cannot fix: the client raises the error the reason's code names, once."""
    handshakes = 0

    async def handler(ws: Any) -> None:
        nonlocal handshakes
        handshakes += 1
        await ws.send(json.dumps({"type": "welcome", "v": 1, "seq": 0, "resumed": False, "room": {}}))
        await ws.close(close, reason)

    async with websockets.asyncio.server.serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(expected) as raised:
            async with RoomClient(f"ws://127.0.0.1:{port}", "t", room="r", framing="json") as room:
                async for _ in room:
                    pass
    assert type(raised.value) is expected and handshakes == 1


# -- first-message auth (docs/protocol.md "First-message auth") and the header ------------------


@pytest.mark.parametrize("framing", ["json", "msgpack"])
async def test_message_auth_is_the_default_and_gets_the_welcome(server: Server, framing: Any) -> None:
    room_id = (await HostClient(server.url, mint("host1", "host")).create_room("ma", id=new_room_id())).id
    user = new_user()
    async with RoomClient(server.ws_url, mint(user), room=room_id, framing=framing) as room:
        assert room.auth == "message"
        assert room.welcome.user.id == user and room.welcome.room.id == room_id
        assert not room.welcome.resumed and room.last_seq == room.welcome.seq
        assert await room.ping() > 0
        assert await room.comment("第一条") > 0  # what follows the auth message is served


@pytest.mark.parametrize("framing", ["json", "msgpack"])
async def test_message_auth_as_a_guest_sends_no_token(server: Server, framing: Any) -> None:
    host = HostClient(server.url, mint("host1", "host"))
    room_id = (await host.create_room("guests", id=new_room_id(), allow_anonymous=True)).id
    async with RoomClient(server.ws_url, None, room=room_id, framing=framing) as room:
        assert room.welcome.user.id.startswith("anon_")
        assert room.welcome.you is None  # a guest's welcome has no `you`


class _Recorder:
    """A bare websockets server that records each connection's path, Authorization header
    and first frame (decoded), and answers with what ``script`` says."""

    def __init__(self, framing: str, script: Callable[[Any, int, dict[str, Any] | None], Any]) -> None:
        self.framing = framing
        self.script = script
        self.paths: list[str] = []
        self.headers: list[str | None] = []
        self.firsts: list[dict[str, Any] | None] = []

    def decode(self, raw: str | bytes) -> dict[str, Any]:
        value = json.loads(raw) if isinstance(raw, str) else msgpack.unpackb(raw, raw=False)
        assert isinstance(value, dict)
        return value

    def encode(self, message: dict[str, Any]) -> str | bytes:
        return json.dumps(message) if self.framing == "json" else msgpack.packb(message)

    async def handler(self, ws: Any) -> None:
        n = len(self.paths)
        self.paths.append(ws.request.path)
        self.headers.append(ws.request.headers.get("Authorization"))
        first = None
        if "auth=message" in ws.request.path:
            first = self.decode(await asyncio.wait_for(ws.recv(), 5))
        self.firsts.append(first)
        await self.script(ws, n, first)

    def serve(self) -> Any:
        protocols = [Subprotocol(SUBPROTOCOLS[self.framing])]
        return websockets.asyncio.server.serve(self.handler, "127.0.0.1", 0, subprotocols=protocols)


def _welcome(seq: int, resumed: bool = False) -> dict[str, Any]:
    return {"type": "welcome", "v": 1, "seq": seq, "resumed": resumed, "room": {"id": "r"}, "user": {}}


@pytest.mark.parametrize("framing", ["json", "msgpack"])
async def test_message_auth_sends_the_token_first_in_the_framing_and_resumes_with_last_seq(
    framing: str,
) -> None:
    """The token goes in no header and no URL: ``?auth=message``, then ``{"type": "auth",
    "token"}`` in the connection's framing; a reconnect sends ``last_seq`` in that message
    (and no ``?last_seq=``), and the resumed welcome goes on from there."""

    async def script(ws: Any, n: int, first: dict[str, Any] | None) -> None:
        if n == 0:
            await ws.send(rec.encode(_welcome(5)))
            await ws.send(rec.encode({"type": "host_message", "seq": 6, "text": "one", "ts_ms": 1}))
            await asyncio.sleep(0.2)
            await ws.close(1001, json.dumps({"code": "unavailable", "retry_ms": 0}))
        else:
            await ws.send(rec.encode(_welcome(7, resumed=True)))
            await ws.send(rec.encode({"type": "host_message", "seq": 7, "text": "two", "ts_ms": 2}))
            await ws.wait_closed()

    rec = _Recorder(framing, script)
    async with rec.serve() as served:
        port = served.sockets[0].getsockname()[1]
        url = f"ws://127.0.0.1:{port}/ws/rooms/r?x=1"
        async with RoomClient(url, "tok", framing=framing, backoff_initial_s=0.05) as room:  # type: ignore[arg-type]
            texts: list[str] = []
            while len(texts) < 2:
                event = await room.next_event(10)
                if isinstance(event, HostMessage):
                    texts.append(event.text)
            assert texts == ["one", "two"] and room.stats.reconnects == 1 and room.last_seq == 7
    assert rec.headers == [None, None]
    assert all("auth=message" in p and "last_seq" not in p and "x=1" in p for p in rec.paths)
    assert "tok" not in "".join(rec.paths)
    assert rec.firsts == [{"type": "auth", "token": "tok"}, {"type": "auth", "token": "tok", "last_seq": 6}]


@pytest.mark.parametrize(
    ("code", "close", "reason", "expected"),
    [
        ("token_invalid", 4401, {"code": "token_invalid"}, Unauthorized),
        ("token_expired", 4401, {"code": "token_expired"}, TokenExpired),
        ("token_invalid", 4401, None, Unauthorized),  # no reason: the error frame names it
        ("invalid_field", 4401, {"code": "token_missing"}, Unauthorized),  # the close decides
        ("wrong_room", 4403, {"code": "wrong_room"}, WrongRoom),
        ("banned", 4403, {"code": "banned"}, Banned),
        ("room_not_found", 4404, {"code": "room_not_found"}, RoomNotFound),
        ("banned", None, None, Banned),  # the close was lost: the error frame still decides
    ],
)
async def test_a_refused_message_auth_raises_its_error_and_is_not_retried(
    code: str, close: int | None, reason: dict[str, Any] | None, expected: type[LiveError]
) -> None:
    async def script(ws: Any, n: int, first: dict[str, Any] | None) -> None:
        await ws.send(rec.encode({"type": "error", "code": code, "message": "refused here"}))
        if close is None:
            ws.transport.abort()
        else:
            await ws.close(close, json.dumps(reason) if reason is not None else "")

    rec = _Recorder("json", script)
    async with rec.serve() as served:
        port = served.sockets[0].getsockname()[1]
        room = RoomClient(f"ws://127.0.0.1:{port}", "bad", room="r", framing="json", backoff_initial_s=0.05)
        with pytest.raises(LiveError) as raised:
            async with room:
                pass
        await asyncio.sleep(0.3)  # a retry would have come by now
    assert type(raised.value) is expected and raised.value.status is None
    assert raised.value.code == (reason or {}).get("code", code)
    assert "refused here" in raised.value.message
    assert len(rec.paths) == 1 and room.stats.reconnects == 0


async def test_an_unavailable_refusal_is_retried() -> None:
    """``unavailable`` (1001 with retry_ms) is not final: the client connects again."""

    async def script(ws: Any, n: int, first: dict[str, Any] | None) -> None:
        if n == 0:
            await ws.send(rec.encode({"type": "error", "code": "unavailable", "message": "redis"}))
            await ws.close(1001, json.dumps({"code": "unavailable", "retry_ms": 50}))
        else:
            await ws.send(rec.encode(_welcome(1)))
            await ws.wait_closed()

    rec = _Recorder("json", script)
    async with rec.serve() as served:
        port = served.sockets[0].getsockname()[1]
        room = RoomClient(f"ws://127.0.0.1:{port}", "t", room="r", framing="json", backoff_initial_s=0.05)
        async with room:
            assert room.welcome.seq == 1
    assert len(rec.paths) == 2 and rec.firsts[1] == {"type": "auth", "token": "t"}


@pytest.mark.parametrize("framing", ["json", "msgpack"])
async def test_header_auth_still_works(server: Server, framing: Any) -> None:
    room_id = (await HostClient(server.url, mint("host1", "host")).create_room("hdr", id=new_room_id())).id
    user = new_user()
    async with RoomClient(server.ws_url, mint(user), room=room_id, framing=framing, auth="header") as room:
        assert room.auth == "header" and room.welcome.user.id == user
        assert await room.ping() > 0


async def test_header_auth_sends_the_header_no_first_message_and_resumes_in_the_query() -> None:
    async def script(ws: Any, n: int, first: dict[str, Any] | None) -> None:
        await ws.send(rec.encode(_welcome(3 + n, resumed=n > 0)))
        if n == 0:
            await ws.close(1001, json.dumps({"code": "unavailable", "retry_ms": 0}))
        else:
            with contextlib.suppress(TimeoutError):  # no auth message: nothing comes
                extra.append(await asyncio.wait_for(ws.recv(), 0.3))
            await ws.wait_closed()

    extra: list[str | bytes] = []

    rec = _Recorder("json", script)
    async with rec.serve() as served:
        port = served.sockets[0].getsockname()[1]
        url = f"ws://127.0.0.1:{port}"
        async with RoomClient(
            url, "tok", room="r", framing="json", auth="header", backoff_initial_s=0.05
        ) as room:
            await _until(room, lambda e: isinstance(e, Reconnected))
            await asyncio.sleep(0.5)
    assert rec.headers == ["Bearer tok", "Bearer tok"]
    assert rec.paths == ["/ws/rooms/r", "/ws/rooms/r?last_seq=3"] and rec.firsts == [None, None]
    assert extra == []


def test_auth_must_be_message_or_header() -> None:
    with pytest.raises(ValueError):
        RoomClient("ws://127.0.0.1/ws/rooms/x", auth="query")  # type: ignore[arg-type]


async def test_connection_attempts_that_fail_are_counted_and_retried_until_the_timeout() -> None:
    """Nothing listens on the port: each attempt fails, is counted with its error, and is
    retried after the backoff until connect_timeout_s, which raises RequestTimeout."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # (closed again: nothing listens there)
    room = RoomClient(f"ws://127.0.0.1:{port}", "t", room="r", connect_timeout_s=1.5)
    with pytest.raises(RequestTimeout):
        await room.connect()
    assert room.stats.failed_connects >= 2 and "onnect" in room.stats.last_connect_error
    await room.close()
