"""The room's live auctions, wired: the ``bid`` and ``pay_auction`` commands, the host API, the
close and the offers (due steps), the coalesced fan-out of bids, the payment and the order.

Every decision is a script of interact/auctions.py on the shard's clock; this module tells
people of them. Bids a process accepts are folded per auction and go out at the next tick as
one priority ``auction_bid`` with the latest state (so a bidding war of hundreds of bids a
second is at most 1000 / tools_tick_ms frames a second per viewer, never staler than a tick);
each displaced leader is told privately (``auction_outbid``), once per tick at most.

The record (the store's ``tools`` row) is written first, then Redis. Each tick checkpoints a
changed auction's leader, amount, end and bid count into the row's result at most once a
second, so a Redis that lost the auction (a failover) gets it back from the row (at a due step,
at start, or when a command finds it missing). What such a loss can cost is bounded: the bids
accepted after the last checkpoint (about a second, plus the replication lag) and the record
of each bid's decision (a retry of a lost bid is decided again). docs/auctions.md.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from aiohttp import web
from redis.exceptions import RedisError

from gateway.commands import Caller, Registry
from gateway.keys import RoomKeys
from gateway.limits import TokenBucket
from gateway.messages import Command, Field, ProtocolError
from interact.auctions import MAX_AMOUNT_CENTS, Auction, AuctionHouse, AuctionSpec, Bid, Checkpoint, Step
from interact.errors import InteractError
from inventory.model import InventoryError, Order, Unavailable
from live.auth import Role
from live.events import event_type
from live.http_api import ApiError, int_field, json_body, reply, staff, take
from live.rooms import new_id, now_ms
from live.store import ToolRow
from live.tools import ToolContext, refusal

log = logging.getLogger(__name__)

KIND = "auction"
_ID = re.compile(r"a_[A-Za-z0-9_-]{1,40}")
#: A changed auction's state goes into its record at most this often (ms).
CHECKPOINT_MS = 1000
#: Rate-limit buckets kept at most (users).
_BUCKETS_KEPT = 100_000

AUCTION_OPENED, AUCTION_BID, AUCTION_ENDED = map(
    event_type, ("auction_opened", "auction_bid", "auction_ended")
)
AUCTION_OFFER, AUCTION_SOLD = event_type("auction_offer"), event_type("auction_sold")
AUCTION_OUTBID, AUCTION_WON = event_type("auction_outbid"), event_type("auction_won")


def auction_opened(auction: dict[str, Any]) -> dict[str, Any]:
    return {"type": AUCTION_OPENED, "auction": auction}


def auction_bid(auction_id: str, leader_id: str, bid: _Folded) -> dict[str, Any]:
    return {
        "type": AUCTION_BID,
        "auction_id": auction_id,
        "leader_id": leader_id,
        "amount_cents": bid.amount_cents,
        "ends_at_ms": bid.ends_at_ms,
        "bids": bid.bids,
        "bid_seq": bid.seq,
        "extended": bid.extended,
        "min_bid_cents": bid.min_bid_cents,
    }


def auction_ended(auction_id: str, state: str, winner_id: str | None, amount: int | None) -> dict[str, Any]:
    return {
        "type": AUCTION_ENDED,
        "auction_id": auction_id,
        "state": state,
        "winner_id": winner_id,
        "amount_cents": amount,
    }


def auction_offer(auction_id: str, user_id: str, amount: int, pay_by_ms: int) -> dict[str, Any]:
    return {
        "type": AUCTION_OFFER,
        "auction_id": auction_id,
        "user_id": user_id,
        "amount_cents": amount,
        "pay_by_ms": pay_by_ms,
    }


def auction_sold(auction_id: str, user_id: str, amount: int, order_id: str) -> dict[str, Any]:
    return {
        "type": AUCTION_SOLD,
        "auction_id": auction_id,
        "user_id": user_id,
        "amount_cents": amount,
        "order_id": order_id,
    }


def auction_outbid(auction_id: str, amount: int, your_bid: int) -> dict[str, Any]:
    return {
        "type": AUCTION_OUTBID,
        "auction_id": auction_id,
        "amount_cents": amount,
        "your_bid_cents": your_bid,
    }


def auction_won(auction_id: str, amount: int, pay_by_ms: int) -> dict[str, Any]:
    return {"type": AUCTION_WON, "auction_id": auction_id, "amount_cents": amount, "pay_by_ms": pay_by_ms}


@dataclass
class _Folded:
    """The latest accepted bid of an auction this process saw since the last tick."""

    room_id: str
    leader_id: str
    seq: int
    amount_cents: int
    ends_at_ms: int
    bids: int
    min_bid_cents: int
    extended: bool
    #: displaced leader -> (the new leading amount, their bid)
    outbid: dict[str, tuple[int, int]] = field(default_factory=dict)


def _checkpoint(auction: Auction, offered: list[str]) -> dict[str, Any]:
    """An auction's record's result: what restoring it needs, and what a reader wants."""
    order = Order.from_json(auction.order_json) if auction.order_json else None
    winner = order.user_id if order else (auction.offer or {}).get("user_id")
    return {
        "opened_at_ms": auction.opened_at_ms,
        "original_ends_at_ms": auction.original_ends_at_ms,
        "ends_at_ms": auction.ends_at_ms,
        "state": auction.state,
        "leader_id": auction.leader_id,
        "leading_cents": auction.amount_cents,
        "bid_seq": auction.bid_seq,
        "bids": auction.bids,
        "offer": auction.offer,
        "offered": offered,
        "winner_id": winner,
        # the price: the order's, or the standing offer's
        "amount_cents": order.amount_cents if order else (auction.offer or {}).get("amount_cents"),
        "order_id": order.id if order else None,
        "checkpoint_ms": now_ms(),
    }


#: The auction's WebSocket commands and their fields (signed-in users, each with a rid).
COMMANDS: dict[str, dict[str, Field]] = {
    "bid": {"auction_id": Field(str), "amount_cents": Field(int)},
    "pay_auction": {"auction_id": Field(str)},
}


class Auctions:
    welcome_key = "auctions"
    id_prefix = "a_"

    def __init__(self, ctx: ToolContext) -> None:
        self.ctx = ctx
        self.house = AuctionHouse(ctx.redis, ctx.key_prefix)
        self._buckets: dict[str, TokenBucket] = {}
        self._hosts: dict[str, str] = {}
        self._folded: dict[str, _Folded] = {}
        #: auction id -> room id: changed since its last checkpoint
        self._dirty: dict[str, str] = {}
        self._checkpointed: dict[str, float] = {}

    # -- the Tool protocol ----------------------------------------------------------------------

    def register(self, commands: Registry[Any]) -> None:
        handlers = {"bid": self._bid_command, "pay_auction": self._pay_command}
        for name, fields in COMMANDS.items():
            commands.register(name, handlers[name], fields, signed_in=True, needs_rid=True)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/api/rooms/{room_id}/auctions", self._open_route)
        app.router.add_get("/api/rooms/{room_id}/auctions", self._list_route)
        app.router.add_get("/api/rooms/{room_id}/auctions/{auction_id}", self._get_route)
        app.router.add_get("/api/rooms/{room_id}/auctions/{auction_id}/bids", self._bids_route)

    async def start(self) -> None:
        await self.house.load()
        # a Redis that lost its data lost the due set too: every open auction is due again
        for state in ("open", "offered"):
            for row in await self.ctx.store.tools(kind=KIND, state=state):
                await self._present(row.room_id, row.id)
                await self.ctx.tools.schedule(row.room_id, row.id, now_ms())

    async def due(self, room_id: str, tool_id: str) -> int | None:
        for _ in range(3):  # a step another process took meanwhile: look again
            auction = await self._present(room_id, tool_id)
            if auction is None:
                return None
            if auction.state == "open":
                step = await self.house.close(room_id, tool_id)
            elif auction.state == "offered":
                step = await self.house.expire(room_id, tool_id)
            else:
                return None
            if step.kind == "later":
                return step.at_ms
            if step.kind != "state":
                return await self._announce(auction, step)
        return now_ms() + 1000

    async def welcome(self, room_id: str, tool_ids: list[str]) -> list[dict[str, Any]]:
        out = []
        for tool_id in tool_ids:
            auction = await self.house.get(room_id, tool_id)
            if auction is not None:
                out.append(auction.public())
        return out

    async def tick(self) -> None:
        folded, self._folded = self._folded, {}
        for auction_id, bid in folded.items():
            await self.ctx.notices.event(bid.room_id, auction_bid(auction_id, bid.leader_id, bid))
            for user, (amount, yours) in bid.outbid.items():
                if user != bid.leader_id:
                    await self._tell(bid.room_id, user, auction_outbid(auction_id, amount, yours))
        now = time.monotonic()
        for auction_id, room_id in list(self._dirty.items()):
            if now - self._checkpointed.get(auction_id, 0.0) < CHECKPOINT_MS / 1000:
                continue
            del self._dirty[auction_id]
            self._checkpointed[auction_id] = now
            auction = await self.house.get(room_id, auction_id)
            row = await self.ctx.store.tool(auction_id)
            if auction is None or row is None or row.state != "open" or auction.state != "open":
                continue  # a state change writes its own record
            result = _checkpoint(auction, [])
            await self.ctx.store.update_tool(auction_id, "open", json.dumps(result), None)
        if len(self._checkpointed) > _BUCKETS_KEPT:
            self._checkpointed.clear()

    # -- commands -------------------------------------------------------------------------------

    async def _bid_command(self, caller: Caller, command: Command) -> dict[str, Any]:
        auction_id, amount = command.fields["auction_id"], command.fields["amount_cents"]
        try:
            if caller.role == Role.HOST or await self._host_of(caller.room_id) == caller.user_id:
                raise InteractError("own_auction", "a host does not bid on their own room's auction")
            if not self._take(caller.user_id):
                raise InteractError("rate_limited", "too many bids; wait a moment")
            await self._auction(caller.room_id, auction_id)
            banned = RoomKeys(self.ctx.key_prefix, caller.room_id).banned
            bid = await self.house.bid(
                caller.room_id, auction_id, caller.user_id, command.rid or "", amount, banned
            )
        except InteractError as exc:
            raise refusal(exc, command.rid) from None
        self._fold(caller.room_id, auction_id, caller.user_id, bid)
        if bid.ended:  # bought now: close it at the next tick
            await self.ctx.tools.schedule(caller.room_id, auction_id, bid.ends_at_ms)
        return {
            "auction_id": auction_id,
            "amount_cents": bid.amount_cents,
            "bid_seq": bid.seq,
            "ends_at_ms": bid.ends_at_ms,
            "extended": bid.extended,
        }

    async def _pay_command(self, caller: Caller, command: Command) -> dict[str, Any]:
        room_id, user, auction_id = caller.room_id, caller.user_id, command.fields["auction_id"]
        try:
            await self._auction(room_id, auction_id)
            checked = await self.house.check_pay(room_id, auction_id, user)
            if isinstance(checked, str):  # paid before: the same order, no charge
                order = Order.from_json(checked)
                await self._write_ledger(order)
                return {"order": order.public()}
            order, paid = await self._pay(room_id, auction_id, user, checked)
            await self._write_ledger(order)
        except InteractError as exc:
            raise refusal(exc, command.rid) from None
        except InventoryError as exc:
            raise ProtocolError(exc.code, exc.message, command.rid, data=exc.data) from None
        if paid:
            await self._sold(room_id, auction_id, order)
        return {"order": order.public()}

    async def _pay(self, room_id: str, auction_id: str, user: str, amount: int) -> tuple[Order, bool]:
        settlement = self.ctx.settlement
        charge = await settlement.charge(f"auction:{auction_id}:{user}", user, amount)

        async def commit() -> tuple[tuple[Order, bool] | InteractError, bool]:
            try:
                text, paid = await self.house.pay(room_id, auction_id, user, charge.attempt, amount)
            except InteractError as exc:  # refused after the payment: it is given back
                return exc, False
            return (Order.from_json(text), paid), paid

        async def void(attempt: str) -> bool:
            return await self.house.void(room_id, auction_id, attempt)

        result = await settlement.spend(auction_id, charge, commit, void)
        if isinstance(result, InteractError):
            raise result
        return result

    async def _write_ledger(self, order: Order) -> None:
        """The order in the ledger before the winner hears of it (as a sale's confirm)."""
        try:
            await self.ctx.ledger.record([order])
        except Exception as exc:
            log.error("ledger write failed; the winner is told unavailable", extra={"error": repr(exc)})
            raise Unavailable() from exc

    async def _sold(self, room_id: str, auction_id: str, order: Order) -> None:
        await self.ctx.notices.order_status(
            room_id, order.user_id, order.id, "confirmed", order=order.public()
        )
        await self.ctx.notices.event(
            room_id, auction_sold(auction_id, order.user_id, order.amount_cents, order.id)
        )
        await self._record(room_id, auction_id, closed=True)
        await self.house.retire(room_id, auction_id)

    # -- due steps ------------------------------------------------------------------------------

    async def _announce(self, auction: Auction, step: Step) -> int | None:
        room_id, auction_id = auction.spec.room_id, auction.spec.id
        if step.kind == "offered":
            if auction.state == "open":
                await self.ctx.notices.event(
                    room_id, auction_ended(auction_id, "offered", step.user_id, step.amount_cents)
                )
            await self.ctx.notices.event(
                room_id, auction_offer(auction_id, step.user_id, step.amount_cents, step.at_ms)
            )
            await self._tell(room_id, step.user_id, auction_won(auction_id, step.amount_cents, step.at_ms))
            await self._record(room_id, auction_id, closed=False)
            return step.at_ms
        await self.ctx.notices.event(room_id, auction_ended(auction_id, "unsold", None, None))
        await self._record(room_id, auction_id, closed=True)
        await self.house.retire(room_id, auction_id)
        return None

    async def _record(self, room_id: str, auction_id: str, closed: bool) -> None:
        auction = await self.house.get(room_id, auction_id)
        if auction is None:
            return
        result = _checkpoint(auction, await self.house.offered(room_id, auction_id))
        await self.ctx.store.update_tool(
            auction_id, auction.state, json.dumps(result), now_ms() if closed else None
        )

    # -- helpers --------------------------------------------------------------------------------

    async def _auction(self, room_id: str, auction_id: str) -> Auction:
        """The auction, put back from its record if Redis lost it; auction_not_found if it is
        not this room's."""
        auction = await self._present(room_id, auction_id) if _ID.fullmatch(auction_id) else None
        if auction is None:
            raise InteractError("auction_not_found", "no such auction in this room")
        return auction

    async def _present(self, room_id: str, auction_id: str) -> Auction | None:
        auction = await self.house.get(room_id, auction_id)
        if auction is not None:
            return auction
        row = await self.ctx.store.tool(auction_id)
        if row is None or row.kind != KIND or row.room_id != room_id or row.state not in ("open", "offered"):
            return None
        log.warning("an auction missing in Redis is put back from its record", extra={"auction": auction_id})
        spec = AuctionSpec(**json.loads(row.spec))
        saved = json.loads(row.result) if row.result else {}
        opened = saved.get("opened_at_ms", row.created_at_ms)
        original = saved.get("original_ends_at_ms", opened + spec.duration_ms)
        await self.house.open(
            spec,
            Checkpoint(
                opened_at_ms=opened,
                original_ends_at_ms=original,
                ends_at_ms=saved.get("ends_at_ms", original),
                state=saved.get("state", "open"),
                leader_id=saved.get("leader_id"),
                amount_cents=saved.get("leading_cents"),
                bid_seq=saved.get("bid_seq", 0),
                bids=saved.get("bids", 0),
                offer=saved.get("offer"),
                offered=saved.get("offered", []),
            ),
        )
        await self.ctx.tools.schedule(room_id, auction_id, now_ms())
        return await self.house.get(room_id, auction_id)

    def _fold(self, room_id: str, auction_id: str, user: str, bid: Bid) -> None:
        folded = self._folded.get(auction_id)
        if folded is None or bid.seq > folded.seq:
            previous = folded.outbid if folded else {}
            folded = self._folded[auction_id] = _Folded(
                room_id,
                user,
                bid.seq,
                bid.amount_cents,
                bid.ends_at_ms,
                bid.bids,
                bid.min_bid_cents,
                bid.extended or (folded.extended if folded else False),
                previous,
            )
        else:
            folded.extended = folded.extended or bid.extended
        if bid.previous_leader and bid.previous_leader != user:
            folded.outbid[bid.previous_leader] = (
                max(bid.amount_cents, folded.amount_cents),
                bid.previous_amount,
            )
        self._dirty[auction_id] = room_id

    def _take(self, user: str) -> bool:
        bucket = self._buckets.get(user)
        if bucket is None:
            if len(self._buckets) >= _BUCKETS_KEPT:
                self._buckets.clear()
            config = self.ctx.config
            bucket = self._buckets[user] = TokenBucket(config.bid_burst, config.bid_rate_per_s)
        return bucket.take()

    async def _host_of(self, room_id: str) -> str:
        host = self._hosts.get(room_id)
        if host is None:
            host = self._hosts[room_id] = (await self.ctx.rooms.get(room_id)).host_id
        return host

    async def _tell(self, room_id: str, user: str, message: dict[str, Any]) -> None:
        try:
            await self.ctx.hub.send_to_user(room_id, user, {**message, "ts_ms": now_ms()})
        except (RedisError, OSError) as exc:  # best effort: the priority events say it too
            log.warning("private auction notice not sent", extra={"user": user, "error": repr(exc)})

    # -- HTTP -----------------------------------------------------------------------------------

    async def _open_route(self, request: web.Request) -> web.Response:
        _, room_id = staff(request, Role.HOST)
        await self.ctx.rooms.get(room_id)  # 404 for an unknown room
        body = await json_body(request)
        product_id = take(body, "product_id", str)
        product = next((p for p in await self.ctx.rooms.products(room_id) if p.id == product_id), None)
        if product is None:
            raise ApiError(404, "product_not_found", "no such product in this room")
        start = int_field(body, "start_cents", None, 1, MAX_AMOUNT_CENTS)
        buy_now = int_field(body, "buy_now_cents", 0, 0, MAX_AMOUNT_CENTS)
        if buy_now and buy_now < start:
            raise ApiError(
                400, "invalid_field", "the field 'buy_now_cents' must be 0 or at least 'start_cents'"
            )
        offer_next = take(body, "offer_next", bool, required=False)
        spec = AuctionSpec(
            id=new_id("a"),
            room_id=room_id,
            product={
                "id": product.id,
                "title": product.title,
                "price_cents": product.price_cents,
                "image_url": product.image_url,
            },
            start_cents=start,
            increment_cents=int_field(body, "increment_cents", None, 1, MAX_AMOUNT_CENTS),
            reserve_cents=int_field(body, "reserve_cents", 0, 0, MAX_AMOUNT_CENTS),
            buy_now_cents=buy_now,
            snipe_ms=int_field(body, "snipe_s", 10, 0, 3600) * 1000,
            max_extension_ms=int_field(body, "max_extension_s", 300, 0, 86_400) * 1000,
            duration_ms=int_field(body, "duration_s", None, 1, 86_400) * 1000,
            hold_ms=int_field(body, "hold_s", 300, 1, 86_400) * 1000,
            offer_next=True if offer_next is None else offer_next,
        )
        row = ToolRow(
            spec.id, room_id, KIND, json.dumps(asdict(spec), ensure_ascii=False), "open", None, now_ms()
        )
        await self.ctx.store.insert_tool(row, max_open=self.ctx.config.max_open_per_room)
        _, ends_at = await self.house.open(spec)
        await self._record(room_id, spec.id, closed=False)
        await self.ctx.tools.schedule(room_id, spec.id, ends_at)
        auction = await self._auction(room_id, spec.id)
        await self.ctx.notices.event(room_id, auction_opened(auction.public()))
        return reply(auction.public(full=True), status=201)

    async def _view(self, row: ToolRow) -> dict[str, Any]:
        auction = await self.house.get(row.room_id, row.id)
        if auction is not None:
            return {**auction.public(full=True), "result": json.loads(row.result) if row.result else None}
        spec = json.loads(row.spec)  # retired from Redis: the record
        return {
            "id": row.id,
            "room_id": row.room_id,
            "spec": spec,
            "state": row.state,
            "result": json.loads(row.result) if row.result else None,
        }

    async def _row(self, request: web.Request) -> ToolRow:
        _, room_id = staff(request)
        row = await self.ctx.store.tool(request.match_info["auction_id"])
        if row is None or row.kind != KIND or row.room_id != room_id:
            raise InteractError("auction_not_found", "no such auction in this room")
        return row

    async def _get_route(self, request: web.Request) -> web.Response:
        row = await self._row(request)
        await self._present(row.room_id, row.id)
        return reply(await self._view(row))

    async def _bids_route(self, request: web.Request) -> web.Response:
        row = await self._row(request)
        return reply({"auction_id": row.id, "bids": await self.house.bids(row.room_id, row.id)})

    async def _list_route(self, request: web.Request) -> web.Response:
        _, room_id = staff(request)
        rows = await self.ctx.store.tools(room_id=room_id, kind=KIND)
        return reply({"auctions": [await self._view(r) for r in rows]})
