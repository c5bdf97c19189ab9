"""The pages load the JavaScript client package from /static/live-client.js: a committed copy
of clients/js/src/live-client.js (the server's package data holds only live/, so an installed
server has it too). The two must be the same bytes."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from live.server import Running

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "clients" / "js" / "src" / "live-client.js"
COPY = REPO / "live" / "static" / "live-client.js"


def test_the_pages_copy_of_the_js_client_is_the_package_file() -> None:
    assert COPY.read_bytes() == PACKAGE.read_bytes(), (
        "live/static/live-client.js differs from clients/js/src/live-client.js: "
        "run `cp clients/js/src/live-client.js live/static/live-client.js`"
    )


async def test_the_server_serves_the_client_to_the_pages(
    server: Running, http: aiohttp.ClientSession
) -> None:
    async with http.get("/static/live-client.js") as response:
        assert response.status == 200
        assert "javascript" in response.headers["Content-Type"]
        assert await response.read() == PACKAGE.read_bytes()
