"""The inventory on a real Valkey cluster (tests/cluster.py): detection, single-slot scripts on
every master, WAIT on the sale's shard, and what a failover does to a sale: no oversell, every
request answered, and the ledger's reconcile clean, or made clean by the repair when the promoted
replica had lost writes.

The quick tests share the session's cluster (each under a key prefix of its own); the failover
tests (``scaleout``) each form a cluster of their own.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from cluster import ValkeyCluster
from conftest import sale_spec
from polling import until
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from inventory import reconcile
from inventory.inventory import Inventory, InventoryConfig
from inventory.keys import SaleKeys
from inventory.ledger import Ledger, LedgerConfig
from inventory.model import InventoryError, Order, SaleSpec
from inventory.scripts import Scripts
from live.errors import StartupError
from live.redis_client import check_server, open_redis
from live.supervisor import Supervisor

#: A request during a failover is answered (a success, a refusal or a Redis error) within this:
#: the client's retry budget (live.redis_client.FAILOVER_BUDGET_S) and a loaded machine's slack.
ANSWER_BOUND_S = 30.0


def prefix() -> str:
    return f"c{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def cluster_inventory(valkey_cluster: ValkeyCluster) -> AsyncIterator[Inventory]:
    client = await open_redis(valkey_cluster.url)
    inv = Inventory(client, InventoryConfig(key_prefix=prefix()), Supervisor())
    await inv.start()
    yield inv
    await inv.stop()
    await client.aclose()


async def open_ledger(inv: Inventory, path: Path | None, database_url: str | None = None) -> Ledger:
    """The ledger in an SQLite file, or in the PostgreSQL ``database_url`` names."""
    config = LedgerConfig(key_prefix=inv.config.key_prefix, consumer="test")
    return await Ledger.open(inv.redis, path, config, Supervisor(), database_url=database_url)


def sales_on_every_master(cluster: ValkeyCluster, key_prefix: str, most: int = 60) -> list[str]:
    """Sale ids whose keys land on each of the masters (one per master)."""
    found: dict[int, str] = {}
    for i in range(most):
        sale_id = f"s{i}"
        found.setdefault(cluster.master_of(SaleKeys(key_prefix, sale_id).sale), sale_id)
        if len(found) == len(cluster.masters):
            return list(found.values())
    raise AssertionError(f"{most} sale ids did not cover {len(cluster.masters)} masters")


# -- detection and bad clusters ------------------------------------------------------------------


async def test_open_redis_tells_a_cluster_from_a_single_server(
    valkey_cluster: ValkeyCluster, redis_url: str
) -> None:
    cluster = await open_redis(valkey_cluster.url)
    single = await open_redis(redis_url)
    try:
        assert isinstance(cluster, RedisCluster)
        assert isinstance(single, aioredis.Redis)
        described = await check_server(cluster, valkey_cluster.url)
        assert described.startswith("valkey ") and described.endswith("(cluster of 3 masters)")
        assert "cluster" not in await check_server(single, redis_url)
    finally:
        await cluster.aclose()
        await single.aclose()


async def test_a_cluster_with_slots_unassigned_is_refused_with_the_count(
    make_valkey_cluster: Callable[..., ValkeyCluster],
) -> None:
    broken = make_valkey_cluster(masters=3, replicas=0, unassigned_masters=1)
    with pytest.raises(StartupError) as refused:
        await open_redis(broken.url)
    assert f"Redis Cluster at {broken.url} has 10923 of 16384 slots assigned" in str(refused.value)


async def test_a_key_prefix_with_a_brace_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot contain"):
        InventoryConfig(key_prefix="live{x}")


# -- the inventory on the cluster -----------------------------------------------------------------


async def test_sales_on_every_master_reserve_confirm_cancel_and_expire(
    cluster_inventory: Inventory, valkey_cluster: ValkeyCluster
) -> None:
    inv = cluster_inventory
    sales = sales_on_every_master(valkey_cluster, inv.config.key_prefix)
    assert len({valkey_cluster.master_of(SaleKeys(inv.config.key_prefix, s).sale) for s in sales}) == 3
    for sale_id in sales:
        assert await inv.open_sale(sale_spec(sale_id, stock=3, per_user_limit=2, hold_ms=300))
        await inv.activate(sale_id)
        kept = await inv.reserve(sale_id, "ann", 1, "r1")
        assert await inv.reserve(sale_id, "ann", 1, "r1") == kept  # the same request, the same answer
        order = await inv.confirm(kept.hold_id, "ann")
        assert await inv.confirm(kept.hold_id, "ann") == order
        dropped = await inv.reserve(sale_id, "bob", 2)
        assert await inv.cancel(dropped.hold_id, "bob") == 2
        with pytest.raises(InventoryError) as over:
            await inv.reserve(sale_id, "ann", 2, "r2")  # 1 bought + 2 > the limit of 2
        assert over.value.code == "limit_reached"
        await inv.reserve(sale_id, "cyd", 1, "r3")  # left to expire
    assert sorted(await inv.active_sales()) == sorted(sales)

    async def swept_out() -> bool:
        # the sweeper's path: lease the due sales (due.lua on the active set's slot), sweep
        # each on its own slot, hand them back (reschedule.lua)
        leased = await inv.due(lease_ms=5_000, most=10)
        swept = [(sale_id, token, (await inv.sweep(sale_id)).due_ms) for sale_id, token in leased]
        await inv.reschedule(swept)
        statuses = await inv.statuses(sales)
        return all(s.held == 0 and s.sold == 1 and s.available == 2 for s in statuses)

    await until(swept_out, timeout_s=20, every_s=0.1)
    for sale_id in sales:
        await inv.retire(sale_id, retention_ms=60_000)  # a MULTI on the active set's slot
    assert await inv.active_sales() == []


async def test_group_buy_and_coupons_on_the_cluster(cluster_inventory: Inventory) -> None:
    inv = cluster_inventory
    await inv.open_sale(sale_spec("team", stock=4, group_size=2, group_price_cents=500, team_ms=60_000))
    opened = await inv.open_team("team", "ann", key="t1")
    joined = await inv.join_team("team", opened.code, "bob", key="t2")
    assert joined.completed and sorted(o.user_id for o in joined.orders) == ["ann", "bob"]
    await inv.drop_coupons("team", "b1", 1, 100)
    coupon = await inv.claim_coupon("team", "b1", "cyd")
    held = await inv.reserve("team", "cyd", 1)
    order = await inv.confirm(held.hold_id, "cyd", coupon.id)
    assert order.discount_cents == 100
    assert await inv.coupons_left("team", "b1") == 0


async def test_wait_replicas_waits_on_the_sales_own_shard(
    valkey_cluster: ValkeyCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """WAIT goes with the confirm to the sale's master, on its connection: its one replica is
    counted (1 wanted: no warning); 2 wanted, the shard has 1: the order stands, with a warning."""
    client = await open_redis(valkey_cluster.url)
    try:
        for wanted, warned in ((1, False), (2, True)):
            config = InventoryConfig(key_prefix=prefix(), wait_replicas=wanted, wait_timeout_ms=100)
            inv = Inventory(client, config, Supervisor())
            for sale_id in sales_on_every_master(valkey_cluster, config.key_prefix):
                await inv.open_sale(sale_spec(sale_id))
                caplog.clear()
                with caplog.at_level(logging.WARNING, logger="inventory.inventory"):
                    held = await inv.reserve(sale_id, "ann", 1)
                    order = await inv.confirm(held.hold_id, "ann")
                assert order.quantity == 1 and (await inv.status(sale_id)).sold == 1
                assert ("orders not yet on enough replicas" in caplog.text) is warned, (wanted, caplog.text)
    finally:
        await client.aclose()


async def test_reconcile_is_clean_on_the_cluster(cluster_inventory: Inventory, tmp_path: Path) -> None:
    inv = cluster_inventory
    ledger = await open_ledger(inv, tmp_path / "ledger.sqlite")
    await ledger.start(consume=False)
    try:
        await inv.open_sale(sale_spec(stock=5, per_user_limit=5))
        for user in ("ann", "bob", "cyd"):
            await ledger.record([await inv.confirm((await inv.reserve("s1", user, 1)).hold_id, user)])
        await inv.reserve("s1", "dan", 1)  # a hold: counted as held, not sold
        report = await reconcile.check(inv, ledger, "s1", recorded_total=5)
        assert report.clean, report.text()
        assert (report.sold, report.held, report.ledger_orders) == (3, 1, 3)
    finally:
        await ledger.close()


# -- failovers -------------------------------------------------------------------------------------


async def test_scripts_and_the_availability_channel_survive_a_failover(
    fresh_valkey_cluster: ValkeyCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """After a manual failover the promoted replica has never loaded the scripts (NOSCRIPT: they
    are loaded again); after the node the availability subscriber was on is killed, it
    subscribes again elsewhere and the sold-out flags follow again."""
    cluster = fresh_valkey_cluster
    client = await open_redis(cluster.url)
    other_client = await open_redis(cluster.url)
    key_prefix = prefix()
    inv = Inventory(client, InventoryConfig(key_prefix=key_prefix), Supervisor())
    other = Inventory(other_client, InventoryConfig(key_prefix=key_prefix), Supervisor())
    await inv.start()
    await other.start()
    try:
        sale_key = SaleKeys(key_prefix, "s1").sale
        await inv.open_sale(sale_spec(stock=2, per_user_limit=1))
        held = await inv.reserve("s1", "ann", 1)
        replica = cluster.replica_of(cluster.master_of(sale_key))[0]
        shas = [Scripts(client).evalsha(name, [], [])[1] for name in ("confirm", "reserve")]
        async with aioredis.Redis(port=replica) as direct:
            assert await direct.script_exists(*shas) == [False, False]
        assert await cluster.failover_async(sale_key) == replica
        # the confirm goes by SHA beside its WAIT to the new master, which answers NOSCRIPT: the
        # scripts are loaded on every master and it is sent again (its old master, now its
        # replica, acknowledges it: no warning)
        waiting = Inventory(client, InventoryConfig(key_prefix=key_prefix, wait_replicas=1), Supervisor())
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="inventory.inventory"):
            assert (await waiting.confirm(held.hold_id, "ann")).quantity == 1
        assert "replicas" not in caplog.text, caplog.text
        async with aioredis.Redis(port=replica) as direct:
            assert await direct.script_exists(*shas) == [True, True]

        # kill the node inv listens on (when it serves the sale's slot, its replica takes over)
        assert inv.availability_node is not None
        listened = int(inv.availability_node.rsplit(":", 1)[1])
        if listened in cluster.masters:
            await asyncio.to_thread(cluster.kill_master_of, _a_key_of(cluster, listened))
        else:
            cluster.kill(listened)
            await cluster.wait_ok_async()
        # (what is announced before it subscribed again is missed: its flags start afresh)
        await until(lambda: inv.availability_node != f"127.0.0.1:{listened}", timeout_s=30)
        await other.reserve("s1", "bob", 1)  # the last unit: announced on the channel
        await until(lambda: "s1" in inv.sold_out, timeout_s=30)
    finally:
        for each in (inv, other):
            await each.stop()
            await each.redis.aclose()


def _a_key_of(cluster: ValkeyCluster, master: int) -> str:
    for i in range(1000):
        if cluster.master_of(f"k{i}") == master:
            return f"k{i}"
    raise AssertionError(f"no key of master {master} found")


Outcome = tuple[str, Any]


async def buy(inv: Inventory, ledger: Ledger, sale_id: str, user: str, delay_s: float) -> Outcome:
    """One buyer: reserve then confirm, as live.buying does it (the order into the ledger
    before the answer). The answer: confirmed, a refusal, or unavailable (a Redis error); within
    ANSWER_BOUND_S, or the test fails (a hang)."""
    await asyncio.sleep(delay_s)
    async with asyncio.timeout(ANSWER_BOUND_S):
        try:
            held = await inv.reserve(sale_id, user, 1, f"r-{user}")
            order = await inv.confirm(held.hold_id, user)
        except InventoryError as exc:
            return ("refused", exc.code)
        except RedisError as exc:
            return ("unavailable", repr(exc))
        await ledger.record([order])
        return ("confirmed", order)


async def rush_through(
    cluster: ValkeyCluster,
    tmp_path: Path,
    fault: Callable[[ValkeyCluster, str], Awaitable[Any]],
    wait_replicas: int = 0,
) -> tuple[Inventory, Ledger, list[Outcome], SaleSpec]:
    """60 buyers for 30 units of one sale, arriving over ~1.5 s, while ``fault`` strikes the
    sale's master. Returns the outcomes (the caller closes inventory and ledger)."""
    client = await open_redis(cluster.url)
    config = InventoryConfig(key_prefix=prefix(), wait_replicas=wait_replicas)
    inv = Inventory(client, config, Supervisor())
    await inv.start()
    ledger = await open_ledger(inv, tmp_path / "ledger.sqlite")
    await ledger.start(consume=False)
    spec = sale_spec(stock=30, per_user_limit=1)
    await inv.open_sale(spec)
    sale_key = SaleKeys(inv.config.key_prefix, spec.id).sale
    buyers = [buy(inv, ledger, spec.id, f"u{i}", delay_s=i * 0.025) for i in range(60)]

    before = cluster.master_of(sale_key)

    async def strike() -> None:
        await asyncio.sleep(0.4)  # (the last buyers come at 1.5 s: the fault is mid-rush)
        await fault(cluster, sale_key)

    *outcomes, _ = await asyncio.gather(*buyers, strike())
    assert cluster.master_of(sale_key) != before  # the sale's slot did move
    return inv, ledger, outcomes, spec


