"""aiohttp's per-connection HTTP protocol, as this server runs it.

Two changes from aiohttp's own. A malformed request (a bad request line, header or chunking) is
answered with the usual JSON error, logged as one warning line and counted in /metrics
(``live_errors_total{kind="bad_request"}``): aiohttp logs each one as an ERROR with a
traceback, and anyone who can reach the port can fill a log with those. And responses say
``Server: live``, not aiohttp's and Python's versions (see also ``live.app``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_request import BaseRequest

from live.http_api import error_response

log = logging.getLogger(__name__)

#: The Server header of every response.
SERVER_NAME = "live"

#: Characters of a bad request's description kept in the log line.
_MAX_DETAIL = 200


class HttpProtocol(web.RequestHandler):
    def __init__(self, manager: web.Server, on_bad_request: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(manager, loop=asyncio.get_running_loop(), **kwargs)
        self._on_bad_request = on_bad_request

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError):
            response = super().handle_error(request, status, exc, message)
        else:
            self._on_bad_request()
            detail = (exc.message or type(exc).__name__).strip()
            log.warning(
                "bad http request",
                extra={"remote": request.remote, "status": status, "error": detail[:_MAX_DETAIL]},
            )
            if request.writer.output_size > 0:
                raise ConnectionError("a response was sent already; cannot answer the bad request")
            first_line = detail.splitlines()[0].rstrip(":") if detail else "unreadable"
            response = error_response(status, "bad_request", f"malformed HTTP request: {first_line}")
            response.force_close()
        response.headers["Server"] = SERVER_NAME
        return response


def protocol_factory(
    server: web.Server, on_bad_request: Callable[[], None], **kwargs: Any
) -> Callable[[], HttpProtocol]:
    """A factory of HttpProtocol for ``server`` (the aiohttp Server of an AppRunner, which
    tracks the connections for shutdown); ``kwargs`` are aiohttp's RequestHandler options."""
    return lambda: HttpProtocol(server, on_bad_request, **kwargs)
