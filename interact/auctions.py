"""Live auctions in Redis: open, bid, close, offer to the next bidder, pay. Every decision is one
Lua script (interact/lua/auction_*.lua) on the shard's clock, so any process may bid, close or
expire an offer and each happens once.

An auction's keys (interact/keys.py ``ToolKeys``): the hash (spec and state: ``state`` open |
offered | sold | unsold, ``leader``, ``amount``, ``bid_seq``, ``ends_at``, ``orig_ends_at``,
``offer_user``/``offer_amount``/``pay_by``, ``winner``/``order``), ``:bids`` (list of every
accepted bid, "seq|amount|at_ms|ends_at_ms|user"), ``:top`` (zset: each bidder's highest bid),
``:rids`` (hash: each bid's decision by user and rid), ``:offered`` (set: users offered it),
``:pay`` (hash: payment attempts spent or void).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from interact.keys import ToolKeys
from interact.ports import RedisClient
from interact.scripts import Scripts, raise_if_refused, text

SCRIPTS = ("auction_open", "auction_bid", "auction_close", "auction_expire", "auction_pay")
#: A bid's amount at most (as a product's price: live/http_api.py MAX_PRICE_CENTS).
MAX_AMOUNT_CENTS = 10**12
#: How long a finished auction's keys stay in Redis (the store keeps its record for ever).
FINISHED_TTL_MS = 7 * 86_400_000

_MESSAGES = {
    "auction_not_found": "no such auction in this room",
    "duplicate": "this rid was used for another bid",
    "invalid_amount": f"the amount must be a whole number of cents, 1 to {MAX_AMOUNT_CENTS}",
    "banned": "you are banned from this room",
    "auction_ended": "the auction has ended",
    "bid_too_low": "the bid is below the minimum",
    "not_your_offer": "this auction was not offered to you",
    "offer_expired": "your offer lapsed: you did not pay in time",
    "payment_failed": "the payment was not accepted",
}


@dataclass(frozen=True)
class AuctionSpec:
    """What a host opens (cents and ms)."""

    id: str
    room_id: str
    product: dict[str, Any]
    start_cents: int
    increment_cents: int
    reserve_cents: int
    buy_now_cents: int
    snipe_ms: int
    max_extension_ms: int
    duration_ms: int
    hold_ms: int
    offer_next: bool


@dataclass(frozen=True)
class Checkpoint:
    """What an auction's record keeps of its Redis state, to put it back if Redis loses it."""

    opened_at_ms: int
    original_ends_at_ms: int
    ends_at_ms: int
    state: str
    leader_id: str | None
    amount_cents: int | None
    bid_seq: int
    bids: int
    offer: dict[str, Any] | None
    offered: list[str]


@dataclass(frozen=True)
class Auction:
    """An auction's state as Redis holds it."""

    spec: AuctionSpec
    opened_at_ms: int
    original_ends_at_ms: int
    ends_at_ms: int
    state: str
    leader_id: str | None
    amount_cents: int | None
    bid_seq: int
    bids: int
    offer: dict[str, Any] | None
    order_json: str | None

    @property
    def min_bid_cents(self) -> int:
        if self.amount_cents is None:
            return self.spec.start_cents
        return self.amount_cents + self.spec.increment_cents

    def public(self, full: bool = False) -> dict[str, Any]:
        """The auction object of the protocol; ``full`` adds the reserve (hosts, moderators)."""
        s = self.spec
        out: dict[str, Any] = {
            "id": s.id,
            "room_id": s.room_id,
            "product": s.product,
            "start_cents": s.start_cents,
            "increment_cents": s.increment_cents,
            "reserve_met": self.amount_cents is not None and self.amount_cents >= s.reserve_cents,
            "buy_now_cents": s.buy_now_cents,
            "snipe_ms": s.snipe_ms,
            "max_extension_ms": s.max_extension_ms,
            "opened_at_ms": self.opened_at_ms,
            "ends_at_ms": self.ends_at_ms,
            "state": self.state,
            "leader_id": self.leader_id,
            "amount_cents": self.amount_cents,
            "bids": self.bids,
            "bid_seq": self.bid_seq,
            "min_bid_cents": self.min_bid_cents,
            "hold_ms": s.hold_ms,
        }
        if self.offer is not None:
            out["offer"] = self.offer
        if full:
            out["reserve_cents"] = s.reserve_cents
            out["original_ends_at_ms"] = self.original_ends_at_ms
            out["offer_next"] = s.offer_next
        return out