async def settle(inv: Inventory, ledger: Ledger, spec: SaleSpec, outcomes: list[Outcome]) -> reconcile.Report:
    """Check what the rush left: no oversell, every confirmed order in the ledger; then reconcile,
    and repair when the promoted replica lost writes. Returns the final report."""
    kinds = {kind for kind, _ in outcomes}
    assert kinds <= {"confirmed", "refused", "unavailable"}, kinds
    confirmed: list[Order] = [value for kind, value in outcomes if kind == "confirmed"]
    assert confirmed, outcomes  # the sale went on through the fault
    assert len(confirmed) <= spec.stock
    status = await inv.status(spec.id)
    assert status.sold + status.held <= spec.stock, status
    report = await reconcile.check(inv, ledger, spec.id, recorded_total=spec.stock)
    if not report.clean:
        report = await reconcile.repair(inv, ledger, spec, stopped=False)
        report = await reconcile.check(inv, ledger, spec.id, recorded_total=spec.stock)
    assert report.clean, report.text()
    in_ledger = {o.id for o in await ledger.orders(spec.id)}
    assert {o.id for o in confirmed} <= in_ledger  # nobody who heard "confirmed" lost the order
    assert report.sold + report.held <= spec.stock
    return report


@pytest.mark.scaleout
async def test_a_rush_through_a_manual_failover_oversells_nothing(
    fresh_valkey_cluster: ValkeyCluster, tmp_path: Path
) -> None:
    async def failover(cluster: ValkeyCluster, key: str) -> None:
        await cluster.failover_async(key)

    # confirms with WAIT: sent to the sale's master with the script, across the MOVED
    inv, ledger, outcomes, spec = await rush_through(
        fresh_valkey_cluster, tmp_path, failover, wait_replicas=1
    )
    try:
        # a manual failover waits for the replica to catch up: nothing is lost, nothing repaired
        report = await reconcile.check(inv, ledger, spec.id, recorded_total=spec.stock)
        assert report.clean, report.text()
        await settle(inv, ledger, spec, outcomes)
    finally:
        await ledger.close()
        await inv.stop()
        await inv.redis.aclose()


