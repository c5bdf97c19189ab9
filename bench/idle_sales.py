"""What idle flash sales cost: ``--sales`` long sales (30 days, nobody buying) open on a real
``live serve`` with its embedded Redis, and the CPU the server and Redis spend on them.

    /work/venv/bin/python bench/idle_sales.py                         # the server of this tree
    PYTHONPATH=/work/pristine /work/venv/bin/python bench/idle_sales.py   # another tree's server

(The server runs as ``python -m live serve`` with this environment: PYTHONPATH picks the
tree.) It opens the sales over the host API (``--rooms`` rooms, a product and the same number
of sales each: at most 50 per room, the default ``max_active_sales_per_room``), waits
``--settle-s`` for the first sweeps, then measures over ``--measure-s`` (30 s by default: the
window then holds the one sweep every idle sale gets per ``sweep_idle_ms``, 30 s):

- the server's CPU (user + system seconds of the ``live serve`` process, /proc) per second:
  cores in use;
- Redis's CPU per second from its own ``INFO cpu`` (used_cpu_user + used_cpu_sys), and from
  /proc for the same process;
- Redis commands per second (``INFO stats`` total_commands_processed; this script's own two
  INFO calls are not counted) and EVALSHA calls per second (``INFO commandstats``): each sweep
  of a sale is one EVALSHA of sweep.lua.

Results: a table on stdout, and JSON to ``--json`` (default /tmp/livebench-logs/idle_sales.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from common import Children, LiveServer, default_live_python, machine_facts, run_orchestrator, table

THIRTY_DAYS_S = 30 * 86_400


def parse_args(argv: list[str]) -> argparse.Namespace:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--sales", type=int, default=1000, help="idle sales to open (default 1000)")
    parser.add_argument("--rooms", type=int, default=25, help="rooms to spread them over (default 25)")
    parser.add_argument("--settle-s", type=float, default=5.0, help="wait before measuring (default 5)")
    parser.add_argument("--measure-s", type=float, default=30.0, help="measured interval (default 30)")
    parser.add_argument("--json", type=Path, default=Path("/tmp/livebench-logs/idle_sales.json"))
    return parser.parse_args(argv)


async def redis_counters(redis: aioredis.Redis) -> dict[str, float]:
    cpu = await redis.info("cpu")
    stats = await redis.info("stats")
    commands = await redis.info("commandstats")
    evalsha = commands.get("cmdstat_evalsha", {}).get("calls", 0)
    return {
        "cpu_s": float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
        "commands": float(stats["total_commands_processed"]),
        "evalsha": float(evalsha),
    }


async def open_sales(server: LiveServer, sales: int, rooms: int) -> None:
    headers = {"Authorization": f"Bearer {server.host_token}"}
    base = f"http://127.0.0.1:{server.port}"
    async with aiohttp.ClientSession(base_url=base, headers=headers) as http:

        async def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
            async with http.post(path, json=body) as resp:
                if resp.status != 201:
                    raise RuntimeError(f"POST {path}: HTTP {resp.status} {await resp.text()}")
                reply: dict[str, Any] = await resp.json()
                return reply

        products = {}
        for r in range(rooms):
            await server.create_room(f"idle{r}")
            product = await post(f"/api/rooms/idle{r}/products", {"title": "tea", "price_cents": 500})
            products[r] = product["id"]
        sale = {"stock": 100, "per_user_limit": 1, "duration_s": THIRTY_DAYS_S}
        for first in range(0, sales, 20):  # 20 at a time
            await asyncio.gather(
                *(
                    post(f"/api/rooms/idle{i % rooms}/sales", {**sale, "product_id": products[i % rooms]})
                    for i in range(first, min(first + 20, sales))
                )
            )


async def main(args: argparse.Namespace) -> int:
    children = Children()
    server = LiveServer(children, default_live_python(), {})
    try:
        await server.start()
        started = time.monotonic()
        await open_sales(server, args.sales, args.rooms)
        print(f"opened {args.sales} sales in {time.monotonic() - started:.1f} s", file=sys.stderr)
        await asyncio.sleep(args.settle_s)
        url = (server.data_dir / "redis" / "url").read_text().strip()
        redis = aioredis.from_url(url)
        try:
            live0, proc0 = server.cpu()
            redis0, t0 = await redis_counters(redis), time.monotonic()
            await asyncio.sleep(args.measure_s)
            live1, proc1 = server.cpu()
            redis1, t1 = await redis_counters(redis), time.monotonic()
        finally:
            await redis.aclose()
        elapsed = t1 - t0
        result = {
            "sales": args.sales,
            "measure_s": round(elapsed, 2),
            "server_cores": round((live1 - live0) / elapsed, 4),
            "redis_cores_info": round((redis1["cpu_s"] - redis0["cpu_s"]) / elapsed, 4),
            "redis_cores_proc": round((proc1 - proc0) / elapsed, 4),
            # the two INFO calls of redis_counters (3 commands) are ours, not the server's
            "redis_commands_per_s": round((redis1["commands"] - redis0["commands"] - 3) / elapsed, 1),
            "evalsha_per_s": round((redis1["evalsha"] - redis0["evalsha"]) / elapsed, 1),
            "machine": machine_facts(),
        }
        problems = server.log_problems()
    finally:
        await server.stop()
        server.cleanup()
        await children.stop_all()
    rows = [
        ["live serve, CPU (cores)", f"{result['server_cores']:.3f}"],
        ["Redis, CPU (cores, INFO cpu)", f"{result['redis_cores_info']:.3f}"],
        ["Redis, CPU (cores, /proc)", f"{result['redis_cores_proc']:.3f}"],
        ["Redis commands / s", f"{result['redis_commands_per_s']:.0f}"],
        ["EVALSHA / s (sweeps and the rest)", f"{result['evalsha_per_s']:.0f}"],
    ]
    print(f"{args.sales} idle 30-day sales, over {elapsed:.1f} s:")
    print(table(["", "value"], rows))
    if problems:
        print(f"the server logged {len(problems)} warnings or errors, e.g. {problems[-1]}", file=sys.stderr)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    run_orchestrator(main(parse_args(sys.argv[1:])))
