"""What the sales tell people, through the gateway's hub: room events, gauges, and a buyer's
order status. The one place the sales reach the hub, each message stamped with ``ts_ms``."""

from __future__ import annotations

import logging
from typing import Any

from redis.exceptions import RedisError

from gateway.hub import Hub
from live import events
from live.rooms import now_ms

log = logging.getLogger(__name__)


class Notices:
    def __init__(self, hub: Hub) -> None:
        self._hub = hub

    async def event(self, room_id: str, message: dict[str, Any]) -> None:
        """A room event: in the room's history (resume replays it), to every viewer."""
        await self._hub.publish_event(room_id, {**message, "ts_ms": now_ms()})

    async def gauge(self, room_id: str, name: str, message: dict[str, Any]) -> None:
        """A value that only its latest matters (stock left): the chat lane, latest only."""
        await self._hub.publish_gauge(room_id, name, {**message, "ts_ms": now_ms()})

    async def order_status(
        self, room_id: str, user_id: str, hold_id: str, status: str, **fields: Any
    ) -> None:
        """Push an order's new status to every connection of its buyer in the room. Best
        effort: the buyer's ack, or their next look at the order, tells them anyway."""
        message = events.order_status(hold_id, status, now_ms(), **fields)
        try:
            await self._hub.send_to_user(room_id, user_id, message)
        except (RedisError, OSError) as exc:
            log.warning("order status not pushed", extra={"hold": hold_id, "error": repr(exc)})