@pytest.mark.scaleout
async def test_a_rush_through_a_killed_master_oversells_nothing(
    fresh_valkey_cluster: ValkeyCluster, tmp_path: Path
) -> None:
    async def kill(cluster: ValkeyCluster, key: str) -> None:
        await cluster.kill_master_of_async(key)

    inv, ledger, outcomes, spec = await rush_through(fresh_valkey_cluster, tmp_path, kill)
    try:
        await settle(inv, ledger, spec, outcomes)
    finally:
        await ledger.close()
        await inv.stop()
        await inv.redis.aclose()


@pytest.mark.scaleout
async def test_writes_a_killed_master_never_replicated_are_detected_and_repaired(
    fresh_valkey_cluster: ValkeyCluster, tmp_path: Path, database_url: str
) -> None:
    """The replica is cut off while its master confirms orders (in the ledger) and takes holds;
    the master dies, the replica is promoted without them: the sale's counters went back.
    Reconcile says so; the repair rebuilds the sale from the ledger; a lost hold's confirm is
    refused (its buyer was never charged for it: live charges only after confirm.lua's check)."""
    cluster = fresh_valkey_cluster
    client = await open_redis(cluster.url)
    inv = Inventory(client, InventoryConfig(key_prefix=prefix()), Supervisor())
    await inv.start()
    ledger = await open_ledger(inv, None, database_url)  # the cluster against PostgreSQL
    await ledger.start(consume=False)
    try:
        spec = sale_spec(stock=10, per_user_limit=1)
        await inv.open_sale(spec)
        kept = await inv.confirm((await inv.reserve(spec.id, "ann", 1)).hold_id, "ann")
        await ledger.record([kept])
        sale_key = SaleKeys(inv.config.key_prefix, spec.id).sale
        await cluster.wait_ok_async()  # ann's order is on the replica
        master = cluster.master_of(sale_key)
        replica = cluster.replica_of(master)[0]
        cluster.pause(replica)
        try:
            # the master drops its link to the paused replica, which cannot connect again: what
            # the master acknowledges from now on never reaches it
            async with aioredis.Redis(port=master) as direct:
                await direct.client_kill_filter(_type="replica")
                assert (await direct.info("replication"))["connected_slaves"] == 0
            lost_orders = []
            for user in ("bob", "cyd", "dan"):
                order = await inv.confirm((await inv.reserve(spec.id, user, 1)).hold_id, user)
                await ledger.record([order])  # "confirmed" is said after this
                lost_orders.append(order)
            lost_hold = await inv.reserve(spec.id, "eve", 1)
            assert (await inv.status(spec.id)).sold == 4
            cluster.kill(master)
        finally:
            cluster.resume(replica)
        await cluster.wait_promoted_async(replica, sale_key)

        status = await inv.status(spec.id)
        assert (status.sold, status.held) == (1, 0)  # the counters went back
        with pytest.raises(InventoryError) as gone:
            await inv.confirm(lost_hold.hold_id, "eve")
        assert gone.value.code == "hold_not_found"
        report = await reconcile.check(inv, ledger, spec.id, recorded_total=spec.stock)
        assert not report.clean
        assert sum("in the ledger but not counted in Redis" in p for p in report.problems) == 3, report.text()

        await reconcile.repair(inv, ledger, spec, stopped=False)
        report = await reconcile.check(inv, ledger, spec.id, recorded_total=spec.stock)
        assert report.clean, report.text()
        assert (report.sold, report.available) == (4, 6)
        with pytest.raises(InventoryError) as again:  # bob's limit holds: his order was restored
            await inv.reserve(spec.id, "bob", 1)
        assert again.value.code == "limit_reached"
        assert {o.id for o in lost_orders} <= {o.id for o in await ledger.orders(spec.id)}
    finally:
        await ledger.close()
        await inv.stop()
        await inv.redis.aclose()


@pytest.mark.scaleout
async def test_a_master_lost_for_good_answers_unavailable_not_a_hang(
    make_valkey_cluster: Callable[..., ValkeyCluster],
) -> None:
    """A master with no replica dies: the client retries through its budget, then a buyer gets
    ``unavailable`` (an InventoryError for a reservation, a RedisError elsewhere), never a hang."""
    cluster = make_valkey_cluster(masters=3, replicas=0)
    client = await open_redis(cluster.url)
    inv = Inventory(client, InventoryConfig(key_prefix=prefix()), Supervisor())
    await inv.start()
    try:
        await inv.open_sale(sale_spec())
        held = await inv.reserve("s1", "ann", 1, "r1")
        cluster.kill(cluster.master_of(SaleKeys(inv.config.key_prefix, "s1").sale))
        async with asyncio.timeout(ANSWER_BOUND_S):
            with pytest.raises(InventoryError) as refused:
                await inv.reserve("s1", "bob", 1, "r2")
            assert refused.value.code == "unavailable"
            with pytest.raises(RedisError):
                await inv.confirm(held.hold_id, "ann")
            with pytest.raises(RedisError):
                await inv.status("s1")
    finally:
        await inv.stop()
        await client.aclose()
