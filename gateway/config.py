"""The gateway's limits and timings. live/ builds one from its settings and passes it down."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GatewayConfig:
    key_prefix: str = "live"
    #: Flush period of chat and like updates: at most 1000/tick_ms batch frames per second.
    #: 125 ms leaves room, within 10 frames a second, for two priority events a second.
    tick_ms: int = 125
    #: Comments a viewer gets per tick at most; the rest are counted as skipped. Hosts and
    #: moderators get every comment.
    comments_per_tick: int = 10
    #: A room's viewer comments published to every node per second at most, room-wide (counted
    #: in publish.lua, in the room's Redis slot): what a node receives from a room's chat does
    #: not grow with the room's chatters on all nodes. A comment past it is still accepted and
    #: shown on its sender's node; elsewhere it is as if sampled away. 0: no budget.
    comment_fanout_per_s: int = 100
    #: A room's likes total is published to every node at most once per this many ms,
    #: room-wide (judged in likes.lua by the room's shard clock): what a node receives from a
    #: room's likes does not grow with the number of nodes. No like is lost: a total held back
    #: is published by a follow-up within about one interval. 0: published every tick.
    likes_gauge_interval_ms: int = 100
    max_comment_chars: int = 200
    max_host_message_chars: int = 2000
    #: Per connection: a burst of this many comments, refilled at comment_rate_per_s.
    comment_burst: int = 5
    comment_rate_per_s: float = 1.0
    #: Per connection: any client message, control frames (ping, pong) included.
    message_burst: int = 40
    message_rate_per_s: float = 20.0
    #: A message past that rate is refused (rate_limited); more than message_burst refusals
    #: within about this long close the connection (1008): refusals are forgiven at
    #: message_burst / flood_window_s a second, so only a sustained flood closes.
    flood_window_s: float = 10.0
    #: Per connection: likes counted per second; a storm beyond is capped.
    likes_per_s: int = 50
    #: Comments in the welcome snapshot.
    welcome_comments: int = 20
    #: Non-chat events kept per room for resume; comments kept for the welcome; how long an
    #: idle room keeps them.
    history_size: int = 1000
    chat_history_size: int = 200
    history_ttl_s: int = 86_400
    #: A room's ban set and mutes are kept this long after its last ban / mute, then expire.
    #: At least the longest mute (30 days), so a mute never ends early.
    ban_retention_s: int = 30 * 86_400
    max_frame_bytes: int = 64 * 1024
    #: Outgoing bytes queued for one connection: past soft, chat and likes are skipped for it;
    #: past hard, or past soft for longer than slow_grace_s, it is closed (4409).
    send_buffer_soft_bytes: int = 64 * 1024
    send_buffer_hard_bytes: int = 1024 * 1024
    slow_grace_s: float = 10.0
    max_connections: int = 15_000
    max_connections_per_ip: int = 15_000
    handshake_timeout_s: float = 10.0
    ping_interval_s: float = 25.0
    #: Banned words (any language); matched case- and width-insensitively.
    banned_words: tuple[str, ...] = ()
