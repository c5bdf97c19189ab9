"""Polls in Redis: open, vote, publish the tallies (throttled room-wide), close. Every decision is
one Lua script (interact/lua/poll_*.lua) on the shard's clock, so any process may take a vote or
close a poll and each happens once.

A poll's keys (interact/keys.py ``ToolKeys``): the hash (spec and state: ``question``,
``options`` (JSON), ``n``, ``allow_change``, ``opened_at``, ``closes_at``, ``state`` open |
closed, ``closed_at``, ``votes`` (voters), ``t0``..``t<n-1>`` (the tallies), ``seq`` (bumped by
every change of a tally), ``sent`` (the seq last published), ``announced`` (its poll_closed went
out)), ``:votes`` (hash: each voter's option). The room's tally gate (a string with a TTL, beside
the room's open tools) lets one ``poll_tally`` out per ``gate_ms`` room-wide.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from interact.keys import ToolKeys, room_tools
from interact.ports import RedisClient
from interact.scripts import Scripts, raise_if_refused, text

SCRIPTS = ("poll_open", "poll_vote", "poll_flush", "poll_close")
#: How long a closed poll's keys stay in Redis (the store keeps its record for ever).
FINISHED_TTL_MS = 7 * 86_400_000
MAX_QUESTION_CHARS = 200
MAX_OPTION_CHARS = 80
MIN_OPTIONS, MAX_OPTIONS = 2, 6

_MESSAGES = {
    "poll_not_found": "no such poll in this room",
    "poll_closed": "the poll is closed",
    "invalid_option": "no such option in this poll",
    "already_voted": "you voted already, and this poll does not allow changing a vote",
}


@dataclass(frozen=True)
class PollSpec:
    """What a host opens."""

    id: str
    room_id: str
    question: str
    options: list[str]
    allow_change: bool
    duration_ms: int


@dataclass(frozen=True)
class Poll:
    """A poll's state as Redis holds it (or as its record kept it)."""

    spec: PollSpec
    opened_at_ms: int
    closes_at_ms: int
    state: str
    tallies: list[int]
    votes: int
    closed_at_ms: int | None = None

    def public(self) -> dict[str, Any]:
        """The poll object of the protocol."""
        s = self.spec
        return {
            "id": s.id,
            "room_id": s.room_id,
            "question": s.question,
            "options": list(s.options),
            "allow_change": s.allow_change,
            "opened_at_ms": self.opened_at_ms,
            "closes_at_ms": self.closes_at_ms,
            "state": self.state,
            "tallies": list(self.tallies),
            "votes": self.votes,
            "closed_at_ms": self.closed_at_ms,
        }


@dataclass(frozen=True)
class Tally:
    """Tallies to publish (``seq``: the poll's change count they include)."""

    seq: int
    votes: int
    tallies: list[int]


@dataclass(frozen=True)
class Vote:
    """An accepted vote: ``changed`` (false: the same option again), and the tallies when this
    call took the room's gate (publish them now)."""

    option: int
    changed: bool
    tally: Tally | None


@dataclass(frozen=True)
class Close:
    """What a close did: ``closed`` (this call closed it: ``at_ms``, the final tallies),
    ``later`` (not due until ``at_ms``) or ``state`` (closed before)."""

    kind: str
    at_ms: int = 0
    tally: Tally | None = None
    state: str = ""


def _refused(reply: Any) -> None:
    raise_if_refused(reply, _MESSAGES, {"already_voted": "option"})


def gate_key(prefix: str, room_id: str) -> str:
    """String with a TTL: the room's poll tallies were published less than the gate ago."""
    return f"{room_tools(prefix, room_id)}:poll-tally-gate"


