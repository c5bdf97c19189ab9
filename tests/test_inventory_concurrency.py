"""The flash-sale inventory under concurrency, against the real Redis: many buyers at once,
cancels, confirms and expiries racing sweeps from several "processes", and a worker process
killed mid-sale. Whatever the interleaving: never oversold, nobody past the limit, every hold
ends exactly one way, and total = available + held + sold at every instant."""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import sale_spec

from inventory import model, reconcile
from inventory.inventory import Inventory, InventoryConfig, parse_hold
from inventory.keys import SaleKeys
from inventory.ledger import Ledger, LedgerConfig
from inventory.model import InventoryError, Reserved
from live.redis_client import connect
from live.store import Store
from live.supervisor import Supervisor

# -- helpers ----------------------------------------------------------------------------------


@pytest.fixture
def rng() -> random.Random:
    """Random but repeatable: the seed is printed (pytest shows it when the test fails)."""
    seed = int(os.environ.get("TEST_SEED", random.randrange(2**32)))
    print(f"TEST_SEED={seed}")
    return random.Random(seed)


@dataclass(frozen=True)
class Snapshot:
    """One sale at one instant (read in one MULTI): counters and what they count."""

    total: int
    available: int
    held: int
    sold: int
    holds: dict[str, tuple[str, int]]  # hold id -> (user, quantity)
    orders: dict[str, model.Order]
    users: dict[str, int]

    def check(self, limit: int) -> None:
        assert self.total == self.available + self.held + self.sold, self
        assert self.available >= 0, f"oversold: {self}"
        assert self.held == sum(q for _, q in self.holds.values()), self
        assert self.sold == sum(o.quantity for o in self.orders.values()), self
        units: Counter[str] = Counter()
        for user, quantity in self.holds.values():
            units[user] += quantity
        for order in self.orders.values():
            units[order.user_id] += order.quantity
        assert self.users == {u: n for u, n in units.items() if n}, "per-user counts disagree"
        assert max(self.users.values(), default=0) <= limit


async def snapshot(inv: Inventory, sale_id: str) -> Snapshot:
    keys = SaleKeys(inv.config.key_prefix, sale_id)
    async with inv.redis.pipeline(transaction=True) as pipe:
        pipe.hmget(keys.sale, ["total", "available", "held", "sold"])
        pipe.hgetall(keys.holds)
        pipe.hgetall(keys.orders)
        pipe.hgetall(keys.users)
        counters, holds_raw, orders_raw, users_raw = await pipe.execute()
    total, available, held, sold = (int(v) for v in counters)
    parsed = {k.decode(): parse_hold(v) for k, v in holds_raw.items()}
    return Snapshot(
        total,
        available,
        held,
        sold,
        holds={hold_id: (p[4], p[0]) for hold_id, p in parsed.items()},
        orders={k.decode(): model.Order.from_json(v) for k, v in orders_raw.items()},
        users={k.decode(): int(v) for k, v in users_raw.items()},
    )


async def counters(inv: Inventory, sale_id: str) -> tuple[int, int, int, int]:
    """total, available, held, sold in one HMGET, the invariant checked."""
    raw: Any = await inv.redis.hmget(inv.keys(sale_id)[0], ["total", "available", "held", "sold"])
    total, available, held, sold = (int(v) for v in raw)
    assert total == available + held + sold, (total, available, held, sold)
    assert available >= 0 and held >= 0 and sold >= 0, (total, available, held, sold)
    return total, available, held, sold


