"""Which connections are in which room, in this process."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol


class Connection(Protocol):
    room_id: str

    async def close(self, code: int, reason: str) -> None: ...


class Hub:
    def __init__(self, on_change: Callable[[int, int], None] | None = None) -> None:
        """``on_change(connections, rooms)`` runs after every join and leave."""
        self._rooms: dict[str, set[Connection]] = {}
        self._on_change = on_change
        self._count = 0

    @property
    def connection_count(self) -> int:
        return self._count

    @property
    def room_count(self) -> int:
        return len(self._rooms)

    def online(self, room_id: str) -> int:
        return len(self._rooms.get(room_id, ()))

    def join(self, conn: Connection) -> None:
        members = self._rooms.setdefault(conn.room_id, set())
        if conn not in members:
            members.add(conn)
            self._count += 1
            self._changed()

    def leave(self, conn: Connection) -> None:
        members = self._rooms.get(conn.room_id)
        if members is None or conn not in members:
            return
        members.discard(conn)
        self._count -= 1
        if not members:
            del self._rooms[conn.room_id]
        self._changed()

    async def close_all(self, code: int, reason: str) -> None:
        """Close every connection at once (each close waits for its client's reply)."""
        conns = [c for members in self._rooms.values() for c in members]
        await asyncio.gather(*(c.close(code, reason) for c in conns), return_exceptions=True)

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self._count, len(self._rooms))
