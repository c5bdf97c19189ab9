"""The room's interaction tools, wired: live auctions, lucky draws, polls and Q&A
(live/auctions.py, draws.py, polls.py, questions.py).

Each is a ``Tool``: it registers its WebSocket commands and HTTP routes, adds its part to a new
viewer's welcome, does what is due (a close, an offer that expired) and its coalesced fan-out
each tick. ``Tools`` runs the one supervised loop (``tools-sweeper``) every process runs: it
takes the due tools from the due set, each leased to one process (interact/lua/due.lua), and
calls their tool; each tool's scripts decide a close once, whichever process asks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web
from redis.exceptions import RedisError

from gateway.commands import Registry
from gateway.hub import Hub
from gateway.messages import ProtocolError
from interact import keys
from interact.errors import InteractError
from interact.ports import RedisClient
from interact.scripts import Scripts
from inventory.inventory import Inventory
from inventory.ledger import Ledger
from live.metrics import Metrics
from live.notices import Notices
from live.rooms import Rooms
from live.settlement import Settlement
from live.store import Store
from live.supervisor import Supervisor

log = logging.getLogger(__name__)

TOOLS_TASK = "tools-sweeper"
#: A due tool is leased to the process that took it for this long (far longer than a step takes).
_LEASE_MS = 5000
#: Due tools one process takes per tick at most.
_DUE_PER_TICK = 200
#: A step that failed (Redis down, a bug) is tried again after this long.
_RETRY_MS = 1000


@dataclass(frozen=True)
class ToolsConfig:
    """The tools' limits; each is a setting (README's configuration table)."""

    #: How often the tools' loop runs: due steps, and each tool's coalesced fan-out.
    tick_ms: int = 100
    #: Open tools of one kind (auctions, say) per room at most.
    max_open_per_room: int = 10
    #: Bids per user: burst and rate (per process); past it, rate_limited.
    bid_burst: int = 5
    bid_rate_per_s: float = 2.0
    #: Q&A: a question's characters at most; questions per user (per process): burst and rate;
    #: the open questions a room holds at most (0: no limit); how many ``qna_top`` shows.
    question_max_chars: int = 200
    question_burst: int = 3
    question_rate_per_s: float = 0.2
    question_max_open: int = 1000
    qna_top_n: int = 10
    #: Entrants of one lucky draw at most (0: no limit); past it, draw_full.
    draw_max_entries: int = 100_000
    #: Entrants of one draw from one client address counted at its close (0: no limit); the
    #: later ones are excluded as address_limit.
    draw_max_entries_per_ip: int = 3
    #: Polls: at most one poll_tally per this many ms per room (all processes together).
    poll_tally_ms: int = 200


@dataclass(frozen=True)
class ToolContext:
    """What every tool is built with (one per process, made by live.server)."""

    config: ToolsConfig
    key_prefix: str
    redis: RedisClient
    store: Store
    rooms: Rooms
    hub: Hub
    notices: Notices
    inventory: Inventory
    ledger: Ledger
    settlement: Settlement
    metrics: Metrics
    supervisor: Supervisor
    tools: Tools


class Tool(Protocol):
    #: The key of this tool's list in a welcome's ``room`` ("draws", "auctions", ...).
    welcome_key: str
    #: The prefix of this tool's ids ("d_", "a_", "p_"); "" for one with no due steps (Q&A).
    id_prefix: str

    def register(self, commands: Registry[Any]) -> None:
        """Register the tool's WebSocket commands."""

    def add_routes(self, app: web.Application) -> None:
        """Add the tool's HTTP routes."""

    async def start(self) -> None:
        """Load the tool's scripts (Redis answers already)."""

    async def due(self, room_id: str, tool_id: str) -> int | None:
        """Do the tool's due step (close it, expire an offer); the next due time (ms, the
        shard's clock), or None when the tool needs no more steps."""

    async def welcome(self, room_id: str, tool_ids: list[str]) -> list[dict[str, Any]]:
        """The state of the room's tools of this kind (``tool_ids``: the room's open ones of
        this kind) as a new or reconnecting viewer's welcome shows them."""

    async def tick(self) -> None:
        """The tool's coalesced fan-out (entry counts, bids, tallies), every tick."""


