"""Browser-test helpers: Debian's Chromium driven by Playwright (never a downloaded browser),
pages that fail the test on a script error, and screenshots kept as test artifacts.

Chromium is required, not optional: a missing /usr/bin/chromium fails these tests with the
command that installs it (`.ci/run` installs it itself), so they never skip silently.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page, async_playwright

CHROMIUM = os.environ.get("LIVE_CHROMIUM", "/usr/bin/chromium")
#: Screenshots land here (CI keeps the folder as an artifact).
ARTIFACTS = Path(
    os.environ.get("LIVE_TEST_ARTIFACTS", Path(__file__).resolve().parent.parent / "test-artifacts")
)
#: Without the background-networking flags Chromium keeps dialling out of this closed network.
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic"]  # fmt: skip
PHONE = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
}
DESKTOP = {"viewport": {"width": 1440, "height": 900}}


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"{CHROMIUM} is missing: apt-get install chromium fonts-wqy-zenhei (or set LIVE_CHROMIUM)"
        )
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield launched
        finally:
            await launched.close()


class PageErrors:
    """Script errors and console errors of a page: a test asserts there were none."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def watch(self, page: Page) -> Page:
        page.on("pageerror", lambda error: self.errors.append(f"pageerror: {error}"))
        page.on("console", self._console)
        return page

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console.error: {message.text}")


async def open_page(browser: Browser, url: str, errors: PageErrors, *, phone: bool = False) -> Page:
    context: BrowserContext = await browser.new_context(**(PHONE if phone else DESKTOP), locale="zh-CN")
    page = errors.watch(await context.new_page())
    await page.goto(url)
    return page


async def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    # From the top: a full-page shot of a scrolled page paints a sticky header mid-page.
    await page.evaluate("window.scrollTo(0, 0)")
    await page.screenshot(path=str(path), full_page=True)
    return path
