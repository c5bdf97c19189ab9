# Chinese text is written with full-width punctuation, as the page shows it.
# ruff: noqa: RUF001
"""The viewer page (/r/{room}) in Chromium, against an in-process server: watching (Chinese text,
host messages, chat, likes), buying (one tap, hold, pay, the order in the ledger, a coupon,
sold out, an expired hold), a hold kept across a reload, reconnecting with resume, and a group
buy through its share link.

Screenshots land in test-artifacts/viewer-*.png."""

from __future__ import annotations

import json
import re
from typing import Any

import aiohttp
import pytest
from browser import DESKTOP, PHONE, PageErrors, screenshot
from conftest import bearer
from playwright.async_api import Browser, Page, WebSocketRoute, expect
from wsclient import Client

from live.auth import Role
from live.server import Running

ROOM = "spring"
TITLE = "春季上新 · 明前龙井专场"
#: Product pictures come from this host; the browser gets them from the test, not the network.
IMAGES = "http://img.test/"
TEA_SVG = """<svg xmlns="http://www.w3.org/2000/svg" width="120" height="120" viewBox="0 0 120 120">
<defs><linearGradient id="g" x1="0" y1="0" x2="1" y2="1">
<stop offset="0" stop-color="#d9f99d"/><stop offset="1" stop-color="#4d7c0f"/></linearGradient></defs>
<rect width="120" height="120" fill="url(#g)"/>
<path d="M30 52h52v10c0 16-11 28-26 28S30 78 30 62z" fill="#fff"/>
<path d="M82 58h6a9 9 0 0 1 0 18h-8" fill="none" stroke="#fff" stroke-width="6"/>
<path d="M48 30c-6 8 6 10 0 18M60 26c-6 8 6 10 0 18" fill="none" stroke="#fff" stroke-width="4"/>
</svg>"""

pytestmark = pytest.mark.timeout(60)


# -- helpers --------------------------------------------------------------------------------


def viewer_token(server: Running, user: str) -> str:
    return server.services.auth.mint(user, ROOM, Role.VIEWER, 600)


async def make_room(http: aiohttp.ClientSession, host_token: str, **body: Any) -> None:
    async with http.post(
        "/api/rooms", json={"id": ROOM, "title": TITLE, **body}, headers=bearer(host_token)
    ) as resp:
        assert resp.status == 201, await resp.text()


async def add_product(
    http: aiohttp.ClientSession, host_token: str, title: str, price_cents: int, image: str | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"title": title, "price_cents": price_cents}
    if image:
        body["image_url"] = IMAGES + image
    async with http.post(f"/api/rooms/{ROOM}/products", json=body, headers=bearer(host_token)) as resp:
        assert resp.status == 201, await resp.text()
        return dict(await resp.json())


async def open_sale(
    http: aiohttp.ClientSession, host_token: str, product: dict[str, Any], **body: Any
) -> dict[str, Any]:
    async with http.post(
        f"/api/rooms/{ROOM}/sales",
        json={"product_id": product["id"], "stock": 5, **body},
        headers=bearer(host_token),
    ) as resp:
        assert resp.status == 201, await resp.text()
        return dict(await resp.json())


async def host_says(host: Client, message: dict[str, Any]) -> None:
    rid = f"h{id(message)}"
    await host.send({**message, "rid": rid})
    answer = await host.recv_until(lambda m: m.get("rid") == rid)
    assert answer["type"] == "ack", answer


async def open_viewer(
    browser: Browser,
    url: str,
    errors: PageErrors,
    *,
    phone: bool = True,
    before: Any = None,
) -> Page:
    """Like browser.open_page, with product pictures served and an optional hook (a WebSocket
    route, say) installed before the page loads."""
    context = await browser.new_context(**(PHONE if phone else DESKTOP), locale="zh-CN")
    page = errors.watch(await context.new_page())
    await page.route(IMAGES + "**", lambda route: route.fulfill(body=TEA_SVG, content_type="image/svg+xml"))
    if before is not None:
        await before(page)
    await page.goto(url)
    await expect(page.get_by_test_id("state")).to_have_attribute("data-state", "live")
    return page


