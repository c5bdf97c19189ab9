"""The services a running server is made of, built once by ``live.server``."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis
from aiohttp import web

from gateway.hub import Hub
from live.auth import Auth
from live.commerce import Commerce
from live.metrics import Metrics
from live.rooms import Rooms
from live.settings import Settings
from live.store import Store
from shared.aio import Supervisor


@dataclass
class Services:
    """What the handlers need; stored on the aiohttp app under ``SERVICES``."""

    settings: Settings
    redis: aioredis.Redis
    store: Store
    rooms: Rooms
    auth: Auth
    metrics: Metrics
    hub: Hub
    commerce: Commerce
    #: The background loops; a loop that failed and awaits its restart makes /readyz unready.
    supervisor: Supervisor


SERVICES = web.AppKey("services", Services)
