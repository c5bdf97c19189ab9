"""The room's Q&A in Redis: ask, upvote (once per user), and the staff's answer, dismiss, pin
and unpin; the ranked open queue. Every decision is one Lua script
(interact/lua/question_*.lua), so any process may take any of them and each happens once.

A room's Q&A keys (interact/keys.py ``qna``, each with the room's hash tag): ``questions``
(hash: per question ``<id>|u`` asker, ``|t`` text, ``|at`` asked at ms, ``|s`` state open |
answered | dismissed, ``|v`` upvotes), ``queue`` (zset of the open questions: member
``<asked at ms, 15 digits>|<id>``, score ``-upvotes``, so ZRANGE ranks them by upvotes, then
the earliest asked), ``voters`` (set: ``<id>\\n<user>`` per upvote given), ``pinned`` (string:
the pinned question's id), ``top`` (string: what the last ``qna_top`` showed). They expire
``TTL_MS`` after the room's last Q&A change.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any

from gateway.keys import RoomKeys
from interact import keys
from interact.ports import RedisClient
from interact.scripts import Scripts, raise_if_refused
from interact.scripts import text as _text  # (``text`` is a question's text here)

SCRIPTS = ("question_ask", "question_upvote", "question_staff", "question_top")
#: A room's Q&A keys expire this long after its last change (a question asked, upvoted, decided).
TTL_MS = 7 * 86_400_000
#: The staff's decisions on a question.
ACTIONS = ("answer", "dismiss", "pin", "unpin")

_MESSAGES = {
    "duplicate": "this rid was used for another question",
    "rate_limited": "too many questions; wait a moment",
    "banned": "you are banned from this room",
    "muted": "you are muted in this room for now",
    "queue_full": "the room has too many open questions; wait until some are answered",
    "question_not_found": "no such question in this room",
    "question_closed": "the question was answered or dismissed",
    "own_question": "you cannot upvote your own question",
}


@dataclass(frozen=True)
class Question:
    id: str
    room_id: str
    user_id: str
    text: str
    upvotes: int
    state: str
    pinned: bool
    asked_at_ms: int

    def public(self) -> dict[str, Any]:
        """The question object of the protocol."""
        return {
            "id": self.id,
            "room_id": self.room_id,
            "user_id": self.user_id,
            "text": self.text,
            "upvotes": self.upvotes,
            "state": self.state,
            "pinned": self.pinned,
            "asked_at_ms": self.asked_at_ms,
        }


@dataclass(frozen=True)
class Decision:
    """What a staff action did: ``changed`` (False: it was so already), the question as it is
    now, and the id of the question it unpinned ("" none: itself, answered or dismissed while
    pinned, or the one pinned before)."""

    changed: bool
    question: Question
    unpinned: str


@dataclass(frozen=True)
class Top:
    """The ranked open questions (the first ``n``) and the pinned question (None: none)."""

    questions: list[Question]
    pinned: Question | None


def _refused(reply: Any) -> None:
    raise_if_refused(reply, _MESSAGES)


def _question(room_id: str, fields: list[Any]) -> Question:
    qid, user, text, at, state, upvotes, pinned = (_text(v) for v in fields)
    return Question(qid, room_id, user, text, int(upvotes), state, pinned == "1", int(at))


def question_id(room_id: str, user_id: str, rid: str | None, random_id: str) -> str:
    """A question's id: derived from the asker and the ``rid`` when there is one (so a retry
    names the same question), else ``random_id``."""
    if not rid:
        return random_id
    digest = hashlib.sha256(f"{room_id}\n{user_id}\n{rid}".encode()).digest()
    return "q_" + base64.urlsafe_b64encode(digest[:12]).decode()


class QuestionBoard:
    """The Q&A of the rooms of one process's Redis (key prefix ``prefix``)."""

    def __init__(self, redis: RedisClient, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self.scripts = Scripts(redis, SCRIPTS)

    async def load(self) -> None:
        await self.scripts.load()

    def key(self, room_id: str, name: str) -> str:
        return keys.qna(self.prefix, room_id, name)

    async def ask(
        self, room_id: str, question_id: str, user_id: str, text: str, most_open: int, limited: bool = False
    ) -> tuple[Question, bool]:
        """The question asked (and True), or the one this id asked before (and False);
        ``limited``: the asker is past their rate (a new question is refused, rate_limited)."""
        room = RoomKeys(self.prefix, room_id)
        reply = await self.scripts.call(
            "question_ask",
            [
                self.key(room_id, "questions"),
                self.key(room_id, "queue"),
                self.key(room_id, "pinned"),
                room.banned,
                room.mutes,
            ],
            [question_id, user_id, text, TTL_MS, most_open, "1" if limited else "0"],
        )
        _refused(reply)
        return _question(room_id, reply[1:]), _text(reply[0]) == "new"

    async def upvote(self, room_id: str, question_id: str, user_id: str) -> tuple[int, bool]:
        """The question's upvotes, and whether this one was counted (False: given before)."""
        reply = await self.scripts.call(
            "question_upvote",
            [self.key(room_id, "questions"), self.key(room_id, "queue"), self.key(room_id, "voters")],
            [question_id, user_id, TTL_MS],
        )
        _refused(reply)
        return int(reply[1]), _text(reply[0]) == "counted"

    async def decide(self, room_id: str, question_id: str, action: str) -> Decision:
        """A staff ``action`` (one of ACTIONS) on the question."""
        if action not in ACTIONS:
            raise ValueError(f"no such action {action!r}")
        reply = await self.scripts.call(
            "question_staff",
            [self.key(room_id, "questions"), self.key(room_id, "queue"), self.key(room_id, "pinned")],
            [action, question_id, TTL_MS],
        )
        _refused(reply)
        return Decision(_text(reply[0]) == "changed", _question(room_id, reply[2:]), _text(reply[1]))

    async def top(self, room_id: str, n: int, check: bool = False) -> Top | None:
        """The first ``n`` of the ranked open queue and the pinned question. With ``check``:
        None when those ``n`` are what the last check answered (and the answer is recorded)."""
        reply = await self.scripts.call(
            "question_top",
            [
                self.key(room_id, "questions"),
                self.key(room_id, "queue"),
                self.key(room_id, "pinned"),
                self.key(room_id, "top"),
            ],
            [n, "check" if check else "read", TTL_MS],
        )
        if _text(reply[0]) == "same":
            return None
        count = int(reply[1])
        rest = reply[2:]
        ranked = [_question(room_id, rest[i * 7 : i * 7 + 7]) for i in range(count)]
        extra = rest[count * 7 :]
        return Top(ranked, _question(room_id, extra) if extra else None)

    async def forget_top(self, room_id: str) -> None:
        """Forget what the last check answered: the next check answers the top (a send that
        failed)."""
        await self.redis.delete(self.key(room_id, "top"))
