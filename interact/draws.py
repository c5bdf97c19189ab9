"""Lucky draws (福袋) in Redis: open, enter, presence, close (exclusions, the seed revealed, the
winners drawn), claim, and the claim window's end. Every decision is one Lua script
(interact/lua/draw_*.lua) on the shard's clock, so any process may enter, close or expire a
draw and each happens once; the close draws the winners in the same script
(interact/draw_verify.py recomputes them from what the draw publishes).

A draw's keys (interact/keys.py ``ToolKeys``): the hash (spec and state: ``state`` open |
closed, ``seed`` (secret until closed), ``commitment``, ``entrants``, ``closes_at``,
``claim_by``, ``claims_state`` open | expired, the result's counts), ``:order`` (entrants in
entry order), ``:ip`` (entrant -> client address), ``:first``/``:last`` (zsets: first and last
seen in the room, ms), ``:eligible`` (zset of equal scores: byte order), ``:excluded`` (user ->
rule), ``:winners`` (list, draw order), ``:won`` (winner -> place), ``:claims`` (winner ->
order JSON).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

from interact.draw_verify import commitment_of
from interact.keys import ToolKeys
from interact.ports import RedisClient
from interact.scripts import Scripts, raise_if_refused, text

SCRIPTS = ("draw_open", "draw_enter", "draw_presence", "draw_close", "draw_claim", "draw_expire")
#: How long a finished draw's keys stay in Redis (the store keeps its record for ever).
FINISHED_TTL_MS = 7 * 86_400_000
#: Users recorded present per script call at most.
PRESENCE_CHUNK = 500
_PARTS = ("order", "ip", "first", "last", "eligible", "excluded", "winners", "won", "claims")

_MESSAGES = {
    "draw_not_found": "no such draw in this room",
    "draw_closed": "the draw is closed",
    "keyword_required": "this draw is entered by commenting its keyword",
    "sign_in_required": "sign in to enter this draw",
    "draw_full": "the draw has all the entrants it takes",
    "not_a_winner": "you did not win this draw",
    "claim_expired": "the prize's claim window is over",
}


def new_seed() -> str:
    """A draw's secret seed: 32 random bytes, as hex."""
    return secrets.token_hex(32)


@dataclass(frozen=True)
class DrawSpec:
    """What a host opens (ms)."""

    id: str
    room_id: str
    prize: dict[str, Any]
    winners: int
    keyword: str | None
    signed_in: bool
    present_at_close: bool
    min_watch_ms: int
    claim_ms: int
    duration_ms: int
    seed: str

    @property
    def commitment(self) -> str:
        return commitment_of(self.seed)


@dataclass(frozen=True)
class Draw:
    """A draw's state as Redis holds it (the lists of a closed one: ``DrawBox.result``)."""

    spec: DrawSpec
    opened_at_ms: int
    closes_at_ms: int
    state: str
    entrants: int
    claim_by_ms: int | None
    claims_open: bool
    eligible: int | None
    excluded_counts: dict[str, int] | None

    def public(self) -> dict[str, Any]:
        """The draw object of the protocol, without the lists (the welcome, ``draw_opened``)."""
        s = self.spec
        out: dict[str, Any] = {
            "id": s.id,
            "room_id": s.room_id,
            "prize": s.prize,
            "winners": s.winners,
            "rules": {
                "keyword": s.keyword,
                "signed_in": s.signed_in,
                "present_at_close": s.present_at_close,
                "min_watch_s": s.min_watch_ms // 1000,
            },
            "opened_at_ms": self.opened_at_ms,
            "closes_at_ms": self.closes_at_ms,
            "state": self.state,
            "commitment": s.commitment,
            "entrants": self.entrants,
        }
        if self.state == "closed":
            out["seed"] = s.seed
            out["claim_by_ms"] = self.claim_by_ms
            out["claims_open"] = self.claims_open
        return out


@dataclass(frozen=True)
class Closed:
    """What a close did: the revealed seed, counts, and the winners in draw order."""

    seed: str
    claim_by_ms: int
    entrants: int
    eligible: int
    excluded: dict[str, int]
    winner_ids: list[str]


