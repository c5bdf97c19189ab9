"""The room's live auctions (being built: see issue 14)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.commands import Registry
from live.tools import ToolContext


class Auctions:
    welcome_key = "auctions"
    id_prefix = "a_"

    def __init__(self, ctx: ToolContext) -> None:
        self.ctx = ctx

    def register(self, commands: Registry[Any]) -> None:
        pass

    def add_routes(self, app: web.Application) -> None:
        pass

    async def start(self) -> None:
        pass

    async def due(self, room_id: str, tool_id: str) -> int | None:
        return None

    async def welcome(self, room_id: str, tool_ids: list[str]) -> list[dict[str, Any]]:
        return []

    async def tick(self) -> None:
        pass
