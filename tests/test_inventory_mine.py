"""What a user has in a sale (mine.lua, ``Inventory.mine``: the welcome's ``you``), against a
real Redis and a Valkey cluster: holds, orders, coupons and teams are listed as the scripts
that make them change them; holds given back or past their expiry are not; the list a user
leaves behind stays bounded; a repair makes the lists anew; one pipeline reads many sales."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from conftest import sale_spec
from redis.exceptions import ResponseError

from inventory import model
from inventory.inventory import Inventory
from inventory.keys import SaleKeys


async def mine(inv: Inventory, user: str, *sale_ids: str) -> dict[str, model.Mine]:
    return {m.sale_id: m for m in await inv.mine(list(sale_ids or ("s1",)), user)}


async def test_a_user_with_nothing_gets_nothing(inventory: Inventory) -> None:
    await inventory.open_sale(sale_spec())
    await inventory.reserve("s1", "ann", 1)
    assert await inventory.mine([], "bob") == []
    assert await mine(inventory, "bob") == {}
    assert await mine(inventory, "bob", "s1", "no_such_sale") == {}


async def test_a_hold_then_its_order(inventory: Inventory) -> None:
    await inventory.open_sale(sale_spec())
    held = await inventory.reserve("s1", "ann", 2, "r1")
    got = (await mine(inventory, "ann"))["s1"]
    assert got.holds == [model.OpenHold(held.hold_id, "s1", "p1", 2, 999, held.expires_at_ms, team_code=None)]
    assert got.holds[0].status == "held"
    assert (got.orders, got.coupons, got.teams) == ([], [], [])
    order = await inventory.confirm(held.hold_id, "ann")
    got = (await mine(inventory, "ann"))["s1"]
    assert got.holds == [] and got.orders == [order]


async def test_cancelled_and_expired_holds_are_not_listed(inventory: Inventory) -> None:
    await inventory.open_sale(sale_spec(per_user_limit=3))
    cancelled = await inventory.reserve("s1", "ann", 1)
    kept = await inventory.reserve("s1", "ann", 1)
    await inventory.cancel(cancelled.hold_id, "ann")
    assert [h.hold_id for h in (await mine(inventory, "ann"))["s1"].holds] == [kept.hold_id]

    # a hold past its expiry is not open, though no sweep gave its units back yet
    await inventory.open_sale(sale_spec("short", hold_ms=1000))
    await inventory.reserve("short", "ann", 1)
    deadline = time.monotonic() + 30
    while (await mine(inventory, "ann", "short"))["short"].holds:
        assert time.monotonic() < deadline, "the expired hold is still listed"
        await asyncio.sleep(0.2)
    assert (await inventory.status("short")).held == 1  # not swept: still held in the counters


async def test_a_users_list_stays_within_their_limit(inventory: Inventory) -> None:
    """Every hold given back leaves its id in the list until the user's next hold: then only
    live holds and orders are kept, so cancelling and holding again cannot grow it."""
    await inventory.open_sale(sale_spec(per_user_limit=2))
    keys = SaleKeys(inventory.config.key_prefix, "s1")
    paid = await inventory.reserve("s1", "ann", 1)
    await inventory.confirm(paid.hold_id, "ann")
    for _ in range(20):
        held = await inventory.reserve("s1", "ann", 1)
        await inventory.cancel(held.hold_id, "ann")
    listed = await inventory.redis.hget(keys.mine, "h:ann")
    assert listed is not None and len(listed.split(b",")) <= 2
    # a user who holds nothing now starts over (the old ids are not even looked at)
    await inventory.open_sale(sale_spec("s2"))
    for _ in range(3):
        await inventory.cancel((await inventory.reserve("s2", "bob", 1)).hold_id, "bob")
    last = await inventory.reserve("s2", "bob", 1)
    assert await inventory.redis.hget(SaleKeys(inventory.config.key_prefix, "s2").mine, "h:bob") == (
        last.hold_id.encode()
    )
    got = await mine(inventory, "ann")
    assert [o.id for o in got["s1"].orders] == [paid.hold_id] and got["s1"].holds == []


async def test_a_batch_of_reservations_lists_each_users_holds(inventory: Inventory) -> None:
    await inventory.open_sale(sale_spec(stock=100, per_user_limit=3))
    held = await asyncio.gather(*(inventory.reserve("s1", f"u{i % 5}", 1, f"k{i}") for i in range(15)))
    for i in range(5):
        ids = {h.hold_id for h in (await mine(inventory, f"u{i}"))["s1"].holds}
        assert ids == {h.hold_id for n, h in enumerate(held) if n % 5 == i}


async def test_coupons_used_and_not(inventory: Inventory) -> None:
    await inventory.open_sale(sale_spec())
    await inventory.drop_coupons("s1", "b_1", 5, 300)
    await inventory.drop_coupons("s1", "b_2", 5, 100)
    first = await inventory.claim_coupon("s1", "b_1", "ann")
    assert await inventory.claim_coupon("s1", "b_1", "ann") == first  # again: listed once
    second = await inventory.claim_coupon("s1", "b_2", "ann")
    held = await inventory.reserve("s1", "ann", 1)
    await inventory.confirm(held.hold_id, "ann", first.id)
    got = (await mine(inventory, "ann"))["s1"]
    assert got.coupons == [
        model.Coupon(first.id, "s1", "b_1", 300, used=True),
        model.Coupon(second.id, "s1", "b_2", 100, used=False),
    ]
    assert got.orders[0].coupon_id == first.id
    assert await mine(inventory, "bob") == {}


async def test_teams_open_then_complete(inventory: Inventory) -> None:
    await inventory.open_sale(sale_spec(group_size=2, group_price_cents=600, team_ms=60_000, hold_ms=90_000))
    plain = await inventory.reserve("s1", "ann", 1)  # listed before the team's hold (take, in team.lua)
    team = await inventory.open_team("s1", "ann")
    got = (await mine(inventory, "ann"))["s1"]
    assert got.holds == [  # in the order they were made (the welcome sorts them by expiry)
        model.OpenHold(plain.hold_id, "s1", "p1", 1, 999, plain.expires_at_ms, None),
        model.OpenHold(team.hold_id, "s1", "p1", 1, 600, team.deadline_ms, team.code),
    ]
    assert [h.status for h in got.holds] == ["held", "team"]
    await inventory.cancel(plain.hold_id, "ann")
    got = (await mine(inventory, "ann"))["s1"]
    assert got.holds == [model.OpenHold(team.hold_id, "s1", "p1", 1, 600, team.deadline_ms, team.code)]
    assert got.holds[0].status == "team"
    assert got.teams == [model.TeamPlace(team.code, "s1", team.hold_id, "open", team.deadline_ms, 2, 1, 600)]
    done = await inventory.join_team("s1", team.code, "bob")
    assert done.completed
    for user, hold_id in (("ann", team.hold_id), ("bob", done.hold_id)):
        got = (await mine(inventory, user))["s1"]
        assert got.holds == [] and [o.id for o in got.orders] == [hold_id]
        assert [(t.code, t.state, t.members, t.hold_id) for t in got.teams] == [
            (team.code, "complete", 2, hold_id)
        ]


async def test_one_pipeline_reads_many_sales(inventory: Inventory) -> None:
    """On a cluster the sales' keys are in different slots (and nodes): one pipeline still."""
    ids = [f"m{i}" for i in range(6)]
    for sale_id in ids:
        await inventory.open_sale(sale_spec(sale_id))
    held = {sale_id: await inventory.reserve(sale_id, "ann", 1) for sale_id in ids[::2]}
    got = await mine(inventory, "ann", *ids)
    assert sorted(got) == sorted(held)
    assert {s: m.holds[0].hold_id for s, m in got.items()} == {s: h.hold_id for s, h in held.items()}