def refusal(exc: InteractError, rid: str | None = None) -> ProtocolError:
    """A tool's refusal as the WebSocket ``error`` frame answers it."""
    return ProtocolError(exc.code, exc.message, rid, data=exc.data)


class Tools:
    """The tools of this process: the due set, the loop, the welcome."""

    def __init__(
        self, config: ToolsConfig, redis: RedisClient, key_prefix: str, supervisor: Supervisor
    ) -> None:
        self.config = config
        self.redis = redis
        self.key_prefix = key_prefix
        self.supervisor = supervisor
        self._tools: list[Tool] = []
        self._scripts = Scripts(redis, ("due",))
        self._due_key = keys.due(key_prefix)

    def add(self, tool: Tool) -> None:
        self._tools.append(tool)

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools)

    async def start(self) -> None:
        await self._scripts.load()
        for tool in self._tools:
            await tool.start()
        self.supervisor.start(TOOLS_TASK, self._loop)

    async def stop(self) -> None:
        await self.supervisor.stop([TOOLS_TASK])

    async def schedule(self, room_id: str, tool_id: str, due_ms: int) -> None:
        """Make the tool's next step due at ``due_ms`` (ms since the epoch)."""
        await self.redis.zadd(self._due_key, {f"{room_id}/{tool_id}": due_ms})

    async def welcome(self, room_id: str) -> dict[str, list[dict[str, Any]]]:
        """Each tool's part of a welcome's ``room``."""
        ids = sorted(await self.redis.smembers(keys.room_tools(self.key_prefix, room_id)))
        texts = [i.decode() if isinstance(i, bytes) else str(i) for i in ids]
        parts: dict[str, list[dict[str, Any]]] = {}
        for tool in self._tools:
            mine = [i for i in texts if tool.id_prefix and i.startswith(tool.id_prefix)]
            parts[tool.welcome_key] = await tool.welcome(room_id, mine)
        return parts

    async def _loop(self) -> None:
        period = self.config.tick_ms / 1000
        while True:
            started = time.monotonic()
            await self._round()
            await asyncio.sleep(max(0.0, started + period - time.monotonic()))

    async def _round(self) -> None:
        try:
            taken = await self._scripts.call("due", [self._due_key], [_LEASE_MS, _DUE_PER_TICK])
        except (RedisError, OSError) as exc:
            log.warning("due tools not read", extra={"error": repr(exc)})
            taken = [0]
        now = int(taken[0])
        for member in taken[1:]:
            await self._step(now, member.decode() if isinstance(member, bytes) else str(member))
        for tool in self._tools:
            try:
                await tool.tick()
            except (RedisError, OSError) as exc:
                log.warning("a tool's tick failed", extra={"tool": tool.welcome_key, "error": repr(exc)})

    async def _step(self, now: int, member: str) -> None:
        room_id, _, tool_id = member.partition("/")
        tool = next((t for t in self._tools if t.id_prefix and tool_id.startswith(t.id_prefix)), None)
        try:
            if tool is None:
                log.error("a due tool of no known kind; dropped", extra={"tool": member})
                await self.redis.zrem(self._due_key, member)
                return
            next_due = await tool.due(room_id, tool_id)
            if next_due is None:
                await self.redis.zrem(self._due_key, member)
            else:
                await self.redis.zadd(self._due_key, {member: next_due})
        except (RedisError, OSError) as exc:  # the lease runs out and it is taken again
            log.warning("a due tool's step failed", extra={"tool": member, "error": repr(exc)})
        except Exception:  # a bug in one tool's step: that tool's, not the loop's
            log.exception("a due tool's step failed", extra={"tool": member})
            try:
                await self.redis.zadd(self._due_key, {member: now + _RETRY_MS})
            except (RedisError, OSError) as exc:  # its lease runs out: taken again then
                log.warning("a due tool not rescheduled", extra={"tool": member, "error": repr(exc)})
