"""Node names: every `live serve` process of a deployment has a unique one.

Nodes are peers sharing one Redis (or Cluster) and one store of record; nothing makes one of
them special. A node's name keys its presence entries, names its consumer in the ledger's
consumer groups (so a node restarted under its name picks up what it had read and not yet
written), and is in each of its log lines and metrics.

Uniqueness is enforced through Redis, not a consensus of our own: at start a node claims
``<prefix>:node:{<name>}`` (SET NX PX with a random token), a supervised loop renews the claim
every third of its TTL, and shutdown deletes it only if the token is still ours. A node that
dies frees its name when the TTL passes; a second node started with a live node's name is
refused. A node that finds its claim taken (Redis lost the key in a failover and another node
took the name, or this node stalled past the TTL) says so loudly and reports not ready.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import secrets
import socket
from importlib import resources

from redis.exceptions import RedisError

from live.errors import StartupError, UsageError
from live.redis_client import RedisClient

log = logging.getLogger(__name__)

NAME_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")
MAX_NAME = 64
#: How long a claim outlives its last renewal: a node killed without a shutdown frees its name
#: this long after, and a node stalled (event loop blocked, network cut) this long loses it.
CLAIM_TTL_MS = 5000
#: Renewals per TTL: two may fail (a Redis failover, a busy event loop) before the claim lapses.
_RENEW_FRACTION = 3


def _script(name: str) -> str:
    return resources.files("live").joinpath("lua", name).read_text()


class NodeNameTaken(StartupError):
    """Another running node holds this name."""


def default_node_name() -> str:
    """``<hostname>-<pid>``, with the host name cut to what a name may hold."""
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname().split(".")[0]) or "node"
    suffix = f"-{os.getpid()}"
    return host[: MAX_NAME - len(suffix)] + suffix


def is_valid_name(name: str) -> bool:
    return NAME_PATTERN.fullmatch(name) is not None


def worker_name(node: str, index: int) -> str:
    """The name of worker ``index`` of a node started with ``--workers N``."""
    return f"{node}-w{index}"


def worker_names(node: str, workers: int) -> list[str]:
    """The names of a node's ``workers``; a node name too long to take the suffix is refused."""
    names = [worker_name(node, i) for i in range(workers)]
    if not is_valid_name(names[-1]):
        raise UsageError(
            f"node_name {node} is too long for {workers} workers: {names[-1]} would pass "
            f"{MAX_NAME} characters"
        )
    return names


def claim_key(key_prefix: str, name: str) -> str:
    # the hash tag keeps the key in one slot of a cluster (all three scripts touch only it)
    return f"{key_prefix}:node:{{{name}}}"


class NodeClaim:
    """This process's hold on its node name in Redis."""

    def __init__(
        self,
        redis: RedisClient,
        key_prefix: str,
        name: str,
        token: str | None = None,
        ttl_ms: int = CLAIM_TTL_MS,
    ) -> None:
        # on a cluster each script runs on the master of its one key's slot
        self.redis = redis
        self.name = name
        self.key = claim_key(key_prefix, name)
        self.token = token or secrets.token_hex(16)
        self.ttl_ms = ttl_ms
        #: Set once the claim was found in another node's hands; /readyz reports it.
        self.lost = False
        self._held = False
        # loaded once, called by SHA (reloaded by redis-py on NOSCRIPT, e.g. after a failover)
        self._claim = redis.register_script(_script("node_claim.lua"))
        self._renew = redis.register_script(_script("node_renew.lua"))
        self._release = redis.register_script(_script("node_release.lua"))

    async def claim(self) -> None:
        """Take the name, or fail with one line saying who holds it and for how long."""
        answer = await self._claim(keys=[self.key], args=[self.token, self.ttl_ms])
        if int(answer[0]) != 1:
            left_ms = int(answer[1])  # -1: held without a TTL (not by a node): the TTL is moot
            wait_s = max(1, math.ceil(max(left_ms, self.ttl_ms if left_ms < 0 else 0) / 1000))
            raise NodeNameTaken(
                f"node name {self.name} is held by a running node; "
                f"pick another with --node-name or wait {wait_s} s"
            )
        self._held = True
        self.lost = False
        log.info("node name claimed", extra={"node": self.name, "ttl_ms": self.ttl_ms})

    async def renew(self) -> bool:
        """Extend the claim; False (and ``lost``) when another token holds the name."""
        held = int(await self._renew(keys=[self.key], args=[self.token, self.ttl_ms])) == 1
        if not held and not self.lost:
            log.error(
                "NODE NAME LOST: another node now holds this node's name; this node is not ready "
                "(two nodes share a name: their consumers and presence collide). Stop one of them.",
                extra={"node": self.name},
            )
        self.lost = not held
        return held

    async def keep(self) -> None:
        """The renewal loop (run it under the Supervisor): renew every third of the TTL.

        A failing renewal raises, so the supervisor restarts it and /readyz shows it down;
        losing the name does not end the loop: if the other holder goes away, the next renewal
        takes the name back and the node is ready again."""
        while True:
            await self.renew()
            await asyncio.sleep(self.ttl_ms / 1000 / _RENEW_FRACTION)

    async def release(self) -> None:
        """Give the name back, only if it is still ours (never another node's claim)."""
        if not self._held:
            return
        self._held = False
        try:
            released = int(await self._release(keys=[self.key], args=[self.token]))
        except (RedisError, OSError) as exc:  # stopping goes on: the claim lapses by its TTL
            log.warning(
                "node name not released; it lapses by itself", extra={"node": self.name, "error": repr(exc)}
            )
            return
        log.info("node name released", extra={"node": self.name, "released": bool(released)})
