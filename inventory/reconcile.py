"""Reconciliation: does Redis agree with itself and with the ledger? And the repair when not.

``check`` reads one sale and lists every disagreement, in words an operator can act on:
  - the invariant: total = available + held + sold, and held/sold equal the sums of the
    holds and orders Redis has; each user's count equals their holds plus orders, within
    the limit;
  - every order Redis counts as sold is in the ledger exactly once, with the same buyer, units
    and amount, and the ledger has no order Redis does not count.
``repair`` rebuilds the sale's counters from the ledger (after Redis lost writes: a failover,
a restore from an old snapshot): it freezes the sale, moves any order still in the stream
into the ledger, adds to the ledger any order only Redis has (it was confirmed, so it is real),
then runs repair.lua, which recomputes every counter atomically and unfreezes the sale.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

from inventory.inventory import Inventory, parse_hold
from inventory.keys import SaleKeys, as_text
from inventory.ledger import Ledger
from inventory.model import Order, SaleSpec


@dataclass(frozen=True)
class Report:
    sale_id: str
    total: int
    available: int
    held: int
    sold: int
    ledger_orders: int
    ledger_units: int
    problems: list[str]

    @property
    def clean(self) -> bool:
        return not self.problems

    def text(self) -> str:
        head = (
            f"sale {self.sale_id}: total {self.total} = available {self.available} + held {self.held}"
            f" + sold {self.sold}; ledger {self.ledger_orders} orders, {self.ledger_units} units"
        )
        if self.clean:
            return head + ": clean"
        return "\n".join([head + f": {len(self.problems)} problem(s)", *(f"  - {p}" for p in self.problems)])


async def check(
    inventory: Inventory, ledger: Ledger, sale_id: str, drain: bool = True, recorded_total: int | None = None
) -> Report:
    """``recorded_total``: the sale's stock (initial + added) as the store of record has it."""
    if drain:
        await ledger.drain(sale_id)
    keys = SaleKeys(inventory.config.key_prefix, sale_id)
    async with inventory.redis.pipeline(transaction=True) as pipe:  # one consistent instant
        pipe.hgetall(keys.sale)
        pipe.hgetall(keys.holds)
        pipe.hgetall(keys.orders)
        pipe.hgetall(keys.users)
        sale_raw, holds_raw, orders_raw, users_raw = await pipe.execute()
    in_ledger = {o.id: o for o in await ledger.orders(sale_id)}
    problems: list[str] = []
    sale = {k.decode(): v.decode() for k, v in sale_raw.items()}

    def num(name: str) -> int:
        return int(sale.get(name) or 0)

    total, available, held, sold, limit = (num(n) for n in ("total", "available", "held", "sold", "limit"))
    if not sale:
        problems.append("the sale is missing from Redis (run `live reconcile --repair`)")
    if total != available + held + sold:
        problems.append(
            f"invariant broken: total {total} != {available} + {held} + {sold} = {available + held + sold}"
        )
    if recorded_total is not None and sale and recorded_total != total:
        problems.append(f"total {total} in Redis != stock {recorded_total} in the sale's record")
    if available < 0:
        problems.append(f"available is negative ({available}): oversold by {-available}")

    units: Counter[str] = Counter()
    held_sum = 0
    for record in holds_raw.values():
        qty, _, _, _, user = parse_hold(record)
        held_sum += qty
        units[user] += qty
    if held_sum != held:
        problems.append(f"held counter {held} != sum of holds {held_sum}")

    in_redis = {o.id: o for o in (Order.from_json(v) for v in orders_raw.values())}
    sold_sum = sum(o.quantity for o in in_redis.values())
    for o in in_redis.values():
        units[o.user_id] += o.quantity
    if sold_sum != sold:
        problems.append(f"sold counter {sold} != sum of orders in Redis {sold_sum}")

    counted = {k.decode(): int(v) for k, v in users_raw.items()}
    for user in sorted(set(units) | set(counted)):
        if counted.get(user, 0) != units[user]:
            problems.append(
                f"user {user!r}: counted {counted.get(user, 0)} units, holds + orders are {units[user]}"
            )
        if limit and units[user] > limit:
            problems.append(f"user {user!r} has {units[user]} units, above the limit {limit}")

    for order_id in sorted(set(in_redis) - set(in_ledger)):
        problems.append(f"order {order_id} is sold in Redis but missing from the ledger")
    for order_id in sorted(set(in_ledger) - set(in_redis)):
        o = in_ledger[order_id]
        problems.append(
            f"order {order_id} ({o.quantity} units, {o.user_id!r}) is in the ledger but not counted in Redis"
        )
    for order_id in sorted(set(in_redis) & set(in_ledger)):
        a, b = in_redis[order_id], in_ledger[order_id]
        if (a.user_id, a.quantity, a.amount_cents) != (b.user_id, b.quantity, b.amount_cents):
            problems.append(
                f"order {order_id} differs: Redis {a.user_id!r} x{a.quantity} {a.amount_cents}c,"
                f" ledger {b.user_id!r} x{b.quantity} {b.amount_cents}c"
            )
    ledger_units = sum(o.quantity for o in in_ledger.values())
    return Report(sale_id, total, available, held, sold, len(in_ledger), ledger_units, problems)


async def repair(inventory: Inventory, ledger: Ledger, spec: SaleSpec, stopped: bool) -> Report:
    """Rebuild the sale's counters from the ledger; returns the check afterwards. ``spec`` is
    the sale as the store of record has it (``stock`` = initial + added)."""
    keys = SaleKeys(inventory.config.key_prefix, spec.id)
    await inventory.redis.hset(keys.sale, "state", "frozen")
    await ledger.drain(spec.id)
    only_in_redis = [Order.from_json(v) for v in (await inventory.redis.hgetall(keys.orders)).values()]
    await ledger.record(only_in_redis)  # idempotent: those already in the ledger are skipped
    orders = await ledger.orders(spec.id)
    hold_ids = [as_text(k) for k in await inventory.redis.hkeys(keys.holds)]
    seq = max([_seq_of(i) for i in [*(o.id for o in orders), *hold_ids]], default=0)
    fields = {**spec.redis_fields(inventory.channel), "seq": seq, "state": "stopped" if stopped else ""}
    await inventory.scripts.call("repair", keys.all(), [json.dumps(fields), *(o.to_json() for o in orders)])
    return await check(inventory, ledger, spec.id, drain=False, recorded_total=spec.stock)


def _seq_of(hold_id: str) -> int:
    parts = hold_id.split(".")
    return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else 0
