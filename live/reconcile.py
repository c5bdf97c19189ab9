"""`live reconcile`: check (and with ``--repair`` rebuild) flash sales against the ledger.

Runs beside a live server (it then uses the server's Redis: the embedded one's URL is in
DATA/redis/url) or on its own (it then starts the embedded Redis of the data dir itself).
Exit status: 0 all clean, 3 discrepancies found (the report says which), 1/2 errors.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import AsyncIterator
from typing import TextIO

from inventory import reconcile
from inventory.inventory import Inventory
from inventory.ledger import Ledger, LedgerConfig
from live.datadir import DataDir, DataDirError
from live.errors import StartupError, UsageError
from live.redis_client import check_server, open_redis
from live.redis_server import url_file
from live.server import open_ledger, open_store, redis_for
from live.settings import Settings
from live.store import SaleRow
from live.supervisor import Supervisor

#: Exit status when a sale does not reconcile.
NOT_CLEAN = 3


@contextlib.asynccontextmanager
async def _redis_url(settings: Settings, data_dir: DataDir) -> AsyncIterator[str]:
    if settings.redis_url:
        yield settings.redis_url
        return
    try:
        data_dir.lock()
    except DataDirError:
        # a server holds the data dir: use its embedded Redis
        try:
            yield url_file(data_dir.redis_dir).read_text().strip()
        except OSError as exc:
            raise StartupError(
                f"a server runs on {data_dir.path} but its Redis URL is unknown: {exc}"
            ) from exc
        return
    try:
        async with redis_for(settings, data_dir) as url:
            yield url
    finally:
        data_dir.unlock()


async def _retired(inventory: Inventory, row: SaleRow) -> bool:
    """A sale over whose keys Redis no longer has: they expired, sale_retention_s after it
    settled (or were lost, but an ended sale's record is the ledger either way)."""
    over = row.ends_at_ms <= int(time.time() * 1000)
    return over and not await inventory.exists(row.id)


async def _retired_report(ledger: Ledger, row: SaleRow) -> tuple[str, bool]:
    sold = (await ledger.units_sold([row.id])).get(row.id, 0)
    line = f"sale {row.id}: over, no longer in Redis; ledger {sold} units of {row.stock}"
    if sold > row.stock:
        return f"{line}: 1 problem(s)\n  - the ledger sold {sold - row.stock} units past the stock", False
    return f"{line}: clean", True


async def run(settings: Settings, sale_id: str | None, repair: bool, out: TextIO = sys.stdout) -> int:
    data_dir = DataDir(settings.data_dir)
    # With a database URL the ledger is the shared PostgreSQL: any node (or none) may check it,
    # without a data dir of its own. Without one it is the data dir's SQLite file, which must be
    # there (opening would make an empty one).
    if settings.database_url is None and not data_dir.sqlite_path.exists():
        raise UsageError(f"no ledger at {data_dir.sqlite_path}: is --data-dir right?")
    async with _redis_url(settings, data_dir) as url:
        redis = await open_redis(url)
        try:
            await check_server(redis, url)
            store = await open_store(data_dir, settings.database_url)
            try:
                rows = await store.sales()
            finally:
                await store.close()
            if sale_id is not None:
                rows = [r for r in rows if r.id == sale_id]
                if not rows:
                    raise UsageError(f"no sale {sale_id!r} in the ledger")
            supervisor = Supervisor()  # (nothing is started: the check runs no loops)
            inventory = Inventory(redis, settings.inventory_config(), supervisor)
            ledger = await open_ledger(
                redis,
                data_dir.sqlite_path,
                LedgerConfig(key_prefix=settings.key_prefix, consumer="reconcile"),
                supervisor,
                settings.database_url,
            )
            await ledger.start(consume=False)
            clean = True
            try:
                for row in rows:
                    if await _retired(inventory, row):
                        # over, and its keys expired (sale_retention_s): only the ledger is left
                        line, ok = await _retired_report(ledger, row)
                        print(line, file=out)
                        clean = clean and ok
                        continue
                    if repair:
                        report = await reconcile.repair(inventory, ledger, row, row.state == "stopped")
                    else:
                        report = await reconcile.check(inventory, ledger, row.id, recorded_total=row.stock)
                    print(report.text(), file=out)
                    clean = clean and report.clean
                if inventory.changed:  # repaired: the servers' sweepers look at them at once
                    await inventory.due(lease_ms=1000, most=0)
            finally:
                await ledger.close()
        finally:
            await redis.aclose()
    if not rows:
        print("no sales in the ledger", file=out)
    return 0 if clean else NOT_CLEAN
