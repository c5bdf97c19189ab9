# Chinese text is written with full-width punctuation, as the pages show it.
# ruff: noqa: RUF001
"""The room's interaction tools in Chromium, against an in-process server: a host opens a live
auction, a lucky draw and a poll from the console and runs the Q&A queue; two viewers on their
phones bid, enter, vote, ask and upvote, see the results, and the winners pay or claim.

A tool's tests run where the server serves that tool (live/draws.py, live/polls.py,
live/questions.py); until then they are skipped with the reason. Screenshots land in
test-artifacts/tools-*.png."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
from typing import Any

import aiohttp
import pytest
from browser import DESKTOP, PHONE, PageErrors, screenshot
from conftest import bearer
from playwright.async_api import Browser, Page, Route, WebSocketRoute, expect

from live.auth import ANY_ROOM, Role
from live.server import Running
from live.settings import Settings

ROOM = "jade"
TITLE = "翡翠专场 · 今晚拍卖"

pytestmark = pytest.mark.timeout(120)


def served(module: str) -> pytest.MarkDecorator:
    """Run where live/<module>.py (the tool's server side) is on this branch."""
    missing = importlib.util.find_spec(f"live.{module}") is None
    return pytest.mark.skipif(missing, reason=f"live/{module}.py is not on this branch yet")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, bid_burst=20, bid_rate_per_s=20.0, tools_tick_ms=50)


# -- helpers --------------------------------------------------------------------------------


async def make_room(http: aiohttp.ClientSession, host: str) -> dict[str, Any]:
    async with http.post("/api/rooms", json={"id": ROOM, "title": TITLE}, headers=bearer(host)) as resp:
        assert resp.status == 201, await resp.text()
    product = {"title": "冰种翡翠手镯", "price_cents": 880_000}
    async with http.post(f"/api/rooms/{ROOM}/products", json=product, headers=bearer(host)) as resp:
        assert resp.status == 201, await resp.text()
        return dict(await resp.json())


async def open_console(browser: Browser, server: Running, errors: PageErrors) -> tuple[Page, str]:
    host = server.services.auth.mint("host1", ANY_ROOM, Role.HOST, 600)
    context = await browser.new_context(**DESKTOP, locale="zh-CN")
    page = errors.watch(await context.new_page())
    await page.goto(f"{server.url}/console#token={host}&room={ROOM}")
    await expect(page.get_by_test_id("room-select")).to_have_value(ROOM)
    await expect(page.get_by_test_id("socket-state")).to_have_attribute("data-state", "live")
    return page, host


async def open_viewer(
    browser: Browser, server: Running, user: str, errors: PageErrors, before: Any = None
) -> Page:
    token = server.services.auth.mint(user, ROOM, Role.VIEWER, 600)
    context = await browser.new_context(**PHONE, locale="zh-CN")
    page = errors.watch(await context.new_page())
    if before is not None:
        await before(page)
    await page.goto(f"{server.url}/r/{ROOM}#token={token}")
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


def script_errors(errors: PageErrors, *refused: int) -> list[str]:
    """The pages' errors, less Chromium's log line for each request the test had refused."""
    left = list(errors.errors)
    for status in refused:
        logged = f"Failed to load resource: the server responded with a status of {status}"
        left.remove(next(e for e in left if logged in e))
    return left


async def fill(page: Page, values: dict[str, str]) -> None:
    for testid, value in values.items():
        await page.get_by_test_id(testid).fill(value)


async def open_form(console: Page, details_id: str) -> None:
    details = console.locator(f"#{details_id}")
    if await details.get_attribute("open") is None:
        await details.locator("summary").click()


# -- auctions -------------------------------------------------------------------------------


