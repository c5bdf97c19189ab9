"""Structured logging: one line per event, as text or JSON, with secrets scrubbed.

Call sites log an event name and put the details in ``extra``::

    log.info("listening", extra={"host": host, "port": port})

Text:  ``2026-11-23T11:00:00.123Z INFO live.server listening host=127.0.0.1 port=8080``
JSON:  ``{"ts": "...", "level": "info", "logger": "live.server", "event": "listening", ...}``

A server's lines start their fields with ``node=<its node name>`` (live.nodes).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any, TextIO

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

# Tokens must never reach a log, whoever logged them: JWTs, bearer headers, token= queries,
# passwords in URLs (user:password@ or ?password=, as the embedded Redis's URL has it).
_SECRETS = re.compile(
    r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"
    r"|(?<=[Bb]earer )\S+"
    r"|(?<=token=)[^&\s\"']+"
    r"|(?<=password=)[^&\s\"']+"
    r"|(?<=://)[^/@\s]*:[^/@\s]*(?=@)"
)
_RECORD_FIELDS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def scrub(text: str) -> str:
    return _SECRETS.sub("[redacted]", text)


class _Formatter(logging.Formatter):
    def __init__(self, as_json: bool, node: str | None = None) -> None:
        super().__init__()
        self.as_json = as_json
        #: The node name, first field of every line: the logs of many nodes are read together.
        self.node = node

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {k: v for k, v in vars(record).items() if k not in _RECORD_FIELDS}
        if self.node is not None:
            # ``node`` is this process's node name, first on every line. A record's own ``node``
            # (the cluster code logs the Redis node it spoke to so) is kept as ``redis_node``.
            own = fields.pop("node", self.node)
            fields = {"node": self.node, **({} if own == self.node else {"redis_node": own}), **fields}
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        ts += f".{int(record.msecs):03d}Z"
        if record.exc_info:
            fields["exc"] = self.formatException(record.exc_info)
        if self.as_json:
            line = json.dumps(
                {
                    "ts": ts,
                    "level": record.levelname.lower(),
                    "logger": record.name,
                    "event": record.getMessage(),
                    **fields,
                },
                default=str,
                ensure_ascii=False,
            )
        else:
            pairs = " ".join(f"{k}={_text_value(v)}" for k, v in fields.items())
            line = f"{ts} {record.levelname} {record.name} {record.getMessage()}"
            if pairs:
                line += " " + pairs
        return scrub(line)


def _text_value(value: Any) -> str:
    text = str(value)
    if not text or any(c in text for c in ' "=\n'):
        return json.dumps(text, ensure_ascii=False)
    return text


def configure(level: str, fmt: str, stream: TextIO | None = None, node: str | None = None) -> None:
    """Route every logger (ours, aiohttp's, asyncio's) through one handler; with ``node``,
    every line carries ``node=<name>``."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_Formatter(as_json=fmt == "json", node=node))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class AccessLogger(AbstractAccessLogger):
    """aiohttp access log without query strings (they may carry a token)."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        self.logger.info(
            "http",
            extra={
                "method": request.method,
                "path": request.path,
                "status": response.status,
                "bytes": response.body_length,
                "ms": round(time * 1000, 2),
                "remote": request.remote,
            },
        )