async def test_a_flushed_script_is_loaded_again(inventory: Inventory) -> None:
    await inventory.open_sale(sale_spec())
    held = await inventory.reserve("s1", "ann", 1)
    await inventory.redis.script_flush()
    assert (await mine(inventory, "ann"))["s1"].holds[0].hold_id == held.hold_id


async def test_a_script_error_is_raised(inventory: Inventory) -> None:
    """A reply that is an error (here a key of the wrong type) is not taken for nothing."""
    await inventory.open_sale(sale_spec())
    await inventory.reserve("s1", "ann", 1)
    await inventory.redis.delete(SaleKeys(inventory.config.key_prefix, "s1").mine)
    await inventory.redis.set(SaleKeys(inventory.config.key_prefix, "s1").mine, "not a hash")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await inventory.mine(["s1"], "ann")


async def test_a_repair_lists_the_ledgers_orders_again(inventory: Inventory) -> None:
    """Redis lost the lists (with the orders): the repair makes them from the holds it keeps
    and the ledger's orders."""
    await inventory.open_sale(sale_spec(per_user_limit=3))
    keys = SaleKeys(inventory.config.key_prefix, "s1")
    paid = await inventory.reserve("s1", "ann", 1)
    order = await inventory.confirm(paid.hold_id, "ann")
    open_hold = await inventory.reserve("s1", "ann", 1)
    await inventory.redis.delete(keys.mine)
    assert await mine(inventory, "ann") == {}
    fields = {"id": "s1", "room": "room1", "product": "p1", "total": 10}
    await inventory.scripts.call("repair", keys.all(), [json.dumps(fields), order.to_json()])
    got = (await mine(inventory, "ann"))["s1"]
    assert [h.hold_id for h in got.holds] == [open_hold.hold_id] and got.orders == [order]
