"""Money moves only with a decision (issue 11, items 2 and 7).

A refusal never refunds a payment it did not take, every refusal that can follow a charge gives
back exactly the charge it took, a failed team is refunded once however many processes sweep,
and an ``open_team`` retried with its request id gets the first answer and is charged once.

The provider is the simulated one; ``HookedPayments`` only adds a moment between taking a
payment and the script that spends it, for what a second device, another buyer, the clock or a
Redis outage can do in that moment (all of it against the real Redis and a real server)."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import polling
import pytest
from conftest import bearer, sale_spec
from test_gateway import token
from test_sales import ask, open_sale, shop
from wsclient import Client

from inventory.inventory import Inventory, team_code
from inventory.keys import SaleKeys
from inventory.model import Duplicate, InTeam, PaymentFailed, TeamNotFound
from inventory.payments import Charge, Movement, SimulatedPayments
from live.auth import Role
from live.server import Running, running
from live.settings import Settings

__all__ = ["shop"]  # a fixture, used by name

GROUP = {"size": 2, "price_cents": 1000, "team_s": 60}


@dataclass
class HookedPayments(SimulatedPayments):
    """The simulated provider; each new charge runs the next hook, if any, before returning."""

    hooks: list[Callable[[Charge], Awaitable[None]]] = field(default_factory=list)

    async def charge(self, reference: str, user_id: str, amount_cents: int) -> Charge:
        charge = await super().charge(reference, user_id, amount_cents)
        if charge.new and self.hooks:
            await self.hooks.pop(0)(charge)
        return charge


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Room for many purchase actions per buyer in one test."""
    return dataclasses.replace(settings, buy_burst=1000, buy_ip_burst=1000)


@pytest.fixture
def payments(server: Running) -> HookedPayments:
    hooked = HookedPayments()
    server.services.settlement.payments = hooked
    return hooked


def kinds(payments: SimulatedPayments, reference: str) -> list[str]:
    """The movements of one reference: "charge" and "refund", in order."""
    return [m.kind for m in payments.movements if m.reference == reference]


def ref(sale: dict[str, Any], code: str, user: str) -> str:
    return f"team:{sale['id']}:{code}:{user}"


eventually = functools.partial(polling.until, timeout_s=15.0, every_s=0.05)


async def counters(server: Running, sale_id: str) -> tuple[int, int, int]:
    status = (await server.services.selling.sale(sale_id))[1]
    assert status is not None
    return status.available, status.held, status.sold


# -- the provider's state machine ------------------------------------------------------------


async def test_a_charge_stands_once_and_is_refunded_once_by_its_attempt() -> None:
    payments = SimulatedPayments()
    first = await payments.charge("h1", "ann", 500)
    assert first.new and payments.charged == {"h1": 500}
    again = await payments.charge("h1", "ann", 500)  # a retry, or a copy on another process
    assert not again.new and again.attempt == first.attempt
    with pytest.raises(PaymentFailed):
        await payments.charge("h1", "ann", 400)  # another amount while one stands: nothing taken
    with pytest.raises(PaymentFailed):
        await payments.charge("h1", "bob", 500)
    assert await payments.refund("h1", "sim_other") is False  # not the standing attempt
    assert await payments.refund("h1", first.attempt) is True
    assert await payments.refund("h1", first.attempt) is False  # refunded once
    later = await payments.charge("h1", "ann", 400)  # a later confirm of the hold pays again
    assert later.new and later.attempt != first.attempt
    assert await payments.refund("h1", first.attempt) is False  # an old attempt never hits it
    assert payments.charged == {"h1": 400} and payments.refunded == {"h1": 500}
    assert payments.movements == [
        Movement("charge", "h1", first.attempt, 500),
        Movement("refund", "h1", first.attempt, 500),
        Movement("charge", "h1", later.attempt, 400),
    ]


# -- the scripts: check first, spend once, void before refunding ------------------------------


async def sale_state(inventory: Inventory, sale_id: str) -> dict[str, Any]:
    """Everything Redis has of a sale, to see that a call changed nothing."""
    keys = SaleKeys(inventory.config.key_prefix, sale_id)
    return {
        "sale": await inventory.redis.hgetall(keys.sale),
        "holds": await inventory.redis.hgetall(keys.holds),
        "idem": await inventory.redis.hgetall(keys.idempotency),
        "teams": await inventory.redis.hgetall(keys.teams),
        "users": await inventory.redis.hgetall(keys.users),
    }


