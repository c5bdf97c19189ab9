"""The host console (/console) in Chromium against a real server: sign in, set up a room, run a
flash sale, talk to the room and moderate it, while viewers on plain WebSockets see the effects.
Screenshots land in test-artifacts/ (console-*.png)."""

from __future__ import annotations

import re
from typing import Any

import aiohttp
from browser import PageErrors, open_page, screenshot
from playwright.async_api import Browser, Page, expect
from test_gateway import token
from wsclient import Client

from live.auth import ANY_ROOM, Role
from live.server import Running

pytest_plugins = ["browser"]  # the `browser` fixture

SHOUT = "今晚 8 点整开抢，限量 5 份！"  # noqa: RUF001 - Chinese punctuation on purpose


async def ask(client: Client, message: dict[str, Any]) -> dict[str, Any]:
    """Send a command and return its ack or error (matched by rid)."""
    await client.send(message)
    return await client.recv_until(lambda m: m.get("rid") == message["rid"] and m["type"] in ("ack", "error"))


def script_errors(errors: PageErrors, *refused: int) -> list[str]:
    """The page's errors, less Chromium's own log line for each request the test made the server
    refuse on purpose (a fetch answered 4xx is logged as "Failed to load resource")."""
    left = list(errors.errors)
    for status in refused:
        logged = f"Failed to load resource: the server responded with a status of {status}"
        left.remove(next(e for e in left if logged in e))
    return left


async def shot(page: Page, name: str) -> None:
    """A full-page screenshot from the top (the sticky bars then sit where a host sees them)."""
    await page.evaluate("window.scrollTo(0, 0)")
    await screenshot(page, name)


async def fill(page: Page, values: dict[str, str]) -> None:
    for testid, value in values.items():
        await page.get_by_test_id(testid).fill(value)


