"""The auction scripts (interact/lua/auction_*.lua) called directly on the real Redis: each
decision, the same call twice, and every refusal changing nothing."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from interact.auctions import MAX_AMOUNT_CENTS, AuctionHouse, AuctionSpec, Checkpoint, Step
from interact.errors import InteractError

ROOM = "r1"
BANNED = "{r1}:banned-test"


@pytest.fixture
async def house(redis_url: str) -> AsyncIterator[AuctionHouse]:
    client = aioredis.Redis.from_url(redis_url)
    h = AuctionHouse(client, f"t{uuid.uuid4().hex[:12]}")
    await h.load()
    yield h
    await client.delete(BANNED)
    await client.aclose()


def spec(**overrides: Any) -> AuctionSpec:
    fields: dict[str, Any] = {
        "id": f"a_{uuid.uuid4().hex[:10]}",
        "room_id": ROOM,
        "product": {"id": "p1", "title": "玉", "price_cents": 100, "image_url": None},
        "start_cents": 1000,
        "increment_cents": 100,
        "reserve_cents": 0,
        "buy_now_cents": 0,
        "snipe_ms": 0,
        "max_extension_ms": 0,
        "duration_ms": 60_000,
        "hold_ms": 60_000,
        "offer_next": True,
    }
    fields.update(overrides)
    return AuctionSpec(**fields)


async def snapshot(house: AuctionHouse, s: AuctionSpec) -> tuple[Any, ...]:
    k = house.keys(s.room_id, s.id)
    r = house.redis
    return (
        await r.hgetall(k.tool),
        await r.lrange(k.part("bids"), 0, -1),
        await r.zrange(k.part("top"), 0, -1, withscores=True),
        await r.smembers(k.part("offered")),
        await r.hgetall(k.part("pay")),
    )


async def refused(house: AuctionHouse, s: AuctionSpec, code: str, call: Any) -> InteractError:
    before = await snapshot(house, s)
    with pytest.raises(InteractError) as info:
        await call()
    assert info.value.code == code
    assert await snapshot(house, s) == before
    return info.value


async def until_step(step: Any, kinds: set[str]) -> Step:
    deadline = time.monotonic() + 5
    while True:
        done: Step = await step()
        if done.kind in kinds:
            return done
        assert time.monotonic() < deadline, done
        await asyncio.sleep(0.01)


async def end_now(house: AuctionHouse, s: AuctionSpec) -> None:
    """Its end came (moved into the past): the bids before it need not fit in a few ms."""
    await house.redis.hset(house.keys(s.room_id, s.id).tool, "ends_at", 0)


async def test_open_twice_answers_the_same(house: AuctionHouse) -> None:
    s = spec()
    first = await house.open(s)
    assert await house.open(s) == first
    auction = await house.get(ROOM, s.id)
    assert auction is not None and auction.state == "open" and auction.leader_id is None
    assert auction.ends_at_ms - auction.opened_at_ms == 60_000 and auction.min_bid_cents == 1000
    assert auction.public()["reserve_met"] is False and "reserve_cents" not in auction.public()
    assert auction.public(full=True)["reserve_cents"] == 0
    assert await house.get(ROOM, "a_missing") is None


async def test_a_bid_is_decided_once_per_rid_and_refusals_change_nothing(house: AuctionHouse) -> None:
    s = spec()
    await house.open(s)

    def bid(user: str, rid: str, amount: int) -> Any:
        return lambda: house.bid(ROOM, s.id, user, rid, amount, BANNED)

    low = await refused(house, s, "bid_too_low", bid("ann", "r0", 999))
    assert low.data == {"min_bid_cents": 1000}
    again = await refused(house, s, "bid_too_low", bid("ann", "r0", 999))  # the same decision
    assert again.data == {"min_bid_cents": 1000}
    for amount in (0, -5, MAX_AMOUNT_CENTS + 1):
        await refused(house, s, "invalid_amount", bid("ann", f"bad{amount}", amount))
    await refused(house, s, "duplicate", bid("ann", "r0", 1000))  # the rid with another amount

    first = await house.bid(ROOM, s.id, "ann", "r1", 1000, BANNED)
    assert (first.seq, first.amount_cents, first.previous_leader, first.min_bid_cents) == (
        1,
        1000,
        None,
        1100,
    )
    before = await snapshot(house, s)
    assert await house.bid(ROOM, s.id, "ann", "r1", 1000, BANNED) == first  # a retry: the same
    assert await snapshot(house, s) == before
    await refused(house, s, "bid_too_low", bid("bob", "b1", 1099))
    second = await house.bid(ROOM, s.id, "bob", "b2", 1100, BANNED)
    assert (second.seq, second.previous_leader, second.previous_amount) == (2, "ann", 1000)
    await house.redis.sadd(BANNED, "eve")
    await refused(house, s, "banned", bid("eve", "e1", 5000))
    await refused(house, s, "auction_not_found", lambda: house.bid(ROOM, "a_none", "ann", "x", 5, BANNED))

    bids = await house.bids(ROOM, s.id)
    assert [(b["seq"], b["user_id"], b["amount_cents"]) for b in bids] == [(1, "ann", 1000), (2, "bob", 1100)]
    auction = await house.get(ROOM, s.id)
    assert auction is not None and (auction.leader_id, auction.amount_cents, auction.bids) == ("bob", 1100, 2)


async def test_a_late_bid_extends_the_end_up_to_the_cap(house: AuctionHouse) -> None:
    s = spec(duration_ms=10_000, snipe_ms=30_000, max_extension_ms=2000)  # (any bid is in the window)
    _, ends = await house.open(s)
    first = await house.bid(ROOM, s.id, "ann", "1", 1000, BANNED)
    assert first.extended and first.ends_at_ms == ends + 2000  # now + 30 s, capped at end + 2 s
    second = await house.bid(ROOM, s.id, "bob", "1", 1100, BANNED)
    assert not second.extended and second.ends_at_ms == ends + 2000


async def test_a_bid_within_the_window_moves_the_end_to_now_plus_the_window(house: AuctionHouse) -> None:
    s = spec(duration_ms=10_000, snipe_ms=20_000, max_extension_ms=60_000)  # (any bid is in the window)
    await house.open(s)
    before = int(time.time() * 1000)
    first = await house.bid(ROOM, s.id, "ann", "1", 1000, BANNED)
    after = int(time.time() * 1000)
    assert first.extended and before + 20_000 - 50 <= first.ends_at_ms <= after + 20_000 + 50


async def test_buy_now_ends_it_and_the_buyer_wins(house: AuctionHouse) -> None:
    s = spec(buy_now_cents=5000)
    await house.open(s)
    await house.bid(ROOM, s.id, "ann", "1", 1000, BANNED)
    bought = await house.bid(ROOM, s.id, "bob", "1", 5000, BANNED)
    assert bought.ended
    await refused(house, s, "auction_ended", lambda: house.bid(ROOM, s.id, "cat", "1", 9000, BANNED))
    step = await house.close(ROOM, s.id)
    assert (step.kind, step.user_id, step.amount_cents) == ("offered", "bob", 5000)
    assert (await house.close(ROOM, s.id)).kind == "state"  # once


async def test_close_once_after_the_end_and_a_reserve_not_met_is_unsold(house: AuctionHouse) -> None:
    s = spec(duration_ms=60_000)
    await house.open(s)
    assert (await house.close(ROOM, s.id)).kind == "later"
    short = spec(reserve_cents=2000)
    await house.open(short)
    await house.bid(ROOM, short.id, "ann", "1", 1500, BANNED)
    await end_now(house, short)
    done = await until_step(lambda: house.close(ROOM, short.id), {"unsold"})
    assert done.kind == "unsold"
    again = await house.close(ROOM, short.id)
    assert (again.kind, again.state) == ("state", "unsold")
    empty = spec(duration_ms=30)
    await house.open(empty)  # (no bids: its 30 ms need fit nothing)
    assert (await until_step(lambda: house.close(ROOM, empty.id), {"unsold"})).kind == "unsold"
    with pytest.raises(InteractError):
        await house.close(ROOM, "a_none")
    with pytest.raises(InteractError):
        await house.expire(ROOM, "a_none")


async def test_offers_go_to_the_next_distinct_bidder_above_the_reserve(house: AuctionHouse) -> None:
    s = spec(hold_ms=30, reserve_cents=1100)
    await house.open(s)
    for user, amount in (("cat", 1000), ("bob", 1100), ("ann", 1200), ("bob", 1300)):
        await house.bid(ROOM, s.id, user, f"{user}{amount}", amount, BANNED)
    assert (await house.expire(ROOM, s.id)).kind == "state"  # still open: nothing to expire
    await end_now(house, s)
    won = await until_step(lambda: house.close(ROOM, s.id), {"offered"})
    assert (won.user_id, won.amount_cents) == ("bob", 1300)
    await refused(house, s, "not_your_offer", lambda: house.check_pay(ROOM, s.id, "ann"))
    nxt = await until_step(lambda: house.expire(ROOM, s.id), {"offered"})
    assert (nxt.user_id, nxt.amount_cents) == ("ann", 1200)  # bob had his offer; cat is below the reserve
    await refused(house, s, "offer_expired", lambda: house.check_pay(ROOM, s.id, "bob"))
    assert await house.offered(ROOM, s.id) == ["ann", "bob"]
    last = await until_step(lambda: house.expire(ROOM, s.id), {"unsold"})
    assert last.kind == "unsold"
    assert (await house.expire(ROOM, s.id)).kind == "state"
    await refused(house, s, "offer_expired", lambda: house.check_pay(ROOM, s.id, "ann"))


async def test_without_offer_next_a_lapsed_offer_leaves_it_unsold(house: AuctionHouse) -> None:
    s = spec(hold_ms=30, offer_next=False)
    await house.open(s)
    await house.bid(ROOM, s.id, "ann", "1", 1000, BANNED)
    await house.bid(ROOM, s.id, "bob", "1", 1100, BANNED)
    await end_now(house, s)
    await until_step(lambda: house.close(ROOM, s.id), {"offered"})
    assert (await until_step(lambda: house.expire(ROOM, s.id), {"unsold"})).kind == "unsold"


async def test_pay_spends_one_attempt_and_a_void_one_is_refused(house: AuctionHouse) -> None:
    s = spec()
    await house.open(s)
    await house.bid(ROOM, s.id, "ann", "1", 1000, BANNED)
    await end_now(house, s)
    await until_step(lambda: house.close(ROOM, s.id), {"offered"})
    assert (await house.expire(ROOM, s.id)).kind == "later"
    assert await house.check_pay(ROOM, s.id, "ann") == 1000
    await refused(house, s, "not_your_offer", lambda: house.check_pay(ROOM, s.id, "bob"))
    await refused(house, s, "payment_failed", lambda: house.pay(ROOM, s.id, "ann", "att0", 999))
    assert await house.void(ROOM, s.id, "att_void")
    await refused(house, s, "payment_failed", lambda: house.pay(ROOM, s.id, "ann", "att_void", 1000))

    order, paid = await house.pay(ROOM, s.id, "ann", "att1", 1000)
    assert paid and '"key":"auction:' in order and '"amount":1000' in order
    assert await house.pay(ROOM, s.id, "ann", "att1", 1000) == (order, True)  # the same call: the same
    assert await house.pay(ROOM, s.id, "ann", "att2", 1000) == (order, False)  # another attempt paid nothing
    assert await house.check_pay(ROOM, s.id, "ann") == order
    assert not await house.void(ROOM, s.id, "att1")  # spent: kept
    assert await house.void(ROOM, s.id, "att2")
    await refused(house, s, "not_your_offer", lambda: house.check_pay(ROOM, s.id, "bob"))
    auction = await house.get(ROOM, s.id)
    assert auction is not None and auction.state == "sold" and auction.order_json == order
    assert (await house.close(ROOM, s.id)).state == "sold"
    await house.retire(ROOM, s.id)
    assert await house.redis.pttl(house.keys(ROOM, s.id).tool) > 0


async def test_a_lost_auction_is_put_back_from_its_checkpoint(house: AuctionHouse) -> None:
    s = spec()
    point = Checkpoint(
        opened_at_ms=1000,
        original_ends_at_ms=61_000,
        ends_at_ms=62_000,
        state="offered",
        leader_id="ann",
        amount_cents=1500,
        bid_seq=4,
        bids=4,
        offer={"user_id": "ann", "amount_cents": 1500, "pay_by_ms": 99_000},
        offered=["ann"],
    )
    assert await house.open(s, point) == (1000, 62_000)
    assert await house.open(s, point) == (1000, 62_000)
    auction = await house.get(ROOM, s.id)
    assert auction is not None
    assert (auction.state, auction.leader_id, auction.amount_cents, auction.bid_seq) == (
        "offered",
        "ann",
        1500,
        4,
    )
    assert auction.offer == {"user_id": "ann", "amount_cents": 1500, "pay_by_ms": 99_000}
    assert await house.offered(ROOM, s.id) == ["ann"]
    top = await house.redis.zrange(house.keys(ROOM, s.id).part("top"), 0, -1, withscores=True)
    assert top == [(b"ann", 1500.0)]
