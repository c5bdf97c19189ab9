"""WebSocket close codes the server sends (docs/protocol.md says what a client does)."""

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
