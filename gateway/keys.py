"""Redis key and channel names of a room. Every name of one room carries the hash tag
``{room id}``, so a room's keys and its shard channel live in one Redis Cluster slot and the
Lua scripts run unchanged on a cluster."""

from __future__ import annotations


class RoomKeys:
    def __init__(self, prefix: str, room_id: str) -> None:
        base = f"{prefix}:room:{{{room_id}}}"
        self.meta = base  #: hash: id, title, host_id, ... (written by live/)
        self.products = f"{base}:products"  #: hash: product id -> product JSON (live/)
        self.seq = f"{base}:seq"  #: counter: the room's last event sequence number
        self.history = f"{base}:history"  #: stream: non-chat events by seq (id "<seq>-0")
        self.chat = f"{base}:chat"  #: stream: recent comments by seq (id "<seq>-0")
        self.state = f"{base}:state"  #: hash: pinned, slow_mode_s, cleared_seq, likes, history_floor
        self.mutes = f"{base}:mutes"  #: hash: user id -> muted until (ms)
        self.banned = f"{base}:banned"  #: set of user ids
        self.slow = f"{base}:slow"  #: hash: user id -> last comment time (ms), for slow mode
        self.fanout = f"{base}:fanout"  #: hash: w = second, n = comments published in it (budget)
        self.presence = f"{base}:presence"  #: hash: node id -> "count|updated ms"
        self.channel = f"{base}:events"  #: pub/sub channel of the room's events
