"""The one error of the interaction tools: a refusal with a stable ``code`` (the WebSocket
error frame's, or the HTTP API's), a message, and optional data. A refusal changes nothing."""

from __future__ import annotations

from typing import Any


class InteractError(Exception):
    def __init__(self, code: str, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data
