"""The inventory's Python API against a real Redis: typed outcomes, micro-batching, the
sold-out flag kept right across processes, holds, teams and coupons."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import pytest
from conftest import sale_spec

from inventory import model
from inventory.inventory import Inventory, InventoryConfig
from live.redis_client import connect, open_redis
from live.supervisor import Supervisor


class CountingScripts:
    """Counts the Lua calls an Inventory makes, by script name."""

    def __init__(self, inv: Inventory) -> None:
        self.calls: Counter[str] = Counter()
        self._call = inv.scripts.call

        async def call(name: str, keys: list[str], args: list[Any]) -> Any:
            self.calls[name] += 1
            return await self._call(name, keys, args)

        inv.scripts.call = call  # type: ignore[method-assign]


async def invariant(inv: Inventory, sale_id: str) -> model.SaleStatus:
    status = await inv.status(sale_id)
    assert status.total == status.available + status.held + status.sold, status
    return status


async def test_reserve_gives_a_hold_and_typed_refusals(inventory: Inventory) -> None:
    await inventory.open_sale(sale_spec(stock=3, per_user_limit=2))
    held = await inventory.reserve("s1", "ann", 2, "r1")
    assert held.sale_id == "s1" and held.quantity == 2 and held.hold_id.startswith("s1.")
    assert held.expires_at_ms > time.time() * 1000
    with pytest.raises(model.LimitReached):
        await inventory.reserve("s1", "ann", 1, "r2")
    with pytest.raises(model.InsufficientStock) as short:
        await inventory.reserve("s1", "bob", 2, "r3")
    assert short.value.data == {"available": 1}
    with pytest.raises(model.Duplicate):
        await inventory.reserve("s1", "ann", 1, "r1")
    assert await inventory.reserve("s1", "ann", 2, "r1") == held  # the retry: the same answer
    await inventory.reserve("s1", "bob", 1)
    with pytest.raises(model.SoldOut):
        await inventory.reserve("s1", "cat", 1)
    with pytest.raises(model.UnknownSale):
        await inventory.reserve("nope", "cat", 1)
    status = await invariant(inventory, "s1")
    assert (status.available, status.held, status.phase) == (0, 3, "sold_out")


@pytest.mark.parametrize("quantity", [0, -1, 1.5, True, "1", 1001])
async def test_bad_quantities_change_nothing(inventory: Inventory, quantity: Any) -> None:
    await inventory.open_sale(sale_spec())
    with pytest.raises(model.InvalidQuantity):
        await inventory.reserve("s1", "ann", quantity)
    status = await invariant(inventory, "s1")
    assert status.available == 10


async def test_above_the_limit_and_outside_the_window(inventory: Inventory) -> None:
    now = int(time.time() * 1000)
    await inventory.open_sale(sale_spec("s1", per_user_limit=2))
    await inventory.open_sale(sale_spec("later", starts_at_ms=now + 60_000, ends_at_ms=now + 120_000))
    await inventory.open_sale(sale_spec("over", starts_at_ms=now - 10_000, ends_at_ms=now - 1))
    with pytest.raises(model.InvalidQuantity):
        await inventory.reserve("s1", "ann", 3)
    with pytest.raises(model.NotStarted):
        await inventory.reserve("later", "ann", 1)
    with pytest.raises(model.Ended):
        await inventory.reserve("over", "ann", 1)


async def test_concurrent_reserves_share_few_lua_calls(inventory: Inventory) -> None:
    counting = CountingScripts(inventory)
    await inventory.open_sale(sale_spec(stock=1000, per_user_limit=1))
    results = await asyncio.gather(*(inventory.reserve("s1", f"u{i}", 1, f"k{i}") for i in range(600)))
    assert len({r.hold_id for r in results}) == 600
    # 600 decisions in a handful of round trips (at most max_batch each)
    assert 2 <= counting.calls["reserve"] <= 10
    assert (await invariant(inventory, "s1")).held == 600


async def test_after_a_sell_out_requests_never_reach_redis(inventory: Inventory) -> None:
    await inventory.open_sale(sale_spec(stock=2, per_user_limit=2))
    await inventory.reserve("s1", "ann", 2)
    with pytest.raises(model.SoldOut):
        await inventory.reserve("s1", "bob", 1)
    counting = CountingScripts(inventory)
    for _ in range(100):
        with pytest.raises(model.SoldOut):
            await inventory.reserve("s1", "bob", 1)
    assert counting.calls["reserve"] == 0


async def test_after_a_sell_out_a_retry_still_gets_its_hold(inventory: Inventory) -> None:
    await inventory.open_sale(sale_spec(stock=2, per_user_limit=2))
    held = await inventory.reserve("s1", "ann", 2, "r1")
    with pytest.raises(model.SoldOut):
        await inventory.reserve("s1", "bob", 1, "b1")
    assert await inventory.reserve("s1", "ann", 2, "r1") == held  # the reply was lost: asked again
    with pytest.raises(model.Duplicate):
        await inventory.reserve("s1", "ann", 1, "r1")
    with pytest.raises(model.SoldOut):
        await inventory.reserve("s1", "bob", 1, "b2")
    # (changed with issue 11: a request with a key is decided, and its decision recorded, by the
    # script even when the flag says sold out, so "b1" stays sold_out after a restock; a new
    # attempt takes a new request id)
    await inventory.add_stock("s1", 1)
    with pytest.raises(model.SoldOut):
        await inventory.reserve("s1", "bob", 1, "b1")
    assert (await inventory.reserve("s1", "bob", 1, "b3")).quantity == 1


async def test_sold_out_flag_follows_other_processes(inventory: Inventory, inventory_url: str) -> None:
    """Another process sells out and restocks; this one's flag follows through pub/sub."""
    client = await open_redis(inventory_url)
    other = Inventory(client, InventoryConfig(key_prefix=inventory.config.key_prefix), Supervisor())
    await other.start()
    try:
        await inventory.open_sale(sale_spec(stock=1))
        await other.reserve("s1", "ann", 1)
        await _until(lambda: "s1" in inventory.sold_out)
        await other.add_stock("s1", 1)
        await _until(lambda: "s1" not in inventory.sold_out)
        await inventory.reserve("s1", "bob", 1)  # the last unit
        await _until(lambda: "s1" in inventory.sold_out and "s1" in other.sold_out)
    finally:
        await other.stop()
        await client.aclose()