@dataclass(frozen=True)
class Step:
    """A close's or an expiry's outcome: ``later`` (not due: ``at_ms``), ``closed`` (``closed``),
    ``expired`` (``unclaimed``), or ``state`` (nothing to do: ``state``)."""

    kind: str
    at_ms: int = 0
    closed: Closed | None = None
    unclaimed: tuple[str, ...] = ()
    state: str = ""


def _refused(reply: Any) -> None:
    raise_if_refused(reply, _MESSAGES)


class DrawBox:
    """The lucky draws of one process's Redis (key prefix ``prefix``)."""

    def __init__(self, redis: RedisClient, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self.scripts = Scripts(redis, SCRIPTS)

    async def load(self) -> None:
        await self.scripts.load()

    def keys(self, room_id: str, draw_id: str) -> ToolKeys:
        return ToolKeys(self.prefix, room_id, draw_id)

    async def open(self, spec: DrawSpec, opened_at_ms: int | None = None) -> tuple[int, int]:
        """Open the draw (or put it back, opened at ``opened_at_ms``); (opened_at, closes_at)."""
        k = self.keys(spec.room_id, spec.id)
        reply = await self.scripts.call(
            "draw_open",
            [k.tool, k.room_tools],
            [
                spec.id,
                spec.room_id,
                json.dumps(spec.prize, ensure_ascii=False),
                spec.winners,
                spec.keyword or "",
                int(spec.signed_in),
                int(spec.present_at_close),
                spec.min_watch_ms,
                spec.claim_ms,
                spec.duration_ms,
                spec.seed,
                spec.commitment,
                "" if opened_at_ms is None else opened_at_ms,
            ],
        )
        return int(reply[1]), int(reply[2])

    async def get(self, room_id: str, draw_id: str) -> Draw | None:
        raw = await self.redis.hgetall(self.keys(room_id, draw_id).tool)
        if not raw:
            return None
        h = {text(key): text(value) for key, value in raw.items()}
        spec = DrawSpec(
            id=h["id"],
            room_id=h["room_id"],
            prize=json.loads(h["prize"]),
            winners=int(h["winners"]),
            keyword=h["keyword"] or None,
            signed_in=h["signed_in"] == "1",
            present_at_close=h["present_at_close"] == "1",
            min_watch_ms=int(h["min_watch_ms"]),
            claim_ms=int(h["claim_ms"]),
            duration_ms=int(h["duration_ms"]),
            seed=h["seed"],
        )
        closed = h["state"] == "closed"
        return Draw(
            spec=spec,
            opened_at_ms=int(h["opened_at"]),
            closes_at_ms=int(h["closes_at"]),
            state=h["state"],
            entrants=int(h["entrants"]),
            claim_by_ms=int(h["claim_by"]) if closed else None,
            claims_open=h.get("claims_state") == "open",
            eligible=int(h["eligible"]) if closed else None,
            excluded_counts=json.loads(h["excluded"]) if closed else None,
        )

    async def enter(
        self, room_id: str, draw_id: str, user_id: str, ip: str, by_comment: bool, guest: bool, most: int
    ) -> tuple[bool, int]:
        """Enter the user (raises InteractError for a refusal): (entered now, entrants)."""
        k = self.keys(room_id, draw_id)
        reply = await self.scripts.call(
            "draw_enter",
            [k.tool, k.part("order"), k.part("ip")],
            [user_id, ip, "comment" if by_comment else "command", int(guest), most],
        )
        _refused(reply)
        return text(reply[0]) == "entered", int(reply[1])

    async def record_presence(self, room_id: str, draw_id: str, users: list[str]) -> bool:
        """Record the users as in the room now; False when the draw is not open (nothing done)."""
        k = self.keys(room_id, draw_id)
        for start in range(0, len(users), PRESENCE_CHUNK):
            reply = await self.scripts.call(
                "draw_presence",
                [k.tool, k.part("first"), k.part("last")],
                users[start : start + PRESENCE_CHUNK],
            )
            if text(reply[0]) != "recorded":
                return False
        return True

    async def close(
        self,
        room_id: str,
        draw_id: str,
        banned_key: str,
        mutes_key: str,
        per_ip: int,
        grace_ms: int,
        early: bool = False,
    ) -> Step:
        """Close the draw if its time came. ``banned_key``, ``mutes_key``: the room's ban set and
        mutes (gateway/keys.py), passed in by the caller; ``early``: close it now, before its
        close time (a host's early close)."""
        k = self.keys(room_id, draw_id)
        reply = await self.scripts.call(
            "draw_close",
            [
                k.tool,
                *(
                    k.part(p)
                    for p in ("order", "ip", "first", "last", "eligible", "excluded", "winners", "won")
                ),
                banned_key,
                mutes_key,
            ],
            [per_ip, grace_ms, "early" if early else ""],
        )
        _refused(reply)
        kind = text(reply[0])
        if kind == "later":
            return Step(kind, at_ms=int(reply[1]))
        if kind == "state":
            return Step(kind, state=text(reply[1]))
        r = [text(v) for v in reply]
        counts = dict(
            zip(
                ("banned", "muted", "address_limit", "not_present", "watch_time"),
                map(int, r[5:10]),
                strict=True,
            )
        )
        return Step(
            kind,
            closed=Closed(
                seed=r[1],
                claim_by_ms=int(r[2]),
                entrants=int(r[3]),
                eligible=int(r[4]),
                excluded=counts,
                winner_ids=r[10:],
            ),
        )

    async def result(self, room_id: str, draw_id: str) -> dict[str, Any]:
        """A closed draw's lists: ``entries`` (entry order), ``eligible`` (byte order),
        ``excluded`` (user -> rule), ``winner_ids`` (draw order), ``claims`` (user -> order id)."""
        k = self.keys(room_id, draw_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.lrange(k.part("order"), 0, -1)
            pipe.zrange(k.part("eligible"), 0, -1)
            pipe.hgetall(k.part("excluded"))
            pipe.lrange(k.part("winners"), 0, -1)
            pipe.hgetall(k.part("claims"))
            entries, eligible, excluded, winners, claims = await pipe.execute()
        return {
            "entries": [text(u) for u in entries],
            "eligible": [text(u) for u in eligible],
            "excluded": {text(u): text(r) for u, r in excluded.items()},
            "winner_ids": [text(u) for u in winners],
            "claims": {text(u): json.loads(o)["id"] for u, o in claims.items()},
        }

    async def check_claim(self, room_id: str, draw_id: str, user_id: str) -> str | None:
        """None: the user may claim now; else the order JSON of their claim before."""
        reply = await self._claim(room_id, draw_id, user_id, "", "check")
        return text(reply[1]) if text(reply[0]) == "claimed" else None

    async def claim(
        self, room_id: str, draw_id: str, user_id: str, coupon_id: str | None
    ) -> tuple[str, bool]:
        """Claim the prize: the order JSON, and whether this call made it."""
        reply = await self._claim(room_id, draw_id, user_id, coupon_id or "", "claim")
        return text(reply[1]), int(reply[2]) == 1

    async def _claim(self, room_id: str, draw_id: str, user_id: str, coupon: str, mode: str) -> Any:
        k = self.keys(room_id, draw_id)
        reply = await self.scripts.call(
            "draw_claim", [k.tool, k.part("won"), k.part("claims")], [user_id, coupon, mode]
        )
        _refused(reply)
        return reply

    async def expire(self, room_id: str, draw_id: str) -> Step:
        k = self.keys(room_id, draw_id)
        reply = await self.scripts.call(
            "draw_expire", [k.tool, k.room_tools, k.part("winners"), k.part("claims")], []
        )
        _refused(reply)
        kind = text(reply[0])
        if kind == "later":
            return Step(kind, at_ms=int(reply[1]))
        if kind == "state":
            return Step(kind, state=text(reply[1]))
        return Step(kind, unclaimed=tuple(text(u) for u in reply[1:]))

    async def retire(self, room_id: str, draw_id: str) -> None:
        """A finished draw's keys expire after FINISHED_TTL_MS (its record stays)."""
        k = self.keys(room_id, draw_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in (k.tool, *(k.part(p) for p in _PARTS)):
                pipe.pexpire(key, FINISHED_TTL_MS)
            await pipe.execute()
