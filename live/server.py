"""Run the whole server: Redis (embedded or external), SQLite, the HTTP/WebSocket app.

Start order: data dir lock -> Redis (up and checked) -> SQLite -> rooms restored -> listening.
Stop order (first SIGTERM/SIGINT): stop accepting -> close WebSockets with 1001 and a reconnect
hint -> let requests finish -> flush and close SQLite -> close the Redis client -> stop the
embedded Redis last. A second signal exits at once (the kernel still stops embedded Redis).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import os
import secrets
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from gateway.close_codes import Close
from gateway.front import FrontDoor, Gate
from gateway.hub import Hub
from inventory.inventory import Inventory
from inventory.ledger import Ledger, LedgerConfig
from inventory.payments import SimulatedPayments
from live.app import build_app
from live.auctions import Auctions
from live.auth import ANY_ROOM, Auth, Role
from live.buying import Buying
from live.commands import register as register_commands
from live.datadir import DataDir
from live.directory import Directory
from live.draws import Draws
from live.errors import StartupError
from live.http_server import protocol_factory
from live.logs import AccessLogger
from live.metrics import GatewayMetrics, Metrics
from live.nodes import NodeClaim, worker_names
from live.notices import Notices
from live.polls import Polls
from live.questions import Questions
from live.redis_client import RedisClient, check_server, open_redis, redact_url
from live.redis_server import EmbeddedRedis, find_redis_server
from live.rooms import Rooms
from live.selling import Selling
from live.services import Services
from live.settings import Settings
from live.settlement import Settlement
from live.store import Store
from live.supervisor import Supervisor
from live.sweeper import Sweeper, Watermarks
from live.tools import ToolContext, Tools
from storage import DatabaseError
from storage import redact as redact_database_url

log = logging.getLogger(__name__)

#: Sent with the shutdown close (1001, gateway.close_codes.Close.SHUTDOWN): when to reconnect.
SHUTDOWN_RETRY_MS = 1000
#: A worker's claim token, from its supervisor (the same for the worker that replaces it).
NODE_TOKEN_ENV = "LIVE_NODE_TOKEN"
NODE_CLAIM_TASK = "node-claim"


def load_auth(settings: Settings, data_dir: DataDir, private_key: bytes | None = None) -> Auth:
    """HS256 with LIVE_SECRET or the data dir's secret; RS256/ES256 with the public key."""
    if settings.jwt_algorithm == "HS256":
        return Auth.hs256(settings.secret or data_dir.load_or_create_secret())
    assert settings.jwt_public_key is not None  # checked by Settings
    try:
        public_key = settings.jwt_public_key.read_bytes()
    except OSError as exc:
        raise StartupError(f"cannot read jwt_public_key {settings.jwt_public_key}: {exc}") from exc
    return Auth(settings.jwt_algorithm, public_key, private_key)


async def open_ledger(
    redis: RedisClient,
    path: Path | None,
    config: LedgerConfig,
    supervisor: Supervisor,
    database_url: str | None = None,
) -> Ledger:
    """The ledger in the data dir's SQLite file, or in the PostgreSQL of ``database_url``; a
    database it cannot open (unreachable, or its schema newer than this live, say) stops the
    start with the reason, as the store's own schema check does."""
    try:
        return await Ledger.open(redis, path, config, supervisor, database_url=database_url)
    except DatabaseError as exc:  # (SchemaTooNew is one)
        where = redact_database_url(database_url) if database_url else path
        raise StartupError(f"cannot open the ledger in {where}: {exc}") from exc


@contextlib.asynccontextmanager
async def redis_for(settings: Settings, data_dir: DataDir) -> AsyncIterator[str]:
    """Yield the URL of a Redis to use: the operator's, or a private one stopped on exit."""
    if settings.redis_url:
        yield settings.redis_url
        return
    embedded = EmbeddedRedis(
        data_dir.redis_dir,
        find_redis_server(settings.redis_server),
        start_timeout_s=settings.redis_start_timeout_s,
    )
    embedded.start()
    try:
        yield embedded.url
    finally:
        embedded.stop()


@dataclass(frozen=True)
class Running:
    """A started server: its services and the address it really listens on."""

    services: Services
    url: str


