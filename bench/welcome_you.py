"""What the welcome's ``you`` costs a handshake: the app's admission (``Directory.admit``: the
room, the token, the room's sales, ``you``, the tools' part) timed in-process against a real
Redis (the server's embedded one), and its Redis round trips counted, for a guest, a signed-in
user with nothing in the room, and a buyer with a hold, an order and a coupon in each sale.

    cd bench && PYTHONPATH=..:. /work/venv/bin/python welcome_you.py [--sales 3] [--admits 2000]

(PYTHONPATH=<another tree>:. measures that tree's server: a tree from before ``you`` is the
baseline.)

A round trip is one command or one pipeline sent (its replies awaited). Each sale of the room
adds one ``mine.lua`` call to the one ``you`` pipeline, not a round trip.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from inventory.model import SaleSpec
from live.auth import Role
from live.redis_server import EmbeddedRedis, find_redis_server
from live.server import running
from live.settings import Settings
from redis.asyncio.client import Pipeline, Redis

from common import table


class RoundTrips:
    """Counts the commands and pipelines every Redis client of this process sends."""

    def __init__(self) -> None:
        self.count = 0
        command, pipeline = Redis.execute_command, Pipeline.execute

        async def counted_command(client: Redis, *args: Any, **options: Any) -> Any:
            self.count += 1
            return await command(client, *args, **options)

        async def counted_pipeline(pipe: Pipeline, raise_on_error: bool = True) -> list[Any]:
            self.count += 1
            return await pipeline(pipe, raise_on_error)

        Redis.execute_command = counted_command  # type: ignore[method-assign]
        Pipeline.execute = counted_pipeline  # type: ignore[method-assign]


async def measure(
    admit: Callable[[], Awaitable[Any]], trips: RoundTrips, n: int
) -> tuple[float, float, float]:
    """Median and p99 of one admit (ms), and its round trips (mean)."""
    for _ in range(50):  # warm: scripts loaded, connections open
        await admit()
    times = []
    before = trips.count
    for _ in range(n):
        started = time.perf_counter()
        await admit()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99) - 1], (trips.count - before) / n


async def main(args: argparse.Namespace) -> int:
    root = Path(tempfile.mkdtemp(prefix="welcome-you-"))
    redis = EmbeddedRedis(root / "redis", find_redis_server(None))
    redis.start()
    trips = RoundTrips()
    try:
        settings = Settings(
            data_dir=root / "data", redis_url=redis.url, key_prefix=f"b{uuid.uuid4().hex[:8]}", port=0
        )
        async with running(settings) as server:
            s = server.services
            await s.rooms.create("bench", host_id="host1", room_id="bench", allow_anonymous=True)
            now = int(time.time() * 1000)
            for i in range(args.sales):
                sale_id = f"s{i}"
                await s.inventory.open_sale(
                    SaleSpec(sale_id, "bench", "p1", 1000, 999, 5, now - 1000, now + 3_600_000, 600_000)
                )
                await s.inventory.activate(sale_id)
                await s.inventory.drop_coupons(sale_id, f"b{i}", 10, 100)
                paid = await s.inventory.reserve(sale_id, "buyer", 1)
                await s.inventory.confirm(paid.hold_id, "buyer")
                await s.inventory.reserve(sale_id, "buyer", 1)
                await s.inventory.claim_coupon(sale_id, f"b{i}", "buyer")
            directory = s.hub.admissions.directory
            tokens = {user: s.auth.mint(user, "bench", Role.VIEWER, 3600) for user in ("nobody", "buyer")}
            cases: list[tuple[str, str | None]] = [("guest", None), ("signed in, nothing", "nobody")]
            cases.append((f"buyer (hold + order + coupon in {args.sales} sales)", "buyer"))
            rows = []
            for name, user in cases:
                token = None if user is None else tokens[user]
                admission = await directory.admit("bench", token)
                if hasattr(admission, "you"):  # (not in a tree from before it: the baseline)
                    assert (admission.you is None) == (user is None), admission
                median, p99, per = await measure(
                    lambda t=token: directory.admit("bench", t), trips, args.admits
                )
                rows.append([name, f"{per:.1f}", f"{median:.3f}", f"{p99:.3f}"])
            you_ms = None
            if hasattr(s.inventory, "mine"):
                sale_ids = [f"s{i}" for i in range(args.sales)]
                started = time.perf_counter()
                for _ in range(args.admits):
                    await s.inventory.mine(sale_ids, "buyer")
                you_ms = (time.perf_counter() - started) * 1000 / args.admits
    finally:
        redis.stop()
    print(f"Directory.admit, room with {args.sales} live sales, {args.admits} admits each:")
    print(table(["who", "Redis round trips", "median ms", "p99 ms"], rows))
    if you_ms is not None:
        print(
            f"Inventory.mine alone (the buyer, {args.sales} mine.lua calls in one pipeline): {you_ms:.3f} ms"
        )
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sales", type=int, default=3, help="live sales in the room (default 3)")
    parser.add_argument("--admits", type=int, default=2000, help="admits timed per case (default 2000)")
    sys.exit(asyncio.run(main(parser.parse_args())))
