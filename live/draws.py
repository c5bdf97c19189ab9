"""The room's lucky draws (福袋), wired: the ``enter_draw`` and ``claim_prize`` commands, entry by
keyword comment, the host API, the close and the claim window (due steps), presence, the
coalesced entry count, and the prize's order in the ledger.

Every decision is a script of interact/draws.py on the shard's clock; this module tells people
of them. A comment chat admitted (``hub.observe_comments``) whose text contains an open keyword
draw's keyword (casefolded) enters its author at the next tick; the comment's ack stays the
comment's. At each tick with comments the process reads the open draws of those comments'
rooms from Redis first, so a draw another process opened a moment ago takes them too (its
viewers heard ``draw_opened`` at once); every ``REFRESH_MS`` it reads those of all the rooms it
has connections in, and records its present users in each open draw (first and last seen), so
the closing process applies ``present_at_close`` and ``min_watch_s`` to users on any process.
Entry counts this process changed go out once per tick per draw (``draw_entries``, a gauge:
the count read at the tick, and read and sent again ``SETTLE_MS`` after this process's last
change, so the count a viewer is left with is the final one, whichever process sent last).
docs/draws.md.

Anyone in the room may read a closed draw's proof (``GET .../draws/{id}/verification``: the
seed, the commitment, the eligible list, the winners, and the exclusions as counts per rule),
so a viewer recomputes the winners as ``live draw verify`` does; the rest of the result (who
was excluded and why, the entries, the claims) is the staff's.

The record (the store's ``tools`` row) is written at the open (the spec, with the secret seed)
and at the close and the claim window's end (the whole result). A Redis that lost an open draw
gets it back from the row with the same seed, commitment and times; its entries are lost.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import asdict
from typing import Any

from aiohttp import web
from redis.exceptions import RedisError

from gateway.chat import Posted
from gateway.commands import Caller, Registry
from gateway.keys import RoomKeys
from gateway.messages import Command, Field, ProtocolError
from interact import keys
from interact.draw_verify import RULES
from interact.draws import Closed, Draw, DrawBox, DrawSpec, Step, new_seed
from interact.errors import InteractError
from inventory.model import InventoryError, Order, Unavailable
from live.events import event_type
from live.http_api import ApiError, int_field, json_body, reply, room_reader, staff, take
from live.rooms import new_id, now_ms
from live.store import ToolRow
from live.tools import ToolContext, refusal

log = logging.getLogger(__name__)

KIND = "draw"
_ID = re.compile(r"d_[A-Za-z0-9_-]{1,40}")
#: How often each process reads the open draws of its rooms and records who is present (ms).
REFRESH_MS = 1000
#: A user last seen this long before the close still counts as present at the close.
PRESENCE_GRACE_MS = 2 * REFRESH_MS + 500
#: A draw's count is sent once more this long after this process last changed it (ms): of the
#: gauges two processes send at once, the one a viewer keeps may be the other's older read.
SETTLE_MS = 1000
#: Keyword comments waiting for the next tick at most (more are dropped, with a warning).
_PENDING_MAX = 100_000
MAX_KEYWORD = 40

DRAW_OPENED, DRAW_ENTRIES, DRAW_CLOSED = map(event_type, ("draw_opened", "draw_entries", "draw_closed"))
DRAW_WON = event_type("draw_won")


def draw_opened(draw: dict[str, Any]) -> dict[str, Any]:
    return {"type": DRAW_OPENED, "draw": draw}


def draw_entries(draw_id: str, entrants: int) -> dict[str, Any]:
    return {"type": DRAW_ENTRIES, "draw_id": draw_id, "entrants": entrants}


def draw_closed(draw_id: str, commitment: str, closed: Closed) -> dict[str, Any]:
    return {
        "type": DRAW_CLOSED,
        "draw_id": draw_id,
        "seed": closed.seed,
        "commitment": commitment,
        "winner_ids": closed.winner_ids,
        "entrants": closed.entrants,
        "eligible": closed.eligible,
        "excluded": closed.excluded,
        "claim_by_ms": closed.claim_by_ms,
    }


def draw_won(draw_id: str, prize: dict[str, Any], claim_by_ms: int) -> dict[str, Any]:
    return {"type": DRAW_WON, "draw_id": draw_id, "prize": prize, "claim_by_ms": claim_by_ms}


#: The draws' WebSocket commands and their fields (anyone; a draw's rules say who may enter).
COMMANDS: dict[str, dict[str, Field]] = {
    "enter_draw": {"draw_id": Field(str)},
    "claim_prize": {"draw_id": Field(str)},
}


class Draws:
    welcome_key = "draws"
    id_prefix = "d_"

    def __init__(self, ctx: ToolContext) -> None:
        self.ctx = ctx
        self.box = DrawBox(ctx.redis, ctx.key_prefix)
        #: room id -> {draw id: casefolded keyword ("" none)}: the open draws of this process's rooms
        self._open: dict[str, dict[str, str]] = {}
        self._refreshed = 0.0
        #: draw id -> room id: the draws whose count this process changed since the last tick
        self._counts: dict[str, str] = {}
        #: draw id -> (room id, monotonic time): when to send its count once more
        self._settle: dict[str, tuple[str, float]] = {}
        self._pending: list[Posted] = []
        #: the open draws whose rules need presence (present_at_close, min_watch_s): only these
        #: are told who is here (two sorted-set writes of every user present, every second)
        self._watched: set[str] = set()
        ctx.hub.observe_comments(self._observe)

    # -- the Tool protocol ----------------------------------------------------------------------

    def register(self, commands: Registry[Any]) -> None:
        handlers = {"enter_draw": self._enter_command, "claim_prize": self._claim_command}
        for name, fields in COMMANDS.items():
            commands.register(name, handlers[name], fields)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/api/rooms/{room_id}/draws", self._open_route)
        app.router.add_get("/api/rooms/{room_id}/draws", self._list_route)
        app.router.add_get("/api/rooms/{room_id}/draws/{draw_id}", self._get_route)
        app.router.add_get("/api/rooms/{room_id}/draws/{draw_id}/verification", self._verification_route)
        app.router.add_post("/api/rooms/{room_id}/draws/{draw_id}/close", self._close_route)

    async def start(self) -> None:
        await self.box.load()
        # a Redis that lost its data lost the due set too: every open draw is due again
        for state in ("open", "closed"):
            for row in await self.ctx.store.tools(kind=KIND, state=state):
                if state == "open" or json.loads(row.result or "{}").get("claims_open"):
                    await self._present(row.room_id, row.id)
                    await self.ctx.tools.schedule(row.room_id, row.id, now_ms())

    async def due(self, room_id: str, tool_id: str) -> int | None:
        for _ in range(3):  # a step another process took meanwhile: look again
            draw = await self._present(room_id, tool_id)
            if draw is None:
                return None
            if draw.state == "open":
                step = await self._close(draw)
                if step.kind == "later":
                    return step.at_ms
                if step.closed is not None:
                    await self._announce(draw, step.closed)
                    return step.closed.claim_by_ms
                continue
            if not draw.claims_open:
                return None
            step = await self.box.expire(room_id, tool_id)
            if step.kind == "later":
                return step.at_ms
            if step.kind == "expired":
                await self._record(room_id, tool_id, unclaimed=list(step.unclaimed))
                await self.box.retire(room_id, tool_id)
                return None
        return now_ms() + 1000

    async def welcome(self, room_id: str, tool_ids: list[str]) -> list[dict[str, Any]]:
        out = []
        for tool_id in tool_ids:
            draw = await self.box.get(room_id, tool_id)
            if draw is not None:
                out.append(draw.public())
        return out

    async def tick(self) -> None:
        pending, self._pending = self._pending, []
        if pending:
            await self._enter_comments(pending)
        await self._send_counts()
        now = time.monotonic()
        if now - self._refreshed >= REFRESH_MS / 1000:
            self._refreshed = now
            await self._refresh()

    async def _send_counts(self) -> None:
        """The counts changed since the last tick, and those due to be sent once more, as read
        now."""
        changed, self._counts = self._counts, {}
        now = time.monotonic()
        again = {d: r for d, (r, at) in self._settle.items() if at <= now and d not in changed}
        for draw_id in again:
            del self._settle[draw_id]
        for draw_id, room_id in changed.items():
            self._settle[draw_id] = (room_id, now + SETTLE_MS / 1000)
        for draw_id, room_id in {**changed, **again}.items():
            draw = await self.box.get(room_id, draw_id)
            if draw is not None:
                await self.ctx.notices.gauge(room_id, f"draw:{draw_id}", draw_entries(draw_id, draw.entrants))

    # -- presence and keyword comments ------------------------------------------------------------

    async def _refresh(self) -> None:
        """Read the open draws of this process's rooms; record their present users."""
        found: dict[str, dict[str, str]] = {}
        for room_id in list(self.ctx.hub.rooms):
            mine = await self._open_draws(room_id)
            if mine:
                found[room_id] = mine
                await self._record_presence(room_id, [d for d in mine if d in self._watched])
        self._open = found
        self._watched &= {d for mine in found.values() for d in mine}  # (closed ones go)

    async def _open_draws(self, room_id: str) -> dict[str, str]:
        """The room's open draws in Redis: {draw id: casefolded keyword ("" none)}."""
        ids = await self.ctx.redis.smembers(keys.room_tools(self.ctx.key_prefix, room_id))
        mine: dict[str, str] = {}
        for raw in ids:
            draw_id = raw.decode() if isinstance(raw, bytes) else str(raw)
            if not draw_id.startswith(self.id_prefix):
                continue
            draw = await self.box.get(room_id, draw_id)
            if draw is not None and draw.state == "open":
                mine[draw_id] = (draw.spec.keyword or "").casefold()
                if _needs_presence(draw):
                    self._watched.add(draw_id)
                else:
                    self._watched.discard(draw_id)
        return mine

    async def _record_presence(self, room_id: str, draw_ids: list[str]) -> None:
        users = sorted(self.ctx.hub.present_users(room_id))
        if not users:
            return
        for draw_id in draw_ids:
            await self.box.record_presence(room_id, draw_id, users)

    def _observe(self, posted: list[Posted]) -> None:
        """A comment observer (runs on the event loop, must not block): queued for the tick.
        Every room's comments, not only those of the draws this process knows of: a draw
        another process opened since the last refresh is looked up at the tick."""
        if len(self._pending) + len(posted) > _PENDING_MAX:
            log.warning("keyword comments dropped: too many waiting", extra={"room": posted[0].room_id})
            return
        self._pending.extend(posted)

    async def _enter_comments(self, posted: list[Posted]) -> None:
        for room_id in dict.fromkeys(p.room_id for p in posted):
            mine = await self._open_draws(room_id)
            if mine:
                self._open[room_id] = mine
            else:
                self._open.pop(room_id, None)
        for p in posted:
            text = p.text.casefold()
            for draw_id, keyword in list(self._open.get(p.room_id, {}).items()):
                if not keyword or keyword not in text:
                    continue
                try:
                    await self._enter(p.room_id, draw_id, p.user_id, p.remote_ip, True, p.anonymous)
                except InteractError:
                    continue  # closed, full, a guest in a signed-in draw: a comment is not refused

    async def _enter(
        self, room_id: str, draw_id: str, user: str, ip: str, by_comment: bool, guest: bool
    ) -> None:
        most = self.ctx.config.draw_max_entries
        entered, _ = await self.box.enter(room_id, draw_id, user, ip, by_comment, guest, most)
        if entered:
            self._counts[draw_id] = room_id

    # -- commands -------------------------------------------------------------------------------

    async def _enter_command(self, caller: Caller, command: Command) -> dict[str, Any]:
        draw_id = command.fields["draw_id"]
        try:
            await self._draw(caller.room_id, draw_id)
            await self._enter(
                caller.room_id, draw_id, caller.user_id, caller.remote_ip, False, caller.anonymous
            )
        except InteractError as exc:
            raise refusal(exc, command.rid) from None
        return {"draw_id": draw_id, "entered": True}

    async def _claim_command(self, caller: Caller, command: Command) -> dict[str, Any]:
        room_id, user, draw_id = caller.room_id, caller.user_id, command.fields["draw_id"]
        try:
            draw = await self._draw(room_id, draw_id)
            before = await self.box.check_claim(room_id, draw_id, user)
            coupon: dict[str, Any] | None = None
            if "coupon_batch_id" in draw.spec.prize:
                prize = draw.spec.prize
                got = await self.ctx.inventory.claim_coupon(prize["sale_id"], prize["coupon_batch_id"], user)
                coupon = {"coupon_id": got.id, "sale_id": got.sale_id, "discount_cents": got.discount_cents}
            if before is None:
                text, _ = await self.box.claim(
                    room_id, draw_id, user, coupon["coupon_id"] if coupon else None
                )
            else:
                text = before
            order = Order.from_json(text)
            await self._write_ledger(order)
        except InteractError as exc:
            raise refusal(exc, command.rid) from None
        except InventoryError as exc:
            raise ProtocolError(exc.code, exc.message, command.rid, data=exc.data) from None
        out: dict[str, Any] = {"draw_id": draw_id, "order": order.public()}
        if coupon is not None:
            out["coupon"] = coupon
        return out

    async def _write_ledger(self, order: Order) -> None:
        """The order in the ledger before the winner hears of it (as a sale's confirm)."""
        try:
            await self.ctx.ledger.record([order])
        except Exception as exc:
            log.error("ledger write failed; the winner is told unavailable", extra={"error": repr(exc)})
            raise Unavailable() from exc

    # -- the close ------------------------------------------------------------------------------

    async def _close(self, draw: Draw, early: bool = False) -> Step:
        """Close the draw if its time came (``early``: a host closes it now), with this
        process's users recorded as present first when its rules ask who is (the other
        processes' are at most ``REFRESH_MS`` old)."""
        room_id, draw_id = draw.spec.room_id, draw.spec.id
        if _needs_presence(draw):
            await self._record_presence(room_id, [draw_id])
        room = RoomKeys(self.ctx.key_prefix, room_id)
        per_ip = self.ctx.config.draw_max_entries_per_ip
        return await self.box.close(
            room_id, draw_id, room.banned, room.mutes, per_ip, PRESENCE_GRACE_MS, early
        )

    async def _announce(self, draw: Draw, closed: Closed) -> None:
        room_id, draw_id = draw.spec.room_id, draw.spec.id
        self._open.get(room_id, {}).pop(draw_id, None)
        await self._record(room_id, draw_id)
        await self.ctx.notices.event(room_id, draw_closed(draw_id, draw.spec.commitment, closed))
        for user in closed.winner_ids:
            message = draw_won(draw_id, draw.spec.prize, closed.claim_by_ms)
            try:
                await self.ctx.hub.send_to_user(room_id, user, {**message, "ts_ms": now_ms()})
            except (RedisError, OSError) as exc:  # best effort: draw_closed names them too
                log.warning("private draw notice not sent", extra={"user": user, "error": repr(exc)})

    async def _full(self, room_id: str, draw_id: str) -> dict[str, Any] | None:
        """The whole draw object (its lists once closed), from Redis."""
        draw = await self.box.get(room_id, draw_id)
        if draw is None:
            return None
        out = draw.public()
        if draw.state == "closed":
            out.update(await self.box.result(room_id, draw_id))
        return out

    async def _record(self, room_id: str, draw_id: str, unclaimed: list[str] | None = None) -> None:
        full = await self._full(room_id, draw_id)
        if full is None:
            return
        if unclaimed is not None:
            full["unclaimed"] = unclaimed
        await self.ctx.store.update_tool(
            draw_id, full["state"], json.dumps(full, ensure_ascii=False), now_ms()
        )

    # -- helpers --------------------------------------------------------------------------------

    async def _draw(self, room_id: str, draw_id: str) -> Draw:
        """The draw, put back from its record if Redis lost it; draw_not_found if it is not this
        room's."""
        draw = await self._present(room_id, draw_id) if _ID.fullmatch(draw_id) else None
        if draw is None:
            raise InteractError("draw_not_found", "no such draw in this room")
        return draw

    async def _present(self, room_id: str, draw_id: str) -> Draw | None:
        draw = await self.box.get(room_id, draw_id)
        if draw is not None:
            return draw
        row = await self.ctx.store.tool(draw_id)
        if row is None or row.kind != KIND or row.room_id != room_id or row.state != "open":
            return None
        log.warning("a draw missing in Redis is put back from its record", extra={"draw": draw_id})
        spec = DrawSpec(**json.loads(row.spec))
        saved = json.loads(row.result) if row.result else {}
        await self.box.open(spec, opened_at_ms=saved.get("opened_at_ms", row.created_at_ms))
        await self.ctx.tools.schedule(room_id, draw_id, now_ms())
        return await self.box.get(room_id, draw_id)

    # -- HTTP -----------------------------------------------------------------------------------

    async def _prize(self, room_id: str, body: dict[str, Any]) -> dict[str, Any]:
        prize = body.get("prize")
        if prize is None:
            raise ApiError(400, "missing_field", "the field 'prize' is required")
        if not isinstance(prize, dict):
            raise ApiError(400, "invalid_field", "the field 'prize' must be an object")
        if "product_id" in prize:
            product_id = take(prize, "product_id", str)
            product = next((p for p in await self.ctx.rooms.products(room_id) if p.id == product_id), None)
            if product is None:
                raise ApiError(404, "product_not_found", "no such product in this room")
            return {
                "product_id": product.id,
                "title": product.title,
                "price_cents": product.price_cents,
                "image_url": product.image_url,
            }
        if "coupon_batch_id" in prize:
            batch = take(prize, "coupon_batch_id", str)
            sale_id = take(prize, "sale_id", str, required=False)
            sales = [s.id for s in await self.ctx.store.sales(room_id) if sale_id in (None, s.id)]
            for sale in sales:
                if await self.ctx.inventory.coupons_left(sale, batch) is not None:
                    return {"coupon_batch_id": batch, "sale_id": sale}
            raise ApiError(404, "batch_not_found", "no coupon batch with that id in this room's sales")
        raise ApiError(400, "invalid_field", "the field 'prize' must have 'product_id' or 'coupon_batch_id'")

    async def _open_route(self, request: web.Request) -> web.Response:
        _, room_id = staff(request)
        await self.ctx.rooms.get(room_id)  # 404 for an unknown room
        body = await json_body(request)
        prize = await self._prize(room_id, body)
        keyword = take(body, "keyword", str, required=False)
        if keyword is not None:
            keyword = keyword.strip()
            if not 1 <= len(keyword) <= MAX_KEYWORD:
                raise ApiError(
                    400, "invalid_field", f"the field 'keyword' must be 1 to {MAX_KEYWORD} characters"
                )
        duration_s = int_field(body, "duration_s", None, 1, 86_400)
        spec = DrawSpec(
            id=new_id("d"),
            room_id=room_id,
            prize=prize,
            winners=int_field(body, "winners", None, 1, 1000),
            keyword=keyword,
            signed_in=bool(take(body, "signed_in", bool, required=False)),
            present_at_close=bool(take(body, "present_at_close", bool, required=False)),
            min_watch_ms=int_field(body, "min_watch_s", 0, 0, duration_s) * 1000,
            claim_ms=int_field(body, "claim_s", 600, 1, 7 * 86_400) * 1000,
            duration_ms=duration_s * 1000,
            seed=new_seed(),
        )
        row = ToolRow(
            spec.id, room_id, KIND, json.dumps(asdict(spec), ensure_ascii=False), "open", None, now_ms()
        )
        await self.ctx.store.insert_tool(row, max_open=self.ctx.config.max_open_per_room)
        opened_at, closes_at = await self.box.open(spec)
        times = {"opened_at_ms": opened_at, "closes_at_ms": closes_at}
        await self.ctx.store.update_tool(spec.id, "open", json.dumps(times), None)
        await self.ctx.tools.schedule(room_id, spec.id, closes_at)
        self._open.setdefault(room_id, {})[spec.id] = (keyword or "").casefold()
        draw = await self._draw(room_id, spec.id)
        await self.ctx.notices.event(room_id, draw_opened(draw.public()))
        return reply(draw.public(), status=201)

    async def _row(self, request: web.Request) -> ToolRow:
        _, room_id = staff(request)
        row = await self.ctx.store.tool(request.match_info["draw_id"])
        if row is None or row.kind != KIND or row.room_id != room_id:
            raise InteractError("draw_not_found", "no such draw in this room")
        return row

    async def _view(self, row: ToolRow) -> dict[str, Any]:
        full = await self._full(row.room_id, row.id)
        if full is not None:
            return full
        if row.result and row.state != "open":  # retired from Redis: the record
            result: dict[str, Any] = json.loads(row.result)
            return result
        return {"id": row.id, "room_id": row.room_id, "state": row.state}

    async def _get_route(self, request: web.Request) -> web.Response:
        row = await self._row(request)
        await self._present(row.room_id, row.id)
        return reply(await self._view(row))

    async def _verification_route(self, request: web.Request) -> web.Response:
        """What anyone in the room needs to check a closed draw (``live draw verify`` reads it):
        the seed, the commitment, the eligible list and the winners; of the exclusions only the
        count per rule (which user was excluded, and why, and their client address are the
        staff's)."""
        room_id = request.match_info["room_id"]
        await room_reader(request, room_id)  # before the lookup: no probing draw ids
        row = await self.ctx.store.tool(request.match_info["draw_id"])
        if row is None or row.kind != KIND or row.room_id != room_id:
            raise InteractError("draw_not_found", "no such draw in this room")
        await self._present(room_id, row.id)
        full = await self._view(row)
        if full.get("state") != "closed":
            raise InteractError("draw_open", "the draw is still open: its seed is revealed at the close")
        return reply(verification(full))

    async def _list_route(self, request: web.Request) -> web.Response:
        _, room_id = staff(request)
        rows = await self.ctx.store.tools(room_id=room_id, kind=KIND)
        return reply({"draws": [await self._view(r) for r in rows]})

    async def _close_route(self, request: web.Request) -> web.Response:
        row = await self._row(request)
        draw = await self._draw(row.room_id, row.id)
        step = await self._close(draw, early=True)
        if step.closed is not None:
            await self._announce(draw, step.closed)
            await self.ctx.tools.schedule(row.room_id, row.id, step.closed.claim_by_ms)
        return reply(await self._view(row))


def _needs_presence(draw: Draw) -> bool:
    return draw.spec.present_at_close or draw.spec.min_watch_ms > 0


def verification(full: dict[str, Any]) -> dict[str, Any]:
    """A closed draw's public proof, from its whole object (``Draws._full`` or its record)."""
    counts = dict.fromkeys(RULES, 0)
    for rule in (full.get("excluded") or {}).values():
        counts[rule] = counts.get(rule, 0) + 1
    return {
        "draw_id": full["id"],
        "room_id": full["room_id"],
        "state": full["state"],
        "commitment": full["commitment"],
        "seed": full["seed"],
        "winners": full["winners"],
        "entrants": full["entrants"],
        "eligible": full["eligible"],
        "winner_ids": full["winner_ids"],
        "excluded_counts": counts,
    }
