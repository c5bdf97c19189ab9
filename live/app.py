"""The aiohttp application: routes, background tasks and shutdown hooks."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

from aiohttp import web
from redis.exceptions import RedisError

from live import http_api, openapi, pages, sales_api
from live.http_server import SERVER_NAME
from live.services import SERVICES, Services

log = logging.getLogger(__name__)

_REDIS_PROBE_INTERVAL_S = 5.0


async def _probe_redis(app: web.Application) -> AsyncIterator[None]:
    """Measure the Redis round trip in the background, for /metrics."""
    services = app[SERVICES]

    async def loop() -> None:
        while True:
            started = time.perf_counter()
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
                async with asyncio.timeout(2.0):
                    await services.redis.ping()
            except (RedisError, OSError, TimeoutError) as exc:
                services.metrics.redis_up.set(0)
                log.warning("redis probe failed", extra={"error": repr(exc)})
            else:
                services.metrics.redis_rtt.observe(time.perf_counter() - started)
                services.metrics.redis_up.set(1)
            await asyncio.sleep(_REDIS_PROBE_INTERVAL_S)

    services.supervisor.start("redis-probe", loop)
    yield
    await services.supervisor.stop(["redis-probe"])


async def _server_header(request: web.Request, response: web.StreamResponse) -> None:
    # aiohttp's default names its and Python's versions: a free hint for an attacker
    response.headers["Server"] = SERVER_NAME


def build_app(services: Services) -> web.Application:
    app = web.Application(
        client_max_size=services.settings.max_body_bytes, middlewares=[http_api.error_middleware]
    )
    app[SERVICES] = services
    app.on_response_prepare.append(_server_header)
    app.router.add_get("/healthz", http_api.healthz)
    app.router.add_get("/readyz", http_api.readyz)
    app.router.add_get("/metrics", http_api.metrics)
    app.router.add_post("/api/rooms", http_api.create_room)
    app.router.add_get("/api/rooms", http_api.list_rooms)
    app.router.add_get("/api/rooms/{room_id}", http_api.get_room)
    app.router.add_post("/api/rooms/{room_id}/products", http_api.add_product)
    app.router.add_get("/api/rooms/{room_id}/products", http_api.list_products)
    sales_api.add_routes(app)
    for tool in services.tools:
        tool.add_routes(app)
    openapi.add_routes(app)
    pages.add_routes(app)
    app.router.add_get("/ws/{tail:.*}", http_api.websocket_on_reused_connection)
    app.cleanup_ctx.append(_probe_redis)
    return app