@dataclass(frozen=True)
class Bid:
    """An accepted bid, as its script decided it."""

    seq: int
    amount_cents: int
    ends_at_ms: int
    extended: bool
    previous_leader: str | None
    previous_amount: int
    bids: int
    min_bid_cents: int
    ended: bool


@dataclass(frozen=True)
class Step:
    """What a close or an offer's expiry did: ``later`` (not due: ``at_ms``), ``offered``
    (``user_id``, ``amount_cents``, pay by ``at_ms``), ``unsold``, or ``state`` (nothing: the
    auction is ``state`` already)."""

    kind: str
    at_ms: int = 0
    user_id: str = ""
    amount_cents: int = 0
    state: str = ""


def _refused(reply: Any) -> None:
    raise_if_refused(reply, _MESSAGES, {"bid_too_low": "min_bid_cents"})


def _step(reply: Any) -> Step:
    _refused(reply)
    kind = text(reply[0])
    if kind == "later":
        return Step(kind, at_ms=int(reply[1]))
    if kind == "offered":
        return Step(kind, at_ms=int(reply[3]), user_id=text(reply[1]), amount_cents=int(reply[2]))
    if kind == "state":
        return Step(kind, state=text(reply[1]))
    return Step(kind)


class AuctionHouse:
    """The auctions of one process's Redis (key prefix ``prefix``)."""

    def __init__(self, redis: RedisClient, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self.scripts = Scripts(redis, SCRIPTS)

    async def load(self) -> None:
        await self.scripts.load()

    def keys(self, room_id: str, auction_id: str) -> ToolKeys:
        return ToolKeys(self.prefix, room_id, auction_id)

    def _four(self, k: ToolKeys) -> list[str]:
        return [k.tool, k.part("top"), k.part("offered"), k.room_tools]

    async def open(self, spec: AuctionSpec, restore: Checkpoint | None = None) -> tuple[int, int]:
        """Open the auction (or put it back from ``restore``); (opened_at_ms, ends_at_ms)."""
        k = self.keys(spec.room_id, spec.id)
        args: list[Any] = [
            spec.id,
            spec.room_id,
            json.dumps(spec.product, ensure_ascii=False),
            spec.start_cents,
            spec.increment_cents,
            spec.reserve_cents,
            spec.buy_now_cents,
            spec.snipe_ms,
            spec.max_extension_ms,
            spec.duration_ms,
            spec.hold_ms,
            int(spec.offer_next),
            "",
        ]
        if restore is not None:
            offer = restore.offer or {}
            args[-1] = "restore"
            args += [
                restore.opened_at_ms,
                restore.original_ends_at_ms,
                restore.ends_at_ms,
                restore.state,
                restore.leader_id or "",
                restore.amount_cents or 0,
                restore.bid_seq,
                restore.bids,
                offer.get("user_id", ""),
                offer.get("amount_cents", 0),
                offer.get("pay_by_ms", 0),
                *restore.offered,
            ]
        reply = await self.scripts.call(
            "auction_open", [k.tool, k.room_tools, k.part("top"), k.part("offered")], args
        )
        return int(reply[1]), int(reply[2])

    async def get(self, room_id: str, auction_id: str) -> Auction | None:
        raw = await self.redis.hgetall(self.keys(room_id, auction_id).tool)
        if not raw:
            return None
        h = {text(key): text(value) for key, value in raw.items()}
        spec = AuctionSpec(
            id=h["id"],
            room_id=h["room_id"],
            product=json.loads(h["product"]),
            start_cents=int(h["start"]),
            increment_cents=int(h["inc"]),
            reserve_cents=int(h["reserve"]),
            buy_now_cents=int(h["buy_now"]),
            snipe_ms=int(h["snipe_ms"]),
            max_extension_ms=int(h["max_ext_ms"]),
            duration_ms=int(h["duration_ms"]),
            hold_ms=int(h["hold_ms"]),
            offer_next=h["offer_next"] == "1",
        )
        offer = None
        if h["state"] == "offered" and h.get("offer_user"):
            offer = {
                "user_id": h["offer_user"],
                "amount_cents": int(h["offer_amount"]),
                "pay_by_ms": int(h["pay_by"]),
            }
        leader = h.get("leader") or None
        return Auction(
            spec=spec,
            opened_at_ms=int(h["opened_at"]),
            original_ends_at_ms=int(h["orig_ends_at"]),
            ends_at_ms=int(h["ends_at"]),
            state=h["state"],
            leader_id=leader,
            amount_cents=int(h["amount"]) if leader else None,
            bid_seq=int(h["bid_seq"]),
            bids=int(h["bids"]),
            offer=offer,
            order_json=h.get("order") or None,
        )

    async def offered(self, room_id: str, auction_id: str) -> list[str]:
        members = await self.redis.smembers(self.keys(room_id, auction_id).part("offered"))
        return sorted(text(m) for m in members)

    async def bid(
        self, room_id: str, auction_id: str, user_id: str, rid: str, amount: int, banned_key: str
    ) -> Bid:
        """Decide a bid (raises InteractError for a refusal). ``banned_key``: the room's banned
        set (gateway/keys.py), passed in by the caller."""
        k = self.keys(room_id, auction_id)
        reply = await self.scripts.call(
            "auction_bid",
            [k.tool, k.part("bids"), k.part("top"), k.part("rids"), banned_key],
            [user_id, rid, str(amount), MAX_AMOUNT_CENTS],
        )
        _refused(reply)
        r = [text(v) for v in reply]
        return Bid(
            seq=int(r[1]),
            amount_cents=int(r[2]),
            ends_at_ms=int(r[3]),
            extended=r[4] == "1",
            previous_leader=r[5] or None,
            previous_amount=int(r[6]),
            bids=int(r[7]),
            min_bid_cents=int(r[8]),
            ended=r[9] == "1",
        )

    async def bids(self, room_id: str, auction_id: str) -> list[dict[str, Any]]:
        """Every accepted bid, in order."""
        out = []
        for raw in await self.redis.lrange(self.keys(room_id, auction_id).part("bids"), 0, -1):
            seq, amount, at, ends, user = text(raw).split("|", 4)
            out.append(
                {
                    "seq": int(seq),
                    "user_id": user,
                    "amount_cents": int(amount),
                    "at_ms": int(at),
                    "ends_at_ms": int(ends),
                }
            )
        return out

    async def close(self, room_id: str, auction_id: str) -> Step:
        k = self.keys(room_id, auction_id)
        return _step(await self.scripts.call("auction_close", self._four(k), []))

    async def expire(self, room_id: str, auction_id: str) -> Step:
        k = self.keys(room_id, auction_id)
        return _step(await self.scripts.call("auction_expire", self._four(k), []))

    async def check_pay(self, room_id: str, auction_id: str, user_id: str) -> int | str:
        """The amount to charge, or the order JSON when the user paid for it already."""
        k = self.keys(room_id, auction_id)
        reply = await self.scripts.call("auction_pay", self._pay_keys(k), [user_id, "check", "", -1])
        _refused(reply)
        return text(reply[1]) if text(reply[0]) == "paid" else int(reply[1])

    async def pay(
        self, room_id: str, auction_id: str, user_id: str, attempt: str, amount: int
    ) -> tuple[str, bool]:
        """Spend the payment ``attempt``: the order JSON, and whether ``attempt`` paid it."""
        k = self.keys(room_id, auction_id)
        reply = await self.scripts.call("auction_pay", self._pay_keys(k), [user_id, "spend", attempt, amount])
        _refused(reply)
        return text(reply[1]), int(reply[2]) == 1

    def _pay_keys(self, k: ToolKeys) -> list[str]:
        return [k.tool, k.part("pay"), k.part("offered"), k.room_tools]

    async def void(self, room_id: str, auction_id: str, attempt: str) -> bool:
        """Make sure no pay script spends ``attempt`` from now on, before it is refunded. True:
        void (none spent it, none will); False: a pay spent it already (keep the money)."""
        pay = self.keys(room_id, auction_id).part("pay")
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hsetnx(pay, f"p:{attempt}", "void")
            pipe.hget(pay, f"p:{attempt}")
            _, state = await pipe.execute()
        return bool(state == b"void")

    async def retire(self, room_id: str, auction_id: str) -> None:
        """A finished auction's keys expire after FINISHED_TTL_MS (its record stays)."""
        k = self.keys(room_id, auction_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in (k.tool, *(k.part(p) for p in ("bids", "top", "rids", "offered", "pay"))):
                pipe.pexpire(key, FINISHED_TTL_MS)
            await pipe.execute()