class PollBox:
    """The polls of one process's Redis (key prefix ``prefix``)."""

    def __init__(self, redis: RedisClient, prefix: str, gate_ms: int = 200) -> None:
        self.redis = redis
        self.prefix = prefix
        self.gate_ms = gate_ms
        self.scripts = Scripts(redis, SCRIPTS)

    async def load(self) -> None:
        await self.scripts.load()

    def keys(self, room_id: str, poll_id: str) -> ToolKeys:
        return ToolKeys(self.prefix, room_id, poll_id)

    async def open(
        self,
        spec: PollSpec,
        restore: Poll | None = None,
        ballots: dict[str, int] | None = None,
    ) -> tuple[int, int]:
        """Open the poll (or put it back from ``restore`` and its ``ballots``); (opened_at_ms,
        closes_at_ms)."""
        k = self.keys(spec.room_id, spec.id)
        args: list[Any] = [
            spec.id,
            spec.room_id,
            spec.question,
            json.dumps(spec.options, ensure_ascii=False),
            len(spec.options),
            int(spec.allow_change),
            spec.duration_ms,
            "",
        ]
        if restore is not None:
            args[-1] = "restore"
            args += [restore.opened_at_ms, restore.closes_at_ms, restore.state, restore.closed_at_ms or 0]
            for user, option in (ballots or {}).items():
                args += [user, option]
        reply = await self.scripts.call("poll_open", [k.tool, k.room_tools, k.part("votes")], args)
        return int(reply[1]), int(reply[2])

    async def get(self, room_id: str, poll_id: str) -> Poll | None:
        raw = await self.redis.hgetall(self.keys(room_id, poll_id).tool)
        if not raw:
            return None
        h = {text(key): text(value) for key, value in raw.items()}
        n = int(h["n"])
        spec = PollSpec(
            id=h["id"],
            room_id=h["room_id"],
            question=h["question"],
            options=json.loads(h["options"]),
            allow_change=h["allow_change"] == "1",
            duration_ms=int(h["duration_ms"]),
        )
        closed_at = int(h.get("closed_at") or 0)
        return Poll(
            spec=spec,
            opened_at_ms=int(h["opened_at"]),
            closes_at_ms=int(h["closes_at"]),
            state=h["state"],
            tallies=[int(h[f"t{i}"]) for i in range(n)],
            votes=int(h["votes"]),
            closed_at_ms=closed_at or None,
        )

    async def announced(self, room_id: str, poll_id: str) -> bool:
        """Whether the poll's close was announced (poll_closed sent, the record written)."""
        return bool(await self.redis.hexists(self.keys(room_id, poll_id).tool, "announced"))

    async def mark_announced(self, room_id: str, poll_id: str) -> None:
        await self.redis.hset(self.keys(room_id, poll_id).tool, "announced", "1")

    async def ballots(self, room_id: str, poll_id: str) -> dict[str, int]:
        """Every voter's option."""
        raw = await self.redis.hgetall(self.keys(room_id, poll_id).part("votes"))
        return {text(user): int(text(option)) for user, option in raw.items()}

    async def vote(self, room_id: str, poll_id: str, user_id: str, option: int) -> Vote:
        """Decide a vote (raises InteractError for a refusal)."""
        k = self.keys(room_id, poll_id)
        reply = await self.scripts.call(
            "poll_vote",
            [k.tool, k.part("votes"), gate_key(self.prefix, room_id)],
            [user_id, str(option), self.gate_ms],
        )
        _refused(reply)
        tally = Tally(int(reply[4]), int(reply[5]), [int(t) for t in reply[6:]]) if int(reply[3]) else None
        return Vote(option=int(reply[1]), changed=int(reply[2]) == 1, tally=tally)

    async def flush(self, room_id: str, poll_id: str) -> Tally | str:
        """The unpublished tallies if the room's gate let them out now, else "wait" (try again)
        or "done" (nothing to publish)."""
        k = self.keys(room_id, poll_id)
        reply = await self.scripts.call(
            "poll_flush", [k.tool, gate_key(self.prefix, room_id)], [self.gate_ms]
        )
        if text(reply[0]) != "publish":
            return text(reply[0])
        return Tally(int(reply[1]), int(reply[2]), [int(t) for t in reply[3:]])

    async def close(self, room_id: str, poll_id: str, now: bool = False) -> Close:
        """Close the poll if its time came (``now``: at once, early)."""
        k = self.keys(room_id, poll_id)
        reply = await self.scripts.call("poll_close", [k.tool, k.room_tools], ["now" if now else "due"])
        _refused(reply)
        kind = text(reply[0])
        if kind == "closed":
            return Close(
                kind, at_ms=int(reply[1]), tally=Tally(0, int(reply[2]), [int(t) for t in reply[3:]])
            )
        if kind == "later":
            return Close(kind, at_ms=int(reply[1]))
        return Close(kind, state=text(reply[1]))

    async def retire(self, room_id: str, poll_id: str) -> None:
        """A closed poll's keys expire after FINISHED_TTL_MS (its record stays)."""
        k = self.keys(room_id, poll_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.pexpire(k.tool, FINISHED_TTL_MS)
            pipe.pexpire(k.part("votes"), FINISHED_TTL_MS)
            await pipe.execute()


def check_spec(question: str, options: list[str]) -> str | None:
    """Why a poll's question or options are not valid (None: they are)."""
    if not 1 <= len(question) <= MAX_QUESTION_CHARS:
        return f"the question must be 1 to {MAX_QUESTION_CHARS} characters"
    if not MIN_OPTIONS <= len(options) <= MAX_OPTIONS:
        return f"a poll has {MIN_OPTIONS} to {MAX_OPTIONS} options"
    if not all(1 <= len(o) <= MAX_OPTION_CHARS for o in options):
        return f"each option must be 1 to {MAX_OPTION_CHARS} characters"
    return None
