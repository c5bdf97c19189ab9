"""The lock one process holds while it rebuilds a sale from the ledger (a repair).

It is redis-py's ``Lock``: the key holds a random token of its holder, with an expiry (so a
holder that dies frees it), and the release is a script that deletes the key only while it
still holds that token. A holder whose lock expired mid-repair, and was taken by another
process, so never releases the other's lock: ``release`` says False, and leaves it alone.
"""

from __future__ import annotations

from redis.asyncio.lock import Lock
from redis.exceptions import LockError

from inventory.ports import RedisClient


class RepairLock:
    """A non-blocking lock with an expiry; one object per attempt to take it."""

    def __init__(self, redis: RedisClient, name: str, timeout_ms: int) -> None:
        # thread_local=False: the token lives on this object, which one task uses (the
        # thread-local default would be shared by every task of the event loop's thread)
        self._lock = Lock(redis, name, timeout=timeout_ms / 1000, blocking=False, thread_local=False)

    @property
    def name(self) -> str:
        return str(self._lock.name)

    async def acquire(self) -> bool:
        """Take the lock; False when another holder has it (nothing changed then)."""
        return bool(await self._lock.acquire())

    async def release(self) -> bool:
        """Give the lock up. False when it was not this holder's: it expired (and perhaps
        another holder took it, whose lock stays as it is: redis-py's LockNotOwnedError), or
        this holder never had it or gave it up already (LockError)."""
        try:
            await self._lock.release()
        except LockError:  # LockNotOwnedError is one
            return False
        return True