async def test_a_host_runs_a_show_from_the_console(
    server: Running, http: aiohttp.ClientSession, browser: Browser
) -> None:
    errors = PageErrors()
    host = server.services.auth.mint("host1", ANY_ROOM, Role.HOST, 600)
    page = await open_page(browser, f"{server.url}/console#token={host}", errors)

    # Signed in from the fragment, which left the address bar; the token stays in this tab.
    await expect(page.get_by_test_id("room-select")).to_be_visible()
    assert "token" not in page.url and page.url.endswith("/console")
    assert await page.evaluate("sessionStorage.getItem('live.console.token')") == host
    await expect(page.locator("html")).to_have_attribute("lang", "zh-CN")  # the browser's language
    await shot(page, "console-1-signed-in")

    await fill(page, {"room-title-input": "春季上新 · 西湖龙井专场", "room-id-input": "spring"})
    await page.get_by_test_id("create-room").click()
    await expect(page.get_by_test_id("room-select")).to_have_value("spring")
    await expect(page.get_by_test_id("viewer-link")).to_have_text(f"{server.url}/r/spring")
    await expect(page.get_by_test_id("socket-state")).to_have_attribute("data-state", "live")
    assert (await server.services.rooms.get("spring")).title == "春季上新 · 西湖龙井专场"

    await fill(page, {"product-title-input": "西湖龙井 Longjing tea", "product-price-input": "19.99"})
    await page.get_by_test_id("add-product").click()
    await expect(page.get_by_test_id("product")).to_have_count(1)
    await expect(page.get_by_test_id("product")).to_contain_text("¥19.99")
    [product] = await server.services.rooms.products("spring")
    assert (product.title, product.price_cents) == ("西湖龙井 Longjing tea", 1999)

    # A bad input: the server's refusal is shown in words, in the alert.
    await fill(page, {"sale-stock-input": "0"})
    await page.get_by_test_id("open-sale").click()
    notice = page.get_by_test_id("notice")
    await expect(notice).to_contain_text("the field 'stock' must be 1 to")
    await expect(notice).to_have_class(re.compile(r"\berror\b"))
    await expect(notice).to_have_attribute("role", "alert")
    await expect(page.get_by_test_id("sale-stock-input")).to_have_attribute("aria-invalid", "true")
    await shot(page, "console-2-server-error")

    # A sale that starts in 3 s: its countdown runs, then it goes live.
    await fill(
        page,
        {"sale-stock-input": "5", "sale-limit-input": "2", "sale-hold-input": "30", "sale-start-input": "3"},
    )
    await page.get_by_test_id("open-sale").click()
    await expect(page.get_by_test_id("stock-left")).to_have_text("5")
    await expect(page.get_by_test_id("sale-phase")).to_have_attribute("data-phase", "not_started")
    await expect(page.get_by_test_id("countdown")).to_have_text(re.compile(r"^0:0[1-3]$"))
    await expect(notice).to_have_class(re.compile(r"\bok\b"))
    await shot(page, "console-3-countdown")

    fan = await Client.connect(http, "spring", token(server, "fan", room="spring"))
    await expect(page.get_by_test_id("online")).to_have_text("2")  # the host and the fan
    [sale] = fan.welcome["room"]["sales"]
    assert (sale["total"], sale["per_user_limit"], sale["hold_ms"]) == (5, 2, 30_000)

    # A host message, acked, reaches the viewer.
    await fill(page, {"host-message-input": SHOUT})
    await page.get_by_test_id("send-host-message").click()
    await expect(page.get_by_test_id("host-log-entry").first).to_have_attribute("data-state", "sent")
    await expect(page.get_by_test_id("host-message-input")).to_have_value("")
    said = await fan.recv_type("host_message")
    assert (said["text"], said["by"]) == (SHOUT, "host1")

    # The viewer's comment shows in the console's chat, as text (never as HTML).
    first = await ask(fan, {"type": "comment", "text": "多少钱? <b>how much</b>", "rid": "c1"})
    comment = page.get_by_test_id("chat-comment").filter(has_text="多少钱? <b>how much</b>")
    await expect(comment).to_have_count(1)
    assert await page.locator("[data-testid=chat] b").count() == 0

    # Deleting it from the console removes it for the viewer too.
    await comment.get_by_test_id("delete-comment").click()
    deleted = await fan.recv_type("comment_deleted")
    assert (deleted["comment_id"], deleted["by"]) == (first["seq"], "host1")
    await expect(comment).to_have_count(0)
    await expect(page.get_by_test_id("chat-event").last).to_contain_text("多少钱?")

    # Muting the viewer for the chosen time: the viewer sees the event and is refused.
    await ask(fan, {"type": "comment", "text": "还有货吗", "rid": "c2"})
    second = page.get_by_test_id("chat-comment").filter(has_text="还有货吗")
    await page.get_by_test_id("mute-duration").select_option("600")
    await second.get_by_test_id("mute-user").click()
    muted = await fan.recv_type("user_muted")
    assert muted["user_id"] == "fan" and 590_000 < muted["until_ms"] - muted["ts_ms"] <= 600_000
    assert (await ask(fan, {"type": "comment", "text": "为什么", "rid": "c3"}))["code"] == "muted"
    await expect(second.locator(".muted-flag")).to_be_visible()

    # Pinning reaches the viewer.
    await page.get_by_test_id("pin-product").click()
    pinned = await fan.recv_type("product_pinned")
    assert pinned["product"]["id"] == product.id

    # The sale goes live; orders confirmed out of hold order all reach the console.
    await expect(page.get_by_test_id("sale-phase")).to_have_attribute("data-phase", "live", timeout=6000)
    a = await ask(fan, {"type": "reserve", "rid": "ra", "sale_id": sale["id"], "quantity": 1})
    b = await ask(fan, {"type": "reserve", "rid": "rb", "sale_id": sale["id"], "quantity": 1})
    await expect(page.get_by_test_id("held")).to_have_text("2")
    assert (await ask(fan, {"type": "confirm", "rid": "cb", "hold_id": b["hold_id"]}))["type"] == "ack"
    await expect(page.get_by_test_id("orders-count")).to_have_text("1")
    assert (await ask(fan, {"type": "confirm", "rid": "ca", "hold_id": a["hold_id"]}))["type"] == "ack"
    await expect(page.get_by_test_id("orders-count")).to_have_text("2")
    await expect(page.get_by_test_id("gmv")).to_have_text("¥39.98")
    await expect(page.get_by_test_id("order-row")).to_have_count(2)
    await expect(page.get_by_test_id("order-row").first).to_contain_text("fan")
    await expect(page.get_by_test_id("sold")).to_have_text("2")
    await expect(page.get_by_test_id("stock-left")).to_have_text("3")
    await expect(page.get_by_test_id("conversion")).to_have_text("50.0%")  # 1 buyer, 2 at the peak
    await page.wait_for_timeout(1200)  # a tick of the charts
    await shot(page, "console-4-live-zh")

    await page.get_by_test_id("lang-en").click()
    await expect(page.get_by_test_id("sale-phase")).to_have_text("On sale")
    await expect(page.locator("html")).to_have_attribute("lang", "en")
    await shot(page, "console-5-live-en")

    # More stock, coupons for the room, then stop: the viewer hears of each.
    await fill(page, {"stock-units-input": "10"})
    await page.get_by_test_id("add-stock").click()
    await expect(page.get_by_test_id("stock-left")).to_have_text("13")
    await fill(page, {"coupon-count-input": "3", "coupon-discount-input": "2.50"})
    await page.get_by_test_id("drop-coupons").click()
    dropped = await fan.recv_type("coupons_dropped")
    assert (dropped["count"], dropped["discount_cents"]) == (3, 250)
    await expect(page.get_by_test_id("coupons")).to_contain_text("¥2.50")
    await page.get_by_test_id("stop-sale").click()
    await page.get_by_test_id("stop-sale").click()  # asks once more
    assert (await fan.recv_type("sale_ended"))["sale_id"] == sale["id"]
    await expect(page.get_by_test_id("sale-phase")).to_have_attribute("data-phase", "ended")

    # A group-buy sale becomes the current one; the list switches back to the first.
    await page.get_by_test_id("sale-group-input").check()
    await fill(
        page,
        {
            "sale-start-input": "0",
            "sale-group-size-input": "2",
            "sale-group-price-input": "15",
            "sale-team-input": "60",
        },
    )
    await page.get_by_test_id("open-sale").click()
    await expect(page.get_by_test_id("sale-phase")).to_have_attribute("data-phase", "live")
    await expect(page.locator("#sale-meta")).to_contain_text("group of 2 at ¥15.00")
    opened = await fan.recv_type("sale_opened")
    assert opened["sale"]["group"] == {"size": 2, "price_cents": 1500, "team_ms": 60_000}
    picks = page.get_by_test_id("sale-pick")
    await expect(picks).to_have_count(2)
    await picks.last.click()
    await expect(page.get_by_test_id("sold")).to_have_text("2")
    await expect(page.get_by_test_id("orders-count")).to_have_text("2")
    await fan.close()
    assert script_errors(errors, 400) == []  # the sale with stock 0


