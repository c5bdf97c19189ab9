"""The whole show in a real Chromium: a host sets up a room and opens a flash sale from the
console, two viewers buy on their phones, and the console shows the orders and the stock."""

from __future__ import annotations

import aiohttp
import pytest
from browser import PageErrors, open_page, screenshot
from conftest import bearer
from playwright.async_api import Browser, Page, expect

from live.auth import ANY_ROOM, Role
from live.server import Running

pytestmark = pytest.mark.timeout(120)


async def buy_one(viewer: Page) -> None:
    card = viewer.get_by_test_id("sale-card").first
    await expect(card.get_by_test_id("buy")).to_be_enabled(timeout=15_000)
    await card.get_by_test_id("buy").click()
    await expect(card.get_by_test_id("hold")).to_be_visible()
    await card.get_by_test_id("pay").click()
    await expect(card.get_by_test_id("order-status")).to_have_attribute("data-status", "confirmed")


async def test_a_host_sells_to_two_viewers_and_sees_the_orders(server: Running, browser: Browser) -> None:
    errors = PageErrors()
    host = server.services.auth.mint("host", ANY_ROOM, Role.HOST, 600)
    console = await open_page(browser, f"{server.url}/console#token={host}", errors)

    await console.get_by_test_id("room-id-input").fill("spring")
    await console.get_by_test_id("room-title-input").fill("春季上新 Spring drop")
    await console.get_by_test_id("create-room").click()
    await expect(console.get_by_test_id("room-select")).to_have_value("spring")

    await console.get_by_test_id("product-title-input").fill("西湖龙井 Longjing tea")
    await console.get_by_test_id("product-price-input").fill("19.99")
    await console.get_by_test_id("add-product").click()
    products = console.get_by_test_id("sale-product-select").locator("option", has_text="西湖龙井")
    await expect(products).to_have_count(1)
    await console.get_by_test_id("sale-product-select").select_option(label=await products.inner_text())
    await console.get_by_test_id("sale-stock-input").fill("5")
    await console.get_by_test_id("sale-limit-input").fill("2")
    await console.get_by_test_id("sale-hold-input").fill("120")
    await console.get_by_test_id("open-sale").click()
    await expect(console.get_by_test_id("stock-left")).to_have_text("5")
    await console.get_by_test_id("host-message-input").fill("秒杀开始 Flash sale is live")
    await console.get_by_test_id("send-host-message").click()

    viewers = []
    for name in ("xiaoming", "amy"):
        token = server.services.auth.mint(name, "spring", Role.VIEWER, 600)
        viewers.append(await open_page(browser, f"{server.url}/r/spring#token={token}", errors, phone=True))
    for viewer in viewers:
        await expect(viewer.get_by_test_id("state")).to_have_attribute("data-state", "live", timeout=15_000)
        await expect(viewer.get_by_test_id("sale-card")).to_have_count(1)
    await screenshot(viewers[0], "flow-viewer-before-buying")

    for viewer in viewers:
        await buy_one(viewer)
    await screenshot(viewers[1], "flow-viewer-order-confirmed")

    await expect(console.get_by_test_id("orders-count")).to_have_text("2", timeout=15_000)
    await expect(console.get_by_test_id("order-row")).to_have_count(2)
    await expect(console.get_by_test_id("stock-left")).to_have_text("3", timeout=15_000)
    await expect(console.get_by_test_id("sold")).to_have_text("2")
    await expect(console.get_by_test_id("gmv")).to_contain_text("39.98")
    await screenshot(console, "flow-console-after-the-sale")

    # What the pages showed is what the ledger holds.
    async with aiohttp.ClientSession(base_url=server.url) as http:
        async with http.get("/api/rooms/spring/sales", headers=bearer(host)) as response:
            sale = (await response.json())["sales"][0]
        async with http.get(f"/api/sales/{sale['id']}/orders", headers=bearer(host)) as response:
            orders = (await response.json())["orders"]
    assert sorted(o["user_id"] for o in orders) == ["amy", "xiaoming"]
    assert sum(o["amount_cents"] for o in orders) == 2 * 1999
    assert errors.errors == []