async def test_checks_decide_without_changing_anything(inventory: Inventory) -> None:
    await inventory.open_sale(sale_spec(group_size=2, group_price_cents=600, team_ms=60_000))
    before = await sale_state(inventory, "s1")
    assert await inventory.check_team("open", "s1", "T1", "ann", 2, "k1") == 1200
    assert before == await sale_state(inventory, "s1")
    with pytest.raises(TeamNotFound):
        await inventory.check_team("join", "s1", "T9", "ann", 1, "k2")

    held = await inventory.reserve("s1", "bob", 1, "r1")
    before = await sale_state(inventory, "s1")
    assert await inventory.hold_amount(held.hold_id, "bob", None) == 999
    assert before == await sale_state(inventory, "s1")
    order = await inventory.confirm(held.hold_id, "bob")
    assert await inventory.hold_amount(held.hold_id, "bob", None) == order  # no charge again

    team = await inventory.open_team("s1", "ann", 1, "k3", "T2")
    with pytest.raises(InTeam):
        await inventory.hold_amount(team.hold_id, "ann", None)  # before, it was charged twice


async def test_a_payment_is_spent_once_or_voided_never_both(inventory: Inventory) -> None:
    await inventory.open_sale(sale_spec(group_size=3, group_price_cents=600, team_ms=60_000))
    team = await inventory.open_team("s1", "ann", 1, "k1", "T1", payment="a1")
    assert team.paid and await inventory.team_payments("s1", "T1", ["ann", "bob"]) == ["a1", ""]
    assert await inventory.void_payment("s1", "a1") is False  # spent: it pays for ann's place

    assert await inventory.void_payment("s1", "b1") is True
    assert await inventory.void_payment("s1", "b1") is True  # idempotent
    before = await sale_state(inventory, "s1")
    with pytest.raises(PaymentFailed):
        await inventory.join_team("s1", "T1", "bob", 1, "k2", payment="b1")
    assert before == await sale_state(inventory, "s1")

    held = await inventory.reserve("s1", "cat", 1, "r1")
    assert await inventory.void_payment("s1", "c1") is True
    with pytest.raises(PaymentFailed):
        await inventory.paid_confirm(held.hold_id, "cat", None, 999, "c1")
    order, paid = await inventory.paid_confirm(held.hold_id, "cat", None, 999, "c2")
    assert paid and order.amount_cents == 999
    again, paid_again = await inventory.paid_confirm(held.hold_id, "cat", None, 999, "c3")
    assert again == order and not paid_again  # made before, with another payment


async def test_open_team_retried_with_its_key_gets_the_first_answer(inventory: Inventory) -> None:
    await inventory.open_sale(sale_spec(group_size=3, group_price_cents=600, team_ms=60_000))
    first = await inventory.open_team("s1", "ann", 1, "k1")  # a random code
    again = await inventory.open_team("s1", "ann", 1, "k1")  # another random code: the same team
    assert (again.hold_id, again.code, again.members) == (first.hold_id, first.code, 1)
    await inventory.join_team("s1", first.code, "bob", 1, "k2")
    later = await inventory.open_team("s1", "ann", 1, "k1", "OTHER")
    assert (later.hold_id, later.code, later.members) == (first.hold_id, first.code, 2)
    for retry in (
        inventory.open_team("s1", "ann", 2, "k1"),  # another quantity
        inventory.join_team("s1", first.code, "ann", 1, "k1"),  # the open's key, for a join
        inventory.open_team("s1", "bob", 1, "k2"),  # the join's key, for an open
    ):
        with pytest.raises(Duplicate):
            await retry
    assert (await inventory.team_status("s1", first.code))["members"] == 2


def test_an_opens_code_follows_from_its_request() -> None:
    code = team_code("s1", "ann", "r1")
    assert code == team_code("s1", "ann", "r1") and len(code) == 8 and code == code.upper()
    assert (
        len({code, team_code("s1", "ann", "r2"), team_code("s1", "bob", "r1"), team_code("s2", "ann", "r1")})
        == 4
    )
    assert team_code("s1", "ann", "") != team_code("s1", "ann", "")  # no key: a random one
    assert team_code("s1", "\ud800", "\udfff")  # text that is not UTF-8 still hashes


# -- group buys over the WebSocket: refusals before the payment --------------------------------


