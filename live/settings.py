"""One settings object, built once at start and passed down.

Precedence, lowest first: defaults < TOML file (``--config`` / ``LIVE_CONFIG``) < ``LIVE_*``
environment variables < command-line flags. Every value is validated here, so the rest of the
code can trust it.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gateway.config import GatewayConfig
from gateway.front import FrontLimits
from inventory.inventory import InventoryConfig
from live.buying import BuyingConfig
from live.errors import UsageError
from live.nodes import default_node_name, is_valid_name
from live.selling import SellingConfig
from live.sweeper import SweeperConfig
from live.tools import ToolsConfig
from storage import InvalidDatabaseUrl, parse_database_url

ENV_PREFIX = "LIVE_"
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
JWT_ALGORITHMS = ("HS256", "RS256", "ES256")
REDIS_SCHEMES = ("redis", "rediss", "unix")
_KEY_PREFIX = re.compile(r"[A-Za-z0-9_.:-]{1,32}")
_TEN_YEARS_S = 10 * 365 * 86_400
_LONGEST_MUTE_S = 30 * 86_400  # gateway.moderation.MAX_MUTE_S (a test checks they agree)


#: The gateway's defaults are the defaults of the settings that configure it (one source).
_GATEWAY = GatewayConfig()
_INVENTORY = InventoryConfig()
_FRONT = FrontLimits()
_SELLING = SellingConfig()
_BUYING = BuyingConfig()
_SWEEPER = SweeperConfig()
_TOOLS = ToolsConfig()


class SettingsError(UsageError):
    """A setting has a value the server cannot use."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything an operator can configure. Field names are the TOML keys; ``LIVE_`` + the
    upper-cased name is the environment variable."""

    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path("live-data")
    #: External Redis (redis://, rediss://, unix://). None starts a private embedded one.
    redis_url: str | None = dataclasses.field(default=None, repr=False)
    #: The store of record (rooms, products, sales, the order ledger): postgresql://... (or
    #: postgres://) for a PostgreSQL that several nodes share. None: SQLite in the data dir.
    database_url: str | None = dataclasses.field(default=None, repr=False)
    #: Path of a redis-server/valkey-server binary for the embedded Redis.
    redis_server: str | None = None
    redis_start_timeout_s: float = 10.0
    #: Prefix of every Redis key, so several deployments can share one Redis.
    key_prefix: str = _GATEWAY.key_prefix
    log_level: str = "info"
    log_format: str = "text"
    #: HS256 signing secret. None: generated once into the data dir (mode 0600).
    secret: str | None = dataclasses.field(default=None, repr=False)
    jwt_algorithm: str = "HS256"
    #: PEM file with the public key that verifies RS256/ES256 tokens minted elsewhere.
    jwt_public_key: Path | None = None
    #: Lifetime of tokens minted by `live token` and of the host token shown at first start.
    token_ttl_s: int = 86_400
    #: Largest HTTP request body the host API reads.
    max_body_bytes: int = 64 * 1024
    #: Worker processes sharing the port (SO_REUSEPORT) and one Redis.
    workers: int = 1
    #: Freeze the heap (gc.freeze) once this many new connections have been quiet for a second,
    #: so full collections do not walk them (live/gcfreeze.py); 0 (the default): only at start.
    #: Off: in the storm benchmark there was no full collection to spare (docs/benchmarks.md).
    gc_freeze_after: int = 0
    #: Largest WebSocket message a client may send; bigger ones close the connection (1009).
    max_frame_bytes: int = _GATEWAY.max_frame_bytes
    #: Server pings each WebSocket this often; a client silent for twice as long is dropped.
    ping_interval_s: float = _GATEWAY.ping_interval_s
    #: Chat and likes reach viewers in one batch frame per tick.
    tick_ms: int = _GATEWAY.tick_ms
    #: Comments a viewer sees per tick at most (a sample, with the skipped count).
    comments_per_tick: int = _GATEWAY.comments_per_tick
    #: A room's viewer comments sent to every node per second at most, room-wide; past it, a
    #: comment is shown on its sender's node only (0: no budget). Bounds each node's intake.
    comment_fanout_per_s: int = _GATEWAY.comment_fanout_per_s
    #: A room's likes total is sent to every node at most once per this many ms, room-wide
    #: (0: every tick). Bounds each node's intake of likes whatever the number of nodes.
    likes_gauge_interval_ms: int = _GATEWAY.likes_gauge_interval_ms
    max_comment_chars: int = _GATEWAY.max_comment_chars
    #: Per-connection comment rate and burst.
    comment_rate_per_s: float = _GATEWAY.comment_rate_per_s
    comment_burst: int = _GATEWAY.comment_burst
    #: Per-connection rate and burst of any client message; a client far past it is closed.
    message_rate_per_s: float = _GATEWAY.message_rate_per_s
    message_burst: int = _GATEWAY.message_burst
    #: More than message_burst refused messages within about this long close (1008).
    flood_window_s: float = _GATEWAY.flood_window_s
    #: Non-chat room events kept for resume.
    history_size: int = _GATEWAY.history_size
    #: A room's bans and mutes are kept this long after its last ban / mute, then forgotten.
    ban_retention_s: int = _GATEWAY.ban_retention_s
    #: Bytes queued to one client before its chat is skipped / before it is closed (4409).
    send_buffer_soft_bytes: int = _GATEWAY.send_buffer_soft_bytes
    send_buffer_hard_bytes: int = _GATEWAY.send_buffer_hard_bytes
    #: How long a client may stay past the soft limit before it is closed (4409).
    slow_grace_s: float = _GATEWAY.slow_grace_s
    #: WebSocket connections per process, and per client address per process.
    max_connections: int = _GATEWAY.max_connections
    max_connections_per_ip: int = _GATEWAY.max_connections_per_ip
    #: Time for a client to complete its HTTP request head / WebSocket handshake.
    handshake_timeout_s: float = _GATEWAY.handshake_timeout_s
    #: An HTTP keep-alive connection idle (or part way through its next request head) this
    #: long is closed. Longer than clients' own pool timeouts (aiohttp's is 15 s), so that a
    #: client does not reuse a connection just as the server closes it.
    http_idle_timeout_s: float = 75.0
    #: Time for a request's whole body to arrive once its head has; later, 408 and a close.
    http_body_timeout_s: float = 10.0
    #: Per process: connections from one address still sending their request head; open HTTP
    #: connections (keep-alive included), in all and from one address. Past them, 429/503.
    max_pending_connections_per_ip: int = _FRONT.max_pending_per_ip
    max_http_connections: int = _FRONT.max_http
    max_http_connections_per_ip: int = _FRONT.max_http_per_ip
    #: Rooms one host (token subject) may create; products per room; sales per room that are
    #: open and not over (scheduled ones count). Past them, 409 limit_exceeded.
    max_rooms_per_host: int = 1000
    max_products_per_room: int = 500
    max_active_sales_per_room: int = _SELLING.max_active_sales_per_room
    #: A UTF-8 file with one banned word or phrase per line (# starts a comment).
    banned_words_file: Path | None = None
    shutdown_timeout_s: float = 10.0
    #: Flash sales: most reservations of one sale decided by one Redis call (micro-batching).
    reserve_batch_max: int = _INVENTORY.max_batch
    #: A reservation that finds no call of its sale in flight waits this long for company.
    reserve_batch_window_ms: float = _INVENTORY.batch_window_ms
    #: How often each process sweeps the active sales that are due (expired holds, late
    #: teams, phases, stock updates) or that it changed.
    sweep_interval_ms: int = _SWEEPER.interval_ms
    #: An active sale with nothing due is still swept this often (a safety net).
    sweep_idle_ms: int = _INVENTORY.sweep_idle_ms
    #: Stock-left updates to a room: at most one per this many ms.
    stock_update_ms: int = _INVENTORY.stock_update_ms
    #: An ended sale's Redis keys expire this long after it is settled (no holds left, every
    #: order in the ledger); the SQLite ledger is its record from then on.
    sale_retention_s: int = _SWEEPER.sale_retention_s
    #: Per user (per process): buy actions (reserve, confirm, cancel, teams, coupons) burst
    #: and rate; past it, a rate_limited error.
    buy_burst: int = _BUYING.burst
    buy_rate_per_s: float = _BUYING.rate_per_s
    #: The same per client address (many buyers can share one, behind a NAT).
    buy_ip_burst: int = _BUYING.ip_burst
    buy_ip_rate_per_s: float = _BUYING.ip_rate_per_s
    #: The simulated payment provider: share of charges that fail, and latency.
    payment_fail_rate: float = 0.0
    payment_delay_ms: int = 0
    #: After each confirm, wait (Redis WAIT) until this many replicas have the order, at most
    #: wait_timeout_ms; 0: no waiting (a Redis without replicas). See docs/inventory.md.
    wait_replicas: int = _INVENTORY.wait_replicas
    wait_timeout_ms: int = _INVENTORY.wait_timeout_ms
    #: Consume the order streams into this node's SQLite ledger. Turn off on nodes that do
    #: not share the ledger's data dir (one ledger per deployment; docs/inventory.md).
    ledger_consumer: bool = True
    #: The interaction tools (auctions, draws, polls, Q&A): how often their loop runs (closes, offers, the
    #: coalesced fan-out), and open tools of one kind per room.
    tools_tick_ms: int = _TOOLS.tick_ms
    max_open_tools_per_room: int = _TOOLS.max_open_per_room
    #: Per user (per process): auction bids burst and rate; past it, rate_limited.
    bid_burst: int = _TOOLS.bid_burst
    bid_rate_per_s: float = _TOOLS.bid_rate_per_s
    #: Q&A: a question's characters at most; questions per user (per process): burst and rate
    #: (past it, rate_limited); open questions per room at most (0: no limit; past it,
    #: queue_full); the top questions viewers see (qna_top, the welcome).
    question_max_chars: int = _TOOLS.question_max_chars
    question_burst: int = _TOOLS.question_burst
    question_rate_per_s: float = _TOOLS.question_rate_per_s
    question_max_open: int = _TOOLS.question_max_open
    qna_top_n: int = _TOOLS.qna_top_n
    #: Lucky draws: entrants of one draw at most, and per client address at its close (0: no
    #: limit); docs/draws.md.
    draw_max_entries: int = _TOOLS.draw_max_entries
    draw_max_entries_per_ip: int = _TOOLS.draw_max_entries_per_ip
    #: Polls: at most one poll_tally per this many ms per room, across processes.
    poll_tally_ms: int = _TOOLS.poll_tally_ms
    #: Base URL printed for the console; defaults to http://host:port.
    public_url: str | None = None
    #: This node's unique name among the nodes sharing the Redis (claimed there at start):
    #: its presence entries, its ledger consumer, its logs and metrics. Workers of
    #: ``--workers N`` are ``<name>-w<i>``. Default: ``<hostname>-<pid>``.
    node_name: str = dataclasses.field(default_factory=default_node_name)

    def __post_init__(self) -> None:
        _check(1 <= len(self.host) <= 255, "host must be a host name or address")
        _check(0 <= self.port <= 65535, f"port must be 0..65535, not {self.port}")
        _check(str(self.data_dir) != "", "data_dir must not be empty")
        if self.redis_url is not None:
            check_redis_url(self.redis_url)
        if self.database_url is not None:
            check_database_url(self.database_url)
        _check(self.redis_start_timeout_s > 0, "redis_start_timeout_s must be > 0")
        _check(
            _KEY_PREFIX.fullmatch(self.key_prefix) is not None,
            "key_prefix must be 1-32 characters of letters, digits and _.:-",
        )
        _check(self.log_level in LOG_LEVELS, f"log_level must be one of {', '.join(LOG_LEVELS)}")
        _check(self.log_format in LOG_FORMATS, f"log_format must be one of {', '.join(LOG_FORMATS)}")
        _check(
            self.jwt_algorithm in JWT_ALGORITHMS,
            f"jwt_algorithm must be one of {', '.join(JWT_ALGORITHMS)}",
        )
        if self.jwt_algorithm != "HS256":
            _check(
                self.jwt_public_key is not None,
                f"jwt_algorithm {self.jwt_algorithm} needs jwt_public_key (a PEM file)",
            )
        if self.secret is not None:
            _check(len(self.secret) >= 32, "secret must be at least 32 characters")
        _check(self.token_ttl_s > 0, "token_ttl_s must be > 0")
        _check(self.max_body_bytes >= 1024, "max_body_bytes must be >= 1024")
        _check(1 <= self.workers <= 64, "workers must be 1..64")
        _check(self.gc_freeze_after >= 0, "gc_freeze_after must be >= 0")
        _check(self.max_frame_bytes >= 256, "max_frame_bytes must be >= 256")
        _check(self.ping_interval_s > 0, "ping_interval_s must be > 0")
        _check(10 <= self.tick_ms <= 5000, "tick_ms must be 10..5000")
        _check(10 <= self.tools_tick_ms <= 5000, "tools_tick_ms must be 10..5000")
        _check(1 <= self.max_open_tools_per_room <= 1000, "max_open_tools_per_room must be 1..1000")
        _check(
            self.bid_burst >= 1 and self.bid_rate_per_s > 0, "bid_burst must be >= 1 and bid_rate_per_s > 0"
        )
        _check(1 <= self.question_max_chars <= 2000, "question_max_chars must be 1..2000")
        _check(
            self.question_burst >= 1 and self.question_rate_per_s > 0,
            "question_burst must be >= 1 and question_rate_per_s > 0",
        )
        _check(self.question_max_open >= 0, "question_max_open must be >= 0 (0: no limit)")
        _check(1 <= self.qna_top_n <= 100, "qna_top_n must be 1..100")
        _check(
            0 <= self.draw_max_entries <= 10_000_000 and self.draw_max_entries_per_ip >= 0,
            "draw_max_entries must be 0..10000000 and draw_max_entries_per_ip >= 0 (0: no limit)",
        )
        _check(50 <= self.poll_tally_ms <= 60_000, "poll_tally_ms must be 50..60000")
        _check(self.comments_per_tick >= 1, "comments_per_tick must be >= 1")
        _check(self.comment_fanout_per_s >= 0, "comment_fanout_per_s must be >= 0 (0: no budget)")
        _check(
            0 <= self.likes_gauge_interval_ms <= 60_000,
            "likes_gauge_interval_ms must be 0..60000 (0: every tick)",
        )
        _check(self.max_comment_chars >= 1, "max_comment_chars must be >= 1")
        _check(self.comment_rate_per_s > 0, "comment_rate_per_s must be > 0")
        _check(self.comment_burst >= 1, "comment_burst must be >= 1")
        _check(self.message_rate_per_s > 0, "message_rate_per_s must be > 0")
        _check(self.message_burst >= 1, "message_burst must be >= 1")
        _check(0 < self.flood_window_s <= 3600, "flood_window_s must be > 0 and <= 3600")
        _check(self.history_size >= 10, "history_size must be >= 10")
        _check(
            0 < self.send_buffer_soft_bytes < self.send_buffer_hard_bytes,
            "send_buffer_soft_bytes must be > 0 and below send_buffer_hard_bytes",
        )
        _check(self.slow_grace_s > 0, "slow_grace_s must be > 0")
        _check(self.max_connections >= 1, "max_connections must be >= 1")
        _check(self.max_connections_per_ip >= 1, "max_connections_per_ip must be >= 1")
        _check(self.handshake_timeout_s > 0, "handshake_timeout_s must be > 0")
        _check(self.http_idle_timeout_s > 0, "http_idle_timeout_s must be > 0")
        _check(self.http_body_timeout_s > 0, "http_body_timeout_s must be > 0")
        for name in (
            "max_pending_connections_per_ip",
            "max_http_connections",
            "max_http_connections_per_ip",
            "max_rooms_per_host",
            "max_products_per_room",
            "max_active_sales_per_room",
        ):
            _check(getattr(self, name) >= 1, f"{name} must be >= 1")
        _check(self.shutdown_timeout_s > 0, "shutdown_timeout_s must be > 0")
        # reserve.lua unpacks two items per request into one command: Lua allows ~8000
        _check(1 <= self.reserve_batch_max <= 2000, "reserve_batch_max must be 1..2000")
        _check(0 <= self.reserve_batch_window_ms <= 50, "reserve_batch_window_ms must be 0..50")
        _check(10 <= self.sweep_interval_ms <= 10_000, "sweep_interval_ms must be 10..10000")
        _check(
            self.sweep_interval_ms <= self.sweep_idle_ms <= 3_600_000,
            "sweep_idle_ms must be from sweep_interval_ms to 3600000 (an hour)",
        )
        _check(50 <= self.stock_update_ms <= 60_000, "stock_update_ms must be 50..60000")
        _check(60 <= self.sale_retention_s <= _TEN_YEARS_S, f"sale_retention_s must be 60..{_TEN_YEARS_S}")
        # a mute lasts up to 30 days: the mutes must not be forgotten before the longest ends
        _check(
            _LONGEST_MUTE_S <= self.ban_retention_s <= _TEN_YEARS_S,
            f"ban_retention_s must be {_LONGEST_MUTE_S} (30 days) to {_TEN_YEARS_S}",
        )
        _check(self.buy_burst >= 1 and self.buy_rate_per_s > 0, "buy_burst must be >= 1, buy_rate_per_s > 0")
        _check(
            self.buy_ip_burst >= 1 and self.buy_ip_rate_per_s > 0,
            "buy_ip_burst must be >= 1, buy_ip_rate_per_s > 0",
        )
        _check(0.0 <= self.payment_fail_rate <= 1.0, "payment_fail_rate must be 0..1")
        _check(0 <= self.payment_delay_ms <= 60_000, "payment_delay_ms must be 0..60000")
        _check(0 <= self.wait_replicas <= 16, "wait_replicas must be 0..16")
        _check(1 <= self.wait_timeout_ms <= 10_000, "wait_timeout_ms must be 1..10000")
        _check(
            is_valid_name(self.node_name),
            f"node_name must be 1-64 characters of letters, digits and ._- (got {self.node_name[:80]!r})",
        )
        if self.public_url is not None:
            _check(
                urlsplit(self.public_url).scheme in ("http", "https"),
                "public_url must be an http:// or https:// URL",
            )

    def gateway_config(self) -> GatewayConfig:
        """The gateway's part of the settings: every GatewayConfig field of the same name."""
        shared = {
            f.name: getattr(self, f.name) for f in dataclasses.fields(GatewayConfig) if f.name in _FIELDS
        }
        return GatewayConfig(**shared, banned_words=self.banned_words())

    def front_limits(self) -> FrontLimits:
        return FrontLimits(
            max_pending_per_ip=self.max_pending_connections_per_ip,
            max_http=self.max_http_connections,
            max_http_per_ip=self.max_http_connections_per_ip,
        )

    def inventory_config(self) -> InventoryConfig:
        return InventoryConfig(
            key_prefix=self.key_prefix,
            max_batch=self.reserve_batch_max,
            batch_window_ms=self.reserve_batch_window_ms,
            stock_update_ms=self.stock_update_ms,
            sweep_idle_ms=self.sweep_idle_ms,
            wait_replicas=self.wait_replicas,
            wait_timeout_ms=self.wait_timeout_ms,
        )

    def selling_config(self) -> SellingConfig:
        return SellingConfig(max_active_sales_per_room=self.max_active_sales_per_room)

    def buying_config(self) -> BuyingConfig:
        return BuyingConfig(
            burst=self.buy_burst,
            rate_per_s=self.buy_rate_per_s,
            ip_burst=self.buy_ip_burst,
            ip_rate_per_s=self.buy_ip_rate_per_s,
        )

    def sweeper_config(self) -> SweeperConfig:
        return SweeperConfig(interval_ms=self.sweep_interval_ms, sale_retention_s=self.sale_retention_s)

    def tools_config(self) -> ToolsConfig:
        return ToolsConfig(
            tick_ms=self.tools_tick_ms,
            max_open_per_room=self.max_open_tools_per_room,
            bid_burst=self.bid_burst,
            bid_rate_per_s=self.bid_rate_per_s,
            question_max_chars=self.question_max_chars,
            question_burst=self.question_burst,
            question_rate_per_s=self.question_rate_per_s,
            question_max_open=self.question_max_open,
            qna_top_n=self.qna_top_n,
            draw_max_entries=self.draw_max_entries,
            draw_max_entries_per_ip=self.draw_max_entries_per_ip,
            poll_tally_ms=self.poll_tally_ms,
        )

    def banned_words(self) -> tuple[str, ...]:
        if self.banned_words_file is None:
            return ()
        try:
            lines = self.banned_words_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise SettingsError(f"cannot read banned_words_file: {exc}") from exc
        return tuple(w.strip() for w in lines if w.strip() and not w.lstrip().startswith("#"))

    @property
    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @classmethod
    def load(
        cls,
        flags: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
        config_file: Path | None = None,
    ) -> Settings:
        """Merge the layers. ``flags`` holds only the flags the user gave (no None values)."""
        environ = os.environ if environ is None else environ
        flags = {k: v for k, v in (flags or {}).items() if v is not None}
        if config_file is None and environ.get(ENV_PREFIX + "CONFIG"):
            config_file = Path(environ[ENV_PREFIX + "CONFIG"])
        values: dict[str, Any] = {}
        if config_file is not None:
            values.update(_from_toml(config_file))
        values.update(_from_env(environ))
        values.update(_coerce_all(flags, lambda name: "--" + name.replace("_", "-")))
        try:
            return cls(**values)
        except TypeError as exc:  # a wrong type that slipped past coercion
            raise SettingsError(str(exc)) from exc