async def test_sign_in_form_moderation_and_sign_out_at_1024(
    server: Running, http: aiohttp.ClientSession, browser: Browser
) -> None:
    await server.services.rooms.create("晚间直播", host_id="host2", room_id="shop")
    errors = PageErrors()
    page = await open_page(browser, f"{server.url}/console", errors)
    await page.set_viewport_size({"width": 1024, "height": 768})
    notice = page.get_by_test_id("notice")

    await expect(page.get_by_test_id("token-input")).to_be_focused()
    await expect(page.get_by_test_id("token-input")).to_have_attribute("type", "password")
    await page.get_by_test_id("token-input").fill("not-a-token")
    await page.get_by_test_id("token-input").press("Enter")
    await expect(notice).to_have_text("令牌无效。")  # token_invalid, in the page's language
    await shot(page, "console-6-sign-in-error")
    await page.get_by_test_id("token-input").fill(token(server, "fan"))  # a viewer's token
    await page.get_by_test_id("sign-in").click()
    await expect(notice).to_contain_text("观众令牌")

    # A token for one room, typed in: the console opens on that room.
    host = server.services.auth.mint("host2", "shop", Role.HOST, 600)
    await page.get_by_test_id("token-input").fill(host)
    await page.get_by_test_id("sign-in").click()
    await expect(page.get_by_test_id("room-select")).to_have_value("shop")
    await expect(page.get_by_test_id("socket-state")).to_have_attribute("data-state", "live")

    troll = await Client.connect(http, "shop", token(server, "troll"))
    await ask(troll, {"type": "comment", "text": "spam spam spam", "rid": "c1"})
    comment = page.get_by_test_id("chat-comment").filter(has_text="spam spam spam")
    await expect(comment).to_have_count(1)

    # Slow mode and clearing the chat reach the viewer.
    await page.get_by_test_id("slow-input").fill("5")
    await page.get_by_test_id("set-slow-mode").click()
    assert (await troll.recv_type("slow_mode"))["interval_s"] == 5
    await shot(page, "console-7-at-1024")
    await page.get_by_test_id("clear-chat").click()
    await page.get_by_test_id("clear-chat").click()  # asks once more
    assert (await troll.recv_type("chat_cleared"))["by"] == "host2"
    await expect(page.get_by_test_id("chat-comment")).to_have_count(0)

    # Banning takes two clicks and closes the viewer's socket.
    await ask(troll, {"type": "comment", "text": "still here", "rid": "c2"})
    ban = page.get_by_test_id("chat-comment").filter(has_text="still here").get_by_test_id("ban-user")
    await ban.click()
    await expect(ban).to_have_class(re.compile(r"\barmed\b"))
    await ban.click()
    assert (await troll.recv_type("user_banned"))["user_id"] == "troll"
    assert (await troll.closed())[0] == 4403
    await expect(page.get_by_test_id("chat-event").last).to_contain_text("troll")

    # A refusal over the WebSocket is shown in words too.
    await page.get_by_test_id("slow-input").fill("99999")
    await page.get_by_test_id("set-slow-mode").click()
    await expect(notice).to_contain_text("'interval_s' must be 0 to 3600")

    await page.get_by_test_id("sign-out").click()
    await expect(page.get_by_test_id("token-input")).to_be_visible()
    assert await page.evaluate("sessionStorage.getItem('live.console.token')") is None
    assert script_errors(errors, 401) == []  # the bad token