async def until(condition: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await condition():
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        await asyncio.sleep(0.02)


def new_key(rng: random.Random) -> str:
    """A client's request id."""
    return f"k{rng.getrandbits(64):x}"


@asynccontextmanager
async def other_process(redis_url: str, like: Inventory) -> AsyncIterator[Inventory]:
    """Another process's Inventory: its own Redis connections and sold-out flags."""
    client = connect(redis_url)
    inv = Inventory(client, InventoryConfig(key_prefix=like.config.key_prefix), Supervisor())
    await inv.start()
    try:
        yield inv
    finally:
        await inv.stop()
        await client.aclose()


async def attempt(
    inv: Inventory, sale_id: str, user: str, quantity: int, key: str
) -> Reserved | InventoryError:
    """A reservation's answer, a refusal included."""
    try:
        return await inv.reserve(sale_id, user, quantity, key)
    except InventoryError as exc:
        return exc


# -- a. exact sell-out --------------------------------------------------------------------------

STOCK, BUYERS, ATTEMPTS, LIMIT = 500, 1000, 3000, 3
#: What a buyer may hear when nothing comes back (no unit is released in this test).
OUT_OF_LUCK = (model.SoldOut, model.InsufficientStock, model.LimitReached)


async def test_exact_sell_out_under_a_rush(inventory: Inventory, rng: random.Random) -> None:
    await inventory.open_sale(sale_spec("rush", stock=STOCK, per_user_limit=LIMIT, hold_ms=60_000))
    requests = [(f"u{rng.randrange(BUYERS)}", rng.randint(1, LIMIT), new_key(rng)) for _ in range(ATTEMPTS)]
    retried = set(rng.sample(range(ATTEMPTS), ATTEMPTS // 10))  # the answer got lost: asked again
    doubled = set(rng.sample(range(ATTEMPTS), ATTEMPTS // 50))  # sent twice at once (double tap)

    async def buy(i: int) -> list[Reserved | InventoryError]:
        user, quantity, key = requests[i]
        sends = [attempt(inventory, "rush", user, quantity, key) for _ in range(2 if i in doubled else 1)]
        answers = list(await asyncio.gather(*sends))
        if i in retried:
            answers.append(await attempt(inventory, "rush", user, quantity, key))
        return answers

    order = list(range(ATTEMPTS))
    rng.shuffle(order)
    results = await asyncio.wait_for(asyncio.gather(*(buy(i) for i in order)), 30)  # none left hanging
    answers = dict(zip(order, results, strict=True))

    holds: dict[str, tuple[str, int]] = {}
    refusals: Counter[str] = Counter()
    for i, said in answers.items():
        user, quantity, _ = requests[i]
        for answer in said:
            if isinstance(answer, Reserved):
                assert (answer.sale_id, answer.quantity) == ("rush", quantity)
                assert holds.setdefault(answer.hold_id, (user, quantity)) == (user, quantity)
            else:
                assert isinstance(answer, OUT_OF_LUCK), repr(answer)
                refusals[answer.code] += 1
    assert sum(q for _, q in holds.values()) == STOCK, "not exactly the stock held"
    per_user: Counter[str] = Counter()
    for user, quantity in holds.values():
        per_user[user] += quantity
    assert max(per_user.values()) <= LIMIT
    assert refusals["sold_out"] > 0 and refusals["limit_reached"] > 0, refusals

    status = await inventory.status("rush")
    assert status.total == status.available + status.held + status.sold
    assert (status.available, status.held, status.sold, status.phase) == (0, STOCK, 0, "sold_out")
    after = await snapshot(inventory, "rush")
    after.check(LIMIT)
    assert after.holds == holds and after.users == dict(per_user)

    # the same request id, asked twice at once or again later, is the same hold (or refusal)
    for i in doubled | retried:
        said = answers[i]
        if isinstance(said[0], Reserved):
            assert all(a == said[0] for a in said), f"request {requests[i]} answered {said}"
        else:
            assert all(isinstance(a, InventoryError) for a in said), f"request {requests[i]} answered {said}"


async def test_a_retry_after_the_sell_out_gets_its_hold_back(inventory: Inventory) -> None:
    """reserve()'s promise: "the same key and quantity get the first answer again" -- also once
    the process has marked the sale sold out (the buyer's first answer was lost)."""
    await inventory.open_sale(sale_spec("last", stock=2, per_user_limit=2))
    first = await inventory.reserve("last", "ann", 2, "req-1")
    with pytest.raises(model.SoldOut):
        await inventory.reserve("last", "bob", 1, "req-2")
    assert await inventory.reserve("last", "ann", 2, "req-1") == first


# -- b. reserves, cancels, confirms, expiries and sweepers at once ------------------------------


@dataclass
class Outcomes:
    """What the buyers were told, per hold."""

    reserved: dict[str, tuple[str, int]]
    confirmed: dict[str, model.Order]
    cancelled: set[str]
    expired_at_confirm: set[str]  # confirm answered hold_expired (it gave the units back)
    gone: set[str]  # confirm/cancel answered hold_not_found: a sweep had expired it
    abandoned: set[str]  # the buyer walked away


async def test_chaos_keeps_the_invariant_and_every_hold_ends_once(
    inventory: Inventory, redis_url: str, rng: random.Random
) -> None:
    limit, hold_ms, max_run_s = 2, 200, 20.0
    spec = sale_spec("chaos", stock=100, per_user_limit=limit, hold_ms=hold_ms)
    await inventory.open_sale(spec)
    book = Outcomes({}, {}, set(), set(), set(), set())
    swept: list[model.Expired] = []
    deadline = time.monotonic() + max_run_s
    done = asyncio.Event()  # set once every unit is sold: the chaos runs until then

    async def buyer(inv: Inventory) -> None:
        while not done.is_set() and time.monotonic() < deadline:
            user = f"u{rng.randrange(150)}"
            try:
                held = await inv.reserve("chaos", user, rng.randint(1, limit), new_key(rng))
            except (model.SoldOut, model.InsufficientStock, model.LimitReached):
                await asyncio.sleep(0.005)
                continue
            book.reserved[held.hold_id] = (user, held.quantity)
            await asyncio.sleep(rng.uniform(0, 1.5 * hold_ms / 1000))  # paying, or not
            action = rng.choice(["confirm", "confirm", "cancel", "abandon"])
            try:
                if action == "confirm":
                    order = await inv.confirm(held.hold_id, user)
                    assert (order.id, order.user_id, order.quantity) == (held.hold_id, user, held.quantity)
                    book.confirmed[held.hold_id] = order
                elif action == "cancel":
                    assert await inv.cancel(held.hold_id, user) == held.quantity
                    book.cancelled.add(held.hold_id)
                else:
                    book.abandoned.add(held.hold_id)
            except model.HoldExpired:
                book.expired_at_confirm.add(held.hold_id)
            except model.HoldNotFound:
                book.gone.add(held.hold_id)

    async def sweeper(inv: Inventory) -> None:
        while not done.is_set():
            result = await inv.sweep("chaos")
            assert result.total == result.available + result.held + result.sold, result
            swept.extend(result.expired)
            await asyncio.sleep(rng.uniform(0, 0.02))

    async def watcher() -> None:
        while not done.is_set():
            total, _, _, sold = await counters(inventory, "chaos")
            if sold == total:
                done.set()
            if rng.random() < 0.1:
                (await snapshot(inventory, "chaos")).check(limit)
            await asyncio.sleep(0.002)

    # buyers in two processes; sweeps from four (each sweeping process is its own Inventory)
    async with (
        other_process(redis_url, inventory) as second,
        other_process(redis_url, inventory) as s1,
        other_process(redis_url, inventory) as s2,
        other_process(redis_url, inventory) as s3,
        asyncio.TaskGroup() as tasks,
    ):
        for side in (s1, s2, s3, inventory):
            tasks.create_task(sweeper(side))
        tasks.create_task(watcher())
        buyers = [tasks.create_task(buyer(inventory if i % 2 else second)) for i in range(30)]
        await asyncio.wait_for(asyncio.gather(*buyers), max_run_s + 10)
        assert done.is_set(), f"not sold out in {max_run_s} s"
        done.set()

    end = await snapshot(inventory, "chaos")
    end.check(limit)
    assert end.holds == {} and await inventory.redis.zcard(inventory.keys("chaos")[3]) == 0
    assert end.orders == book.confirmed
    assert end.sold == sum(o.quantity for o in book.confirmed.values()) == end.total
    assert end.available == 0

    times = Counter(e.hold_id for e in swept)
    assert [h for h, n in times.items() if n > 1] == [], "a hold was expired by two sweeps"
    for e in swept:
        assert book.reserved[e.hold_id] == (e.user_id, e.quantity)
    # every hold ended exactly one way: an order, cancelled, expired at its confirm, or by a sweep
    endings = [set(book.confirmed), book.cancelled, book.expired_at_confirm, set(times)]
    assert sum(len(e) for e in endings) == len(book.reserved), "a hold ended twice"
    assert set().union(*endings) == set(book.reserved), "a hold was lost"
    assert book.gone | book.abandoned == set(times)
    # and the run was not vacuous
    assert book.confirmed and book.cancelled and book.abandoned, book


# -- c. a worker process killed mid-sale --------------------------------------------------------

WORKER = """
import asyncio, json, random, sys

from inventory.inventory import Inventory, InventoryConfig
from inventory.model import InventoryError
from live.redis_client import connect
from live.supervisor import Supervisor


async def main(url: str, prefix: str, sale_id: str, name: str, users: int, go_key: str) -> None:
    client = connect(url)
    inv = Inventory(client, InventoryConfig(key_prefix=prefix), Supervisor())
    await inv.start()
    print("ready", flush=True)
    await client.blpop([go_key], timeout=60)
    queue = [f"{name}-u{i}" for i in range(users)]
    confirmed: list[str] = []
    rng = random.Random()

    async def buyer() -> None:
        while queue:
            user = queue.pop()
            try:
                held = await inv.reserve(sale_id, user, rng.randint(1, 2), "k-" + user)
            except InventoryError:
                await asyncio.sleep(0.005)
                continue
            await asyncio.sleep(rng.uniform(0.03, 0.12))  # paying
            try:
                confirmed.append((await inv.confirm(held.hold_id, user)).id)
            except InventoryError:
                pass

    await asyncio.gather(*(buyer() for _ in range(8)))
    print(json.dumps(confirmed), flush=True)
    await inv.stop()
    await client.aclose()


asyncio.run(main(*sys.argv[1:5], int(sys.argv[5]), sys.argv[6]))
"""


async def start_worker(redis_url: str, prefix: str, sale_id: str, name: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        WORKER,
        redis_url,
        prefix,
        sale_id,
        name,
        "200",
        f"{prefix}:go",
        stdout=asyncio.subprocess.PIPE,
    )


async def line(proc: asyncio.subprocess.Process, timeout_s: float) -> str:
    assert proc.stdout is not None
    return (await asyncio.wait_for(proc.stdout.readline(), timeout_s)).decode().strip()


async def test_a_worker_killed_mid_sale_loses_nothing(
    inventory: Inventory, redis_url: str, tmp_path: Path
) -> None:
    stock, hold_ms, prefix = 400, 2500, inventory.config.key_prefix
    await inventory.open_sale(sale_spec("kill", stock=stock, per_user_limit=2, hold_ms=hold_ms))

    async def victim_holds() -> dict[str, tuple[str, int]]:
        holds = (await snapshot(inventory, "kill")).holds
        return {h: (u, q) for h, (u, q) in holds.items() if u.startswith("w0-")}

    workers = [await start_worker(redis_url, prefix, "kill", f"w{i}") for i in range(3)]
    victim, survivors = workers[0], workers[1:]
    try:
        for proc in workers:
            assert await line(proc, 30) == "ready"
        await inventory.redis.rpush(f"{prefix}:go", *["go"] * len(workers))

        async def victim_is_paying() -> bool:
            return bool(await victim_holds())

        await until(victim_is_paying, 15, "the victim holds units")
        victim.kill()  # SIGKILL: its holds stay behind, never confirmed nor cancelled
        await victim.wait()
        confirmed_by_survivors = {o for proc in survivors for o in json.loads(await line(proc, 20))}
        for proc in survivors:
            assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        for proc in workers:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    # the sale is live and sold out: every unit is sold or held, the victim's holds included
    left_behind = await victim_holds()
    assert left_behind, "the victim died holding nothing"
    live = await snapshot(inventory, "kill")
    live.check(2)
    assert (live.available, live.sold + live.held) == (0, stock)
    assert live.holds == left_behind, "only the victim's holds are still out"
    assert confirmed_by_survivors <= set(live.orders)

    # the victim's holds expire through the sweeps, exactly once, and their units come back
    expired: list[model.Expired] = []

    async def victim_holds_expired() -> bool:
        expired.extend((await inventory.sweep("kill")).expired)
        return not (await snapshot(inventory, "kill")).holds

    await until(victim_holds_expired, hold_ms / 1000 + 10, "the victim's holds expired")
    assert sorted(e.hold_id for e in expired) == sorted(left_behind)
    released = sum(q for _, q in left_behind.values())
    assert (await counters(inventory, "kill"))[1] == released

    # more buyers take them, and the sale is sold out for good
    for i in range(released + 1):
        try:
            held = await inventory.reserve("kill", f"late{i}", 1)
        except model.SoldOut:
            break
        await inventory.confirm(held.hold_id, f"late{i}")
    end = await snapshot(inventory, "kill")
    end.check(2)
    assert (end.available, end.held, end.sold) == (0, 0, stock)

    # the ledger reads every order from the stream (the victim's confirmed ones too): it agrees
    path = tmp_path / "live.db"
    await (await Store.open(path)).close()
    ledger = await Ledger.open(
        inventory.redis, path, LedgerConfig(key_prefix=prefix, consumer="c1"), Supervisor()
    )
    try:
        report = await reconcile.check(inventory, ledger, "kill")
    finally:
        await ledger.close()
    assert report.clean, report.text()
    assert (report.ledger_orders, report.ledger_units) == (len(end.orders), stock)
