"""The pages run on the JavaScript client package: live/static/live-client.js is a copy of
clients/js/src/live-client.js (the package's one module; the server's wheel can only ship
files inside live/), kept identical here."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "clients" / "js" / "src" / "live-client.js"
SERVED = ROOT / "live" / "static" / "live-client.js"


def test_the_pages_serve_the_client_package_as_it_is() -> None:
    assert SERVED.read_bytes() == PACKAGE.read_bytes(), (
        "live/static/live-client.js differs from the JavaScript client: "
        "cp clients/js/src/live-client.js live/static/live-client.js"
    )


def test_no_page_keeps_a_websocket_client_of_its_own() -> None:
    # the pages' scripts speak the protocol only through the package
    for script in (ROOT / "live" / "static").glob("*.js"):
        if script.name != SERVED.name:
            assert "new WebSocket(" not in script.read_text(encoding="utf-8"), script.name