async def test_a_refused_join_refunds_no_paid_member(
    server: Running,
    http: aiohttp.ClientSession,
    host_token: str,
    shop: dict[str, str],
    payments: HookedPayments,
) -> None:
    """The issue's case: members of a completed team join it again with new rids."""
    sale = await open_sale(http, host_token, shop, group=GROUP)
    ann = await Client.connect(http, "shop", token(server, "ann"))
    bob = await Client.connect(http, "shop", token(server, "bob"))
    team = await ask(ann, {"type": "open_team", "rid": "t1", "sale_id": sale["id"]})
    joined = await ask(bob, {"type": "join_team", "rid": "t2", "sale_id": sale["id"], "code": team["code"]})
    assert joined["completed"] is True
    before = list(payments.movements)
    for who, rid in ((ann, "t3"), (bob, "t4")):
        again = await ask(who, {"type": "join_team", "rid": rid, "sale_id": sale["id"], "code": team["code"]})
        assert again["code"] == "team_closed"
    assert payments.movements == before
    assert payments.charged == {ref(sale, team["code"], "ann"): 1000, ref(sale, team["code"], "bob"): 1000}
    assert payments.refunded == {}
    orders = await server.services.ledger.orders(sale["id"])
    assert sorted(o.user_id for o in orders) == ["ann", "bob"]


async def test_rejoining_ones_own_team_refunds_nothing_and_the_team_still_completes(
    server: Running,
    http: aiohttp.ClientSession,
    host_token: str,
    shop: dict[str, str],
    payments: HookedPayments,
) -> None:
    sale = await open_sale(http, host_token, shop, group={**GROUP, "size": 3})
    ann = await Client.connect(http, "shop", token(server, "ann"))
    bob = await Client.connect(http, "shop", token(server, "bob"))
    cat = await Client.connect(http, "shop", token(server, "cat"))
    team = await ask(ann, {"type": "open_team", "rid": "t1", "sale_id": sale["id"]})
    join = {"type": "join_team", "sale_id": sale["id"], "code": team["code"]}
    await ask(bob, {**join, "rid": "t2"})
    for who, rid in ((ann, "t3"), (bob, "t4")):
        assert (await ask(who, {**join, "rid": rid}))["code"] == "already_in_team"
    assert [m.kind for m in payments.movements] == ["charge", "charge"]
    done = await ask(cat, {**join, "rid": "t5"})
    assert done["completed"] is True
    assert payments.refunded == {} and len(payments.charged) == 3
    assert len(await server.services.ledger.orders(sale["id"])) == 3


async def test_group_refusals_decided_before_the_payment_take_nothing(
    server: Running,
    http: aiohttp.ClientSession,
    host_token: str,
    shop: dict[str, str],
    payments: HookedPayments,
) -> None:
    plain = await open_sale(http, host_token, shop)
    group = await open_sale(http, host_token, shop, group=GROUP, stock=2, per_user_limit=1)
    ann = await Client.connect(http, "shop", token(server, "ann"))
    bob = await Client.connect(http, "shop", token(server, "bob"))
    cat = await Client.connect(http, "shop", token(server, "cat"))
    open_team = {"type": "open_team", "sale_id": group["id"]}
    assert (await ask(ann, {**open_team, "rid": "o1", "sale_id": plain["id"]}))["code"] == "not_group_sale"
    missing = {"type": "join_team", "rid": "j1", "sale_id": group["id"], "code": "NOPE1234"}
    assert (await ask(ann, missing))["code"] == "team_not_found"
    await ask(ann, {"type": "reserve", "rid": "r1", "sale_id": group["id"], "quantity": 1})
    assert (await ask(ann, {**open_team, "rid": "o2"}))["code"] == "limit_reached"
    assert (await ask(ann, {**open_team, "rid": "r1"}))["code"] == "duplicate"  # a reserve's rid
    await ask(bob, {"type": "reserve", "rid": "r2", "sale_id": group["id"], "quantity": 1})
    assert (await ask(cat, {**open_team, "rid": "o3"}))["code"] == "sold_out"
    assert (await ask(cat, {**open_team, "rid": "o4", "quantity": 2}))["code"] == "invalid_quantity"
    assert payments.movements == []
    assert await counters(server, group["id"]) == (0, 2, 0)


# -- group buys: refusals that follow the payment -----------------------------------------------


