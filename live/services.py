"""The services a running server is made of, built once by ``live.server``."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from gateway.hub import Hub
from inventory.inventory import Inventory
from inventory.ledger import Ledger
from live.auth import Auth
from live.buying import Buying
from live.metrics import Metrics
from live.nodes import NodeClaim
from live.redis_client import RedisClient
from live.rooms import Rooms
from live.selling import Selling
from live.settings import Settings
from live.settlement import Settlement
from live.store import Store
from live.supervisor import Supervisor
from live.sweeper import Sweeper
from live.tools import Tools


@dataclass
class Services:
    """What the handlers need; stored on the aiohttp app under ``SERVICES``."""

    settings: Settings
    redis: RedisClient
    store: Store
    rooms: Rooms
    auth: Auth
    metrics: Metrics
    hub: Hub
    inventory: Inventory
    ledger: Ledger
    #: The sales: host operations, buyer commands, payments kept or given back, the sweeper.
    selling: Selling
    buying: Buying
    settlement: Settlement
    sweeper: Sweeper
    #: The room's interaction tools: today the auctions (live/tools.py).
    tools: Tools
    #: The background loops; a loop that failed and awaits its restart makes /readyz unready.
    supervisor: Supervisor
    #: This process's claim on its node name; lost to another node, /readyz is unready.
    node: NodeClaim | None = None


SERVICES = web.AppKey("services", Services)
