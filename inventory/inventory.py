"""The inventory of flash sales, over Redis: reserve, confirm, cancel, teams, coupons, sweeps.

Reservations for one sale that arrive while a call for that sale is in flight are sent
together, as one ``reserve.lua`` call that decides them in arrival order (micro-batching):
one round trip decides hundreds. A request with a key (the client's request id) is always
decided by that script, which records the decision in the same call, so every copy of the
request gets one answer whichever process it reaches. A per-process sold-out flag, set from
keyless answers and from the availability channel every process listens to, answers keyless
requests after a sell-out without touching Redis.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio.cluster import ClusterNode, PipelineCommand, RedisCluster
from redis.exceptions import (
    AskError,
    ClusterDownError,
    DataError,
    MovedError,
    NoScriptError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TryAgainError,
)

from inventory.keys import (
    SaleKeys,
    active_sales_key,
    as_text,
    availability_channel,
    due_sales_key,
    sale_id_of_key,
    sweep_leases_key,
)
from inventory.locks import RepairLock
from inventory.model import (
    MAX_QUANTITY,
    Coupon,
    Expired,
    InvalidField,
    InvalidQuantity,
    Mine,
    OpenHold,
    Order,
    Reserved,
    SaleSpec,
    SaleStatus,
    SoldOut,
    Sweep,
    TeamFailed,
    TeamJoined,
    TeamPlace,
    Unavailable,
    UnknownSale,
    refusal,
    sale_id_of,
)
from inventory.ports import RedisClient, Supervisor
from inventory.scripts import Scripts

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
    #: A sale is swept when something is due (a hold expiry, a team deadline, a countdown
    #: second, its start or end, a pending stock update) or it changed; and, idle, at least
    #: this often, in case a change went unnoticed (its process died before its next sweep
    #: interval, when it would have told the others).
    sweep_idle_ms: int = 30_000
    #: After a confirm (or a team's completion), wait until this many replicas have it
    #: (Redis WAIT), at most wait_timeout_ms: a failover then cannot lose the sold units.
    #: 0 (the default, right for a Redis without replicas) does not wait.
    wait_replicas: int = 0
    wait_timeout_ms: int = 200
    #: Sales whose fixed facts (keys, room, per-user limit) a process keeps, least recently
    #: used first out. Only sales that exist are kept: made-up sale ids cost a read, not memory.
    sale_cache_size: int = 4096

    def __post_init__(self) -> None:
        if "{" in self.key_prefix or "}" in self.key_prefix:
            # a brace would become the hash tag of every key: a Redis Cluster would put all the
            # sales in one slot, or split a sale's keys over slots (and its scripts fail)
            raise ValueError(f"a key prefix cannot contain '{{' or '}}': {self.key_prefix!r}")


@dataclass(frozen=True)
class SaleFacts:
    """What never changes about a sale: its Redis keys, its room and its per-user limit."""

    keys: list[str]
    room_id: str
    per_user_limit: int


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
    def __init__(self, redis: RedisClient, config: InventoryConfig, supervisor: Supervisor) -> None:
        self.redis = redis
        self.config = config
        self.supervisor = supervisor
        self.scripts = Scripts(redis, on_change=self._changed)
        #: Sales this process changed since its sweeper last asked (``due``): due at once.
        self.changed: set[str] = set()
        self._last_lease = 0  # the highest lease token ``due`` saw
        self._next_sync = 0.0  # when ``due`` next compares the due and active sets in full
        self.channel = availability_channel(config.key_prefix)
        #: Sales this process believes have no units left.
        self.sold_out: set[str] = set()
        self._queues: dict[str, _SaleQueue] = {}
        self._facts: OrderedDict[str, SaleFacts] = OrderedDict()
        self._pubsub: Any = None
        self._subscriptions = 0  # how many availability subscribers this process made
        #: On a Redis Cluster, the node ("host:port") the availability subscriber is on now.
        self.availability_node: str | None = None
        self._batches: set[asyncio.Task[None]] = set()

    def keys(self, sale_id: str) -> list[str]:
        facts = self._facts.get(sale_id)
        return facts.keys if facts is not None else SaleKeys(self.config.key_prefix, sale_id).all()

    async def facts(self, sale_id: str) -> SaleFacts | None:
        """The sale's fixed facts, or None when there is no such sale (kept for the
        ``sale_cache_size`` sales used last; a sale that does not exist is never kept)."""
        facts = self._facts.get(sale_id)
        if facts is not None:
            self._facts.move_to_end(sale_id)
            return facts
        if not _sendable(sale_id):
            return None  # no sale has an id that cannot be sent to Redis
        keys = SaleKeys(self.config.key_prefix, sale_id).all()
        found, room, limit = await self.redis.hmget(keys[0], ["id", "room", "limit"])
        if found is None or room is None or limit is None:  # gone, or only a repair's freeze
            return None
        facts = self._facts[sale_id] = SaleFacts(keys, as_text(room), int(limit))
        while len(self._facts) > self.config.sale_cache_size:
            self._facts.popitem(last=False)
        return facts

    async def room_of(self, sale_id: str) -> str | None:
        """The sale's room, or None for no such sale (a sale never moves: it is one of the
        fixed facts, kept for the sales in use)."""
        facts = await self.facts(sale_id)
        return None if facts is None else facts.room_id

    async def exists(self, sale_id: str) -> bool:
        """Whether Redis has the sale's hash (frozen by a repair, or not): False once a retired
        sale's keys expired, or Redis lost them."""
        return bool(await self.redis.exists(SaleKeys(self.config.key_prefix, sale_id).sale))

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        await self.scripts.load()
        self._pubsub = await self._subscribe()
        self.supervisor.start("inventory-availability", self._listen)

    async def _subscribe(self) -> Any:
        """A subscriber of the availability channel. On a Redis Cluster a (classic) PUBLISH
        reaches every node, so any node will do: each subscriber goes to the next node of the
        client's list, as the one before may be gone (a failover)."""
        self._subscriptions += 1
        if isinstance(self.redis, RedisCluster):
            try:
                nodes = self.redis.get_nodes()
            except RedisClusterException as exc:
                raise RedisError(f"Redis Cluster unavailable: {exc}") from exc
            node = nodes[self._subscriptions % len(nodes)]
            pubsub: Any = self.redis.pubsub(node=node)
            self.availability_node = node.name
        else:
            pubsub = self.redis.pubsub()
        try:
            await pubsub.subscribe(self.channel)
        except BaseException:
            await pubsub.aclose()
            raise
        return pubsub

    async def stop(self) -> None:
        await self.supervisor.stop(["inventory-availability"])
        await self.supervisor.cancel(self._batches)

    async def _listen(self) -> None:
        # subscribed by start() the first time (so start returns listening); anew on a restart
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is None:
            pubsub = await self._subscribe()
        # announcements may have been missed while nobody listened: the flags start afresh
        # (each next call for a sale learns its flag again)
        self.sold_out.clear()
        try:
            while True:
                try:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                except (RedisError, OSError) as exc:
                    log.warning(
                        "availability channel lost; reconnecting",
                        extra={"error": repr(exc), "node": self.availability_node},
                    )
                    self.sold_out.clear()
                    await asyncio.sleep(0.5)
                    if isinstance(self.redis, RedisCluster):
                        # its node may be gone for good: subscribe anew, on the next node (if
                        # that fails too, the supervisor restarts this loop, which subscribes)
                        old, pubsub = pubsub, None
                        await old.aclose()
                        pubsub = await self._subscribe()
                    continue
                if message is not None:
                    sale_id, _, left = message["data"].decode().rpartition("|")
                    self._note_available(sale_id, int(left))
        finally:
            if pubsub is not None:
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

        ``key`` (the client's request id) makes the request one decision: reserve.lua records
        it (a hold, or a refusal that is a decision) in the call that makes it, so the same key
        and quantity get that answer again, from any process; the same key with another
        quantity is refused as ``duplicate``."""
        if type(quantity) is not int or not 0 < quantity <= MAX_QUANTITY:
            raise InvalidQuantity()
        _check_text(sale_id=sale_id, user_id=user_id, rid=key)
        facts = await self.facts(sale_id)
        if facts is None:
            raise UnknownSale()
        if not key:
            # nothing is recorded for a keyless request, so what this process knows may answer
            # it: first the request's validity (the limit never changes), then the flag
            if quantity > facts.per_user_limit:
                raise InvalidQuantity()
            if sale_id in self.sold_out:
                raise SoldOut()
        return await self._enqueue(sale_id, user_id, quantity, key)

    async def _enqueue(self, sale_id: str, user_id: str, quantity: int, key: str) -> Reserved:
        """Queue a checked request for its sale's next reserve.lua call."""
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
            await self._settle(sale_id, batch)
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

    async def _settle(self, sale_id: str, batch: list[_Request]) -> None:
        """Decide a batch in one reserve.lua call and answer each of its requests. A call that
        fails for a reason of its own (not Redis's) is split in halves, decided in order, until
        only the request that caused it fails: one request's failure is never its batch-mates'."""
        args: list[Any] = []
        for request in batch:
            args += (request.user_id, request.quantity, request.key)
        try:
            out = await self.scripts.call("reserve", self.keys(sale_id), args)
        except DataError as exc:  # an argument redis-py refused to send: nothing reached Redis
            failure: Exception = exc
        except (RedisError, OSError) as exc:
            log.warning("reservations failed on Redis", extra={"sale": sale_id, "error": repr(exc)})
            _fail(batch, Unavailable())
            return
        except Exception as exc:  # a bug, or text that cannot be encoded (refused before sending)
            failure = exc
        else:
            self._answer(sale_id, batch, out)
            return
        unsent = isinstance(failure, DataError | UnicodeError)
        if len(batch) == 1:
            log.error("a reservation failed", extra={"sale": sale_id, "error": repr(failure)})
            _fail(batch, InvalidField("a field cannot be sent to the store") if unsent else failure)
            return
        log.error("a reservation call failed; deciding its requests again in halves", exc_info=failure)
        # Unsendable arguments fail before anything reaches Redis, so every request can be
        # decided again. After another failure the call may have run: only requests with a key
        # (whose records make a second call give the first answer) are decided again.
        again = batch if unsent else [r for r in batch if r.key]
        _fail([r for r in batch if not (unsent or r.key)], failure)
        half = len(again) // 2
        for part in (again[:half], again[half:]):
            if part:
                await self._settle(sale_id, part)

    def _answer(self, sale_id: str, batch: list[_Request], out: list[Any]) -> None:
        """Hand each request its answer from a reserve.lua reply."""
        for i, request in enumerate(batch):
            if request.future.done():
                continue  # the caller gave up; a hold expires on its own, a record stays
            try:
                code, hold, number = out[3 * i], out[3 * i + 1], out[3 * i + 2]
                if code == b"reserved":
                    request.future.set_result(Reserved(hold.decode(), sale_id, request.quantity, int(number)))
                    continue
                if code == b"sold_out" and not request.key:
                    # only a keyless answer is surely fresh (a key's may replay an old decision)
                    self.sold_out.add(sale_id)
                data = {"available": int(number)} if code == b"insufficient_stock" else {}
                error: Exception = refusal(code.decode(), **data)
            except Exception as exc:  # an answer this code cannot read fails its request alone
                log.error("unreadable reservation answer", exc_info=exc, extra={"sale": sale_id})
                error = exc
            request.future.set_exception(error)

    async def hold_amount(self, hold_id: str, user_id: str, coupon_id: str | None) -> int | Order:
        """What confirming this hold costs now (cents), so the payment is taken only for a
        confirm that would go through: confirm.lua decides every refusal without changing
        anything, and it is raised. A hold that is an order already gives that order (confirming
        again returns it, and costs nothing)."""
        code, amount, order, _ = await self.scripts.call(
            "confirm", self.keys(sale_id_of(hold_id)), [hold_id, user_id, coupon_id or "", -1, "", "check"]
        )
        if code == b"confirmed":
            return Order.from_json(order)
        _raise_unless(code, b"ok")
        return int(amount)

    async def confirm(
        self,
        hold_id: str,
        user_id: str,
        coupon_id: str | None = None,
        charged_cents: int = -1,
        payment: str = "",
    ) -> Order:
        """Turn a paid hold into an order (again: the same order). ``charged_cents`` is what the
        payment took; the confirm is refused with ``amount_changed`` if the hold now costs
        something else. ``payment`` is the attempt id of that charge (``paid_confirm``)."""
        order, _ = await self.paid_confirm(hold_id, user_id, coupon_id, charged_cents, payment)
        return order

    async def paid_confirm(
        self, hold_id: str, user_id: str, coupon_id: str | None, charged_cents: int, payment: str
    ) -> tuple[Order, bool]:
        """``confirm``, spending the payment attempt ``payment`` with the order (refused with
        ``payment_failed`` if it was voided). Also says whether that attempt pays the order:
        False when the order was made before with another payment."""
        _check_attempt(payment)
        code, _, order, paid = await self._replicated(
            "confirm",
            self.keys(sale_id_of(hold_id)),
            [hold_id, user_id, coupon_id or "", charged_cents, payment],
        )
        _raise_unless(code, b"confirmed")
        return Order.from_json(order), bool(paid)

    async def void_payment(self, sale_id: str, attempt: str) -> bool:
        """Make sure no script of this sale spends the payment attempt from now on, before it is
        refunded. True: void (no script spent it, none will); False: a confirm or a team join
        spent it already (it pays for that order or membership: keep it)."""
        _check_attempt(attempt)
        idem = SaleKeys(self.config.key_prefix, sale_id).idempotency
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hsetnx(idem, f"p:{attempt}", "void")
            pipe.hget(idem, f"p:{attempt}")
            _, state = await pipe.execute()
        return bool(state == b"void")

    async def cancel(self, hold_id: str, user_id: str) -> int:
        """Release a hold now; returns the units given back."""
        code, quantity = await self.scripts.call("cancel", self.keys(sale_id_of(hold_id)), [hold_id, user_id])
        _raise_unless(code, b"cancelled")
        return int(quantity)

    async def _replicated(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """Run a script that makes orders; with ``wait_replicas``, WAIT on the same connection
        until replicas have it too (on a Redis Cluster: the replicas of the sale's master)."""
        wanted = self.config.wait_replicas
        if not wanted:
            return await self.scripts.call(name, keys, args)
        if isinstance(self.redis, RedisCluster):
            result, replicas = await self._replicated_on_cluster(self.redis, name, keys, args, wanted)
        else:
            async with self.redis.pipeline(transaction=False) as pipe:
                await self.scripts.queue(pipe, name, keys, args)
                pipe.wait(wanted, self.config.wait_timeout_ms)
                try:
                    result, replicas = await pipe.execute()
                finally:
                    self.scripts.ran(name, keys)
        if replicas < wanted:
            # the order stands (it is in Redis, and the caller writes it to the ledger next);
            # a failover now could lose its counters: reconcile would heal them
            log.warning("orders not yet on enough replicas", extra={"replicas": replicas, "wanted": wanted})
        return result

    async def _replicated_on_cluster(
        self, cluster: RedisCluster, name: str, keys: list[str], args: list[Any], wanted: int
    ) -> tuple[Any, int]:
        """The script and WAIT on a Redis Cluster: WAIT counts the replicas that have what its
        own connection wrote, so both go to the master of the sale's slot, on one connection
        (the sale's shard: its replicas are the ones that count). Returns the script's answer
        and the replicas WAIT saw (-1: WAIT could not run)."""
        try:
            node: ClusterNode | None = cluster.get_node_from_key(keys[0])
        except RedisClusterException:  # the slot's master is unknown for now
            node = None
        loaded = False
        for _ in range(3):  # (a MOVED and a NOSCRIPT at most, after a failover)
            if node is None:
                break
            script = PipelineCommand(0, *self.scripts.evalsha(name, keys, args))
            wait = PipelineCommand(1, "WAIT", wanted, self.config.wait_timeout_ms)
            try:
                await node.execute_pipeline([script, wait])
            except (RedisError, OSError) as exc:  # it may have run: the call below answers again
                log.warning("script and WAIT failed on the sale's master", extra={"error": repr(exc)})
                break
            finally:
                self.scripts.ran(name, keys)
            if isinstance(script.result, NoScriptError) and not loaded:
                await self.scripts.load()  # a promoted replica never loaded them (nothing ran)
                loaded = True
                continue
            if isinstance(script.result, MovedError):
                # the client's slot map is older than a failover (nothing ran): it learns the
                # slot's master as redis-py does on a MOVED (and who the masters are now, for
                # the scripts' SCRIPT LOAD), and the call goes there
                await cluster.nodes_manager.move_slot(script.result)
                node = cluster.get_node_from_key(keys[0])
                continue
            if isinstance(script.result, ResponseError) and not _redirected(script.result):
                raise script.result  # the script's own error (not a moved slot, nor a failover)
            if isinstance(script.result, Exception):
                break  # a failover under way: the cluster client retries it
            if isinstance(wait.result, Exception):
                log.warning("WAIT failed on the sale's master", extra={"error": repr(wait.result)})
                return script.result, -1
            return script.result, int(wait.result)
        # Run the script through the cluster client, which follows the slot to its master now
        # (a second run of a call that ran gives its first answer: confirm and team are
        # idempotent). Its replicas cannot be counted: WAIT would be on another connection.
        return await self.scripts.call(name, keys, args), -1

    # -- group buying and coupons ---------------------------------------------------------------

    async def open_team(
        self,
        sale_id: str,
        user_id: str,
        quantity: int = 1,
        key: str = "",
        code: str | None = None,
        payment: str = "",
    ) -> TeamJoined:
        """Open a team with a new share code (``new_team_code()`` unless given). ``key`` answered
        before gets the first answer again, whatever the code. ``payment``: the attempt id of
        the charge that pays this member, spent with the membership (``TeamJoined.paid``)."""
        return _joined(
            await self._team("open", sale_id, code or new_team_code(), user_id, quantity, key, payment)
        )

    async def join_team(
        self, sale_id: str, code: str, user_id: str, quantity: int = 1, key: str = "", payment: str = ""
    ) -> TeamJoined:
        return _joined(await self._team("join", sale_id, code, user_id, quantity, key, payment))

    async def check_team(
        self, op: str, sale_id: str, code: str, user_id: str, quantity: int = 1, key: str = ""
    ) -> TeamJoined | int:
        """Decide an ``open`` or ``join`` without changing anything, so the payment is taken only
        for a member who would be admitted: raises the refusal the call would give now; else
        the first answer again when ``key`` was answered before (nothing to pay), or what the
        member pays (cents)."""
        return await self._team(op, sale_id, code, user_id, quantity, key, "", check=True)

    async def team_payments(self, sale_id: str, code: str, user_ids: list[str]) -> list[str]:
        """The payment attempt that paid each member's place in a team ("" for none)."""
        if not user_ids:
            return []
        teams = SaleKeys(self.config.key_prefix, sale_id).teams
        found = await self.redis.hmget(teams, [f"{code}:p:{user}" for user in user_ids])
        return ["" if attempt is None else as_text(attempt) for attempt in found]

    async def _team(
        self,
        op: str,
        sale_id: str,
        code: str,
        user_id: str,
        quantity: int,
        key: str,
        payment: str,
        check: bool = False,
    ) -> TeamJoined | int:
        if type(quantity) is not int or not 0 < quantity <= MAX_QUANTITY:
            raise InvalidQuantity()
        _check_attempt(payment)
        args = [op, code, user_id, quantity, key, payment, "check" if check else ""]
        if check:
            out = await self.scripts.call("team", self.keys(sale_id), args)
        else:
            out = await self._replicated("team", self.keys(sale_id), args)
        result, hold, team, deadline, members, size, orders, amount, paid = out
        if check and result == b"ok":
            return int(amount)
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
            paid=bool(paid),
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

    async def mine(self, sale_ids: list[str], user_id: str) -> list[Mine]:
        """What the user has in each of these sales (those where they have nothing are left
        out): one pipeline, one mine.lua call per sale, whose keys are the sale's slot."""
        return (await self.mine_many([(sale_ids, user_id)]))[0]

    async def mine_many(self, asks: list[tuple[list[str], str]]) -> list[list[Mine]]:
        """``mine`` for several users at once (each with its sales), in one pipeline."""
        calls = [(self.keys(sale_id), [user_id]) for sale_ids, user_id in asks for sale_id in sale_ids]
        replies = iter(await self._read_pipeline("mine", calls) if calls else [])
        return [
            [_mine(sale_id, reply) for sale_id in sale_ids if (reply := next(replies))]
            for sale_ids, _ in asks
        ]

    async def _read_pipeline(self, name: str, calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
        """A script that only reads, once per (keys, args), in one pipeline. When Redis lacks
        the script (restarted, or a promoted replica), it is loaded and the pipeline sent again."""
        replies = await self._reads(name, calls)
        if any(isinstance(r, NoScriptError) for r in replies):
            await self.scripts.load()
            replies = await self._reads(name, calls)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    async def _reads(self, name: str, calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
        # EVALSHA queued as a plain command: a cluster pipeline routes it by its keys' slot
        async with self.redis.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                pipe.execute_command(*self.scripts.evalsha(name, keys, args))
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies

    # -- sweeping -----------------------------------------------------------------------------

    async def sweep(self, sale_id: str) -> Sweep:
        """Expire holds, fail late teams, and report a phase change or stock update (each
        returned to exactly one of the processes that sweep at once)."""
        c = self.config
        out = await self.scripts.call(
            "sweep",
            self.keys(sale_id),
            [c.sweep_limit, c.stock_update_ms, c.countdown_ms, c.sweep_idle_ms],
        )
        if out[0] == b"unknown_sale":
            raise UnknownSale()
        phase, previous, stock, available, held, sold, total, now, expired, failed, seq, due = out
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
            due_ms=int(due),
        )

    # Which sales to sweep: the due set (due.lua) holds each active sale with the time its
    # next sweep is due. A sweeper leases the due ones (the other processes skip them), sweeps
    # them and hands each back with its next due time (reschedule.lua); a change by this
    # process (a script of scripts.CHANGES) makes the sale due at its next ``due`` call and
    # voids any lease, so a sweep that read the sale before the change cannot postpone it.

    def _changed(self, sale_key: str) -> None:
        self.changed.add(sale_id_of_key(sale_key))

    def _due_keys(self) -> list[str]:
        prefix = self.config.key_prefix
        return [active_sales_key(prefix), due_sales_key(prefix), sweep_leases_key(prefix)]

    async def due(self, lease_ms: int, most: int, sync: bool | None = None) -> list[tuple[str, int]]:
        """Lease the active sales due for a sweep now, this process's changed ones included:
        (sale id, lease token) each, for ``reschedule``. ``sync``: compare the due set with the
        active set in full (None: at the first call, then every sweep_idle_ms)."""
        if sync is None:
            sync = time.monotonic() >= self._next_sync
        if sync:
            self._next_sync = time.monotonic() + self.config.sweep_idle_ms / 1000
        changed, self.changed = self.changed, set()
        mode = "sync" if sync else ""
        try:
            _, last, leased = await self.scripts.call(
                "due", self._due_keys(), [lease_ms, most, mode, *changed]
            )
            if int(last) < self._last_lease:
                # the tokens went back: Redis lost writes (a failover to a replica that lagged,
                # a restore), of sales too perhaps: every active sale is swept (and healed) now
                log.error(
                    "Redis lost writes (the sweep leases went back): sweeping every active sale",
                    extra={"seen": self._last_lease, "now": int(last)},
                )
                _, last, leased = await self.scripts.call("due", self._due_keys(), [lease_ms, most, "all"])
        except BaseException:
            self.changed |= changed  # not told yet: next time
            raise
        self._last_lease = int(last)
        return [(as_text(leased[i]), int(leased[i + 1])) for i in range(0, len(leased), 2)]

    async def reschedule(self, swept: list[tuple[str, int, int]]) -> int:
        """(sale id, lease token, next due ms) per swept sale: when to sweep it next. Returns
        how many were scheduled (not those changed, or taken by another process, meanwhile)."""
        if not swept:
            return 0
        return int(await self.scripts.call("reschedule", self._due_keys(), [x for s in swept for x in s]))

    async def retire(self, sale_id: str, retention_ms: int) -> None:
        """A sale that is over and settled (nothing held, every order in the ledger): its keys
        expire after ``retention_ms``, and it leaves the active and due sets."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in SaleKeys(self.config.key_prefix, sale_id).all():
                pipe.pexpire(key, retention_ms)
            await pipe.execute()
        # after the expiry is set: if this process dies in between, the sale is still active
        # and the next sweep retires it again
        active, due, leases = self._due_keys()
        async with self.redis.pipeline(transaction=True) as pipe:  # one Cluster slot
            pipe.srem(active, sale_id)
            pipe.zrem(due, sale_id)
            pipe.hdel(leases, sale_id)
            await pipe.execute()

    async def activate(self, sale_id: str) -> None:
        """List an opened sale among the active sales: swept from now on (``due``), and its
        orders stream read by the ledger's consumer, until ``retire`` takes it out."""
        await self.redis.sadd(active_sales_key(self.config.key_prefix), sale_id)

    async def active_sales(self) -> list[str]:
        """The sales opened and not yet retired, in no particular order."""
        return [as_text(m) for m in await self.redis.smembers(active_sales_key(self.config.key_prefix))]

    def repair_lock(self, sale_id: str, timeout_ms: int = 60_000) -> RepairLock:
        """The lock of a repair of the sale (one process rebuilds it); it expires after
        ``timeout_ms`` should its holder die, and is released only by its holder."""
        return RepairLock(self.redis, SaleKeys(self.config.key_prefix, sale_id).repairing, timeout_ms)


def _redirected(error: ResponseError) -> bool:
    """An error that says the slot is served elsewhere, or not now (MOVED, ASK, TRYAGAIN,
    CLUSTERDOWN; READONLY from a demoted master): the command did not run."""
    return isinstance(error, AskError | TryAgainError | ClusterDownError | ReadOnlyError)  # MOVED is an ASK


def _fail(batch: list[_Request], error: BaseException) -> None:
    for request in batch:
        if not request.future.done():
            request.future.set_exception(error)


def _sendable(text: object) -> bool:
    """Text redis-py can send: it encodes arguments as UTF-8, which a lone surrogate (a
    Python string can hold one) cannot be."""
    if not isinstance(text, str):
        return False
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _check_text(**fields: object) -> None:
    """Refuse a request whose text cannot be sent, alone: in a batch it would fail the call."""
    for name, value in fields.items():
        if not _sendable(value):
            raise InvalidField(f"the field {name!r} is not valid text (it cannot be encoded as UTF-8)")


def new_team_code() -> str:
    return secrets.token_hex(4).upper()


def team_code(sale_id: str, user_id: str, key: str) -> str:
    """The share code of the team a user opens with request id ``key`` (a new random one
    without a key): the same for every copy of the request, so a retry, on any process, names
    the same team and the same payment reference, and is charged nothing twice."""
    if not key:
        return new_team_code()
    text = f"{len(user_id)}:{user_id}{key}".encode("utf-8", "surrogatepass")
    salt = sale_id.encode("utf-8", "surrogatepass")[:64]
    return hashlib.blake2b(text, digest_size=4, key=salt).hexdigest().upper()


#: Payment attempt ids (a provider's charge ids) are kept in Redis: short printable text.
_ATTEMPT = re.compile(r"[\x21-\x7e]{0,128}")


def _joined(answer: TeamJoined | int) -> TeamJoined:
    if not isinstance(answer, TeamJoined):  # only a check answers with an amount
        raise AssertionError(f"team.lua answered a join with {answer!r}")
    return answer


def _check_attempt(attempt: str) -> None:
    if not _ATTEMPT.fullmatch(attempt):
        raise ValueError(f"a payment attempt id must be up to 128 printable ASCII characters: {attempt!r}")


def _raise_unless(code: bytes, ok: bytes) -> None:
    if code != ok:
        raise refusal(code.decode())


def parse_hold(record: bytes) -> tuple[int, int, int, str, str]:
    """quantity, expires_at_ms, unit price, team code, user id (see lib.lua)."""
    qty, expires, price, team, klen, rest = record.decode().split("|", 5)
    return int(qty), int(expires), int(price), team, rest[int(klen) :]


def _mine(sale_id: str, reply: list[Any]) -> Mine:
    """mine.lua's answer for one sale (its Returns)."""
    product, holds, orders, coupons, teams = reply
    product_id = as_text(product)
    return Mine(
        sale_id=sale_id,
        holds=[
            OpenHold(
                hold_id=as_text(holds[i]),
                sale_id=sale_id,
                product_id=product_id,
                quantity=int(holds[i + 1]),
                expires_at_ms=int(holds[i + 2]),
                unit_price_cents=int(holds[i + 3]),
                team_code=as_text(holds[i + 4]) or None,
            )
            for i in range(0, len(holds), 5)
        ],
        orders=[Order.from_json(o) for o in orders],
        coupons=[
            Coupon(
                id=as_text(coupons[i]),
                sale_id=sale_id,
                batch_id=as_text(coupons[i]).rpartition(".")[0],  # "<batch>.<n>" (coupons.lua)
                discount_cents=int(coupons[i + 1]),
                used=coupons[i + 2] == b"used",
            )
            for i in range(0, len(coupons), 3)
        ],
        teams=[
            TeamPlace(
                code=as_text(teams[i]),
                sale_id=sale_id,
                hold_id=as_text(teams[i + 1]),
                state=as_text(teams[i + 2]),
                deadline_ms=int(teams[i + 3]),
                size=int(teams[i + 4]),
                members=int(teams[i + 5]),
                price_cents=int(teams[i + 6]),
            )
            for i in range(0, len(teams), 7)
        ],
    )


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