async def test_an_auction_from_the_console_two_bidders_an_extension_and_the_winner_pays(
    server: Running, http: aiohttp.ClientSession, browser: Browser
) -> None:
    errors = PageErrors()
    host = server.services.auth.mint("host1", ANY_ROOM, Role.HOST, 600)
    await make_room(http, host)
    console, _ = await open_console(browser, server, errors)

    # The form says what is wrong, ours before sending and the server's after.
    await open_form(console, "new-auction")
    await fill(console, {"auction-start-input": "十块"})
    await console.get_by_test_id("open-auction").click()
    await expect(console.get_by_test_id("notice")).to_contain_text("起拍价")
    await expect(console.get_by_test_id("auction-start-input")).to_have_attribute("aria-invalid", "true")
    await fill(console, {"auction-start-input": "100", "auction-buy-now-input": "50"})
    await console.get_by_test_id("open-auction").click()
    await expect(console.get_by_test_id("notice")).to_contain_text("buy_now_cents")
    await expect(console.get_by_test_id("auction-buy-now-input")).to_have_attribute("aria-invalid", "true")

    # Bob's page hears no bids: his buttons still offer the opening bid when Amy has bid it.
    async def deaf_to_bids(page: Page) -> None:
        def hold_back(ws: WebSocketRoute) -> None:
            server_side = ws.connect_to_server()
            server_side.on_message(lambda m: None if '"auction_bid"' in str(m) else ws.send(m))

        await page.route_web_socket(re.compile(r"/ws/rooms/"), hold_back)

    amy = await open_viewer(browser, server, "amy", errors)
    bob = await open_viewer(browser, server, "bob", errors, before=deaf_to_bids)

    # Every bid extends the end (the window is longer than the auction), up to 6 s in all. (The
    # viewers' pages are open before it opens, and its 10 s are for Amy's first bid only: a slow
    # machine's page loads do not eat into them.)
    await fill(
        console,
        {
            "auction-start-input": "100",
            "auction-increment-input": "10",
            "auction-buy-now-input": "",
            "auction-duration-input": "10",
            "auction-snipe-input": "30",
            "auction-extension-input": "6",
            "auction-hold-input": "120",
        },
    )
    await console.get_by_test_id("open-auction").click()
    row = console.get_by_test_id("console-auction")
    await expect(row).to_have_count(1)
    await expect(row.get_by_test_id("tool-state")).to_have_text("进行中")

    amy_card = amy.get_by_test_id("auction-card")
    bob_card = bob.get_by_test_id("auction-card")
    await expect(amy_card).to_contain_text("冰种翡翠手镯")
    await expect(amy_card.get_by_test_id("auction-amount")).to_have_text("¥100.00")
    ends_before = int(await amy_card.get_by_test_id("auction-countdown").get_attribute("data-ends-at") or 0)

    await amy_card.get_by_test_id("bid").first.click()
    await expect(amy_card.get_by_test_id("auction-leader")).to_contain_text("你领先")
    ends_after = int(await amy_card.get_by_test_id("auction-countdown").get_attribute("data-ends-at") or 0)
    assert ends_after > ends_before  # the countdown jumped
    await expect(amy_card).to_contain_text("延时了")
    await snap(amy, "tools-auction-leading")

    await bob_card.get_by_test_id("bid").first.click()  # still ¥100.00 on his screen
    notice = bob.get_by_test_id("notice")
    await expect(notice).to_have_text("出价太低：当前最低出价为 ¥110.00。")
    await expect(notice).to_have_attribute("role", "alert")
    await expect(bob_card.get_by_test_id("bid").first).to_have_text("出价 ¥110.00")  # from the error
    await bob_card.get_by_test_id("bid").first.click()
    await expect(bob_card.get_by_test_id("auction-leader")).to_contain_text("你领先")
    await expect(amy_card.get_by_test_id("auction-outbid")).to_contain_text("¥110.00")
    await expect(amy_card.get_by_test_id("auction-leader")).to_contain_text("bob")
    await expect(row.get_by_test_id("auction-line")).to_contain_text("bob")

    # The end: Bob is offered it, pays, and everyone sees it sold.
    await expect(bob_card.get_by_test_id("pay-auction")).to_be_visible(timeout=40_000)
    await expect(bob_card.get_by_test_id("auction-won")).to_contain_text("¥110.00")
    await snap(bob, "tools-auction-won")
    await bob_card.get_by_test_id("pay-auction").click()
    await expect(bob_card.get_by_test_id("auction-paid")).to_contain_text("¥110.00")
    await expect(amy_card.get_by_test_id("auction-result")).to_contain_text("bob")
    await expect(row.get_by_test_id("tool-state")).to_have_text("已成交")
    await expect(row.get_by_test_id("auction-line")).to_contain_text("bob")
    await snap(console, "tools-console-auction-sold")

    # What the pages showed is what the server holds.
    auction_id = await row.get_attribute("data-id")
    async with http.get(f"/api/rooms/{ROOM}/auctions/{auction_id}", headers=bearer(host)) as resp:
        auction = await resp.json()
    assert auction["state"] == "sold" and auction["result"]["winner_id"] == "bob"
    assert auction["result"]["amount_cents"] == 11_000
    assert script_errors(errors, 400) == []


