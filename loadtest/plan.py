"""What a run does: the scenarios, their parameters and limits, and one timeline.

One ``Plan`` is built from defaults < a TOML file < flags, validated here, and passed down to
the coordinator and (as JSON) to every worker process. Times in the timeline are seconds from
the start of the load phase (t = 0: the first viewer connects).
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCENARIOS = (
    "audience", "chat-storm", "like-storm", "host", "rush", "group-buy", "draw", "auction", "poll", "qna",
)  # fmt: skip
#: The room's interaction tools (issue 14): each brings users of its own.
TOOL_SCENARIOS = ("draw", "auction", "poll", "qna")
#: Named combinations.
ALIASES = {"big-night": SCENARIOS}

#: A worker process holds at most this many connections: the machine allows 20,000 open files
#: per process, and a worker also needs a few for itself.
MAX_CONNECTIONS_PER_WORKER = 15_000
#: Local ports per source address are ~28,000 (32768-60999); past this many connections the
#: workers connect from several 127.0.0.x addresses.
CONNECTIONS_PER_SOURCE = 25_000
#: One viewer may comment once a second (burst 5) and send 20 messages a second on the server's
#: defaults; a storm is spread over enough connections to stay under those limits.
COMMENTS_PER_COMMENTER_S = 0.8
LIKES_PER_LIKER_S = 10.0
#: Seconds after the load phase for replies, deliveries and expired holds to settle.
DRAIN_S = 2.0


class PlanError(ValueError):
    """The plan cannot run as asked; the message says what to change."""


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise PlanError(message)


@dataclass(frozen=True)
class Plan:
    scenarios: tuple[str, ...] = ALIASES["big-night"]
    #: Length of the load phase (ramp included), seconds. Every loop stops by then.
    duration_s: float = 30.0
    #: Audience: viewers ramped in over ramp_s (default: a quarter of the run, at most 10 s).
    viewers: int = 1000
    ramp_s: float | None = None
    #: Viewers that decode every frame (chat accounting, chat latency, heartbeat round trips).
    observers: int = 20
    heartbeat_s: float = 15.0
    framing: str = "json"
    #: Storms, per second for the whole room.
    chat_rate: float = 50.0
    like_rate: float = 200.0
    host_rate: float = 1.0
    #: Rush: buyers reserve at rush_rate from the sale's start; then each confirms, cancels or
    #: lets the hold expire. A share re-sends its reserve with the same rid (idempotency).
    buyers: int = 1000
    rush_rate: float = 2000.0
    stock: int = 300
    per_user_limit: int = 2
    max_quantity: int = 2
    confirm_share: float = 0.6
    cancel_share: float = 0.2
    retry_share: float = 0.1
    hold_s: int = 5
    price_cents: int = 1999
    #: Group buy: teams opened by a leader and joined by members; a share left one short fails.
    teams: int = 20
    team_size: int = 3
    team_fill_share: float = 0.8
    team_s: int = 6
    #: Lucky draws: two open from the start, one entered by commenting draw_keyword, one by
    #: enter_draw; a share of the entrants enters twice. They close 1 s before the drain.
    draw_entrants: int = 100
    draw_winners: int = 5
    draw_keyword: str = "lucky"
    draw_comment_share: float = 0.5
    draw_repeat_share: float = 0.2
    #: Auction: bidding from the ramp for auction_s, with most bids in the last snipe_s and
    #: through the extensions (capped at max_extension_s); some bids too low, some sent twice.
    bidders: int = 30
    bids: int = 150
    auction_s: int = 5
    snipe_s: int = 2
    max_extension_s: int = 2
    start_cents: int = 1000
    increment_cents: int = 100
    last_bid_share: float = 0.6
    low_bid_share: float = 0.1
    bid_retry_share: float = 0.1
    #: Poll: every voter votes once; a share changes its vote, a share votes the same again.
    voters: int = 100
    poll_options: int = 4
    vote_change_share: float = 0.3
    vote_repeat_share: float = 0.1
    #: Q&A: the first askers of the qna users ask (a share twice), every one upvotes.
    qna_users: int = 40
    askers: int = 15
    upvotes: int = 80
    ask_repeat_share: float = 0.2
    upvote_repeat_share: float = 0.1
    #: Processes and addresses.
    workers: int | None = None
    source_addresses: int | None = None
    connect_timeout_s: float = 15.0
    #: A request unanswered this long is counted as `no_reply`.
    reply_timeout_s: float = 10.0
    #: A stream (connections, comments, reserves, ...) with a larger share of its planned events
    #: never sent is a load shortfall: the run did not deliver the load it planned.
    max_unsent_share: float = 0.01
    seed: int = 1
    room: str | None = None

    def __post_init__(self) -> None:
        unknown = [s for s in self.scenarios if s not in SCENARIOS]
        _check(not unknown, f"unknown scenario {unknown}; choose from {', '.join(SCENARIOS)} or big-night")
        _check(bool(self.scenarios), "no scenario given")
        _check(1 <= self.duration_s <= 3600, "duration_s must be 1..3600")
        _check(0 <= self.viewers <= 200_000, "viewers must be 0..200000")
        _check(self.ramp_s is None or 0 <= self.ramp_s < self.duration_s, "ramp_s must be 0..duration_s")
        _check(0 <= self.observers <= 5000, "observers must be 0..5000")
        _check(1 <= self.heartbeat_s <= 3600, "heartbeat_s must be 1..3600")
        _check(self.framing in ("json", "msgpack"), "framing must be json or msgpack")
        for name in ("chat_rate", "like_rate", "host_rate"):
            _check(0 <= getattr(self, name) <= 100_000, f"{name} must be 0..100000 per second")
        _check(0 <= self.buyers <= 200_000, "buyers must be 0..200000")
        _check(1 <= self.rush_rate <= 1_000_000, "rush_rate must be 1..1000000 per second")
        _check(1 <= self.stock <= 10**9, "stock must be 1..10^9")
        _check(1 <= self.per_user_limit <= 1000, "per_user_limit must be 1..1000")
        _check(self.max_quantity >= 1, "max_quantity must be >= 1")
        for name in ("confirm_share", "cancel_share", "retry_share", "team_fill_share"):
            _check(0 <= getattr(self, name) <= 1, f"{name} must be 0..1")
        _check(self.confirm_share + self.cancel_share <= 1, "confirm_share + cancel_share must be <= 1")
        _check(1 <= self.hold_s <= 3600, "hold_s must be 1..3600")
        _check(0 <= self.price_cents <= 10**12, "price_cents must be 0..10^12")
        _check(0 <= self.teams <= 10_000, "teams must be 0..10000")
        _check(2 <= self.team_size <= 100, "team_size must be 2..100")
        _check(1 <= self.team_s <= 3600, "team_s must be 1..3600")
        _check(self.workers is None or 1 <= self.workers <= 64, "workers must be 1..64")
        _check(
            self.source_addresses is None or 1 <= self.source_addresses <= 250,
            "source_addresses must be 1..250",
        )
        _check(self.connect_timeout_s > 0 and self.reply_timeout_s > 0, "timeouts must be > 0")
        _check(0 <= self.max_unsent_share <= 1, "max_unsent_share must be 0..1")
        _check(self.room is None or 1 <= len(self.room) <= 64, "room must be 1-64 characters")
        for name in ("draw_entrants", "bidders", "bids", "voters", "qna_users", "askers", "upvotes"):
            _check(0 <= getattr(self, name) <= 100_000, f"{name} must be 0..100000")
        _check(1 <= self.draw_winners <= 1000, "draw_winners must be 1..1000")
        _check(1 <= len(self.draw_keyword) <= 40 and self.draw_keyword.strip() == self.draw_keyword,
               "draw_keyword must be 1-40 characters without surrounding spaces")  # fmt: skip
        for name in (
            "draw_comment_share", "draw_repeat_share", "last_bid_share", "low_bid_share",
            "bid_retry_share", "vote_change_share", "vote_repeat_share", "ask_repeat_share",
            "upvote_repeat_share",
        ):  # fmt: skip
            _check(0 <= getattr(self, name) <= 1, f"{name} must be 0..1")
        _check(1 <= self.auction_s <= 3600, "auction_s must be 1..3600")
        _check(1 <= self.snipe_s <= 600 and 0 <= self.max_extension_s <= 3600, "snipe_s must be 1..600, "
               "max_extension_s 0..3600")  # fmt: skip
        _check(1 <= self.increment_cents < self.start_cents <= 10**10,
               "increment_cents must be >= 1 and below start_cents (at most 10^10)")  # fmt: skip
        _check(2 <= self.poll_options <= 6, "poll_options must be 2..6")
        _check(self.askers <= self.qna_users, "askers must be <= qna_users")
        if any(self.wants(t) for t in TOOL_SCENARIOS):
            _check(
                self.tools_window_s >= 3,
                f"the tools need 3 s between the ramp ({self.ramp:g} s) and 2 s before the drain: raise "
                f"duration_s to {self.ramp + 3 + 2 * DRAIN_S:g} or more, or lower ramp_s",
            )
        if self.wants("draw"):
            _check(self.draw_entrants >= 1, "draw needs draw_entrants >= 1")
            _check(self.duration_s >= 8, "draw needs duration_s >= 8 (a draw lasts at least 5 s)")
        if self.wants("poll"):
            _check(self.voters >= 1, "poll needs voters >= 1")
            _check(self.duration_s >= 8, "poll needs duration_s >= 8 (a poll lasts at least 5 s)")
        if self.wants("qna"):
            _check(self.askers >= 1, "qna needs askers >= 1")
        if self.wants("auction"):
            _check(self.bidders >= 1 and self.bids >= 1, "auction needs bidders >= 1 and bids >= 1")
            _check(
                self.auction_end_s + self.max_extension_s + 1 <= self.storm_end_s,
                f"the auction (ends at {self.auction_end_s:g} s, extended up to {self.max_extension_s} s, "
                f"then paid) does not fit in duration_s {self.duration_s:g}: raise duration_s to "
                f"{self.auction_end_s + self.max_extension_s + 1 + DRAIN_S:g} or lower auction_s",
            )
        if self.wants("chat-storm"):
            _check(
                self.commenters <= self.viewers,
                f"chat_rate {self.chat_rate}/s needs {self.commenters} commenting viewers "
                f"(a viewer may comment about once a second): raise viewers or lower chat_rate",
            )
        if self.wants("rush"):
            _check(self.buyers >= 1, "rush needs buyers >= 1")
            _check(
                self.rush_at_s + self.buyers / self.rush_rate + max(self.hold_s + 1, DRAIN_S)
                <= self.duration_s,
                f"the rush (starts at {self.rush_at_s:g} s, {self.buyers / self.rush_rate:g} s of reserves, "
                f"holds of {self.hold_s} s) does not fit in duration_s {self.duration_s:g}: "
                "raise duration_s or rush_rate, or lower hold_s",
            )
        if self.wants("group-buy"):
            _check(self.teams >= 1, "group-buy needs teams >= 1")
            _check(
                self.teams_at_s + 2 + max(self.team_s + 1, DRAIN_S) <= self.duration_s,
                f"teams open from {self.teams_at_s:g} s for 2 s and fail after team_s {self.team_s}: "
                f"raise duration_s to {self.teams_at_s + 2 + max(self.team_s + 1, DRAIN_S):g} or more",
            )

    # -- derived ------------------------------------------------------------------------------

    def wants(self, scenario: str) -> bool:
        return scenario in self.scenarios

    @property
    def name(self) -> str:
        if set(self.scenarios) == set(ALIASES["big-night"]):
            return "big-night"
        return "+".join(self.scenarios)

    @property
    def ramp(self) -> float:
        if self.ramp_s is not None:
            return self.ramp_s
        return min(10.0, self.duration_s / 4)

    @property
    def audience(self) -> int:
        """Viewers connected: the audience watches every storm and host message (a rush or a
        group buy alone brings only its buyers)."""
        return self.viewers if self.wants("audience") or self.storms else 0

    @property
    def storms(self) -> bool:
        return any(self.wants(s) for s in ("chat-storm", "like-storm", "host"))

    @property
    def commenters(self) -> int:
        if not self.wants("chat-storm") or not self.chat_rate:
            return 0
        return math.ceil(self.chat_rate / COMMENTS_PER_COMMENTER_S)

    @property
    def likers(self) -> int:
        if not self.wants("like-storm") or not self.like_rate:
            return 0
        return min(math.ceil(self.like_rate / LIKES_PER_LIKER_S), max(self.viewers, 1))

    @property
    def buyer_count(self) -> int:
        return self.buyers if self.wants("rush") else 0

    @property
    def team_members(self) -> int:
        return self.teams * self.team_size if self.wants("group-buy") else 0

    @property
    def entrant_count(self) -> int:
        return self.draw_entrants if self.wants("draw") else 0

    @property
    def bidder_count(self) -> int:
        return self.bidders if self.wants("auction") else 0

    @property
    def voter_count(self) -> int:
        return self.voters if self.wants("poll") else 0

    @property
    def qna_count(self) -> int:
        return self.qna_users if self.wants("qna") else 0

    @property
    def tool_users(self) -> int:
        """Users of the interaction tools, each a connection of its own: the draw's entrants,
        then the bidders, the voters and the Q&A users."""
        return self.entrant_count + self.bidder_count + self.voter_count + self.qna_count

    @property
    def connections(self) -> int:
        host = 1 if self.wants("host") else 0
        return self.audience + self.buyer_count + self.team_members + self.tool_users + host

    @property
    def worker_count(self) -> int:
        if self.workers is not None:
            return self.workers
        return max(1, math.ceil(self.connections / 8000))

    @property
    def source_count(self) -> int:
        if self.source_addresses is not None:
            return self.source_addresses
        return max(1, math.ceil(self.connections / CONNECTIONS_PER_SOURCE))

    @property
    def storm_start_s(self) -> float:
        return self.ramp

    @property
    def storm_end_s(self) -> float:
        return max(self.ramp, self.duration_s - DRAIN_S)

    @property
    def rush_at_s(self) -> float:
        return self.ramp + 2.0

    @property
    def teams_at_s(self) -> float:
        return self.ramp + 3.0

    @property
    def tools_at_s(self) -> float:
        """When the tools' users start: draws, the auction and the poll are open by then."""
        return self.ramp

    @property
    def tools_close_s(self) -> float:
        """When the draws and the poll close: a second before the drain, so that every user
        hears the result within the load phase."""
        return self.storm_end_s - 1.0

    @property
    def tools_window_s(self) -> float:
        return self.tools_close_s - 1.0 - self.tools_at_s

    @property
    def auction_end_s(self) -> float:
        """The auction's planned end, before any extension."""
        return self.tools_at_s + self.auction_s

    def check_capacity(self) -> None:
        per_worker = math.ceil(self.connections / self.worker_count)
        _check(
            per_worker <= MAX_CONNECTIONS_PER_WORKER,
            f"{self.connections} connections over {self.worker_count} workers is {per_worker} each; "
            f"at most {MAX_CONNECTIONS_PER_WORKER} per process: raise workers",
        )

    def parameters(self) -> dict[str, Any]:
        """Every parameter, as given and as derived, for the result file."""
        out = dataclasses.asdict(self)
        out["scenarios"] = list(self.scenarios)
        out.update(
            ramp_s=self.ramp,
            workers=self.worker_count,
            source_addresses=self.source_count,
            connections=self.connections,
            commenters=self.commenters,
            likers=self.likers,
            tool_users=self.tool_users,
        )
        return out

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["scenarios"] = list(self.scenarios)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        return cls(**{**data, "scenarios": tuple(data["scenarios"])})