def check_database_url(url: str) -> None:
    """Refuse a malformed database URL, or one of a scheme no engine takes (the message shows
    it without its password)."""
    try:
        parse_database_url(url)
    except InvalidDatabaseUrl as exc:
        raise SettingsError(f"database_url: {exc}") from exc


def check_redis_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in REDIS_SCHEMES:
        raise SettingsError(
            "redis_url must start with redis://, rediss:// or unix:// "
            f"(got scheme {parts.scheme or 'none'!r})"
        )
    if parts.scheme == "unix":
        _check(bool(parts.path), "a unix:// redis_url needs a socket path, e.g. unix:///run/r.sock")
    else:
        try:
            port = parts.port
        except ValueError as exc:
            raise SettingsError("redis_url has an invalid port") from exc
        _check(bool(parts.hostname), "redis_url needs a host, e.g. redis://127.0.0.1:6379/0")
        _check(port is None or port > 0, "redis_url has an invalid port")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise SettingsError(message)


_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}
_TYPES = typing.get_type_hints(Settings)


def _from_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except OSError as exc:
        raise SettingsError(f"cannot read config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"config file {path} is not valid TOML: {exc}") from exc
    return _coerce_all(raw, lambda name: f"{path}: key {name}")


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    raw = {}
    for name in _FIELDS:
        key = ENV_PREFIX + name.upper()
        if key in environ and environ[key] != "":
            raw[name] = environ[key]
    return _coerce_all(raw, lambda name: ENV_PREFIX + name.upper())


def _coerce_all(raw: Mapping[str, Any], label: Callable[[str], str]) -> dict[str, Any]:
    """Convert each raw value to its field's type; ``label`` names the source in errors."""
    out = {}
    for name, value in raw.items():
        if name not in _FIELDS:
            raise SettingsError(f"unknown setting {label(name)}")
        out[name] = _coerce(name, value, label(name))
    return out


def _coerce(name: str, value: Any, where: str) -> Any:
    target = _TYPES[name]
    base = next((t for t in typing.get_args(target) if t is not type(None)), target)
    try:
        if base is bool:
            return _to_bool(value)
        if base is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if base is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if base is Path:
            return Path(str(value)).expanduser()
        if not isinstance(value, str):
            raise ValueError(value)
        return value
    except ValueError:
        shown = repr(value) if _FIELDS[name].repr else "a hidden value"
        raise SettingsError(f"{where} must be {base.__name__}, got {shown}") from None


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(value)