async def test_a_viewer_reload_keeps_the_auction_and_the_host_cannot_bid(
    server: Running, http: aiohttp.ClientSession, browser: Browser
) -> None:
    errors = PageErrors()
    host = server.services.auth.mint("host1", ANY_ROOM, Role.HOST, 600)
    product = await make_room(http, host)
    body = {"product_id": product["id"], "start_cents": 5000, "increment_cents": 500, "duration_s": 120}
    async with http.post(f"/api/rooms/{ROOM}/auctions", json=body, headers=bearer(host)) as resp:
        assert resp.status == 201, await resp.text()
    amy = await open_viewer(browser, server, "amy", errors)
    card = amy.get_by_test_id("auction-card")
    bids = card.get_by_test_id("bid")
    await expect(bids).to_have_text(["出价 ¥50.00", "出价 ¥55.00", "出价 ¥75.00"])
    await bids.nth(2).click()
    await expect(card.get_by_test_id("auction-amount")).to_have_text("¥75.00")
    await amy.reload()
    await expect(amy.get_by_test_id("state")).to_have_attribute("data-state", "live")
    card = amy.get_by_test_id("auction-card")
    await expect(card.get_by_test_id("auction-amount")).to_have_text("¥75.00")  # from the welcome
    await expect(card.get_by_test_id("auction-leader")).to_contain_text("你领先")
    await expect(card.get_by_test_id("bid").first).to_have_text("出价 ¥80.00")

    # The room's host, on the viewer page, gets no bid buttons that work.
    token = server.services.auth.mint("host1", ROOM, Role.HOST, 600)
    context = await browser.new_context(**PHONE, locale="zh-CN")
    page = errors.watch(await context.new_page())
    await page.goto(f"{server.url}/r/{ROOM}#token={token}")
    await expect(page.get_by_test_id("auction-card").get_by_test_id("bid").first).to_be_disabled()
    assert errors.errors == []


# -- lucky draws ----------------------------------------------------------------------------


def tool_card(page: Page, kind: str, tool_id: str) -> Any:
    return page.locator(f'[data-testid="{kind}-card"][data-id="{tool_id}"]')


async def draw_ids(http: aiohttp.ClientSession, host: str) -> list[str]:
    """The room's draws, oldest first."""
    async with http.get(f"/api/rooms/{ROOM}/draws", headers=bearer(host)) as resp:
        assert resp.status == 200, await resp.text()
        draws = (await resp.json())["draws"]
    return [d["id"] for d in sorted(draws, key=lambda d: d["opened_at_ms"])]


async def expect_verified(card: Any, winners: list[str], eligible: int) -> None:
    """Open a closed draw's Verify box and see it verified: every check and the verdict √, the
    winners recomputed in the browser (in draw order) and the `live draw verify` line."""
    verify = card.get_by_test_id("draw-verify")
    await verify.locator("summary").click()
    verdict = verify.get_by_test_id("verify-verdict")
    await expect(verdict).to_have_attribute("data-ok", "true")
    await expect(verdict).to_have_text("√ 验证通过：中奖名单由种子算出")
    await expect(verify.locator("summary")).to_have_text("验证开奖 √")
    checks = verify.get_by_test_id("verify-checks").locator("li")
    await expect(checks).to_have_count(3)
    for n in range(3):
        await expect(checks.nth(n)).to_have_attribute("data-ok", "true")
        await expect(checks.nth(n)).to_contain_text("√")
    await expect(verify.get_by_test_id("verify-winner")).to_have_text(winners)
    await expect(verify.get_by_test_id("verify-eligible")).to_have_attribute("data-count", str(eligible))
    seed = await verify.get_by_test_id("draw-seed").inner_text()
    assert re.fullmatch(r"[0-9a-f]{64}", seed)
    cli = verify.get_by_test_id("verify-cli")
    await expect(cli).to_contain_text(
        re.compile(r"live draw verify http://127\.0\.0\.1:\d+/api/rooms/jade/draws/d_\S+/verification$")
    )


