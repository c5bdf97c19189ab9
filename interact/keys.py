"""Redis key names of the interaction tools; nothing outside interact/ builds them.

Every key of a room's tools carries the room's hash tag ``{room id}`` (as the room's own keys
do, gateway/keys.py), so one script can change a tool and read the room's ban list and mutes on
one Redis Cluster slot. A tool's id is unique across rooms (``d_``, ``a_``, ``p_`` + random)."""

from __future__ import annotations


class ToolKeys:
    """The keys of one tool (a draw, an auction, a poll) of a room."""

    def __init__(self, prefix: str, room_id: str, tool_id: str) -> None:
        self.base = f"{prefix}:tool:{{{room_id}}}:{tool_id}"
        #: hash: the tool's spec and state (each tool's module documents its fields)
        self.tool = self.base
        #: set: the room's open tools (ids), what a new viewer's welcome shows
        self.room_tools = room_tools(prefix, room_id)

    def part(self, name: str) -> str:
        """A key of the tool beside its hash (entries, bids, votes, idempotency...)."""
        return f"{self.base}:{name}"


def room_tools(prefix: str, room_id: str) -> str:
    """Set: the ids of the room's tools that are open or not yet settled."""
    return f"{prefix}:tools:{{{room_id}}}"


def qna(prefix: str, room_id: str, name: str) -> str:
    """A key of the room's Q&A (interact/questions.py: its questions, open queue, upvotes, pin)."""
    return f"{prefix}:qna:{{{room_id}}}:{name}"


def due(prefix: str) -> str:
    """Sorted set: ``<room id>/<tool id>`` scored by when (ms) the tool's next step is due (a
    close, an offer's expiry). Its own hash tag: every process reads it."""
    return f"{{{prefix}:tools}}:due"