async def snap(page: Page, name: str) -> None:
    """A screenshot with the entrance animations finished (the endless ones keep going)."""
    await page.evaluate(
        """() => document.getAnimations()
            .filter((a) => a.effect.getComputedTiming().iterations !== Infinity)
            .forEach((a) => a.finish())"""
    )
    await screenshot(page, name)


def url_for(server: Running, user: str | None) -> str:
    url = f"{server.url}/r/{ROOM}"
    return url if user is None else f"{url}#token={viewer_token(server, user)}"


def card(page: Page, sale: dict[str, Any]) -> Any:
    return page.locator(f'[data-testid="sale-card"][data-sale-id="{sale["id"]}"]')


async def tea_and_a_group_sale(
    http: aiohttp.ClientSession, host_token: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The room, a sale of tea at ¥15 (60 s holds) and a group sale (teams of 2 at ¥49)."""
    await make_room(http, host_token)
    tea = await add_product(http, host_token, "龙井礼盒 Longjing gift box", 1800, "box.svg")
    sale = await open_sale(http, host_token, tea, price_cents=1500, hold_s=60)
    needle = await add_product(http, host_token, "白毫银针 Silver Needle", 8800)
    group_sale = await open_sale(
        http, host_token, needle, price_cents=6600, group={"size": 2, "price_cents": 4900, "team_s": 60}
    )
    return sale, group_sale


async def claim_buy_and_start_a_team(
    http: aiohttp.ClientSession, host_token: str, page: Page, sale: dict[str, Any], group_sale: dict[str, Any]
) -> str | None:
    """On an open page: the host drops ¥3 coupons (a page learns of a batch as it is dropped),
    the buyer claims one, holds a unit (Pay ¥12.00) and starts a team. Returns its share link."""
    async with http.post(
        f"/api/sales/{sale['id']}/coupons",
        json={"count": 5, "discount_cents": 300},
        headers=bearer(host_token),
    ) as resp:
        assert resp.status == 201
    mine = card(page, sale)
    await mine.get_by_test_id("claim-coupon").click()
    await expect(mine.locator(".coupon")).to_contain_text("已领取，支付时自动抵扣")
    await mine.get_by_test_id("buy").click()
    await expect(mine.get_by_test_id("pay")).to_have_text("支付 ¥12.00")
    await card(page, group_sale).get_by_test_id("start-team").click()
    team_link = card(page, group_sale).get_by_test_id("team-link")
    await expect(team_link).to_contain_text("?team=")
    return await team_link.get_attribute("href")


async def order_in_ledger(
    http: aiohttp.ClientSession, server: Running, user: str, order_id: str
) -> dict[str, Any]:
    async with http.get(f"/api/orders/{order_id}", headers=bearer(viewer_token(server, user))) as resp:
        assert resp.status == 200, await resp.text()
        return dict(await resp.json())


# -- tests ----------------------------------------------------------------------------------


async def test_phone_viewer_watches_chats_and_likes_in_chinese(
    server: Running, http: aiohttp.ClientSession, host_token: str, browser: Browser
) -> None:
    await make_room(http, host_token)
    tea = await add_product(http, host_token, "明前龙井 绿茶 250g", 12800, "longjing.svg")
    host = await Client.connect(http, ROOM, host_token)
    await host_says(host, {"type": "pin_product", "product_id": tea["id"]})
    fan = await Client.connect(http, ROOM, viewer_token(server, "mei"))
    await fan.send({"type": "comment", "text": "这个茶叶多少钱？", "rid": "m1"})
    await fan.recv_until(lambda m: m.get("rid") == "m1")

    errors = PageErrors()
    sent: list[str | bytes] = []

    async def record_frames(page: Page) -> None:
        page.on("websocket", lambda ws: ws.on("framesent", lambda frame: sent.append(frame)))

    page = await open_viewer(browser, url_for(server, "alan"), errors, before=record_frames)
    assert "token" not in page.url  # out of the address bar, kept in the tab's session
    await expect(page.locator("h1")).to_have_text(TITLE)
    await expect(page.get_by_test_id("chat-comment")).to_contain_text(["这个茶叶多少钱？"])
    pinned = page.locator(".pinned-card")
    await expect(pinned).to_contain_text("明前龙井 绿茶 250g")
    await expect(pinned).to_contain_text("¥128.00")
    await expect(pinned.locator("img")).to_have_js_property("naturalWidth", 120)
    await expect(page.get_by_test_id("online")).to_have_text("3")  # host, mei, alan

    await host_says(host, {"type": "host_message", "text": "欢迎来到直播间！今晚八点整开抢，限量 500 份"})
    await expect(page.get_by_test_id("host-message")).to_have_count(1)
    await expect(page.get_by_test_id("host-messages")).to_contain_text("今晚八点整开抢")

    # comment with the Enter key: shown at once, and the room gets it
    box = page.get_by_test_id("comment-input")
    await box.fill("刚下单了，期待！")
    await box.press("Enter")
    await expect(page.get_by_test_id("chat-comment").last).to_contain_text("刚下单了，期待！")
    await expect(box).to_have_value("")
    heard = await fan.recv_until(
        lambda m: m["type"] == "batch" and any(c["text"] == "刚下单了，期待！" for c in m["comments"])
    )
    assert heard["comments"][-1]["user_id"] == "alan"
    await fan.send({"type": "comment", "text": "主播好！", "rid": "m2"})
    await expect(page.get_by_test_id("chat-comment").last).to_contain_text("主播好！")
    hostile = '<img src=x onerror="document.title=1">'
    await fan.send({"type": "comment", "text": hostile, "rid": "m3"})
    await expect(page.get_by_test_id("chat-comment").last).to_contain_text(hostile)  # text, not HTML
    assert await page.locator("#chat img").count() == 0

    # five quick taps on the heart: the room gets five likes in one or two messages
    for _ in range(5):
        await page.get_by_test_id("like").click()
    await fan.recv_until(lambda m: m["type"] == "batch" and m.get("likes") == 5)
    likes = [json.loads(f) for f in sent if '"like"' in str(f)]
    assert 1 <= len(likes) <= 2 and sum(like["count"] for like in likes) == 5, likes
    await snap(page, "viewer-phone-watch")

    # slow mode: the page says so, and a too-early comment is refused in words
    await host_says(host, {"type": "slow_mode", "interval_s": 30})
    await expect(page.locator("#composer-note")).to_contain_text("慢速模式")
    for text in ("第一条", "第二条"):
        await box.fill(text)
        await page.get_by_test_id("send-comment").click()
    notice = page.get_by_test_id("notice")
    await expect(notice).to_have_text("慢速模式已开启，请稍后再发言。")
    await expect(notice).to_have_attribute("role", "alert")
    await expect(box).to_have_value("第二条")  # kept for a second try
    # muted: the page says until when, and the refusal is in words
    await host_says(host, {"type": "slow_mode", "interval_s": 0})
    await host_says(host, {"type": "mute", "user_id": "alan", "duration_s": 600})
    await expect(page.locator("#composer-note")).to_contain_text("你已被禁言至")
    await page.get_by_test_id("send-comment").click()
    await expect(notice).to_have_text("你已被禁言。")

    # the host deletes a comment and clears the chat
    await host_says(host, {"type": "delete_comment", "comment_id": heard["comments"][-1]["id"]})
    await expect(page.get_by_test_id("chat")).not_to_contain_text("刚下单了，期待！")
    await host_says(host, {"type": "clear_chat"})
    await expect(page.get_by_test_id("chat-comment")).to_have_count(0)
    await expect(page.get_by_test_id("chat")).to_contain_text("聊天已被清空")

    await snap(page, "viewer-phone-chat-cleared")
    assert errors.errors == []


async def test_buy_in_one_tap_then_pay_with_a_coupon(
    server: Running, http: aiohttp.ClientSession, host_token: str, browser: Browser
) -> None:
    await make_room(http, host_token)
    tea = await add_product(http, host_token, "龙井礼盒 Longjing gift box", 1800, "box.svg")
    sale = await open_sale(http, host_token, tea, price_cents=1500, per_user_limit=2, hold_s=60)
    errors = PageErrors()
    page = await open_viewer(browser, url_for(server, "ann"), errors)
    other_tab = await open_viewer(browser, url_for(server, "ann"), errors)
    mine = card(page, sale)
    await expect(mine).to_contain_text("龙井礼盒 Longjing gift box")
    await expect(mine.get_by_test_id("stock-left")).to_have_text("5")

    async with http.post(
        f"/api/sales/{sale['id']}/coupons",
        json={"count": 10, "discount_cents": 300},
        headers=bearer(host_token),
    ) as resp:
        assert resp.status == 201
    await mine.get_by_test_id("claim-coupon").click()
    await expect(mine.locator(".coupon")).to_contain_text("已领取，支付时自动抵扣")

    await mine.get_by_test_id("buy").click()  # one tap
    hold = mine.get_by_test_id("hold")
    await expect(hold).to_have_text(re.compile(r"请在 [01]:\d\d 内支付"))
    await expect(mine.get_by_test_id("stock-left")).to_have_text("4")
    await expect(card(other_tab, sale).get_by_test_id("stock-left")).to_have_text("4")
    pay = mine.get_by_test_id("pay")
    await expect(pay).to_have_text("支付 ¥12.00")
    await expect(pay).to_be_focused()
    await snap(page, "viewer-hold")

    await pay.click()
    status = mine.get_by_test_id("order-status")
    await expect(status).to_have_attribute("data-status", "confirmed")
    await expect(status).to_contain_text("下单成功：已支付 ¥12.00")
    # the same buyer's other tab follows the order_status push
    await expect(card(other_tab, sale).get_by_test_id("order-status")).to_have_attribute(
        "data-status", "confirmed"
    )
    order_id = await status.get_attribute("data-hold-id")
    assert order_id
    order = await order_in_ledger(http, server, "ann", order_id)
    assert (order["amount_cents"], order["quantity"], order["user_id"]) == (1200, 1, "ann")
    assert order["coupon_id"]
    await expect(mine.locator(".coupon")).to_contain_text("优惠券已使用")
    await expect(mine).to_contain_text("你已购买 1 件")

    # a second unit (the limit is 2), cancelled
    await mine.get_by_test_id("buy").click()
    await expect(mine.get_by_test_id("buy")).to_have_text("已达限购")  # 1 bought + 1 held
    await expect(mine.get_by_test_id("buy")).to_be_disabled()
    await mine.get_by_test_id("cancel-hold").click()
    await expect(status).to_have_attribute("data-status", "cancelled")
    await expect(mine.get_by_test_id("stock-left")).to_have_text("4")
    await expect(mine.get_by_test_id("buy")).to_be_enabled()
    await snap(page, "viewer-confirmed")
    assert errors.errors == []


async def test_a_sold_out_sale_tells_the_second_buyer_in_words(
    server: Running, http: aiohttp.ClientSession, host_token: str, browser: Browser
) -> None:
    await make_room(http, host_token)
    tea = await add_product(http, host_token, "限量紫砂壶", 29900)
    sale = await open_sale(http, host_token, tea, stock=1)
    errors = PageErrors()
    first = await open_viewer(browser, url_for(server, "ann"), errors)

    async def late_news(page: Page) -> None:
        """The second buyer's phone has not heard of the sell-out yet when the buyer taps."""

        def hold_back(ws: WebSocketRoute) -> None:
            server_side = ws.connect_to_server()
            server_side.on_message(lambda m: None if "sale_sold_out" in str(m) else ws.send(m))

        await page.route_web_socket(re.compile(r"/ws/rooms/"), hold_back)

    second = await open_viewer(browser, url_for(server, "bob"), errors, before=late_news)
    await card(first, sale).get_by_test_id("buy").click()
    await expect(card(first, sale).get_by_test_id("hold")).to_be_visible()
    # the sell-out is announced: a page that heard it says so and offers no Buy
    await expect(card(first, sale).get_by_test_id("buy")).to_have_text("已抢光")
    await expect(card(first, sale).get_by_test_id("buy")).to_be_disabled()

    late = card(second, sale)
    await expect(late.get_by_test_id("stock-left")).to_have_text("0")  # the gauge came, not the news
    await late.get_by_test_id("buy").click()
    notice = second.get_by_test_id("notice")
    await expect(notice).to_have_text("已售罄，锁定的库存过期后可能会释放。")
    await expect(late.get_by_test_id("buy")).to_be_disabled()
    await expect(late).to_contain_text("已抢光")
    await snap(second, "viewer-sold-out")
    assert errors.errors == []


async def test_an_unpaid_hold_expires_on_screen(
    server: Running, http: aiohttp.ClientSession, host_token: str, browser: Browser
) -> None:
    await make_room(http, host_token)
    tea = await add_product(http, host_token, "桂花乌龙", 3900)
    sale = await open_sale(http, host_token, tea, hold_s=2)
    errors = PageErrors()
    page = await open_viewer(browser, url_for(server, "ann"), errors)
    mine = card(page, sale)
    await mine.get_by_test_id("buy").click()
    await expect(mine.get_by_test_id("hold")).to_contain_text("0:0")
    status = mine.get_by_test_id("order-status")
    await expect(status).to_have_attribute("data-status", "expired", timeout=6000)
    await expect(status).to_contain_text("已过期")
    await expect(mine.get_by_test_id("pay")).to_have_count(0)
    await expect(mine.get_by_test_id("stock-left")).to_have_text("5")
    await snap(page, "viewer-expired")
    assert errors.errors == []


async def test_a_hold_survives_a_reload_and_is_paid_after_it(
    server: Running, http: aiohttp.ClientSession, host_token: str, browser: Browser
) -> None:
    sale, group_sale = await tea_and_a_group_sale(http, host_token)
    errors = PageErrors()
    page = await open_viewer(browser, url_for(server, "ann"), errors)
    href = await claim_buy_and_start_a_team(http, host_token, page, sale, group_sale)

    # Remembered in the tab under the user, never with the token (kept once, where it was).
    stored = await page.evaluate("() => ({ ...sessionStorage })")
    assert set(stored) == {f"live.token.{ROOM}", f"live.purchases.{ROOM}.ann"}, stored
    token = stored[f"live.token.{ROOM}"]
    assert token not in stored[f"live.purchases.{ROOM}.ann"]

    await page.reload()
    await expect(page.get_by_test_id("state")).to_have_attribute("data-state", "live")
    mine = card(page, sale)
    await expect(mine.get_by_test_id("hold")).to_have_text(re.compile(r"请在 0:[45]\d 内支付"))
    pay = mine.get_by_test_id("pay")
    await expect(pay).to_have_text("支付 ¥12.00")  # with the coupon claimed before the reload
    await expect(mine.get_by_test_id("cancel-hold")).to_be_enabled()
    await expect(mine.get_by_test_id("buy")).to_have_text("已达限购")  # the held unit counts
    await expect(card(page, group_sale).get_by_test_id("team-link")).to_have_attribute("href", href or "")
    await snap(page, "viewer-hold-after-reload")

    await pay.click()
    status = mine.get_by_test_id("order-status")
    await expect(status).to_have_attribute("data-status", "confirmed")
    await expect(status).to_contain_text("下单成功：已支付 ¥12.00")
    order_id = await status.get_attribute("data-hold-id")
    assert order_id
    order = await order_in_ledger(http, server, "ann", order_id)
    assert (order["amount_cents"], order["quantity"], order["user_id"]) == (1200, 1, "ann")
    assert order["coupon_id"]
    # and the order stays on the card through one more reload
    await page.reload()
    await expect(card(page, sale).get_by_test_id("order-status")).to_have_attribute(
        "data-status", "confirmed"
    )
    await expect(card(page, sale)).to_contain_text("你已购买 1 件")
    assert errors.errors == []


async def test_a_hold_made_on_one_device_shows_on_another_with_its_pay_button(
    server: Running, http: aiohttp.ClientSession, host_token: str, browser: Browser
) -> None:
    """Another browser context is another device: nothing in its sessionStorage, so what it
    shows of the buyer's hold, coupon and team came in the welcome's `you`."""
    sale, group_sale = await tea_and_a_group_sale(http, host_token)
    errors = PageErrors()
    laptop = await open_viewer(browser, url_for(server, "ann"), errors, phone=False)
    href = await claim_buy_and_start_a_team(http, host_token, laptop, sale, group_sale)
    on_laptop = card(laptop, sale)

    phone = await open_viewer(browser, url_for(server, "ann"), errors)
    assert phone.context is not laptop.context
    on_phone = card(phone, sale)
    await expect(on_phone.get_by_test_id("hold")).to_have_text(re.compile(r"请在 0:[45]\d 内支付"))
    pay = on_phone.get_by_test_id("pay")
    await expect(pay).to_have_text("支付 ¥12.00")  # the coupon claimed on the laptop, taken off
    await expect(on_phone.locator(".coupon")).to_contain_text("已领取，支付时自动抵扣")
    await expect(on_phone.get_by_test_id("cancel-hold")).to_be_enabled()
    await expect(card(phone, group_sale).get_by_test_id("team-link")).to_have_attribute("href", href or "")
    await snap(phone, "viewer-hold-on-another-device")

    await pay.click()
    status = on_phone.get_by_test_id("order-status")
    await expect(status).to_have_attribute("data-status", "confirmed")
    await expect(status).to_contain_text("下单成功：已支付 ¥12.00")
    # the laptop hears of it (order_status to every connection of the buyer)
    await expect(on_laptop.get_by_test_id("order-status")).to_have_attribute("data-status", "confirmed")
    # and a third device, opened after, shows the order, not a hold
    tablet = await open_viewer(browser, url_for(server, "ann"), errors)
    await expect(card(tablet, sale).get_by_test_id("order-status")).to_have_attribute(
        "data-status", "confirmed"
    )
    await expect(card(tablet, sale).get_by_test_id("pay")).to_have_count(0)
    await expect(card(tablet, sale)).to_contain_text("你已购买 1 件")
    assert errors.errors == []


async def test_a_hold_that_expired_during_a_reload_shows_expired(
    server: Running, http: aiohttp.ClientSession, host_token: str, browser: Browser
) -> None:
    await make_room(http, host_token)
    tea = await add_product(http, host_token, "桂花乌龙", 3900)
    sale = await open_sale(http, host_token, tea, hold_s=2)

    async def deaf_to_orders(page: Page) -> None:
        """The page misses the expiry push (as a phone asleep would): after the reload only the
        remembered hold and the ledger can tell it."""

        def hold_back(ws: WebSocketRoute) -> None:
            server_side = ws.connect_to_server()
            server_side.on_message(lambda m: None if "order_status" in str(m) else ws.send(m))

        await page.route_web_socket(re.compile(r"/ws/rooms/"), hold_back)

    errors = PageErrors()
    page = await open_viewer(browser, url_for(server, "ann"), errors, before=deaf_to_orders)
    mine = card(page, sale)
    await mine.get_by_test_id("buy").click()
    await expect(mine.get_by_test_id("hold")).to_have_text("时间到了…", timeout=4000)
    hold_id = await page.evaluate(
        f"() => JSON.parse(sessionStorage['live.purchases.{ROOM}.ann']).purchases[0].hold_id"
    )

    # Past its expiry the hold may have been paid in another tab: the page asks the ledger.
    async with page.expect_response(lambda r: "/api/orders/" in r.url) as checked:
        await page.reload()
    check = await checked.value
    assert check.status == 404 and check.url.endswith(hold_id), check.url
    status = card(page, sale).get_by_test_id("order-status")
    await expect(status).to_have_attribute("data-status", "expired")
    await expect(status).to_contain_text("已过期")
    await expect(card(page, sale).get_by_test_id("pay")).to_have_count(0)
    await expect(card(page, sale).get_by_test_id("stock-left")).to_have_text("5")
    await expect(card(page, sale).get_by_test_id("buy")).to_be_enabled()
    # Chromium logs the ledger's 404 (order_not_found: not paid); nothing else
    assert errors.errors == [
        "console.error: Failed to load resource: the server responded with a status of 404 (Not Found)"
    ], errors.errors


async def test_the_page_reconnects_and_resumes_after_the_server_drops_it(
    server: Running, http: aiohttp.ClientSession, host_token: str, browser: Browser
) -> None:
    await make_room(http, host_token)
    tea = await add_product(http, host_token, "六安瓜片", 4200)
    sale = await open_sale(http, host_token, tea)
    host = await Client.connect(http, ROOM, host_token)
    buyer = await Client.connect(http, ROOM, viewer_token(server, "ann"))
    errors = PageErrors()
    page = await open_viewer(browser, url_for(server, "rita"), errors)
    await expect(card(page, sale).get_by_test_id("stock-left")).to_have_text("5")
    await host_says(host, {"type": "host_message", "text": "第一条公告"})
    await expect(page.get_by_test_id("host-message")).to_have_count(1)
    await page.evaluate(
        """() => {
          window.seen = { states: [], welcomes: [] };
          window.liveSocket.addEventListener("state", (e) => window.seen.states.push(e.detail));
          window.liveSocket.addEventListener("message", (e) => {
            if (e.detail.type === "welcome") window.seen.welcomes.push(e.detail.resumed);
          });
        }"""
    )
    # The network drops the viewer: the server cuts its TCP connection without a close frame,
    # and the host speaks before the page is back.
    dropped = [c for c in server.services.hub.connections if c.user_id == "rita"]
    assert len(dropped) == 1 and dropped[0].transport is not None
    dropped[0].transport.abort()
    await host_says(host, {"type": "host_message", "text": "断线期间的公告"})
    await buyer.send({"type": "reserve", "rid": "r1", "sale_id": sale["id"], "quantity": 1})
    assert (await buyer.recv_until(lambda m: m.get("rid") == "r1"))["type"] == "ack"

    await expect(page.get_by_test_id("host-message")).to_have_count(2)
    await expect(page.get_by_test_id("host-message").first).to_contain_text("断线期间的公告")
    await expect(page.get_by_test_id("state")).to_have_attribute("data-state", "live")
    seen = await page.evaluate("window.seen")
    assert seen["states"] == ["reconnecting", "live"] and seen["welcomes"] == [True], seen
    await expect(card(page, sale).get_by_test_id("stock-left")).to_have_text("4")
    # and it works as before
    box = page.get_by_test_id("comment-input")
    await box.fill("我回来了")
    await box.press("Enter")
    await expect(page.get_by_test_id("chat-comment")).to_have_text([re.compile("我回来了")])
    await host_says(host, {"type": "host_message", "text": "第三条公告"})
    await expect(page.get_by_test_id("host-message")).to_have_count(3)

    # a ban is the end: no reconnecting, and the page says why
    await host_says(host, {"type": "ban", "user_id": "rita"})
    await expect(page.get_by_test_id("state")).to_have_attribute("data-state", "banned")
    await expect(page.get_by_test_id("notice")).to_have_text("你已被禁止进入此直播间")
    await expect(box).to_be_disabled()
    await snap(page, "viewer-banned")
    assert (await page.evaluate("window.seen.states"))[-1] == "banned"
    assert errors.errors == []


async def test_a_group_buy_through_the_share_link(
    server: Running, http: aiohttp.ClientSession, host_token: str, browser: Browser
) -> None:
    await make_room(http, host_token)
    tea = await add_product(http, host_token, "白毫银针 Silver Needle", 8800, "needle.svg")
    sale = await open_sale(
        http, host_token, tea, price_cents=6600, group={"size": 2, "price_cents": 4900, "team_s": 60}
    )
    errors = PageErrors()
    ann = await open_viewer(browser, url_for(server, "ann"), errors, phone=False)
    await ann.locator("#lang-toggle").click()  # English on the desktop
    await expect(ann.get_by_test_id("send-comment")).to_have_text("Send")
    await expect(card(ann, sale)).to_contain_text("Group of 2: ¥49.00 each")
    await card(ann, sale).get_by_test_id("start-team").click()
    link = card(ann, sale).get_by_test_id("team-link")
    await expect(link).to_contain_text("?team=")
    href = await link.get_attribute("href")
    assert href and href.startswith(f"{server.url}/r/{ROOM}?team=") and f"sale={sale['id']}" in href
    code = re.search(r"team=(\w+)", href)
    assert code
    await expect(card(ann, sale)).to_contain_text(f"Group buy {code[1]}: 1 of 2 joined")
    await snap(ann, "viewer-desktop-team-open")

    bob = await open_viewer(browser, f"{href}#token={viewer_token(server, 'bob')}", errors)
    assert "token" not in bob.url and "team=" in bob.url
    join = bob.get_by_test_id("join-team")
    await expect(join).to_have_text(f"加入拼团 {code[1]}")
    await snap(bob, "viewer-join-team")
    await join.click()

    for page in (ann, bob):
        status = card(page, sale).get_by_test_id("order-status")
        await expect(status).to_have_attribute("data-status", "confirmed")
        await expect(status).to_contain_text("¥49.00")
        order_id = await status.get_attribute("data-hold-id")
        assert order_id
        order = await order_in_ledger(http, server, "ann" if page is ann else "bob", order_id)
        assert (order["amount_cents"], order["team_code"]) == (4900, code[1])
    await expect(card(ann, sale).get_by_test_id("order-status")).to_contain_text("Group complete!")
    await expect(bob.get_by_test_id("join-team")).to_have_count(0)
    await snap(bob, "viewer-team-complete")
    await snap(ann, "viewer-desktop-team-complete")
    assert errors.errors == []


async def test_an_anonymous_viewer_is_told_to_sign_in_to_buy(
    server: Running, http: aiohttp.ClientSession, host_token: str, browser: Browser
) -> None:
    await make_room(http, host_token, allow_anonymous=True)
    tea = await add_product(http, host_token, "碧螺春", 5600)
    sale = await open_sale(http, host_token, tea, starts_in_s=3)
    errors = PageErrors()
    page = await open_viewer(browser, url_for(server, None), errors)
    await expect(page.locator("#identity-text")).to_have_text("游客观看中")
    buy = card(page, sale).get_by_test_id("buy")
    await expect(buy).to_have_text("即将开抢")
    await expect(card(page, sale).locator(".sale-timer")).to_have_text(re.compile(r"距开抢 0:0[1-3]"))
    await expect(buy).to_be_disabled()
    await snap(page, "viewer-countdown")
    await expect(buy).to_be_enabled(timeout=5000)
    await buy.click()
    await expect(page.get_by_test_id("notice")).to_have_text("请先登录再购买。")
    await expect(page.locator("#sign-in")).to_be_visible()

    await page.locator("#token-input").fill(viewer_token(server, "ann"))
    await page.locator("#token-input").press("Enter")
    await expect(page.locator("#identity-text")).to_have_text("已登录：ann")
    await expect(page.get_by_test_id("state")).to_have_attribute("data-state", "live")
    await card(page, sale).get_by_test_id("buy").click()
    await expect(card(page, sale).get_by_test_id("hold")).to_be_visible()
    assert errors.errors == []


async def test_a_bad_token_is_explained(
    server: Running, http: aiohttp.ClientSession, host_token: str, browser: Browser
) -> None:
    await make_room(http, host_token)
    errors = PageErrors()
    context = await browser.new_context(**PHONE, locale="en-US")
    page = errors.watch(await context.new_page())
    await page.goto(f"{server.url}/r/{ROOM}#token=not-a-token")
    await expect(page.get_by_test_id("notice")).to_have_text("That token is not valid.")
    await expect(page.get_by_test_id("state")).to_have_attribute("data-state", "refused")
    await expect(page.locator("#sign-in")).to_be_visible()
    await snap(page, "viewer-bad-token")
    # no token, in a room that wants one: the guest is told a sign-in may help
    guest = errors.watch(await context.new_page())
    await guest.goto(f"{server.url}/r/{ROOM}")
    await expect(guest.get_by_test_id("notice")).to_have_text(
        "Could not join as a guest. This room may need you to sign in."
    )
    await expect(guest.locator("#sign-in")).to_be_visible()
    # First-message auth: the handshakes are not refused (the refusal comes in the socket, before
    # its close), so Chromium logs no URL with a token in it, and the pages ask no HTTP check
    assert errors.errors == [], errors.errors
    assert guest.url == f"{server.url}/r/{ROOM}" and "token" not in page.url