@served("draws")
async def test_lucky_draws_by_keyword_and_by_button_the_winners_claim_and_verify(
    server: Running, http: aiohttp.ClientSession, browser: Browser
) -> None:
    errors = PageErrors()
    host = server.services.auth.mint("host1", ANY_ROOM, Role.HOST, 600)
    await make_room(http, host)
    console, _ = await open_console(browser, server, errors)
    amy = await open_viewer(browser, server, "amy", errors)
    bob = await open_viewer(browser, server, "bob", errors)

    # A keyword draw with one winner, and a button draw that both win.
    await open_form(console, "new-draw")
    await fill(console, {"draw-winners-input": "0"})
    await console.get_by_test_id("open-draw").click()
    await expect(console.get_by_test_id("notice")).to_contain_text("winners")
    await expect(console.get_by_test_id("draw-winners-input")).to_have_attribute("aria-invalid", "true")
    # (its 15 s: for both viewers' entries before it closes at its time, on a slow machine too)
    keyword_draw = {"draw-winners-input": "1", "draw-duration-input": "15", "draw-keyword-input": "想要"}
    await fill(console, keyword_draw)
    await console.get_by_test_id("open-draw").click()
    await expect(console.get_by_test_id("console-draw")).to_have_count(1)
    await fill(console, {"draw-winners-input": "2", "draw-duration-input": "600", "draw-keyword-input": ""})
    await console.get_by_test_id("open-draw").click()
    await expect(console.get_by_test_id("console-draw")).to_have_count(2)
    by_keyword, by_button = await draw_ids(http, host)

    for page in (amy, bob):
        await expect(page.get_by_test_id("draw-card")).to_have_count(2)
    keyword_card = tool_card(amy, "draw", by_keyword)
    await expect(keyword_card.get_by_test_id("draw-keyword")).to_have_text("评论“想要”即可参与")
    await keyword_card.get_by_test_id("draw-comment").click()  # one tap: the comment is sent
    await expect(keyword_card.get_by_test_id("draw-entered")).to_be_visible()
    await expect(amy.get_by_test_id("chat-comment").last).to_contain_text("想要")
    await bob.get_by_test_id("comment-input").fill("我也想要！")
    await bob.get_by_test_id("send-comment").click()
    await expect(tool_card(bob, "draw", by_keyword).get_by_test_id("draw-entered")).to_be_visible()
    for page in (amy, bob):
        await tool_card(page, "draw", by_button).get_by_test_id("enter-draw").click()
        await expect(tool_card(page, "draw", by_button).get_by_test_id("draw-entered")).to_be_visible()
    for page in (amy, bob):
        for draw in (by_keyword, by_button):
            entrants = tool_card(page, "draw", draw).get_by_test_id("draw-entrants")
            await expect(entrants).to_have_attribute("data-count", "2")
    await snap(amy, "tools-draw-entered")

    # The keyword draw closes at its time: one winner, the same on both phones and the console.
    for page in (amy, bob):
        await expect(tool_card(page, "draw", by_keyword).get_by_test_id("draw-winner")).to_have_count(
            1, timeout=40_000
        )
    shown = await tool_card(amy, "draw", by_keyword).get_by_test_id("draw-winner").inner_text()
    winner = shown.replace("★", "").strip()
    assert winner in ("amy", "bob")
    await expect(tool_card(bob, "draw", by_keyword).get_by_test_id("draw-winner")).to_contain_text(winner)
    await expect(console.locator(f'[data-id="{by_keyword}"]').get_by_test_id("draw-result")).to_contain_text(
        winner
    )
    lucky, unlucky = (amy, bob) if winner == "amy" else (bob, amy)
    won = tool_card(lucky, "draw", by_keyword)
    await won.get_by_test_id("claim-prize").click()
    await expect(won.get_by_test_id("prize-claimed")).to_be_visible()
    await expect(tool_card(unlucky, "draw", by_keyword).get_by_test_id("draw-not-won")).to_be_visible()
    # Both viewers verify in the browser: the seed against the commitment, and the winners
    # recomputed from the seed and the eligible list (the verification read any viewer may make).
    for card in (won, tool_card(unlucky, "draw", by_keyword)):
        await expect_verified(card, [winner], eligible=2)
    await snap(lucky, "tools-draw-won-and-verified")
    await snap(unlucky, "tools-draw-verified-by-a-viewer")
    # The console recomputes the winners from the seed and the entry list, as live draw verify.
    console_row = console.locator(f'[data-id="{by_keyword}"]')
    await console_row.get_by_test_id("verify-draw").click()
    await expect(console_row.get_by_test_id("console-verified")).to_have_attribute("data-ok", "true")

    # The host closes the button draw early: both win, both claim.
    close = console.locator(f'[data-id="{by_button}"]').get_by_test_id("close-draw")
    await close.click()
    await close.click()  # confirm
    for page in (amy, bob):
        card = tool_card(page, "draw", by_button)
        await expect(card.get_by_test_id("draw-winner")).to_have_count(2, timeout=15_000)
        await card.get_by_test_id("claim-prize").click()
        await expect(card.get_by_test_id("prize-claimed")).to_be_visible()
    announced = [
        n.replace("★", "").strip() for n in await card.get_by_test_id("draw-winner").all_inner_texts()
    ]
    assert sorted(announced) == ["amy", "bob"]
    await expect_verified(card, announced, eligible=2)  # in draw order, as announced

    # A forged verification (the winners swapped) is caught in the browser: a cross, not a tick.
    async def forged(route: Route) -> None:
        answer = await route.fetch()
        proof = await answer.json()
        await route.fulfill(response=answer, json={**proof, "winner_ids": proof["winner_ids"][::-1]})

    await amy.route("**/verification", forged)
    verify = tool_card(amy, "draw", by_button).get_by_test_id("draw-verify")
    await verify.locator("summary").click()
    await expect(verify.get_by_test_id("verify-verdict")).to_have_attribute("data-ok", "false")
    await expect(verify.get_by_test_id("verify-verdict")).to_have_text("× 验证未通过")
    await expect(verify.get_by_test_id("verify-checks").locator('li[data-ok="false"]')).to_have_text(
        ["× 用种子重新计算的中奖名单与公布的不一致"]
    )
    await snap(console, "tools-console-draws")
    async with http.get(f"/api/rooms/{ROOM}/draws/{by_button}", headers=bearer(host)) as resp:
        claims = (await resp.json())["claims"]
    assert sorted(claims) == ["amy", "bob"]
    assert script_errors(errors, 400) == []