async def test_confirm_with_the_amount_charged_and_a_coupon(inventory: Inventory) -> None:
    await inventory.open_sale(sale_spec(per_user_limit=3))
    await inventory.drop_coupons("s1", "b1", 10, 500)
    coupon = await inventory.claim_coupon("s1", "b1", "ann")
    held = await inventory.reserve("s1", "ann", 2, "r1")
    amount = await inventory.hold_amount(held.hold_id, "ann", coupon.id)
    assert amount == 2 * 999 - 500
    with pytest.raises(model.AmountChanged):
        await inventory.confirm(held.hold_id, "ann", coupon.id, amount + 1)
    order = await inventory.confirm(held.hold_id, "ann", coupon.id, amount)
    assert (order.amount_cents, order.discount_cents, order.coupon_id) == (amount, 500, coupon.id)
    assert await inventory.confirm(held.hold_id, "ann") == order
    with pytest.raises(model.AlreadyConfirmed):
        await inventory.cancel(held.hold_id, "ann")
    with pytest.raises(model.NotYourHold):
        await inventory.hold_amount((await inventory.reserve("s1", "bob", 1)).hold_id, "ann", None)
    assert (await invariant(inventory, "s1")).sold == 2


async def test_expired_holds_come_back_through_one_sweep(inventory: Inventory) -> None:
    await inventory.open_sale(sale_spec(stock=5, hold_ms=50))
    held = await inventory.reserve("s1", "ann", 2)
    await asyncio.sleep(0.1)
    sweeps = await asyncio.gather(*(inventory.sweep("s1") for _ in range(5)))
    expired = [e for s in sweeps for e in s.expired]
    assert expired == [model.Expired(held.hold_id, "ann", 2)]
    assert sum(s.changed for s in sweeps) == 1  # "live" announced by one sweep only
    with pytest.raises(model.HoldNotFound):
        await inventory.confirm(held.hold_id, "ann")
    assert (await invariant(inventory, "s1")).available == 5


