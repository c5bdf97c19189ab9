"""The inventory of flash sales, over Redis: reserve, confirm, cancel, teams, coupons, sweeps.

Reservations for one sale that arrive while a call for that sale is in flight are sent
together, as one ``reserve.lua`` call that decides them in arrival order (micro-batching):
one round trip decides hundreds. A per-process sold-out flag, set from each call's answer
and from the availability channel every process listens to, answers requests after a
sell-out without touching Redis.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from inventory.keys import SaleKeys, as_text, availability_channel, sale_id_of
from inventory.model import (
    MAX_QUANTITY,
    Coupon,
    Expired,
    InvalidQuantity,
    Order,
    Reserved,
    SaleSpec,
    SaleStatus,
    SoldOut,
    Sweep,
    TeamFailed,
    TeamJoined,
    Unavailable,
    UnknownSale,
    refusal,
)
from inventory.scripts import Scripts
from shared.aio import stop_tasks

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InventoryConfig:
    key_prefix: str = "live"
    #: Most reservations decided by one Lua call.
    max_batch: int = 512
    #: Reserve calls for one sale in flight at once (more overlap Python with Redis).
    max_in_flight: int = 2
    #: A reservation arriving when no call for its sale is in flight waits this long for
    #: others to join its call (at a few thousand a second, a call would carry one or two).
    batch_window_ms: float = 1.0
    #: Most holds (and teams) one sweep expires.
    sweep_limit: int = 500
    #: Stock updates to a room: at most one per this many ms.
    stock_update_ms: int = 200
    #: Announce the countdown every second during the last this-many ms before a start.
    countdown_ms: int = 10_000
    #: After a confirm (or a team's completion), wait until this many replicas have it
    #: (Redis WAIT), at most wait_timeout_ms: a failover then cannot lose the sold units.
    #: 0 (the default, right for a Redis without replicas) does not wait.
    wait_replicas: int = 0
    wait_timeout_ms: int = 200


@dataclass
class _Request:
    user_id: str
    quantity: int
    key: str
    future: asyncio.Future[Reserved]


@dataclass
class _SaleQueue:
    pending: list[_Request] = field(default_factory=list)
    in_flight: int = 0
    scheduled: bool = False


class Inventory:
    def __init__(self, redis: aioredis.Redis, config: InventoryConfig) -> None:
        self.redis = redis
        self.config = config
        self.scripts = Scripts(redis)
        self.channel = availability_channel(config.key_prefix)
        #: Sales this process believes have no units left.
        self.sold_out: set[str] = set()
        self._queues: dict[str, _SaleQueue] = {}
        self._keys: dict[str, list[str]] = {}
        self._listener: asyncio.Task[None] | None = None
        self._batches: set[asyncio.Task[None]] = set()

    def keys(self, sale_id: str) -> list[str]:
        keys = self._keys.get(sale_id)
        if keys is None:
            keys = self._keys[sale_id] = SaleKeys(self.config.key_prefix, sale_id).all()
        return keys

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        await self.scripts.load()
        pubsub = self.redis.pubsub()
        await pubsub.subscribe(self.channel)
        self._listener = asyncio.create_task(self._listen(pubsub), name="inventory-availability")

    async def stop(self) -> None:
        await stop_tasks([t for t in (self._listener, *self._batches) if t is not None])

    async def _listen(self, pubsub: Any) -> None:
        try:
            while True:
                try:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                except (RedisError, OSError) as exc:
                    log.warning("availability channel lost; reconnecting", extra={"error": repr(exc)})
                    await asyncio.sleep(0.5)
                    continue
                if message is not None:
                    sale_id, _, left = message["data"].decode().rpartition("|")
                    self._note_available(sale_id, int(left))
        finally:
            await pubsub.aclose()

    def _note_available(self, sale_id: str, available: int) -> None:
        if available > 0:
            self.sold_out.discard(sale_id)
        else:
            self.sold_out.add(sale_id)

    # -- sales --------------------------------------------------------------------------------

    async def open_sale(self, spec: SaleSpec) -> bool:
        """Create the sale in Redis; False when it exists already."""
        fields = spec.redis_fields(self.channel)
        args = [item for pair in fields.items() for item in pair]
        created = await self.scripts.call("open_sale", self.keys(spec.id), args)
        self.sold_out.discard(spec.id)
        return bool(created == b"created")

    async def add_stock(self, sale_id: str, units: int) -> tuple[int, int]:
        """Add units; returns (total, available)."""
        if not 0 < units <= 10**9:
            raise InvalidQuantity("units to add must be 1 to 10^9")
        code, total, available = await self.scripts.call("add_stock", self.keys(sale_id), [units])
        _raise_unless(code, b"added")
        self._note_available(sale_id, available)
        return int(total), int(available)

    async def stop_sale(self, sale_id: str) -> int:
        """Stop taking reservations now; returns the end time (ms)."""
        code, ends = await self.scripts.call("stop", self.keys(sale_id), [])
        _raise_unless(code, b"stopped")
        return int(ends)

    async def status(self, sale_id: str) -> SaleStatus:
        raw = await self.redis.hgetall(self.keys(sale_id)[0])
        if b"id" not in raw:  # gone, or only the freeze of a repair under way
            raise UnknownSale()
        return _status(raw)

    async def statuses(self, sale_ids: list[str]) -> list[SaleStatus]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for sale_id in sale_ids:
                pipe.hgetall(self.keys(sale_id)[0])
            replies = await pipe.execute()
        return [_status(raw) for raw in replies if b"id" in raw]

    # -- reservations -------------------------------------------------------------------------

    async def reserve(self, sale_id: str, user_id: str, quantity: int, key: str = "") -> Reserved:
        """Hold ``quantity`` units for the user, or raise the refusal (an InventoryError).

        ``key`` (the client's request id) makes a retry safe: the same key and quantity get the
        first answer again; the same key with another quantity is refused as ``duplicate``."""
        if type(quantity) is not int or not 0 < quantity <= MAX_QUANTITY:
            raise InvalidQuantity()
        if sale_id in self.sold_out and not key:
            raise SoldOut()
        queue = self._queues.get(sale_id)
        if queue is None:
            queue = self._queues[sale_id] = _SaleQueue()
        future: asyncio.Future[Reserved] = asyncio.get_running_loop().create_future()
        queue.pending.append(_Request(user_id, quantity, key, future))
        self._kick(sale_id, queue)
        return await future

    def _kick(self, sale_id: str, queue: _SaleQueue) -> None:
        """Schedule the next call for a sale, if one is due. When no call is in flight the
        first request waits ``batch_window_ms`` for company (a round trip costs the same for one
        request or hundreds); while one is in flight, requests gather for the next, which goes
        out when it returns, or at once beside it when a whole batch is waiting."""
        if not queue.pending or queue.scheduled:
            return
        loop = asyncio.get_running_loop()
        if not queue.in_flight:
            queue.scheduled = True
            loop.call_later(self.config.batch_window_ms / 1000, self._launch, sale_id, queue)
        elif queue.in_flight < self.config.max_in_flight and len(queue.pending) >= self.config.max_batch:
            queue.scheduled = True
            loop.call_soon(self._launch, sale_id, queue)

    def _launch(self, sale_id: str, queue: _SaleQueue) -> None:
        queue.scheduled = False
        size = self.config.max_batch
        batch, queue.pending = queue.pending[:size], queue.pending[size:]
        queue.in_flight += 1
        task = asyncio.create_task(self._decide(sale_id, queue, batch))
        self._batches.add(task)
        task.add_done_callback(self._batches.discard)
        self._kick(sale_id, queue)  # more than a batch waiting: the next call goes out too

    async def _decide(self, sale_id: str, queue: _SaleQueue, batch: list[_Request]) -> None:
        try:
            if sale_id in self.sold_out:
                out = await self._replays(sale_id, batch)
            else:
                args: list[Any] = []
                for request in batch:
                    args += (request.user_id, request.quantity, request.key)
                out = await self.scripts.call("reserve", self.keys(sale_id), args)
            for i, request in enumerate(batch):
                code, hold, number = out[3 * i], out[3 * i + 1], out[3 * i + 2]
                if request.future.done():
                    continue  # the caller gave up; the hold expires on its own
                if code == b"reserved":
                    request.future.set_result(Reserved(hold.decode(), sale_id, request.quantity, number))
                else:
                    if code == b"sold_out":
                        self.sold_out.add(sale_id)
                    data = {"available": number} if code == b"insufficient_stock" else {}
                    request.future.set_exception(refusal(code.decode(), **data))
        except (RedisError, OSError) as exc:
            log.warning("reservations failed on Redis", extra={"sale": sale_id, "error": repr(exc)})
            _fail(batch, Unavailable())
        except BaseException as exc:  # cancelled (shutdown), or a bug: nobody waits forever
            _fail(batch, exc if isinstance(exc, Exception) else Unavailable())
            raise
        finally:
            queue.in_flight -= 1
            if queue.pending and not queue.scheduled:
                # they waited for this call already: no window
                queue.scheduled = True
                asyncio.get_running_loop().call_soon(self._launch, sale_id, queue)
            elif not queue.pending and not queue.in_flight and not queue.scheduled:
                self._queues.pop(sale_id, None)

    async def _replays(self, sale_id: str, batch: list[_Request]) -> list[Any]:
        """Answers, as reserve.lua would give them, for a sold-out sale: a retried request id
        gets its first answer (one HMGET for the batch: no script, no write); any other, sold_out.
        """
        fields = [idempotency_field(r.user_id, r.key) for r in batch]
        seen = await self.redis.hmget(SaleKeys(self.config.key_prefix, sale_id).idempotency, fields)
        out: list[Any] = []
        for request, record in zip(batch, seen, strict=True):
            if record is None:
                out += (b"sold_out", b"", 0)
                continue
            quantity, hold, expires = as_text(record).split("|")[:3]
            if int(quantity) == request.quantity:
                out += (b"reserved", hold.encode(), int(expires))
            else:
                out += (b"duplicate", b"", 0)
        return out

    async def hold_amount(self, hold_id: str, user_id: str, coupon_id: str | None) -> int:
        """What confirming this hold will cost (cents), so the payment can be taken first."""
        keys = SaleKeys(self.config.key_prefix, sale_id_of(hold_id))
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(keys.holds, hold_id)
            pipe.hget(keys.coupons, f"c:{coupon_id}" if coupon_id else "-")
            record, coupon = await pipe.execute()
        if record is None:
            raise refusal("hold_not_found")
        quantity, _, price, _, user = parse_hold(record)
        if user != user_id:
            raise refusal("not_your_hold")
        discount = 0
        if coupon_id:
            if coupon is None:
                raise refusal("coupon_invalid")
            discount = int(coupon.split(b"|", 1)[0])
        return max(0, quantity * price - discount)

    async def confirm(
        self, hold_id: str, user_id: str, coupon_id: str | None = None, charged_cents: int = -1
    ) -> Order:
        """Turn a paid hold into an order (again: the same order). ``charged_cents`` is what the
        payment took; the confirm is refused with ``amount_changed`` if the hold now costs
        something else."""
        sale_id = sale_id_of(hold_id)
        code, _, order = await self._replicated(
            "confirm", self.keys(sale_id), [hold_id, user_id, coupon_id or "", charged_cents]
        )
        _raise_unless(code, b"confirmed")
        return Order.from_json(order)

    async def cancel(self, hold_id: str, user_id: str) -> int:
        """Release a hold now; returns the units given back."""
        code, quantity = await self.scripts.call("cancel", self.keys(sale_id_of(hold_id)), [hold_id, user_id])
        _raise_unless(code, b"cancelled")
        return int(quantity)

    async def _replicated(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """Run a script that makes orders; with ``wait_replicas``, WAIT on the same connection
        until replicas have it too."""
        wanted = self.config.wait_replicas
        if not wanted:
            return await self.scripts.call(name, keys, args)
        async with self.redis.pipeline(transaction=False) as pipe:
            await self.scripts.queue(pipe, name, keys, args)
            pipe.wait(wanted, self.config.wait_timeout_ms)
            result, replicas = await pipe.execute()
        if replicas < wanted:
            # the order stands (it is in Redis, and the caller writes it to the ledger next);
            # a failover now could lose its counters: reconcile would heal them
            log.warning("orders not yet on enough replicas", extra={"replicas": replicas, "wanted": wanted})
        return result

    # -- group buying and coupons ---------------------------------------------------------------

    async def open_team(
        self, sale_id: str, user_id: str, quantity: int = 1, key: str = "", code: str | None = None
    ) -> TeamJoined:
        """Open a team with a new share code (``new_team_code()`` unless given)."""
        return await self._team("open", sale_id, code or new_team_code(), user_id, quantity, key)

    async def join_team(
        self, sale_id: str, code: str, user_id: str, quantity: int = 1, key: str = ""
    ) -> TeamJoined:
        return await self._team("join", sale_id, code, user_id, quantity, key)

    async def _team(
        self, op: str, sale_id: str, code: str, user_id: str, quantity: int, key: str
    ) -> TeamJoined:
        if type(quantity) is not int or not 0 < quantity <= MAX_QUANTITY:
            raise InvalidQuantity()
        result, hold, team, deadline, members, size, orders = await self._replicated(
            "team", self.keys(sale_id), [op, code, user_id, quantity, key]
        )
        if result not in (b"joined", b"completed"):
            raise refusal(result.decode())
        return TeamJoined(
            hold.decode(),
            sale_id,
            team.decode(),
            int(deadline),
            int(members),
            int(size),
            [Order.from_json(o) for o in orders],
        )

    async def team_status(self, sale_id: str, code: str) -> dict[str, Any]:
        raw = await self.redis.hget(SaleKeys(self.config.key_prefix, sale_id).teams, code)
        if raw is None:
            raise refusal("team_not_found")
        state, deadline, size, count, price = as_text(raw).split("|")
        return {
            "code": code,
            "sale_id": sale_id,
            "state": state,
            "deadline_ms": int(deadline),
            "size": int(size),
            "members": int(count),
            "price_cents": int(price),
        }

    async def drop_coupons(self, sale_id: str, batch_id: str, count: int, discount_cents: int) -> None:
        code, _, _ = await self.scripts.call(
            "coupons", self.keys(sale_id), ["drop", batch_id, count, discount_cents]
        )
        _raise_unless(code, b"dropped")

    async def claim_coupon(self, sale_id: str, batch_id: str, user_id: str) -> Coupon:
        code, coupon, discount = await self.scripts.call(
            "coupons", self.keys(sale_id), ["claim", batch_id, user_id]
        )
        _raise_unless(code, b"claimed")
        return Coupon(coupon.decode(), sale_id, batch_id, int(discount))

    async def coupons_left(self, sale_id: str, batch_id: str) -> int | None:
        left = await self.redis.hget(SaleKeys(self.config.key_prefix, sale_id).coupons, f"r:{batch_id}")
        return None if left is None else int(left)

    # -- sweeping -----------------------------------------------------------------------------

    async def sweep(self, sale_id: str) -> Sweep:
        """Expire holds, fail late teams, and report a phase change or stock update (each
        returned to exactly one of the processes that sweep at once)."""
        c = self.config
        out = await self.scripts.call(
            "sweep", self.keys(sale_id), [c.sweep_limit, c.stock_update_ms, c.countdown_ms]
        )
        if out[0] == b"unknown_sale":
            raise UnknownSale()
        phase, previous, stock, available, held, sold, total, now, expired, failed, seq = out
        self._note_available(sale_id, int(available))
        teams: list[TeamFailed] = []
        i = 0
        while i < len(failed):
            code, n = failed[i].decode(), int(failed[i + 1])
            members = failed[i + 2 : i + 2 + 3 * n]
            teams.append(
                TeamFailed(
                    code,
                    [
                        (members[j].decode(), members[j + 1].decode(), int(members[j + 2]))
                        for j in range(0, 3 * n, 3)
                    ],
                )
            )
            i += 2 + 3 * n
        return Sweep(
            sale_id=sale_id,
            phase=phase.decode(),
            previous=previous.decode(),
            stock=None if int(stock) < 0 else int(stock),
            available=int(available),
            held=int(held),
            sold=int(sold),
            total=int(total),
            now_ms=int(now),
            expired=[
                Expired(expired[j].decode(), expired[j + 1].decode(), int(expired[j + 2]))
                for j in range(0, len(expired), 3)
            ],
            failed_teams=teams,
            seq=int(seq),
        )


def _fail(batch: list[_Request], error: BaseException) -> None:
    for request in batch:
        if not request.future.done():
            request.future.set_exception(error)


def idempotency_field(user_id: str, key: str) -> str:
    """The idempotency hash field of a user's request id (lib.lua's idem_field)."""
    return f"{len(user_id.encode())}:{user_id}{key}"


def new_team_code() -> str:
    return secrets.token_hex(4).upper()


def _raise_unless(code: bytes, ok: bytes) -> None:
    if code != ok:
        raise refusal(code.decode())


def parse_hold(record: bytes) -> tuple[int, int, int, str, str]:
    """quantity, expires_at_ms, unit price, team code, user id (see lib.lua)."""
    qty, expires, price, team, klen, rest = record.decode().split("|", 5)
    return int(qty), int(expires), int(price), team, rest[int(klen) :]


def _phase(state: str, starts_ms: int, ends_ms: int, available: int) -> str:
    """As lib.lua's phase_of, on this process's clock, with sold_out told apart."""
    now = int(time.time() * 1000)
    if state == "frozen":
        return "frozen"
    if state == "stopped" or now >= ends_ms:
        return "ended"
    if now < starts_ms:
        return "not_started"
    return "live" if available else "sold_out"


def _status(raw: dict[Any, Any]) -> SaleStatus:
    f = {as_text(k): as_text(v) for k, v in raw.items()}

    def num(name: str) -> int:
        return int(f.get(name) or 0)

    return SaleStatus(
        id=f["id"],
        room_id=f["room"],
        product_id=f["product"],
        phase=_phase(f.get("state", ""), num("starts"), num("ends"), num("available")),
        total=num("total"),
        available=num("available"),
        held=num("held"),
        sold=num("sold"),
        price_cents=num("price"),
        per_user_limit=num("limit"),
        starts_at_ms=num("starts"),
        ends_at_ms=num("ends"),
        hold_ms=num("hold_ms"),
        group_size=num("group_size"),
        group_price_cents=num("group_price"),
        team_ms=num("team_ms"),
    )