async def test_group_refusals_after_the_payment_give_back_exactly_that_payment(
    server: Running,
    http: aiohttp.ClientSession,
    host_token: str,
    shop: dict[str, str],
    payments: HookedPayments,
) -> None:
    sale = await open_sale(http, host_token, shop, group=GROUP, stock=3, per_user_limit=1)
    ann = await Client.connect(http, "shop", token(server, "ann"))
    ann_phone = await Client.connect(http, "shop", token(server, "ann"))
    bob = await Client.connect(http, "shop", token(server, "bob"))
    cat = await Client.connect(http, "shop", token(server, "cat"))
    dan = await Client.connect(http, "shop", token(server, "dan"))
    team = await ask(dan, {"type": "open_team", "rid": "d1", "sale_id": sale["id"]})
    join = {"type": "join_team", "sale_id": sale["id"], "code": team["code"]}

    async def ann_reserves(_: Charge) -> None:  # her limit of 1 goes while she pays
        await ask(ann_phone, {"type": "reserve", "rid": "r1", "sale_id": sale["id"], "quantity": 1})

    payments.hooks.append(ann_reserves)
    assert (await ask(ann, {**join, "rid": "a1"}))["code"] == "limit_reached"
    assert kinds(payments, ref(sale, team["code"], "ann")) == ["charge", "refund"]

    async def cat_fills_the_team(_: Charge) -> None:
        assert (await ask(cat, {**join, "rid": "c1"}))["completed"] is True

    payments.hooks.append(cat_fills_the_team)
    assert (await ask(bob, {**join, "rid": "b1"}))["code"] == "team_closed"
    assert kinds(payments, ref(sale, team["code"], "bob")) == ["charge", "refund"]
    assert kinds(payments, ref(sale, team["code"], "cat")) == ["charge"]
    assert kinds(payments, ref(sale, team["code"], "dan")) == ["charge"]
    assert await counters(server, sale["id"]) == (0, 1, 2)  # ann's hold; dan and cat bought


async def test_an_open_refused_as_sold_out_after_paying_is_given_back(
    server: Running,
    http: aiohttp.ClientSession,
    host_token: str,
    shop: dict[str, str],
    payments: HookedPayments,
) -> None:
    sale = await open_sale(http, host_token, shop, group=GROUP, stock=1)
    ann = await Client.connect(http, "shop", token(server, "ann"))
    bob = await Client.connect(http, "shop", token(server, "bob"))

    async def bob_takes_the_last(_: Charge) -> None:
        await ask(bob, {"type": "reserve", "rid": "b", "sale_id": sale["id"], "quantity": 1})

    payments.hooks.append(bob_takes_the_last)
    assert (await ask(ann, {"type": "open_team", "rid": "a", "sale_id": sale["id"]}))["code"] == "sold_out"
    assert kinds(payments, ref(sale, team_code(sale["id"], "ann", "a"), "ann")) == ["charge", "refund"]
    assert await counters(server, sale["id"]) == (0, 1, 0)  # bob's hold only


async def test_a_join_refused_as_duplicate_after_paying_is_given_back(
    server: Running,
    http: aiohttp.ClientSession,
    host_token: str,
    shop: dict[str, str],
    payments: HookedPayments,
) -> None:
    """bob joins team A with rid j; while he pays, his phone joins team B with the same rid."""
    sale = await open_sale(http, host_token, shop, group={**GROUP, "size": 3})
    cat = await Client.connect(http, "shop", token(server, "cat"))
    dan = await Client.connect(http, "shop", token(server, "dan"))
    bob = await Client.connect(http, "shop", token(server, "bob"))
    phone = await Client.connect(http, "shop", token(server, "bob"))
    a = (await ask(cat, {"type": "open_team", "rid": "c", "sale_id": sale["id"]}))["code"]
    b = (await ask(dan, {"type": "open_team", "rid": "d", "sale_id": sale["id"]}))["code"]

    async def phone_joins_b(_: Charge) -> None:
        joined = await ask(phone, {"type": "join_team", "rid": "j", "sale_id": sale["id"], "code": b})
        assert joined["type"] == "ack" and joined["code"] == b

    payments.hooks.append(phone_joins_b)
    refused = await ask(bob, {"type": "join_team", "rid": "j", "sale_id": sale["id"], "code": a})
    assert refused["code"] == "duplicate"
    assert kinds(payments, ref(sale, a, "bob")) == ["charge", "refund"]
    assert kinds(payments, ref(sale, b, "bob")) == ["charge"]
    assert (await server.services.inventory.team_status(sale["id"], a))["members"] == 1


async def test_two_devices_joining_at_once_pay_once(
    server: Running,
    http: aiohttp.ClientSession,
    host_token: str,
    shop: dict[str, str],
    payments: HookedPayments,
) -> None:
    """bob's phone joins while his first join is paying: the same payment reference, one
    charge; the phone's join spends it, the first is refused, and gives nothing back."""
    sale = await open_sale(http, host_token, shop, group={**GROUP, "size": 3})
    cat = await Client.connect(http, "shop", token(server, "cat"))
    bob = await Client.connect(http, "shop", token(server, "bob"))
    phone = await Client.connect(http, "shop", token(server, "bob"))
    code = (await ask(cat, {"type": "open_team", "rid": "c", "sale_id": sale["id"]}))["code"]
    join = {"type": "join_team", "sale_id": sale["id"], "code": code}

    async def phone_joins(_: Charge) -> None:
        assert (await ask(phone, {**join, "rid": "j2"}))["members"] == 2

    payments.hooks.append(phone_joins)
    assert (await ask(bob, {**join, "rid": "j1"}))["code"] == "already_in_team"
    assert kinds(payments, ref(sale, code, "bob")) == ["charge"]
    assert (await server.services.inventory.team_status(sale["id"], code))["members"] == 2