async def test_team_completes_and_orders_every_member(inventory: Inventory) -> None:
    await inventory.open_sale(sale_spec(group_size=3, group_price_cents=600, team_ms=60_000))
    team = await inventory.open_team("s1", "ann")
    assert (team.members, team.size, team.completed) == (1, 3, False)
    await inventory.join_team("s1", team.code, "bob")
    with pytest.raises(model.InTeam):
        await inventory.cancel(team.hold_id, "ann")
    done = await inventory.join_team("s1", team.code, "cat", key="j3")
    assert done.completed and {o.user_id for o in done.orders} == {"ann", "bob", "cat"}
    assert {o.amount_cents for o in done.orders} == {600}
    assert (await inventory.team_status("s1", team.code))["state"] == "complete"
    status = await invariant(inventory, "s1")
    assert (status.sold, status.held) == (3, 0)


async def test_stop_and_add_stock(inventory: Inventory) -> None:
    await inventory.open_sale(sale_spec(stock=1))
    assert await inventory.add_stock("s1", 4) == (5, 5)
    with pytest.raises(model.InvalidQuantity):
        await inventory.add_stock("s1", 0)
    await inventory.stop_sale("s1")
    with pytest.raises(model.AlreadyEnded):
        await inventory.stop_sale("s1")
    with pytest.raises(model.Ended):
        await inventory.reserve("s1", "ann", 1)
    assert (await invariant(inventory, "s1")).phase == "ended"


async def _until(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_scripts_come_back_after_redis_forgets_them(inventory: Inventory) -> None:
    """A restarted or failed-over Redis has no scripts: the next call loads them again."""
    await inventory.open_sale(sale_spec())
    await inventory.redis.script_flush()
    held = await inventory.reserve("s1", "ann", 1, "r1")
    await inventory.redis.script_flush()
    assert (await inventory.confirm(held.hold_id, "ann")).quantity == 1


async def test_an_unknown_answer_is_an_error_not_a_hang(inventory: Inventory) -> None:
    """A script newer than this code answers with a code it does not know: the caller gets a
    typed error with that code."""
    await inventory.open_sale(sale_spec())

    async def newer(name: str, keys: list[str], args: list[Any]) -> Any:
        return [b"brand_new_code", b"", 0] * (len(args) // 3)

    inventory.scripts.call = newer  # type: ignore[method-assign]
    with pytest.raises(model.InventoryError) as refused:
        async with asyncio.timeout(5):
            await inventory.reserve("s1", "ann", 1)
    assert refused.value.code == "brand_new_code"


async def test_confirm_waits_for_replicas_and_stands_without_them(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """wait_replicas: the confirm goes out with WAIT on the same connection. This Redis has no
    replica, so WAIT times out (after wait_timeout_ms): the order stands, and it is logged."""
    client = connect(redis_url)
    config = InventoryConfig(key_prefix=f"w{time.time_ns()}", wait_replicas=1, wait_timeout_ms=50)
    inv = Inventory(client, config, Supervisor())
    try:
        await inv.open_sale(sale_spec())
        held = await inv.reserve("s1", "ann", 1)
        await inv.redis.script_flush()  # and the pipeline still loads the script it needs
        started = time.monotonic()
        order = await inv.confirm(held.hold_id, "ann")
        assert order.quantity == 1 and time.monotonic() - started >= 0.04
        assert "orders not yet on enough replicas" in caplog.text
        assert (await inv.status("s1")).sold == 1
    finally:
        await client.aclose()
