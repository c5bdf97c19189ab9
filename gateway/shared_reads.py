"""Reads that the handshakes of one room share: one Redis read answers every viewer who
asked while the previous one was out.

A reconnect storm brings thousands of viewers of one room back within a second, and each
welcome needs the same room state (its snapshot, its sales, its tools) and a few things of its
own (a ban check, what the user holds). Read one by one, that is several round trips per
viewer; shared, it is several per *batch*, however many viewers the batch serves.

The rule is natural batching, per key: a read starts as soon as it is asked for when none of
that key is out (a lone viewer waits for nothing), and whoever asks while one is out waits for
the next, which starts when it returns and answers all of them together. So every answer comes
from a read that started after its caller asked: sharing never hands anyone a state older than
their own request, which is what the welcome's "subscribe, then read" ordering relies on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
A = TypeVar("A")
R = TypeVar("R")

#: ``read(key, args)``: the answers to the callers' arguments, one each, in their order.
BatchRead = Callable[[K, list[A]], Awaitable[Sequence[R]]]


class SharedReads(Generic[K, A, R]):
    """A read shared per key by the callers who ask while the last one of that key is out."""

    def __init__(self, read: BatchRead[K, A, R]) -> None:
        self._read = read
        #: Per key, the callers waiting for the next read: their argument and their answer.
        self._waiting: dict[K, list[tuple[A, asyncio.Future[R]]]] = {}
        #: The reads under way (kept referenced: the event loop keeps only weak references).
        self._reading: dict[K, asyncio.Task[None]] = {}

    async def __call__(self, key: K, arg: A) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append((arg, future))
        if key not in self._reading:
            self._reading[key] = asyncio.create_task(self._serve(key))
        return await future

    @property
    def reads_under_way(self) -> int:
        return len(self._reading)

    async def _serve(self, key: K) -> None:
        """Read for everyone waiting on ``key`` (those who asked before this task ran are in
        it too), then again while more came in during the read."""
        try:
            while callers := self._waiting.pop(key, None):
                await self._answer(key, callers)
        finally:
            del self._reading[key]
            for _, future in self._waiting.pop(key, ()):  # (only if this task was cancelled)
                future.cancel()

    async def _answer(self, key: K, callers: list[tuple[A, asyncio.Future[R]]]) -> None:
        try:
            answers = await self._read(key, [arg for arg, _ in callers])
            if len(answers) != len(callers):
                raise RuntimeError(f"a shared read answered {len(answers)} of {len(callers)} callers")
        except asyncio.CancelledError:
            for _, future in callers:
                future.cancel()
            raise
        except Exception as exc:  # each caller gets the read's failure, as if it had read alone
            for _, future in callers:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), answer in zip(callers, answers, strict=True):
            if not future.done():  # (a caller that gave up: cancelled, timed out)
                future.set_result(answer)
