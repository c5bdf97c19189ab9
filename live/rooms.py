"""Rooms and their products.

Written to SQLite first (the record), then to Redis, which every gateway node reads. At start,
``restore`` copies the record back into Redis, so a Redis that lost its data (or a fresh
external one) still knows every room. On a Redis Cluster the pipelines here are
non-transactional, so the cluster client splits them by slot (each room's hash is on its
room's slot; the index is one key).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from gateway.keys import RoomKeys
from live.redis_client import RedisClient
from live.store import ProductRow, RoomRow, Store
from storage import UniqueViolation


class RoomNotFound(LookupError):
    pass


class RoomExists(Exception):
    pass


def now_ms() -> int:
    return int(time.time() * 1000)


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(9)}"


def rooms_index_key(prefix: str) -> str:
    """Sorted set of every room id, scored by its creation time (ms). The app's alone: a
    room's own keys are the gateway's ``RoomKeys`` (gateway/keys.py)."""
    return f"{prefix}:rooms"


class Rooms:
    def __init__(self, store: Store, redis: RedisClient, key_prefix: str) -> None:
        self._store = store
        self._redis = redis
        self._prefix = key_prefix
        self._index = rooms_index_key(key_prefix)

    def _keys(self, room_id: str) -> RoomKeys:
        return RoomKeys(self._prefix, room_id)

    async def create(
        self,
        title: str,
        host_id: str,
        room_id: str | None = None,
        allow_anonymous: bool = False,
        max_per_host: int | None = None,
    ) -> RoomRow:
        """Raises RoomExists, or LimitExceeded if the host has ``max_per_host`` rooms."""
        room = RoomRow(
            id=room_id or new_id("r"),
            title=title,
            host_id=host_id,
            allow_anonymous=allow_anonymous,
            created_at_ms=now_ms(),
        )
        try:
            await self._store.insert_room(room, max_per_host)
        except UniqueViolation:
            raise RoomExists(room.id) from None
        await self._cache_rooms([room])
        return room

    async def get(self, room_id: str) -> RoomRow:
        fields = await self._redis.hgetall(self._keys(room_id).meta)
        if not fields:
            raise RoomNotFound(room_id)
        return _room_from_hash(fields)

    async def all(self) -> list[RoomRow]:
        return await self._rooms(await self._redis.zrange(self._index, 0, -1))

    async def page(self, after: str | None, limit: int) -> tuple[list[RoomRow], bool]:
        """Up to ``limit`` rooms, oldest first, after the room ``after`` (None: from the
        first), and whether more follow. The index orders rooms by (creation time, id), so a
        room id is a stable cursor. Raises RoomNotFound for an ``after`` not in the index."""
        start = 0
        if after is not None:
            rank = await self._redis.zrank(self._index, after)
            if not isinstance(rank, int):  # None: not in the index
                raise RoomNotFound(after)
            start = rank + 1
        ids: list[Any] = await self._redis.zrange(self._index, start, start + limit)  # one extra
        return await self._rooms(ids[:limit]), len(ids) > limit

    async def _rooms(self, ids: list[Any]) -> list[RoomRow]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for room_id in ids:
                pipe.hgetall(self._keys(room_id.decode()).meta)
            hashes = await pipe.execute()
        return [_room_from_hash(h) for h in hashes if h]

    async def add_product(
        self,
        room_id: str,
        title: str,
        price_cents: int,
        image_url: str | None,
        max_per_room: int | None = None,
    ) -> ProductRow:
        """Raises RoomNotFound, or LimitExceeded if the room has ``max_per_room`` products."""
        await self.get(room_id)
        product = ProductRow(
            id=new_id("p"),
            room_id=room_id,
            title=title,
            price_cents=price_cents,
            image_url=image_url,
            created_at_ms=now_ms(),
        )
        await self._store.insert_product(product, max_per_room)
        await self._cache_products([product], overwrite=True)
        return product

    async def products(self, room_id: str) -> list[ProductRow]:
        await self.get(room_id)
        raw = await self._redis.hvals(self._keys(room_id).products)
        products = [ProductRow(**json.loads(value)) for value in raw]
        return sorted(products, key=lambda p: (p.created_at_ms, p.id))

    async def restore(self) -> int:
        """Copy every room and product of the record into Redis; returns the room count."""
        rooms = await self._store.rooms()
        await self._cache_rooms(rooms)
        await self._cache_products(await self._store.products(), overwrite=False)
        return len(rooms)

    async def _cache_rooms(self, rooms: list[RoomRow]) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for room in rooms:
                pipe.hset(self._keys(room.id).meta, mapping=_room_to_hash(room))
                pipe.zadd(self._index, {room.id: room.created_at_ms})
            await pipe.execute()

    async def _cache_products(self, products: list[ProductRow], overwrite: bool) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for product in products:
                write = pipe.hset if overwrite else pipe.hsetnx
                write(self._keys(product.room_id).products, product.id, json.dumps(asdict(product)))
            await pipe.execute()


def _room_to_hash(room: RoomRow) -> dict[Any, Any]:
    return {
        "id": room.id,
        "title": room.title,
        "host_id": room.host_id,
        "allow_anonymous": int(room.allow_anonymous),
        "created_at_ms": room.created_at_ms,
    }


def _room_from_hash(fields: Mapping[Any, Any]) -> RoomRow:
    text = {k.decode(): v.decode() for k, v in fields.items()}
    return RoomRow(
        id=text["id"],
        title=text["title"],
        host_id=text["host_id"],
        allow_anonymous=text["allow_anonymous"] == "1",
        created_at_ms=int(text["created_at_ms"]),
    )
