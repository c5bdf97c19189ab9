"""Redis key names of the inventory. Every key of one sale carries the hash tag ``{sale id}``,
so a sale's keys live in one Redis Cluster slot and its Lua scripts run unchanged on a cluster.
inventory/lua/lib.lua documents what each key holds."""

from __future__ import annotations


class SaleKeys:
    def __init__(self, prefix: str, sale_id: str) -> None:
        base = f"{prefix}:sale:{{{sale_id}}}"
        self.sale = base
        self.users = f"{base}:users"
        self.holds = f"{base}:holds"
        self.expiry = f"{base}:expiry"
        self.idempotency = f"{base}:idem"
        self.orders = f"{base}:orders"
        self.stream = f"{base}:stream"
        self.teams = f"{base}:teams"
        self.team_deadlines = f"{base}:team_deadlines"
        self.coupons = f"{base}:coupons"
        #: Hash: each user's holds, orders and coupons in the sale, by id (the welcome's `you`).
        self.mine = f"{base}:mine"
        #: String: the token of the process rebuilding the sale from the ledger (``RepairLock``);
        #: not one of the scripts' KEYS.
        self.repairing = f"{base}:repairing"

    def all(self) -> list[str]:
        """The KEYS every script takes, in lib.lua's order."""
        return [
            self.sale,
            self.users,
            self.holds,
            self.expiry,
            self.idempotency,
            self.orders,
            self.stream,
            self.teams,
            self.team_deadlines,
            self.coupons,
            self.mine,
        ]


def active_sales_key(prefix: str) -> str:
    """Set of sale ids whose sweeping or ledger work is not finished."""
    return f"{prefix}:sales:active"


def due_sales_key(prefix: str) -> str:
    """Sorted set of the active sales, each scored by when (Redis ms) its next sweep is due.
    Its hash tag is the active set's whole name, which puts it in the active set's Cluster
    slot: due.lua reads both."""
    return f"{{{active_sales_key(prefix)}}}:due"


def sweep_leases_key(prefix: str) -> str:
    """Hash of sale id -> the lease token of the process sweeping it now (due.lua)."""
    return f"{{{active_sales_key(prefix)}}}:leases"


def sale_id_of_key(sale_key: str) -> str:
    """The sale id in a sale's hash key (``SaleKeys.sale``: "<prefix>:sale:{<sale id>}")."""
    return sale_key[sale_key.index("{") + 1 : -1]


def availability_channel(prefix: str) -> str:
    """Pub/sub channel of "<sale id>|<units left>", published when a sale runs out or has
    units again; it keeps every process's sold-out flags right."""
    return f"{prefix}:sales:availability"


def as_text(value: bytes | str) -> str:
    """A Redis reply as text (the client returns bytes; its types allow str)."""
    return value.decode() if isinstance(value, bytes) else value
