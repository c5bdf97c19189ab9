"""The room's polls, wired: the ``vote`` command, the host API (open, list, read, close early),
the close (a due step), the throttled fan-out of tallies, and the record.

Every decision is a script of interact/polls.py on the shard's clock; this module tells people
of them. A vote that changed a tally asks the room's tally gate in its own script: when it is
free (at most one ``poll_tally`` per ``poll_tally_ms`` room-wide, whichever process) the
tallies go out at once on the chat lane, else this process remembers the poll and its next
tick asks again (poll_flush.lua), so the last change always goes out, one gate later at most.

The record (the store's ``tools`` row) is written first, then Redis. Each tick checkpoints a
changed poll's ballots into the row's result at most once a second, so a Redis that lost the
poll (a failover) gets it back from the row (at a due step, at start, or when a vote finds it
missing). The close writes the final result (tallies, voters, every ballot) into the row, then
sends ``poll_closed`` on the priority lane. docs/polls.md.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import asdict
from typing import Any

from aiohttp import web

from gateway.commands import Caller, Registry
from gateway.messages import Command, Field
from interact.errors import InteractError
from interact.polls import Close, Poll, PollBox, PollSpec, Tally, check_spec
from live.events import event_type
from live.http_api import ApiError, json_body, reply, staff, take
from live.rooms import new_id, now_ms
from live.store import ToolRow
from live.tools import ToolContext, refusal

log = logging.getLogger(__name__)

KIND = "poll"
_ID = re.compile(r"p_[A-Za-z0-9_-]{1,40}")
#: A changed poll's ballots go into its record at most this often (ms).
CHECKPOINT_MS = 1000
#: A close whose announcement is missing this long after it (its process died) is announced
#: by whichever process's due step finds it.
RECOVER_MS = 5000
#: Polls remembered per process for their next checkpoint at most.
_KEPT = 100_000

POLL_OPENED, POLL_TALLY, POLL_CLOSED = map(event_type, ("poll_opened", "poll_tally", "poll_closed"))


def poll_opened(poll: dict[str, Any]) -> dict[str, Any]:
    return {"type": POLL_OPENED, "poll": poll}


def poll_tally(poll_id: str, tally: Tally) -> dict[str, Any]:
    return {
        "type": POLL_TALLY,
        "poll_id": poll_id,
        "tallies": tally.tallies,
        "votes": tally.votes,
        "tally_seq": tally.seq,
    }


def poll_closed(poll_id: str, tallies: list[int], votes: int) -> dict[str, Any]:
    return {"type": POLL_CLOSED, "poll_id": poll_id, "tallies": tallies, "votes": votes}


#: The poll's WebSocket commands and their fields (``rid`` optional: a vote is idempotent).
COMMANDS: dict[str, dict[str, Field]] = {"vote": {"poll_id": Field(str), "option": Field(int)}}


class Polls:
    welcome_key = "polls"
    id_prefix = "p_"

    def __init__(self, ctx: ToolContext) -> None:
        self.ctx = ctx
        self.box = PollBox(ctx.redis, ctx.key_prefix, ctx.config.poll_tally_ms)
        #: poll id -> room id: tallies changed here and not yet published (oldest first)
        self._pending: dict[str, str] = {}
        #: poll id -> room id: ballots changed since its last checkpoint
        self._dirty: dict[str, str] = {}
        self._checkpointed: dict[str, float] = {}

    # -- the Tool protocol ----------------------------------------------------------------------

    def register(self, commands: Registry[Any]) -> None:
        for name, fields in COMMANDS.items():
            commands.register(name, self._vote_command, fields)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/api/rooms/{room_id}/polls", self._open_route)
        app.router.add_get("/api/rooms/{room_id}/polls", self._list_route)
        app.router.add_get("/api/rooms/{room_id}/polls/{poll_id}", self._get_route)
        app.router.add_post("/api/rooms/{room_id}/polls/{poll_id}/close", self._close_route)

    async def start(self) -> None:
        await self.box.load()
        # a Redis that lost its data lost the due set too: every open poll is due again
        for row in await self.ctx.store.tools(kind=KIND, state="open"):
            await self._present(row.room_id, row.id)
            await self.ctx.tools.schedule(row.room_id, row.id, now_ms())

    async def due(self, room_id: str, tool_id: str) -> int | None:
        poll = await self._present(room_id, tool_id)
        if poll is None:
            return None
        if poll.state == "open":
            step = await self.box.close(room_id, tool_id)
            if step.kind == "later":
                return step.at_ms
            if step.kind == "closed":
                await self._announce(poll, step)
                return None
            poll = await self.box.get(room_id, tool_id)  # another process closed it meanwhile
            if poll is None:
                return None
        if await self.box.announced(room_id, tool_id):
            return None
        closed_at = poll.closed_at_ms or 0
        if now_ms() < closed_at + RECOVER_MS:  # its closer is announcing it (or died doing so)
            return closed_at + RECOVER_MS
        log.warning("a poll closed without its announcement is announced now", extra={"poll": tool_id})
        await self._announce(poll, Close("closed", closed_at, Tally(0, poll.votes, poll.tallies)))
        return None

    async def welcome(self, room_id: str, tool_ids: list[str]) -> list[dict[str, Any]]:
        out = []
        for tool_id in tool_ids:
            poll = await self.box.get(room_id, tool_id)
            if poll is not None and poll.state == "open":
                out.append(poll.public())
        return out

    async def tick(self) -> None:
        waiting: set[str] = set()  # rooms whose gate is taken this tick
        for poll_id, room_id in list(self._pending.items()):
            if room_id in waiting:
                continue
            flushed = await self.box.flush(room_id, poll_id)
            if flushed == "wait":
                waiting.add(room_id)
                continue
            del self._pending[poll_id]
            if isinstance(flushed, Tally):
                waiting.add(room_id)  # this one took the gate
                await self._publish(room_id, poll_id, flushed)
        now = time.monotonic()
        for poll_id, room_id in list(self._dirty.items()):
            if now - self._checkpointed.get(poll_id, 0.0) < CHECKPOINT_MS / 1000:
                continue
            del self._dirty[poll_id]
            self._checkpointed[poll_id] = now
            poll = await self.box.get(room_id, poll_id)
            row = await self.ctx.store.tool(poll_id)
            if poll is None or row is None or row.state != "open" or poll.state != "open":
                continue  # the close writes its own record
            await self._record(poll, await self.box.ballots(room_id, poll_id), closed=False)
        if len(self._checkpointed) > _KEPT:
            self._checkpointed.clear()

    # -- the command ----------------------------------------------------------------------------

    async def _vote_command(self, caller: Caller, command: Command) -> dict[str, Any]:
        room_id, poll_id, option = caller.room_id, command.fields["poll_id"], command.fields["option"]
        try:
            if caller.anonymous:
                raise InteractError("sign_in_required", "sign in to vote: anonymous viewers cannot")
            if not _ID.fullmatch(poll_id):
                raise InteractError("poll_not_found", "no such poll in this room")
            try:
                vote = await self.box.vote(room_id, poll_id, caller.user_id, option)
            except InteractError as exc:
                if exc.code != "poll_not_found":
                    raise
                await self._missing(room_id, poll_id)  # put back from its record, or why not
                vote = await self.box.vote(room_id, poll_id, caller.user_id, option)
        except InteractError as exc:
            raise refusal(exc, command.rid) from None
        if vote.changed:
            self._dirty[poll_id] = room_id
            if vote.tally is not None:
                await self._publish(room_id, poll_id, vote.tally)
                self._pending.pop(poll_id, None)
            else:
                self._pending.pop(poll_id, None)  # (to the end of the queue: oldest first)
                self._pending[poll_id] = room_id
        return {"poll_id": poll_id, "option": vote.option}

    async def _publish(self, room_id: str, poll_id: str, tally: Tally) -> None:
        """A poll's tallies on the chat lane: the latest per poll per tick."""
        await self.ctx.notices.gauge(room_id, f"poll_tally:{poll_id}", poll_tally(poll_id, tally))

    async def _missing(self, room_id: str, poll_id: str) -> None:
        """A poll Redis does not have: put it back if its record says it is open, else raise
        poll_closed (closed, its keys retired) or poll_not_found."""
        if await self._present(room_id, poll_id) is not None:
            return
        row = await self.ctx.store.tool(poll_id)
        if row is not None and row.kind == KIND and row.room_id == room_id:
            raise InteractError("poll_closed", "the poll is closed")
        raise InteractError("poll_not_found", "no such poll in this room")

    # -- the close ------------------------------------------------------------------------------

    async def _announce(self, poll: Poll, close: Close) -> None:
        """Record a closed poll's result, then tell the room (once per close)."""
        room_id, poll_id = poll.spec.room_id, poll.spec.id
        assert close.tally is not None
        final = Poll(
            poll.spec,
            poll.opened_at_ms,
            poll.closes_at_ms,
            "closed",
            close.tally.tallies,
            close.tally.votes,
            close.at_ms,
        )
        await self._record(final, await self.box.ballots(room_id, poll_id), closed=True)
        await self.ctx.notices.event(room_id, poll_closed(poll_id, close.tally.tallies, close.tally.votes))
        await self.box.mark_announced(room_id, poll_id)
        await self.box.retire(room_id, poll_id)
        self._pending.pop(poll_id, None)
        self._dirty.pop(poll_id, None)

    async def _record(self, poll: Poll, ballots: dict[str, int], closed: bool) -> None:
        result = {
            "opened_at_ms": poll.opened_at_ms,
            "closes_at_ms": poll.closes_at_ms,
            "closed_at_ms": poll.closed_at_ms,
            "tallies": poll.tallies,
            "votes": poll.votes,
            "ballots": ballots,
            "checkpoint_ms": now_ms(),
        }
        await self.ctx.store.update_tool(
            poll.spec.id,
            "closed" if closed else "open",
            json.dumps(result, ensure_ascii=False),
            poll.closed_at_ms if closed else None,
        )

    # -- helpers --------------------------------------------------------------------------------

    async def _present(self, room_id: str, poll_id: str) -> Poll | None:
        """The poll, put back from its record if Redis lost it while open; None if it is not
        this room's (or closed and retired)."""
        poll = await self.box.get(room_id, poll_id)
        if poll is not None:
            return poll
        row = await self.ctx.store.tool(poll_id)
        if row is None or row.kind != KIND or row.room_id != room_id or row.state != "open":
            return None
        log.warning("a poll missing in Redis is put back from its record", extra={"poll": poll_id})
        spec = PollSpec(**json.loads(row.spec))
        saved = json.loads(row.result) if row.result else {}
        opened = saved.get("opened_at_ms", row.created_at_ms)
        record = Poll(spec, opened, saved.get("closes_at_ms", opened + spec.duration_ms), "open", [], 0)
        await self.box.open(spec, record, saved.get("ballots", {}))
        await self.ctx.tools.schedule(room_id, poll_id, now_ms())
        return await self.box.get(room_id, poll_id)

    # -- HTTP -----------------------------------------------------------------------------------

    async def _open_route(self, request: web.Request) -> web.Response:
        _, room_id = staff(request)
        await self.ctx.rooms.get(room_id)  # 404 for an unknown room
        body = await json_body(request)
        question = take(body, "question", str).strip()
        options = body.get("options")
        if options is None:
            raise ApiError(400, "missing_field", "the field 'options' is required")
        if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
            raise ApiError(400, "invalid_field", "the field 'options' must be a list of strings")
        options = [o.strip() for o in options]
        why = check_spec(question, options)
        if why is not None:
            raise ApiError(400, "invalid_field", why)
        duration = take(body, "duration_s", int)
        if not 1 <= duration <= 86_400:
            raise ApiError(400, "invalid_field", "the field 'duration_s' must be 1 to 86400")
        allow_change = take(body, "allow_change", bool, required=False)
        spec = PollSpec(
            id=new_id("p"),
            room_id=room_id,
            question=question,
            options=options,
            allow_change=True if allow_change is None else allow_change,
            duration_ms=duration * 1000,
        )
        row = ToolRow(
            spec.id, room_id, KIND, json.dumps(asdict(spec), ensure_ascii=False), "open", None, now_ms()
        )
        await self.ctx.store.insert_tool(row, max_open=self.ctx.config.max_open_per_room)
        await self.box.open(spec)
        poll = await self.box.get(room_id, spec.id)
        assert poll is not None
        await self._record(poll, {}, closed=False)
        await self.ctx.tools.schedule(room_id, spec.id, poll.closes_at_ms)
        await self.ctx.notices.event(room_id, poll_opened(poll.public()))
        return reply(poll.public(), status=201)

    async def _row(self, request: web.Request) -> ToolRow:
        _, room_id = staff(request)
        row = await self.ctx.store.tool(request.match_info["poll_id"])
        if row is None or row.kind != KIND or row.room_id != room_id:
            raise InteractError("poll_not_found", "no such poll in this room")
        return row

    async def _view(self, row: ToolRow) -> dict[str, Any]:
        poll = await self._present(row.room_id, row.id)
        if poll is not None:
            return poll.public()
        spec = PollSpec(**json.loads(row.spec))  # retired from Redis: the record
        saved = json.loads(row.result) if row.result else {}
        tallies = saved.get("tallies") or [0] * len(spec.options)
        return Poll(
            spec,
            saved.get("opened_at_ms", row.created_at_ms),
            saved.get("closes_at_ms", row.created_at_ms + spec.duration_ms),
            row.state,
            tallies,
            saved.get("votes", 0),
            row.closed_at_ms,
        ).public()

    async def _get_route(self, request: web.Request) -> web.Response:
        return reply(await self._view(await self._row(request)))

    async def _list_route(self, request: web.Request) -> web.Response:
        _, room_id = staff(request)
        rows = await self.ctx.store.tools(room_id=room_id, kind=KIND)
        return reply({"polls": [await self._view(r) for r in rows]})

    async def _close_route(self, request: web.Request) -> web.Response:
        row = await self._row(request)
        poll = await self._present(row.room_id, row.id)
        if poll is None:
            raise InteractError("poll_closed", "the poll is closed")
        step = await self.box.close(row.room_id, row.id, now=True)
        if step.kind != "closed":
            raise InteractError("poll_closed", "the poll is closed")
        # if this process dies before announcing it, a due step does it (RECOVER_MS)
        await self.ctx.tools.schedule(row.room_id, row.id, step.at_ms + RECOVER_MS)
        await self._announce(poll, step)
        return reply(await self._view(row))