async def test_lifting_a_ban_and_a_mute_from_the_console(
    server: Running, http: aiohttp.ClientSession, browser: Browser
) -> None:
    await server.services.rooms.create("晚间直播", host_id="host3", room_id="shop")
    errors = PageErrors()
    host = server.services.auth.mint("host3", "shop", Role.HOST, 600)
    page = await open_page(browser, f"{server.url}/console#token={host}", errors)
    await expect(page.get_by_test_id("socket-state")).to_have_attribute("data-state", "live")
    await page.get_by_test_id("lang-en").click()
    notice = page.get_by_test_id("notice")
    lift_input = page.get_by_test_id("lift-user-input")

    # Nothing typed: said in words, nothing sent.
    await page.get_by_test_id("unban-user").click()
    await expect(notice).to_have_text("Type the user's id first.")
    await expect(lift_input).to_have_attribute("aria-invalid", "true")

    fan = await Client.connect(http, "shop", token(server, "fan"))
    troll = await Client.connect(http, "shop", token(server, "troll"))
    await ask(troll, {"type": "comment", "text": "spam", "rid": "c1"})
    comment = page.get_by_test_id("chat-comment").filter(has_text="spam")
    ban = comment.get_by_test_id("ban-user")
    await ban.click()
    await ban.click()  # asks once more
    assert (await troll.closed())[0] == 4403
    await expect(comment).to_have_class(re.compile(r"\bbanned\b"))
    await expect(lift_input).to_have_value("troll")  # the undo waits, one click away

    await page.get_by_test_id("unban-user").click()
    lifted = await fan.recv_type("user_unbanned")
    assert (lifted["user_id"], lifted["by"]) == ("troll", "host3")
    await expect(notice).to_have_text("troll may join the room again.")
    await expect(comment).not_to_have_class(re.compile(r"\bbanned\b"))
    await expect(page.get_by_test_id("chat-event").last).to_contain_text("troll unbanned (by host3)")
    troll = await Client.connect(http, "shop", token(server, "troll"))  # welcome again

    await ask(fan, {"type": "comment", "text": "hello", "rid": "c2"})
    said = page.get_by_test_id("chat-comment").filter(has_text="hello")
    await said.get_by_test_id("mute-user").click()
    assert (await fan.recv_type("user_muted"))["user_id"] == "fan"
    await expect(said.locator(".muted-flag")).to_be_visible()
    await expect(lift_input).to_have_value("fan")
    assert (await ask(fan, {"type": "comment", "text": "why", "rid": "c3"}))["code"] == "muted"
    await page.get_by_test_id("unmute-user").click()
    assert (await fan.recv_type("user_unmuted"))["by"] == "host3"
    await expect(notice).to_have_text("fan may comment again.")
    await expect(said.locator(".muted-flag")).to_be_hidden()
    assert (await ask(fan, {"type": "comment", "text": "thanks", "rid": "c4"}))["type"] == "ack"
    await shot(page, "console-8-lift")

    # The host cannot be banned, from the console either (by a slip): refused in words.
    await lift_input.fill("host3")
    await page.get_by_test_id("unban-user").click()  # lifting nothing is fine
    await expect(notice).to_have_text("host3 may join the room again.")
    mod = await Client.connect(http, "shop", token(server, "mod", Role.MODERATOR))
    assert (await ask(mod, {"type": "ban", "user_id": "host3", "rid": "b"}))["code"] == "protected_user"
    await expect(page.get_by_test_id("socket-state")).to_have_attribute("data-state", "live")
    for client in (fan, troll, mod):
        await client.close()
    assert script_errors(errors) == []
