"""WebSocket close codes the server sends (docs/protocol.md lists them with what a client does)."""

#: The server is shutting down or restarting: reconnect after the hinted delay.
GOING_AWAY = 1001
#: The token expired while connected: get a fresh token, then reconnect.
TOKEN_EXPIRED = 4401
