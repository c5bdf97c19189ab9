"""After the load: did the server keep its promises?

Flash sales: the sale's final counters and its ledger (read through the HTTP API) are checked
against each other and against every order the harness was told was confirmed:

- ``oversold``: units sold past the sale's total (by the counters or by the ledger);
- ``lost_orders``: orders acknowledged to a buyer (a `confirm` ack or a `confirmed` push)
  that the ledger does not have;
- ``duplicate_orders``: ledger records beyond the first for one order id;
- ``over_limit``: buyers whose orders in the ledger add up past the per-user limit.

Chat: every observer that watched the whole storm must account for every acknowledged
comment, as delivered, or as skipped/dropped by the server's own count (``batch.skipped``,
``lagged.dropped_comments``); ``chat_unaccounted`` sums the differences.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from loadtest import tools_audit

COUNTS = ("oversold", "lost_orders", "duplicate_orders", "over_limit", "chat_unaccounted")


def audit_sale(
    sale: dict[str, Any], ledger: list[dict[str, Any]], acked: list[dict[str, Any]]
) -> dict[str, Any]:
    """One sale's findings; ``acked`` are the orders confirmed to the harness's buyers."""
    total, sold = int(sale["total"]), int(sale["sold"])
    ids = Counter(str(o["order_id"]) for o in ledger)
    unique = {str(o["order_id"]): o for o in ledger}
    ledger_units = sum(int(o["quantity"]) for o in unique.values())
    per_user: Counter[str] = Counter()
    for order in unique.values():
        per_user[str(order["user_id"])] += int(order["quantity"])
    limit = int(sale["per_user_limit"])
    acked_ids = {str(o["order_id"]) for o in acked}
    lost = sorted(acked_ids - ids.keys())
    counters_add_up = total == int(sale["available"]) + int(sale["held"]) + sold
    notes = []
    if not counters_add_up:
        notes.append(f"counters do not add up: total {total} != available + held + sold")
    if sold != ledger_units:
        notes.append(f"the sale counts {sold} units sold, the ledger {ledger_units}")
    return {
        "sale_id": sale["id"],
        "phase": sale.get("phase"),
        "total": total,
        "sold": sold,
        "available": sale.get("available"),
        "held": sale.get("held"),
        "ledger_orders": len(unique),
        "ledger_units": ledger_units,
        "acked_orders": len(acked_ids),
        "oversold": max(0, sold - total, ledger_units - total),
        "lost_orders": len(lost),
        "lost_order_ids": lost[:20],
        "duplicate_orders": sum(n - 1 for n in ids.values()),
        "over_limit": sum(1 for units in per_user.values() if units > limit),
        "counters_add_up": counters_add_up,
        "notes": notes,
    }


def audit_chat(
    acked_comments: int, observers: list[dict[str, Any]], likes_sent: int, likes_seen: int
) -> dict[str, Any]:
    missing = extra = 0
    for o in observers:
        accounted = int(o["delivered"]) + int(o["skipped"]) + int(o["dropped"])
        missing += max(0, acked_comments - accounted)
        extra += max(0, accounted - acked_comments)
    return {
        "acked_comments": acked_comments,
        "observers": len(observers),
        "delivered": sum(int(o["delivered"]) for o in observers),
        "skipped": sum(int(o["skipped"]) for o in observers),
        "dropped": sum(int(o["dropped"]) for o in observers),
        "missing": missing,
        "extra": extra,
        "likes_sent": likes_sent,
        "likes_seen": likes_seen,
    }


def verdict(
    sales: list[dict[str, Any]],
    chat: dict[str, Any] | None,
    reconcile: dict[str, Any] | None,
    tools: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The audit section of the result: the five counts (and the tools' four), ``passed``, and
    the details. ``tools``: the interaction tools' reports (loadtest.tools_audit), by kind."""
    out: dict[str, Any] = {name: sum(int(s[name]) for s in sales) for name in COUNTS[:4]}
    out["chat_unaccounted"] = (chat["missing"] + chat["extra"]) if chat else 0
    notes = [f"{s['sale_id']}: {n}" for s in sales for n in s["notes"]]
    broken_counters = any(not s["counters_add_up"] for s in sales)
    reconcile_clean = reconcile is None or reconcile.get("clean", False)
    if reconcile is not None and not reconcile_clean:
        notes.append("live reconcile found differences (see reconcile.output)")
    tool_counts = tools_audit.counts(tools or {})
    out.update(tool_counts)
    for kind, reports in sorted((tools or {}).items()):
        notes.extend(f"{kind}: {v}" for r in reports for v in r["violations"])
    out["passed"] = (
        not any(out[name] for name in COUNTS)
        and not any(tool_counts.values())
        and not broken_counters
        and reconcile_clean
    )
    out.update(sales=sales, chat=chat, reconcile=reconcile, notes=notes, tools=tools)
    return out
