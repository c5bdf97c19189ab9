"""clients/js/examples/viewer.html, the JavaScript client's example viewer page, in Chromium
against a real server: the page's files are served from the repository by a static file server
of the test's own (another origin than live's, as a developer would serve them; a loopback one,
since Chromium blocks a public page from reaching a loopback server), and it joins the room on
the live server with first-message auth."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
import pytest
from browser import PageErrors
from conftest import bearer
from playwright.async_api import Browser, Page, expect
from wsclient import Client

from live.auth import Role
from live.server import Running

pytestmark = pytest.mark.timeout(60)

PACKAGE = Path(__file__).resolve().parents[1] / "clients" / "js"
ROOM = "example"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    extensions_map: ClassVar[dict[str, str]] = {".js": "text/javascript", ".html": "text/html"}

    def log_message(self, format: str, *args: object) -> None:
        pass  # a request log per file would drown the test's output; failures show in the page


@pytest.fixture
def origin() -> Iterator[str]:
    """clients/js over HTTP on a free loopback port: the example's own origin."""
    handler = functools.partial(_Quiet, directory=str(PACKAGE))
    files = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=files.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{files.server_address[1]}"
    finally:
        files.shutdown()
        files.server_close()
        thread.join(10)


async def post(http: aiohttp.ClientSession, host_token: str, path: str, body: dict[str, Any]) -> Any:
    async with http.post(path, json=body, headers=bearer(host_token)) as resp:
        assert resp.status == 201, await resp.text()
        return await resp.json()


async def open_example(browser: Browser, url: str, errors: PageErrors, ws_urls: list[str]) -> Page:
    """The page at ``url``; the URLs of the WebSockets it opens go into ``ws_urls``."""
    context = await browser.new_context(locale="zh-CN")
    page = errors.watch(await context.new_page())
    page.on("websocket", lambda ws: ws_urls.append(ws.url))
    await page.goto(url)
    return page


async def test_the_example_viewer_shows_the_room_chats_and_follows_the_pin(
    server: Running, http: aiohttp.ClientSession, host_token: str, browser: Browser, origin: str
) -> None:
    await post(http, host_token, "/api/rooms", {"id": ROOM, "title": "示例直播间"})
    products = [
        await post(http, host_token, f"/api/rooms/{ROOM}/products", {"title": title, "price_cents": price})
        for title, price in (("明前龙井", 12800), ("碧螺春", 5600))
    ]
    host = await Client.connect(http, ROOM, host_token)
    await host.send({"type": "pin_product", "rid": "p1", "product_id": products[0]["id"]})
    assert (await host.recv_until(lambda m: m.get("rid") == "p1"))["type"] == "ack"

    token = server.services.auth.mint("ann", ROOM, Role.VIEWER, 600)
    errors = PageErrors()
    ws_urls: list[str] = []
    url = f"{origin}/examples/viewer.html?server={server.url}&room={ROOM}#token={token}"
    page = await open_example(browser, url, errors, ws_urls)

    await expect(page.get_by_test_id("state")).to_have_attribute("data-state", "live")
    await expect(page.get_by_test_id("title")).to_have_text("示例直播间")
    await expect(page.get_by_test_id("pinned")).to_have_text("明前龙井 ¥128.00")
    assert "token" not in page.url and ws_urls and all("token" not in url for url in ws_urls), ws_urls

    await page.get_by_test_id("comment-input").fill("好喝吗")
    await page.get_by_test_id("send").click()
    await expect(page.get_by_test_id("chat-line")).to_have_text(["ann: 好喝吗"])
    await expect(page.get_by_test_id("comment-input")).to_have_value("")
    await host.send({"type": "comment", "rid": "c1", "text": "好喝"})
    await expect(page.get_by_test_id("chat-line")).to_have_text(["ann: 好喝吗", "host1: 好喝"])

    await host.send({"type": "pin_product", "rid": "p2", "product_id": products[1]["id"]})
    await expect(page.get_by_test_id("pinned")).to_have_text("碧螺春 ¥56.00")
    await host.close()
    assert errors.errors == [], errors.errors


async def test_the_example_viewer_says_why_a_guest_is_refused(
    server: Running, http: aiohttp.ClientSession, host_token: str, browser: Browser, origin: str
) -> None:
    await post(http, host_token, "/api/rooms", {"id": ROOM, "title": "要登录"})
    errors = PageErrors()
    ws_urls: list[str] = []
    page = await open_example(
        browser, f"{origin}/examples/viewer.html?server={server.url}&room={ROOM}", errors, ws_urls
    )
    await expect(page.get_by_test_id("state")).to_have_attribute("data-state", "refused")
    await expect(page.get_by_test_id("notice")).not_to_be_empty()
    assert len(ws_urls) == 1, ws_urls  # refused for good: not tried again
    assert errors.errors == [], errors.errors