# -- polls ----------------------------------------------------------------------------------


@served("polls")
async def test_a_poll_with_live_bars_a_changed_vote_and_the_final_result(
    server: Running, http: aiohttp.ClientSession, browser: Browser
) -> None:
    errors = PageErrors()
    host = server.services.auth.mint("host1", ANY_ROOM, Role.HOST, 600)
    await make_room(http, host)
    console, _ = await open_console(browser, server, errors)
    amy = await open_viewer(browser, server, "amy", errors)
    bob = await open_viewer(browser, server, "bob", errors)

    await open_form(console, "new-poll")
    await fill(console, {"poll-question-input": "下一件拍什么？", "poll-options-input": "只有一个"})
    await console.get_by_test_id("open-poll").click()
    await expect(console.get_by_test_id("poll-options-input")).to_have_attribute("aria-invalid", "true")
    await fill(console, {"poll-options-input": "手镯\n吊坠\n戒指", "poll-duration-input": "600"})
    await console.get_by_test_id("open-poll").click()
    row = console.get_by_test_id("console-poll")
    await expect(row).to_have_count(1)

    amy_card = amy.get_by_test_id("poll-card")
    bob_card = bob.get_by_test_id("poll-card")
    await expect(amy_card.get_by_test_id("poll-option")).to_have_count(3)
    await amy_card.get_by_test_id("poll-option").nth(0).click()
    await expect(amy_card.get_by_test_id("poll-option").nth(0)).to_have_attribute("aria-pressed", "true")
    await bob_card.get_by_test_id("poll-option").nth(1).click()
    for card in (amy_card, bob_card):
        await expect(card.get_by_test_id("poll-tally").nth(0)).to_have_attribute("data-count", "1")
        await expect(card.get_by_test_id("poll-tally").nth(1)).to_have_attribute("data-count", "1")
    # Amy changes her mind: the bars move on every screen.
    await amy_card.get_by_test_id("poll-option").nth(1).click()
    await expect(amy_card.get_by_test_id("poll-option").nth(1)).to_have_attribute("aria-pressed", "true")
    await expect(amy_card.get_by_test_id("poll-option").nth(0)).to_have_attribute("aria-pressed", "false")
    for card in (amy_card, bob_card):
        await expect(card.get_by_test_id("poll-tally").nth(0)).to_have_attribute("data-count", "0")
        await expect(card.get_by_test_id("poll-tally").nth(1)).to_have_attribute("data-count", "2")
    await expect(row.get_by_test_id("poll-tally")).to_have_text(["0", "2", "0"])
    await snap(bob, "tools-poll-live")

    await row.get_by_test_id("close-poll").click()
    await row.get_by_test_id("close-poll").click()  # confirm
    for card in (amy_card, bob_card):
        await expect(card.get_by_test_id("poll-final")).to_be_visible()
        await expect(card.locator(".poll-option.winner")).to_have_count(1)
        await expect(card.get_by_test_id("poll-option").first).to_be_disabled()
    await expect(row.get_by_test_id("tool-state")).to_have_text("已结束")
    await snap(amy, "tools-poll-final")
    assert script_errors(errors) == []


