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
#: A server bug while admitting a first-message handshake (logged).
INTERNAL_ERROR = 1011
#: No usable credential (first-message auth), or the token expired while connected: get a
#: (fresh) token, then reconnect.
TOKEN_EXPIRED = 4401
#: Banned from the room, or (first-message auth) the token is for another room: do not
#: reconnect with it.
BANNED = 4403
#: (first-message auth) No such room.
NOT_FOUND = 4404
#: Nothing heard from the client for two ping intervals.
IDLE_TIMEOUT = 4408
#: The client read too slowly and fell too far behind: reconnect (and resume).
SLOW_CONSUMER = 4409


#: The ``retry_ms`` of an ``unavailable`` close (a backend failed or was too slow while joining):
#: long enough for a failover or a storm to pass, short enough not to lose the show.
UNAVAILABLE_RETRY_MS = 1000


@enum.unique
class Close(enum.Enum):
    """Every close the server sends, with its reason: the code and the reason's ``code`` field
    (the reason is JSON, so a client can tell closes of one code apart; docs/protocol.md)."""

    #: Shutting down or restarting (with ``retry_ms``).
    SHUTDOWN = (GOING_AWAY, "shutdown")
    #: A backend failed or was too slow while joining (with ``retry_ms``).
    UNAVAILABLE = (GOING_AWAY, "unavailable")
    FRAGMENTED = (UNSUPPORTED, "fragmented")
    #: (the one reason that is plain text, not JSON, as RFC 6455 clients show it)
    INVALID_UTF8 = (INVALID_DATA, "")
    FLOOD = (POLICY, "flood")
    TOKEN_EXPIRED = (TOKEN_EXPIRED, "token_expired")
    BANNED = (BANNED, "banned")
    # A handshake refused after the upgrade (first-message auth: ``refusal`` below): the
    # ``error`` frame before the close has the same code and says why.
    # (TOKEN_EXPIRED and BANNED name the members here: their codes are 4401 and 4403)
    TOKEN_MISSING = (4401, "token_missing")
    TOKEN_INVALID = (4401, "token_invalid")
    WRONG_ROOM = (4403, "wrong_room")
    ROOM_NOT_FOUND = (NOT_FOUND, "room_not_found")
    INTERNAL = (INTERNAL_ERROR, "internal")
    IDLE_TIMEOUT = (IDLE_TIMEOUT, "idle_timeout")
    SLOW_CONSUMER = (SLOW_CONSUMER, "slow_consumer")

    def __init__(self, code: int, name: str) -> None:
        self.code = code
        self.code_name = name
        self._reason = json.dumps({"code": name}, separators=(",", ":")) if name else "invalid UTF-8"

    def reason(self, **fields: int) -> str:
        """The reason text on the wire, with any extra fields (``retry_ms``) after ``code``."""
        if not fields:
            return self._reason
        return self._reason[:-1] + "," + json.dumps(fields, separators=(",", ":"))[1:]


def refusal(code: str) -> Close:
    """The close for a handshake refused with ``code`` after the upgrade (first-message auth:
    the HTTP status a refusal gets before the upgrade has no place there). A code without a
    close of its own is a server bug's (``internal``)."""
    return _REFUSALS.get(code, Close.INTERNAL)


#: Refusal code -> its close: every close whose reason names a refusal (``unavailable``'s
#: reason also carries ``retry_ms``).
_REFUSALS = {
    close.code_name: close
    for close in Close
    if close.code in (TOKEN_EXPIRED, BANNED, NOT_FOUND, INTERNAL_ERROR) or close is Close.UNAVAILABLE
}
