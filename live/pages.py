"""The browser pages: the host console (/console) and the viewer page (/r/{room}).

Plain HTML, CSS and JavaScript modules shipped as package data in live/static/, no build step
and nothing fetched from elsewhere. The pages speak the same public HTTP API and WebSocket
protocol as any client. A strict Content-Security-Policy keeps a hostile comment or product
title from running script even if a bug ever put it into the page as HTML.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).parent / "static"

#: Scripts and styles only from this server; images may come from a product's image URL.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' https: http: data:; "
    "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


def _page(name: str) -> web.Response:
    response = web.Response(body=(STATIC / name).read_bytes(), content_type="text/html", charset="utf-8")
    response.headers["Content-Security-Policy"] = CSP
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


async def console(request: web.Request) -> web.Response:
    return _page("console.html")


async def viewer(request: web.Request) -> web.Response:
    return _page("viewer.html")


async def _static_headers(request: web.Request, response: web.StreamResponse) -> None:
    if request.path.startswith("/static/"):
        response.headers.setdefault("Cache-Control", "no-cache")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/console", console)
    app.router.add_get("/r/{room_id}", viewer)
    app.router.add_static("/static/", STATIC, show_index=False, follow_symlinks=False)
    app.on_response_prepare.append(_static_headers)