async def test_a_team_refused_while_redis_refuses_writes_is_refunded_once_redis_is_back(
    server: Running,
    http: aiohttp.ClientSession,
    host_token: str,
    shop: dict[str, str],
    payments: HookedPayments,
) -> None:
    sale = await open_sale(http, host_token, shop, group=GROUP)
    ann = await Client.connect(http, "shop", token(server, "ann"))
    reference = ref(sale, team_code(sale["id"], "ann", "o1"), "ann")
    async with WritesRefused(server) as refuse:
        payments.hooks.append(refuse)
        failed = await ask(ann, {"type": "open_team", "rid": "o1", "sale_id": sale["id"]})
        assert failed["code"] == "unavailable"
        assert kinds(payments, reference) == ["charge"]
    await eventually(lambda: kinds(payments, reference) == ["charge", "refund"])
    team = await ask(ann, {"type": "open_team", "rid": "o1", "sale_id": sale["id"]})  # decided afresh
    assert team["type"] == "ack" and team["members"] == 1
    assert kinds(payments, reference) == ["charge", "refund", "charge"]


# -- confirms: every refusal that follows the payment -----------------------------------------


class WritesRefused:
    """Redis refuses every write (out of memory) from the hook on, until the block ends."""

    def __init__(self, server: Running) -> None:
        self.redis = server.services.redis

    async def __aenter__(self) -> Callable[[Charge], Awaitable[None]]:
        self.saved = (await self.redis.config_get("maxmemory"))["maxmemory"]
        assert (await self.redis.config_get("maxmemory-policy"))["maxmemory-policy"] == "noeviction"

        async def refuse(_: Charge) -> None:
            await self.redis.config_set("maxmemory", 1)

        return refuse

    async def __aexit__(self, *_: object) -> None:
        await self.redis.config_set("maxmemory", self.saved)


async def test_a_hold_that_expires_while_paying_is_refunded(
    server: Running,
    http: aiohttp.ClientSession,
    host_token: str,
    shop: dict[str, str],
    payments: HookedPayments,
) -> None:
    sale = await open_sale(http, host_token, shop, hold_s=1)
    ann = await Client.connect(http, "shop", token(server, "ann"))
    held = await ask(ann, {"type": "reserve", "rid": "r", "sale_id": sale["id"], "quantity": 1})

    async def time_passes(_: Charge) -> None:
        while time.time() * 1000 <= held["expires_at_ms"] + 50:
            await asyncio.sleep(0.05)

    payments.hooks.append(time_passes)
    refused = await ask(ann, {"type": "confirm", "rid": "c", "hold_id": held["hold_id"]})
    assert refused["code"] in ("hold_expired", "hold_not_found")  # the sweep may release it first
    assert kinds(payments, held["hold_id"]) == ["charge", "refund"]
    assert await server.services.ledger.orders(sale["id"]) == []