FIELDS = {f.name for f in dataclasses.fields(Plan)} - {"scenarios"}
#: Settings a TOML file may have besides the plan's: the target and the output.
OUTSIDE_PLAN = ("url", "spawn", "json", "report", "secret", "data_dir", "allow_shortfall")


def expand(names: list[str]) -> tuple[str, ...]:
    """Scenario names with aliases expanded, in canonical order, without repeats."""
    wanted: set[str] = set()
    for name in names:
        if name in ALIASES:
            wanted.update(ALIASES[name])
        elif name in SCENARIOS:
            wanted.add(name)
        else:
            raise PlanError(f"unknown scenario {name!r}; choose from {', '.join((*SCENARIOS, *ALIASES))}")
    return tuple(s for s in SCENARIOS if s in wanted)


def load_toml(path: Path) -> dict[str, Any]:
    """Plan fields from a TOML file: the same names as the flags, with _ for -; `scenario` may
    be a string or a list."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PlanError(f"cannot read {path}: {exc}") from exc
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name in ("scenario", "scenarios"):
            out["scenarios"] = [value] if isinstance(value, str) else list(value)
        elif name in FIELDS or name in OUTSIDE_PLAN:
            out[name] = value
        else:
            raise PlanError(f"{path}: unknown setting {key!r}")
    return out
