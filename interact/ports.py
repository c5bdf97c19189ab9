"""What the interaction tools need from the process they run in."""

from __future__ import annotations

from typing import TypeAlias

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

#: One Redis, or a Redis Cluster (every script call is on one room's slot: interact/keys.py).
#: The same union as live's ``RedisClient``, declared here so interact/ never imports live/.
RedisClient: TypeAlias = aioredis.Redis | RedisCluster