async def test_confirm_refusals_after_the_payment_give_back_exactly_that_payment(
    server: Running,
    http: aiohttp.ClientSession,
    host_token: str,
    shop: dict[str, str],
    payments: HookedPayments,
) -> None:
    sale = await open_sale(http, host_token, shop, stock=10, per_user_limit=10)
    ann = await Client.connect(http, "shop", token(server, "ann"))
    phone = await Client.connect(http, "shop", token(server, "ann"))
    redis = server.services.redis
    keys = SaleKeys(server.services.settings.key_prefix, sale["id"])
    rids = itertools.count()

    async def reserve() -> dict[str, Any]:
        return await ask(
            ann, {"type": "reserve", "rid": f"r{next(rids)}", "sale_id": sale["id"], "quantity": 1}
        )

    async def confirm(hold: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return await ask(
            ann, {"type": "confirm", "rid": f"c{next(rids)}", "hold_id": hold["hold_id"], **extra}
        )

    # the buyer cancels the hold on another device while paying
    cancelled = await reserve()

    async def cancel_elsewhere(_: Charge) -> None:
        reply = await ask(phone, {"type": "cancel", "rid": "x1", "hold_id": cancelled["hold_id"]})
        assert reply["type"] == "ack"

    payments.hooks.append(cancel_elsewhere)
    assert (await confirm(cancelled))["code"] == "hold_not_found"
    assert kinds(payments, cancelled["hold_id"]) == ["charge", "refund"]

    # the hold's price changes while paying (what a repair of a damaged hold could do)
    repriced = await reserve()

    async def reprice(_: Charge) -> None:
        record = (await redis.hget(keys.holds, repriced["hold_id"])).decode().split("|")
        record[2] = str(int(record[2]) - 100)
        await redis.hset(keys.holds, repriced["hold_id"], "|".join(record))

    payments.hooks.append(reprice)
    assert (await confirm(repriced))["code"] == "amount_changed"
    assert kinds(payments, repriced["hold_id"]) == ["charge", "refund"]

    # the sale is frozen for a repair while paying
    frozen = await reserve()

    async def freeze(_: Charge) -> None:
        await redis.hset(keys.sale, "state", "frozen")

    payments.hooks.append(freeze)
    try:
        assert (await confirm(frozen))["code"] == "frozen"
    finally:
        await redis.hset(keys.sale, "state", "")
    assert kinds(payments, frozen["hold_id"]) == ["charge", "refund"]

    # the coupon is used for another hold while paying
    async with http.post(
        f"/api/sales/{sale['id']}/coupons",
        json={"count": 1, "discount_cents": 200},
        headers=bearer(host_token),
    ) as r:
        batch = (await r.json())["batch_id"]
    claim = {"type": "claim_coupon", "rid": "k", "sale_id": sale["id"], "batch_id": batch}
    coupon = (await ask(ann, claim))["coupon_id"]
    first, second = await reserve(), await reserve()

    async def coupon_used_elsewhere(_: Charge) -> None:
        use = {"type": "confirm", "rid": "x2", "hold_id": second["hold_id"], "coupon_id": coupon}
        assert (await ask(phone, use))["order"]["discount_cents"] == 200

    payments.hooks.append(coupon_used_elsewhere)
    assert (await confirm(first, coupon_id=coupon))["code"] == "coupon_invalid"
    assert kinds(payments, first["hold_id"]) == ["charge", "refund"]
    assert kinds(payments, second["hold_id"]) == ["charge"]

    # the refused holds that are still there confirm later, paying again (a new attempt)
    for hold in (repriced, frozen, first):
        assert (await confirm(hold))["type"] == "ack"
        assert kinds(payments, hold["hold_id"]) == ["charge", "refund", "charge"]
    orders = await server.services.ledger.orders(sale["id"])
    assert sorted(o.id for o in orders) == sorted(h["hold_id"] for h in (repriced, frozen, first, second))
    assert payments.charged == {o.id: o.amount_cents for o in orders}


async def test_confirm_refusals_before_the_payment_take_nothing(
    server: Running,
    http: aiohttp.ClientSession,
    host_token: str,
    shop: dict[str, str],
    payments: HookedPayments,
) -> None:
    sale = await open_sale(http, host_token, shop, group=GROUP)
    ann = await Client.connect(http, "shop", token(server, "ann"))
    bob = await Client.connect(http, "shop", token(server, "bob"))
    team = await ask(ann, {"type": "open_team", "rid": "t", "sale_id": sale["id"]})
    held = await ask(ann, {"type": "reserve", "rid": "r", "sale_id": sale["id"], "quantity": 1})
    before = list(payments.movements)
    confirm = {"type": "confirm", "rid": "c"}
    assert (await ask(ann, {**confirm, "hold_id": team["hold_id"]}))["code"] == "in_team"
    assert (await ask(bob, {**confirm, "hold_id": held["hold_id"]}))["code"] == "not_your_hold"
    assert (await ask(ann, {**confirm, "hold_id": f"{sale['id']}.99.1"}))["code"] == "hold_not_found"
    assert (await ask(ann, {**confirm, "hold_id": held["hold_id"], "coupon_id": "nope"}))[
        "code"
    ] == "coupon_invalid"
    assert payments.movements == before
    done = await ask(ann, {**confirm, "rid": "c2", "hold_id": held["hold_id"]})
    again = await ask(ann, {**confirm, "rid": "c3", "hold_id": held["hold_id"]})
    assert again["order"] == done["order"] and kinds(payments, held["hold_id"]) == ["charge"]


async def test_a_confirm_redis_did_not_run_is_refunded_once_redis_is_back(
    server: Running,
    http: aiohttp.ClientSession,
    host_token: str,
    shop: dict[str, str],
    payments: HookedPayments,
) -> None:
    sale = await open_sale(http, host_token, shop)
    ann = await Client.connect(http, "shop", token(server, "ann"))
    held = await ask(ann, {"type": "reserve", "rid": "r", "sale_id": sale["id"], "quantity": 1})
    async with WritesRefused(server) as refuse:
        payments.hooks.append(refuse)
        failed = await ask(ann, {"type": "confirm", "rid": "c1", "hold_id": held["hold_id"]})
        assert failed["code"] == "unavailable"
        assert kinds(payments, held["hold_id"]) == ["charge"]  # undecided while Redis is down
    await eventually(lambda: kinds(payments, held["hold_id"]) == ["charge", "refund"])
    assert await counters(server, sale["id"]) == (4, 1, 0)  # the hold is still there
    done = await ask(ann, {"type": "confirm", "rid": "c2", "hold_id": held["hold_id"]})
    assert done["type"] == "ack" and kinds(payments, held["hold_id"]) == ["charge", "refund", "charge"]


async def test_a_confirm_that_ran_though_its_call_failed_keeps_its_payment(
    server: Running,
    http: aiohttp.ClientSession,
    host_token: str,
    shop: dict[str, str],
    payments: HookedPayments,
) -> None:
    """The script ran (the order is made with the payment) but the app's call failed: it must
    not refund a paid order. Played as: the order made with that payment, then Redis refusing
    the app's script calls (an ACL change) while it still answers the rest."""
    sale = await open_sale(http, host_token, shop)
    ann = await Client.connect(http, "shop", token(server, "ann"))
    held = await ask(ann, {"type": "reserve", "rid": "r", "sale_id": sale["id"], "quantity": 1})
    inventory, redis = server.services.inventory, server.services.redis
    assert "+@all" in str(await redis.acl_getuser("default"))

    async def made_then_refused(charge: Charge) -> None:
        await inventory.paid_confirm(held["hold_id"], "ann", None, charge.amount_cents, charge.attempt)
        await redis.acl_setuser("default", enabled=True, commands=["-evalsha", "-eval"])

    payments.hooks.append(made_then_refused)
    try:
        failed = await ask(ann, {"type": "confirm", "rid": "c1", "hold_id": held["hold_id"]})
    finally:
        await redis.acl_setuser("default", enabled=True, commands=["+@all"])
    assert failed["code"] == "unavailable"
    assert kinds(payments, held["hold_id"]) == ["charge"]  # kept: it paid for the order
    assert not server.services.settlement._settling
    done = await ask(ann, {"type": "confirm", "rid": "c2", "hold_id": held["hold_id"]})
    assert done["order"]["order_id"] == held["hold_id"]
    assert kinds(payments, held["hold_id"]) == ["charge"]


async def test_a_confirm_refused_after_a_copy_spent_its_payment_keeps_it(
    server: Running,
    http: aiohttp.ClientSession,
    host_token: str,
    shop: dict[str, str],
    payments: HookedPayments,
) -> None:
    """A copy of the confirm (sharing the payment) made the order; this one is refused (the
    sale froze meanwhile): the payment paid for the order and stays."""
    sale = await open_sale(http, host_token, shop)
    ann = await Client.connect(http, "shop", token(server, "ann"))
    held = await ask(ann, {"type": "reserve", "rid": "r", "sale_id": sale["id"], "quantity": 1})
    inventory, redis = server.services.inventory, server.services.redis
    sale_key = SaleKeys(server.services.settings.key_prefix, sale["id"]).sale

    async def copy_confirms_then_freeze(charge: Charge) -> None:
        await inventory.paid_confirm(held["hold_id"], "ann", None, charge.amount_cents, charge.attempt)
        await redis.hset(sale_key, "state", "frozen")

    payments.hooks.append(copy_confirms_then_freeze)
    try:
        refused = await ask(ann, {"type": "confirm", "rid": "c1", "hold_id": held["hold_id"]})
    finally:
        await redis.hset(sale_key, "state", "")
    assert refused["code"] == "frozen"
    assert kinds(payments, held["hold_id"]) == ["charge"]
    done = await ask(ann, {"type": "confirm", "rid": "c2", "hold_id": held["hold_id"]})
    assert done["order"]["order_id"] == held["hold_id"] and kinds(payments, held["hold_id"]) == ["charge"]


# -- failed teams: refunded once, whoever sweeps -----------------------------------------------


async def test_a_failed_team_is_refunded_once_however_many_processes_sweep(
    settings: Settings, tmp_path: Any
) -> None:
    shared = SimulatedPayments()  # one provider, as in production, for two processes
    second = dataclasses.replace(settings, data_dir=tmp_path / "second", node_name="second")
    async with running(settings) as one, running(second) as two:
        for server in (one, two):
            server.services.settlement.payments = shared
        async with aiohttp.ClientSession(base_url=one.url) as http:
            await one.services.rooms.create("shop", host_id="host1", room_id="shop")
            product = await one.services.rooms.add_product("shop", "tea", 1500, None)
            host = one.services.auth.mint("host1", "*", Role.HOST, 600)
            sale = await open_sale(
                http, host, {"room": "shop", "product": product.id}, group={**GROUP, "size": 3, "team_s": 1}
            )
            ann = await Client.connect(http, "shop", token(one, "ann"))
            bob = await Client.connect(http, "shop", token(one, "bob"))
            team = await ask(ann, {"type": "open_team", "rid": "t1", "sale_id": sale["id"]})
            await ask(bob, {"type": "join_team", "rid": "t2", "sale_id": sale["id"], "code": team["code"]})
            while time.time() * 1000 <= team["deadline_ms"]:
                await asyncio.sleep(0.02)
            # both processes' sweepers run too; these race with them and with each other
            sweeps = [s.services.sweeper.sweep(sale["id"]) for s in (one, two) for _ in range(4)]
            await asyncio.gather(*sweeps)
            for member in (ann, bob):
                failed = await member.recv_until(
                    lambda m: m["type"] == "order_status" and m["status"] == "team_failed", 10
                )
                assert failed["refunded_cents"] == 1000
            await asyncio.gather(*(s.services.sweeper.sweep(sale["id"]) for s in (one, two)))
            refunds = sorted(m.reference for m in shared.movements if m.kind == "refund")
            assert refunds == [ref(sale, team["code"], "ann"), ref(sale, team["code"], "bob")]
            assert shared.charged == {}
            assert await counters(one, sale["id"]) == (5, 0, 0)


# -- open_team retried with its rid (item 7) -----------------------------------------------------


async def test_open_team_retried_gets_the_first_answer_and_is_charged_once(
    server: Running,
    http: aiohttp.ClientSession,
    host_token: str,
    shop: dict[str, str],
    payments: HookedPayments,
) -> None:
    sale = await open_sale(http, host_token, shop, group={**GROUP, "size": 3})
    ann = await Client.connect(http, "shop", token(server, "ann"))
    bob = await Client.connect(http, "shop", token(server, "bob"))
    opening = {"type": "open_team", "rid": "o1", "sale_id": sale["id"]}
    first = await ask(ann, opening)
    assert first["type"] == "ack" and first["members"] == 1
    assert await ask(ann, opening) == first
    await ask(bob, {"type": "join_team", "rid": "j", "sale_id": sale["id"], "code": first["code"]})
    later = await ask(ann, opening)
    assert later == {**first, "members": 2}  # the same hold and code, the members now
    assert (await ask(ann, {**opening, "quantity": 2}))["code"] == "duplicate"

    await ann.close()  # the connection drops; the retry comes on a new one
    again = await Client.connect(http, "shop", token(server, "ann"))
    assert await ask(again, opening) == later
    assert kinds(payments, ref(sale, first["code"], "ann")) == ["charge"]
    assert [m.kind for m in payments.movements] == ["charge", "charge"]
    assert await counters(server, sale["id"]) == (3, 2, 0)


async def test_open_team_retried_on_a_new_socket_while_the_first_is_paying(
    server: Running,
    http: aiohttp.ClientSession,
    host_token: str,
    shop: dict[str, str],
    payments: HookedPayments,
) -> None:
    """The first copy's reply is lost with its socket while it is still paying; the retry on a
    new socket runs beside it. One team, one hold, one charge, and the same answer."""
    sale = await open_sale(http, host_token, shop, group={**GROUP, "size": 3})
    opening = {"type": "open_team", "rid": "o1", "sale_id": sale["id"]}
    lost = await Client.connect(http, "shop", token(server, "ann"))
    retry = await Client.connect(http, "shop", token(server, "ann"))
    paying, retried = asyncio.Event(), asyncio.Event()

    async def slow_payment(_: Charge) -> None:
        paying.set()
        await retried.wait()  # the first copy pays until the retry is answered

    payments.hooks.append(slow_payment)
    await lost.send(opening)
    await asyncio.wait_for(paying.wait(), 10)
    await lost.close()
    answer = await ask(retry, opening)
    retried.set()
    assert answer["type"] == "ack" and answer["members"] == 1
    reference = ref(sale, answer["code"], "ann")
    while not await outcomes(http, "open_team", 2):  # both copies answered
        await asyncio.sleep(0.05)
    assert kinds(payments, reference) == ["charge"] and len(payments.movements) == 1
    assert await ask(retry, opening) == answer
    assert await counters(server, sale["id"]) == (4, 1, 0)
    assert (await server.services.inventory.team_status(sale["id"], answer["code"]))["members"] == 1


async def outcomes(http: aiohttp.ClientSession, action: str, count: int) -> bool:
    """Whether ``count`` commands of a type were answered (any outcome), from /metrics."""
    async with http.get("/metrics") as resp:
        text = await resp.text()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(f'live_buy_actions_total{{action="{action}"'):
            total += float(line.rsplit(" ", 1)[1])
    return total >= count
