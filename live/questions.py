"""The room's Q&A, wired: viewers ``ask`` and ``upvote``; hosts and moderators answer, pin,
unpin and dismiss questions (over WebSocket and HTTP) and read the ranked open queue.

Every decision is a script of interact/questions.py; this module checks a question's text
(its length, the room's banned words: the chat's list) and the asker's rate, and tells people.
A question is not chat: it is never sampled away nor held back by the comment fan-out budget;
its ack means it is in the queue. Viewers see the top ``qna_top_n`` open questions as the
``qna_top`` gauge (chat lane, latest only): at each tick, for each room where this process
changed the Q&A, sent only when the top changed (decided in Redis, so one change is sent once
whichever process made it). Pins and answers are priority events. Q&A has no due steps (id
prefix ""): the welcome's ``room.questions`` reads its own keys. docs/questions.md.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from aiohttp import web
from redis.exceptions import RedisError

from gateway.commands import STAFF, Caller, Registry
from gateway.limits import TokenBucket
from gateway.messages import Command, Field
from interact.errors import InteractError
from interact.questions import ACTIONS, QuestionBoard, Top, question_id
from live.events import event_type
from live.http_api import query_int, reply, staff
from live.rooms import new_id
from live.tools import ToolContext, refusal

log = logging.getLogger(__name__)

#: Rate-limit buckets kept at most (users).
_BUCKETS_KEPT = 100_000
#: Open questions the HTTP queue lists at most.
MAX_LISTED = 1000
_GAUGE = "qna_top"
_ID = re.compile(r"q_[A-Za-z0-9_-]{1,40}")

QNA_TOP = event_type("qna_top")
QUESTION_PINNED, QUESTION_UNPINNED = event_type("question_pinned"), event_type("question_unpinned")
QUESTION_ANSWERED = event_type("question_answered")

#: Viewers' commands and their fields (signed-in users; ``ask`` may carry a rid: a retry with
#: it answers the same question).
COMMANDS: dict[str, dict[str, Field]] = {
    "ask": {"text": Field(str)},
    "upvote": {"question_id": Field(str)},
}
#: Hosts' and moderators' commands, each the staff action of ``interact.questions.ACTIONS``.
STAFF_COMMANDS: dict[str, dict[str, Field]] = {
    f"{action}_question": {"question_id": Field(str)} for action in ACTIONS
}


def qna_top(top: Top) -> dict[str, Any]:
    return {"type": QNA_TOP, "questions": [q.public() for q in top.questions]}


def question_pinned(question: dict[str, Any], by: str) -> dict[str, Any]:
    return {"type": QUESTION_PINNED, "question": question, "by": by}


def question_unpinned(question_id: str, by: str) -> dict[str, Any]:
    return {"type": QUESTION_UNPINNED, "question_id": question_id, "by": by}


def question_answered(question: dict[str, Any], by: str) -> dict[str, Any]:
    return {"type": QUESTION_ANSWERED, "question": question, "by": by}


def _known(qid: str) -> None:
    if not _ID.fullmatch(qid):
        raise InteractError("question_not_found", "no such question in this room")


class Questions:
    welcome_key = "questions"
    id_prefix = ""  # no due steps

    def __init__(self, ctx: ToolContext) -> None:
        self.ctx = ctx
        self.board = QuestionBoard(ctx.redis, ctx.key_prefix)
        self._buckets: dict[str, TokenBucket] = {}
        #: rooms whose Q&A this process changed since the last tick
        self._dirty: set[str] = set()

    # -- the Tool protocol ----------------------------------------------------------------------

    def register(self, commands: Registry[Any]) -> None:
        commands.register("ask", self._ask_command, COMMANDS["ask"])
        commands.register("upvote", self._upvote_command, COMMANDS["upvote"])
        for action in ACTIONS:
            name = f"{action}_question"
            commands.register(name, self._staff_command(action), STAFF_COMMANDS[name], roles=STAFF)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/api/rooms/{room_id}/questions", self._list_route)
        for action in ACTIONS:
            app.router.add_post(
                f"/api/rooms/{{room_id}}/questions/{{question_id}}/{action}", self._action_route(action)
            )

    async def start(self) -> None:
        await self.board.load()

    async def due(self, room_id: str, tool_id: str) -> int | None:
        return None  # never scheduled

    async def welcome(self, room_id: str, tool_ids: list[str]) -> list[dict[str, Any]]:
        """The top ``qna_top_n`` open questions, ranked, then the pinned one if it is not among
        them (each question says whether it is pinned)."""
        top = await self.board.top(room_id, self.ctx.config.qna_top_n)
        assert top is not None
        shown = [q.public() for q in top.questions]
        if top.pinned is not None and all(q.id != top.pinned.id for q in top.questions):
            shown.append(top.pinned.public())
        return shown

    async def tick(self) -> None:
        dirty, self._dirty = self._dirty, set()
        for room_id in dirty:
            try:
                top = await self.board.top(room_id, self.ctx.config.qna_top_n, check=True)
                if top is not None:
                    await self.ctx.notices.gauge(room_id, _GAUGE, qna_top(top))
            except (RedisError, OSError) as exc:  # the next tick tries again
                log.warning("qna_top not sent", extra={"room": room_id, "error": repr(exc)})
                self._dirty.add(room_id)
                with contextlib.suppress(RedisError, OSError):
                    await self.board.forget_top(room_id)

    # -- commands -------------------------------------------------------------------------------

    async def _ask_command(self, caller: Caller, command: Command) -> dict[str, Any]:
        try:
            self._signed_in(caller)
            text = self._checked_text(command.fields["text"])
            took = self._take(caller.user_id)
            qid = question_id(caller.room_id, caller.user_id, command.rid, new_id("q"))
            new = False
            try:
                question, new = await self.board.ask(
                    caller.room_id, qid, caller.user_id, text, self.ctx.config.question_max_open, not took
                )
            finally:  # only a question asked costs one of the rate (not a retry, nor a refusal)
                if took and not new:
                    self._give_back(caller.user_id)
        except InteractError as exc:
            raise refusal(exc, command.rid) from None
        self._dirty.add(caller.room_id)
        return {"question": question.public()}

    async def _upvote_command(self, caller: Caller, command: Command) -> dict[str, Any]:
        qid = command.fields["question_id"]
        try:
            self._signed_in(caller)
            _known(qid)
            upvotes, counted = await self.board.upvote(caller.room_id, qid, caller.user_id)
        except InteractError as exc:
            raise refusal(exc, command.rid) from None
        if counted:
            self._dirty.add(caller.room_id)
        return {"question_id": qid, "upvotes": upvotes}

    def _staff_command(self, action: str) -> Callable[[Caller, Command], Coroutine[Any, Any, dict[str, Any]]]:
        async def handler(caller: Caller, command: Command) -> dict[str, Any]:
            try:
                return await self._decide(
                    caller.room_id, command.fields["question_id"], action, caller.user_id
                )
            except InteractError as exc:
                raise refusal(exc, command.rid) from None

        return handler

    async def _decide(self, room_id: str, qid: str, action: str, by: str) -> dict[str, Any]:
        _known(qid)
        decision = await self.board.decide(room_id, qid, action)
        question = decision.question.public()
        if decision.changed:
            self._dirty.add(room_id)
            if action == "answer":
                await self.ctx.notices.event(room_id, question_answered(question, by))
            if decision.unpinned:
                await self.ctx.notices.event(room_id, question_unpinned(decision.unpinned, by))
            if action == "pin":
                await self.ctx.notices.event(room_id, question_pinned(question, by))
        return {"question": question, "changed": decision.changed}

    # -- helpers --------------------------------------------------------------------------------

    @staticmethod
    def _signed_in(caller: Caller) -> None:
        if caller.anonymous:
            raise InteractError("sign_in_required", "sign in to ask or upvote questions")

    def _checked_text(self, raw: str) -> str:
        text = raw.strip()
        limit = self.ctx.config.question_max_chars
        if not text or len(text) > limit:
            raise InteractError("invalid_text", f"a question has 1 to {limit} characters")
        if self.ctx.hub.chat.words.found_in(text):
            raise InteractError("banned_words", "the question contains words not allowed here")
        return text

    def _take(self, user: str) -> bool:
        bucket = self._buckets.get(user)
        if bucket is None:
            if len(self._buckets) >= _BUCKETS_KEPT:
                self._buckets.clear()
            config = self.ctx.config
            bucket = self._buckets[user] = TokenBucket(config.question_burst, config.question_rate_per_s)
        return bucket.take()

    def _give_back(self, user: str) -> None:
        bucket = self._buckets.get(user)
        if bucket is not None:
            bucket.tokens = min(bucket.burst, bucket.tokens + 1)

    # -- HTTP -----------------------------------------------------------------------------------

    async def _list_route(self, request: web.Request) -> web.Response:
        _, room_id = staff(request)
        await self.ctx.rooms.get(room_id)  # 404 for an unknown room
        limit = query_int(request, "limit", 100, 1, MAX_LISTED)
        top = await self.board.top(room_id, limit)
        assert top is not None
        return reply(
            {
                "questions": [q.public() for q in top.questions],
                "pinned": top.pinned.public() if top.pinned else None,
            }
        )

    def _action_route(self, action: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def route(request: web.Request) -> web.Response:
            who, room_id = staff(request)
            return reply(await self._decide(room_id, request.match_info["question_id"], action, who.user_id))

        return route