async def serve(settings: Settings, worker: bool = False) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully."""
    stop = asyncio.Event()
    _install_signal_handlers(stop)
    async with running(settings, worker) as server:
        if not worker:
            _announce(settings, server.services.auth)
        await stop.wait()
        log.info("shutting down")
    log.info("stopped")


@contextlib.asynccontextmanager
async def running(settings: Settings, worker: bool = False) -> AsyncIterator[Running]:
    """Start everything in order, yield while serving, stop everything in reverse order.

    A ``worker`` shares the port with its siblings and leaves the data dir lock (and Redis) to
    the supervising process."""
    data_dir = DataDir(settings.data_dir)
    if worker and not settings.redis_url:
        # The supervisor passes its Redis; a worker must never start (or stop) one itself.
        raise StartupError("--worker is started by 'live serve --workers N', which gives it a Redis URL")
    if not worker:
        data_dir.lock()
    try:
        auth = load_auth(settings, data_dir)
        async with redis_for(settings, data_dir) as redis_url:
            redis = await open_redis(redis_url)
            try:
                kind = await check_server(redis, redis_url)
                log.info("redis connected", extra={"url": redact_url(redis_url), "server": kind})
                # a worker's token comes from its supervisor: a replacement takes its name at once
                token = os.environ.get(NODE_TOKEN_ENV) if worker else None
                claim = NodeClaim(redis, settings.key_prefix, settings.node_name, token)
                await claim.claim()  # before anything acts under the name (presence, ledger)
                try:
                    store = await open_store(data_dir, settings.database_url)
                    try:
                        listening = _listening(settings, auth, redis, store, data_dir, worker, claim)
                        async with listening as server:
                            yield server
                    finally:
                        await store.close()
                        log.info("store of record closed")
                finally:
                    await claim.release()
            finally:
                await redis.aclose()
    finally:
        data_dir.unlock()


async def open_store(data_dir: DataDir, database_url: str | None = None) -> Store:
    try:
        return await Store.open(data_dir.sqlite_path, database_url=database_url)
    except DatabaseError as exc:
        where = redact_database_url(database_url) if database_url else data_dir.sqlite_path
        raise StartupError(f"cannot open the database {where}: {exc}") from exc


@contextlib.asynccontextmanager
async def _listening(
    settings: Settings,
    auth: Auth,
    redis: RedisClient,
    store: Store,
    data_dir: DataDir,
    shared_port: bool,
    claim: NodeClaim,
) -> AsyncIterator[Running]:
    metrics = Metrics(node=settings.node_name)
    gc_probe = metrics.watch_gc()  # collections and their pauses, in /metrics
    # every long-running loop of this process, restarted when it fails; /readyz reports it
    supervisor = Supervisor(on_crash=lambda task: metrics.task_failures.labels(task).inc())
    rooms = Rooms(store, redis, settings.key_prefix)
    restored = await rooms.restore()
    directory = Directory(auth, rooms)
    hub = Hub(
        settings.gateway_config(),
        redis,
        directory,
        GatewayMetrics(metrics),
        supervisor=supervisor,
        node_id=settings.node_name,
    )
    ledger = await open_ledger(
        redis,
        data_dir.sqlite_path,
        # the node's name: restarted under it, a node takes back the orders it had read
        LedgerConfig(key_prefix=settings.key_prefix, consumer=settings.node_name),
        supervisor,
        settings.database_url,
    )
    payments = SimulatedPayments(fail_rate=settings.payment_fail_rate, delay_ms=settings.payment_delay_ms)
    inventory = Inventory(redis, settings.inventory_config(), supervisor)
    notices, watermarks = Notices(hub), Watermarks()
    settlement = Settlement(inventory, payments, supervisor)
    selling = Selling(settings.selling_config(), store, rooms, inventory, ledger, notices, watermarks)
    buying = Buying(settings.buying_config(), inventory, ledger, settlement, notices, metrics)
    sweeper = Sweeper(
        settings.sweeper_config(),
        store,
        inventory,
        ledger,
        settlement,
        notices,
        metrics,
        watermarks,
        supervisor,
    )
    tools_config = settings.tools_config()
    tools = Tools(tools_config, redis, settings.key_prefix, supervisor)
    context = ToolContext(
        config=tools_config,
        key_prefix=settings.key_prefix,
        redis=redis,
        store=store,
        rooms=rooms,
        hub=hub,
        notices=notices,
        inventory=inventory,
        ledger=ledger,
        settlement=settlement,
        metrics=metrics,
        supervisor=supervisor,
        tools=tools,
    )
    tools.add(Auctions(context))
    tools.add(Questions(context))
    tools.add(Draws(context))
    tools.add(Polls(context))
    directory.selling = selling  # the sales a new viewer's welcome shows
    directory.tools = tools  # and the room's tools
    register_commands(hub.commands, buying)  # before any connection: the app's WebSocket commands
    for registered in tools:
        registered.register(hub.commands)
    services = Services(
        settings=settings,
        redis=redis,
        store=store,
        rooms=rooms,
        auth=auth,
        metrics=metrics,
        hub=hub,
        inventory=inventory,
        ledger=ledger,
        selling=selling,
        buying=buying,
        settlement=settlement,
        sweeper=sweeper,
        tools=tools,
        supervisor=supervisor,
        node=claim,
    )
    runner = web.AppRunner(
        build_app(services),
        handle_signals=False,
        access_log_class=AccessLogger,
        shutdown_timeout=settings.shutdown_timeout_s,
    )
    await runner.setup()
    supervisor.start(NODE_CLAIM_TASK, claim.keep)
    await hub.start()
    server: asyncio.Server | None = None
    try:
        await inventory.start()
        await ledger.start(consume=settings.ledger_consumer)
        sweeper.start()
        await tools.start()
        assert runner.server is not None
        http = protocol_factory(
            runner.server,
            on_bad_request=metrics.errors.labels("bad_request").inc,
            access_log_class=AccessLogger,
            keepalive_timeout=settings.http_idle_timeout_s,
        )
        gate = Gate(settings.front_limits())  # per-address caps, before any parsing
        where = f"{settings.host}:{settings.port}"
        try:
            server = await asyncio.get_running_loop().create_server(
                lambda: FrontDoor(hub, http, gate),
                settings.host,
                settings.port,
                reuse_port=shared_port,
                backlog=settings.listen_backlog,
            )
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise StartupError(f"{where} is already in use") from exc
            raise StartupError(f"cannot listen on {where}: {exc.strerror}") from exc
        host, port = server.sockets[0].getsockname()[:2]
        url = settings.base_url if settings.port else f"http://{host}:{port}"
        log.info("listening", extra={"url": url, "rooms": restored, "pid": os.getpid()})
        yield Running(services, url)
    finally:
        if server is not None:
            server.close()
        await hub.close_all(Close.SHUTDOWN, retry_ms=SHUTDOWN_RETRY_MS)
        await runner.cleanup()
        # after the connections: no purchase is cut half way
        await settlement.stop()
        await sweeper.stop()
        await tools.stop()
        await inventory.stop()
        await ledger.close()
        await hub.stop()
        await supervisor.stop([NODE_CLAIM_TASK])
        gc_probe.stop()


async def supervise(settings: Settings) -> None:
    """Run ``settings.workers`` worker processes on one port, sharing this process's Redis.

    The supervisor holds the data dir, starts Redis, migrates SQLite once, then starts the
    workers (each killed by the kernel if the supervisor dies) and restarts any that exits
    unexpectedly. On SIGTERM/SIGINT it stops the workers, then Redis."""
    names = worker_names(settings.node_name, settings.workers)  # before anything starts
    stop = asyncio.Event()
    _install_signal_handlers(stop)
    data_dir = DataDir(settings.data_dir)
    data_dir.lock()
    try:
        auth = load_auth(settings, data_dir)  # makes the secret before workers race to
        async with redis_for(settings, data_dir) as redis_url:
            redis = await open_redis(redis_url)
            try:
                await check_server(redis, redis_url)
                # the node's name is the supervisor's; its workers are <name>-w<i>, each with
                # a claim of its own (a token per worker, handed on to its replacement)
                claim = NodeClaim(redis, settings.key_prefix, settings.node_name)
                await claim.claim()
                renewal = Supervisor()
                renewal.start(NODE_CLAIM_TASK, claim.keep)
                try:
                    # migrations run once, here
                    await (await open_store(data_dir, settings.database_url)).close()
                    env = {**os.environ, "LIVE_REDIS_URL": redis_url}
                    if settings.database_url:  # (a config file's, too)
                        env["LIVE_DATABASE_URL"] = settings.database_url
                    envs = [{**env, NODE_TOKEN_ENV: secrets.token_hex(16)} for _ in range(settings.workers)]
                    workers = [await _start_worker(e, n) for e, n in zip(envs, names, strict=True)]
                    _announce(settings, auth)
                    await _watch_workers(workers, envs, names, stop)
                    log.info("stopping workers", extra={"workers": len(workers)})
                    for proc in workers:
                        if proc.returncode is None:
                            proc.terminate()
                    deadline = settings.shutdown_timeout_s + 5
                    for proc in workers:
                        try:
                            await asyncio.wait_for(proc.wait(), deadline)
                        except TimeoutError:
                            proc.kill()
                            await proc.wait()
                finally:
                    await renewal.stop()
                    await claim.release()
            finally:
                await redis.aclose()
    finally:
        data_dir.unlock()
    log.info("stopped")


async def _start_worker(env: dict[str, str], name: str) -> asyncio.subprocess.Process:
    # the last --node-name wins: the worker's own, after any the operator gave the supervisor
    command = [sys.executable, "-m", "live", *sys.argv[1:], "--worker", "--node-name", name]
    if sys.platform.startswith("linux"):
        command = [sys.executable, "-m", "live.parent_death", str(os.getpid()), *command]
    # Own session: a Ctrl-C reaches only the supervisor, which stops the workers in order
    # (a worker hit twice would take the second signal as "exit now").
    proc = await asyncio.create_subprocess_exec(*command, env=env, start_new_session=True)
    log.info("worker started", extra={"pid": proc.pid, "worker": name})
    return proc


async def _watch_workers(
    workers: list[asyncio.subprocess.Process],
    envs: list[dict[str, str]],
    names: list[str],
    stop: asyncio.Event,
) -> None:
    """Until ``stop``: replace a worker that exits (after a second, so a crash loop is slow)."""
    stopping = asyncio.ensure_future(stop.wait())
    while not stop.is_set():
        exits = {asyncio.ensure_future(p.wait()): i for i, p in enumerate(workers)}
        done, _ = await asyncio.wait([stopping, *exits], return_when=asyncio.FIRST_COMPLETED)
        for task in exits:
            task.cancel()
        if stop.is_set():
            break
        for task in done:
            i = exits[task]
            log.error("worker exited; restarting", extra={"pid": workers[i].pid, "code": task.result()})
            await asyncio.sleep(1.0)
            workers[i] = await _start_worker(envs[i], names[i])


def _announce(settings: Settings, auth: Auth) -> None:
    """Show a host how to get in. The token goes to an interactive terminal only, never a log."""
    if sys.stdout.isatty() and settings.jwt_algorithm == "HS256":
        token = auth.mint("host", ANY_ROOM, Role.HOST, settings.token_ttl_s)
        print(f"\n  live is running: {settings.base_url}  (host API: /api/rooms)")
        print(f"  Host token, all rooms, valid {settings.token_ttl_s // 3600} h:\n  {token}\n")
        # The fragment never reaches the server or its logs; the console reads it and drops it.
        print(f"  Host console: {settings.base_url}/console#token={token}\n")
    else:
        log.info(
            "mint a host token with: live token --role host --room '*' --data-dir DIR",
            extra={"api": settings.base_url + "/api/rooms"},
        )


def _install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            log.warning("second signal: exiting now", extra={"signal": signal.Signals(signum).name})
            os._exit(1)
        log.info("signal received", extra={"signal": signal.Signals(signum).name})
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)


def tune_gc() -> None:
    """A busy server keeps many long-lived objects (every connection's), and Python's default
    collector thresholds make it walk them all often, in pauses of hundreds of milliseconds at
    10,000 connections. Freeze what exists at start (modules: never garbage), and collect
    less often; request-sized garbage is freed by reference counting anyway."""
    gc.freeze()
    gc.set_threshold(10_000, 20, 100)


def run(settings: Settings, worker: bool = False) -> None:
    """Run the server on uvloop where it is installed, else on plain asyncio. With
    ``settings.workers > 1`` this process supervises that many workers instead."""
    tune_gc()
    main = serve(settings, worker) if worker or settings.workers == 1 else supervise(settings)
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)