# -- Q&A ------------------------------------------------------------------------------------


@served("questions")
async def test_questions_upvoted_ranked_pinned_and_answered(
    server: Running, http: aiohttp.ClientSession, browser: Browser
) -> None:
    errors = PageErrors()
    host = server.services.auth.mint("host1", ANY_ROOM, Role.HOST, 600)
    await make_room(http, host)
    console, _ = await open_console(browser, server, errors)
    amy = await open_viewer(browser, server, "amy", errors)
    bob = await open_viewer(browser, server, "bob", errors)

    box = amy.get_by_test_id("question-input")
    await box.fill("手镯圈口多大？")
    await expect(amy.get_by_test_id("question-count")).to_have_text("7 / 200")
    await box.press("Enter")
    await expect(amy.get_by_test_id("question")).to_have_count(1)
    await expect(box).to_have_value("")
    await bob.get_by_test_id("question-input").fill("有证书吗？")
    await bob.get_by_test_id("ask").click()
    await expect(bob.get_by_test_id("question")).to_have_count(2, timeout=10_000)
    await expect(amy.get_by_test_id("question")).to_have_count(2, timeout=10_000)

    # Amy upvotes Bob's question (not her own): it leads the host's queue.
    bobs = amy.locator('[data-testid="question"]', has_text="有证书吗")
    own = amy.locator('[data-testid="question"]', has_text="圈口")
    await expect(own.get_by_test_id("upvote")).to_be_disabled()
    await bobs.get_by_test_id("upvote").click()
    await expect(bobs.get_by_test_id("upvotes")).to_have_text("1")
    await expect(bobs.get_by_test_id("upvote")).to_have_attribute("aria-pressed", "true")
    queue = console.get_by_test_id("queue-question")
    await expect(queue).to_have_count(2)
    await expect(queue.first).to_contain_text("有证书吗", timeout=10_000)
    await expect(queue.first.get_by_test_id("queue-upvotes")).to_have_text("▲ 1")

    # The host pins it: both phones show it highlighted; then answers it.
    await queue.first.get_by_test_id("pin-question").click()
    for page in (amy, bob):
        await expect(page.get_by_test_id("pinned-question")).to_contain_text("有证书吗")
    await snap(bob, "tools-qna-pinned")
    first = console.get_by_test_id("queue-question").first
    await expect(first.get_by_test_id("unpin-question")).to_be_visible()
    await snap(console, "tools-console-qna")
    await console.get_by_test_id("queue-question").first.get_by_test_id("answer-question").click()
    for page in (amy, bob):  # answered: unpinned, out of the queue, shown as answered
        await expect(page.get_by_test_id("pinned-question")).to_have_count(0)
        answered = page.get_by_test_id("answered-question")
        await expect(answered).to_contain_text("有证书吗")
        await expect(answered.get_by_test_id("question-answered")).to_be_visible()
        await expect(page.get_by_test_id("question")).to_have_count(1)
    await expect(console.get_by_test_id("queue-question")).to_have_count(1)
    await expect(console.get_by_test_id("queue-question")).to_contain_text("圈口")
    assert script_errors(errors) == []
