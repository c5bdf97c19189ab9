"""WebSocket close codes the server sends (docs/protocol.md says what a client does), and the
reason each is sent with (``Close``): the one table of what goes on the wire when we close."""

from __future__ import annotations

import enum
import json

#: The server is shutting down or restarting: reconnect after the hinted delay.
GOING_AWAY = 1001
#: The client sent a fragmented message (v1 takes whole frames only).
UNSUPPORTED = 1003
#: A text frame that is not valid UTF-8.
INVALID_DATA = 1007
#: The client kept flooding after being told to slow down.
POLICY = 1008
#: The token expired while connected: get a fresh token, then reconnect.
TOKEN_EXPIRED = 4401
#: The user was banned from the room: do not reconnect.
BANNED = 4403
#: Nothing heard from the client for two ping intervals.
IDLE_TIMEOUT = 4408
#: The client read too slowly and fell too far behind: reconnect (and resume).
SLOW_CONSUMER = 4409


@enum.unique
class Close(enum.Enum):
    """Every close the server sends, with its reason: the code and the reason's ``code`` field
    (the reason is JSON, so a client can tell closes of one code apart; docs/protocol.md)."""

    #: Shutting down or restarting (with ``retry_ms``).
    SHUTDOWN = (GOING_AWAY, "shutdown")
    #: A backend failed while joining (with ``retry_ms``).
    UNAVAILABLE = (GOING_AWAY, "unavailable")
    FRAGMENTED = (UNSUPPORTED, "fragmented")
    #: (the one reason that is plain text, not JSON, as RFC 6455 clients show it)
    INVALID_UTF8 = (INVALID_DATA, "")
    FLOOD = (POLICY, "flood")
    TOKEN_EXPIRED = (TOKEN_EXPIRED, "token_expired")
    BANNED = (BANNED, "banned")
    IDLE_TIMEOUT = (IDLE_TIMEOUT, "idle_timeout")
    SLOW_CONSUMER = (SLOW_CONSUMER, "slow_consumer")

    def __init__(self, code: int, name: str) -> None:
        self.code = code
        self._reason = json.dumps({"code": name}, separators=(",", ":")) if name else "invalid UTF-8"

    def reason(self, **fields: int) -> str:
        """The reason text on the wire, with any extra fields (``retry_ms``) after ``code``."""
        if not fields:
            return self._reason
        return self._reason[:-1] + "," + json.dumps(fields, separators=(",", ":"))[1:]
