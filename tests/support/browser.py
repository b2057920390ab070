"""Debian's Chromium driven by Playwright, for the browser page's tests.

The browser is `/usr/bin/chromium` (`apt-get install chromium`), never one Playwright downloads;
the network is closed, so everything it loads comes from the voicestack server under test.
Screenshots go to `test-artifacts/` at the repository root (gitignored).
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    async_playwright,
    expect,
)

from tests.support.server import REPO

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# A microphone that plays a beep, granted without a prompt (for the voice tests).
FAKE_MIC_ARGS = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
ARTIFACTS = REPO / "test-artifacts"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
TIMEOUT_MS = 15_000
# Assertions wait as long as actions do: under the whole suite's load, a page can take longer
# than Playwright's default 5 s for, say, a fake microphone to start recording.
expect.set_options(timeout=TIMEOUT_MS)


def require_chromium() -> None:
    """Skip the test when Debian's chromium is not installed (CI installs it)."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)")


@asynccontextmanager
async def chromium(*extra_args: str) -> AsyncIterator[Browser]:
    """A headless Chromium for the `async with` block."""
    require_chromium()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=[*LAUNCH_ARGS, *extra_args]
        )
        try:
            yield browser
        finally:
            await browser.close()


# What a page may log without failing its test: the microphone button asks GET /voice whether
# the server has voice (405: yes, POST only; 404: no), and Chrome logs every refused request.
REFUSED = "Failed to load resource: the server responded with a status of"


@dataclass
class PageLog:
    """Uncaught errors and console errors of one page, asserted empty at the end of a test."""

    # Console errors the test expects (their text starts with one of these).
    expected: tuple[str, ...] = ()
    errors: list[str] = field(default_factory=list)

    def watch(self, page: Page) -> Page:
        """Start recording `page`'s errors; returns the page."""
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))
        page.on("console", self._console)
        return page

    def _console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        url = message.location.get("url", "")
        if message.text.startswith(REFUSED) and url.split("?")[0].endswith("/voice"):
            return
        if message.text.startswith(self.expected):
            return
        self.errors.append(f"console: {message.text} ({url})")

    def assert_clean(self) -> None:
        """No uncaught error and no unexpected console error (a CSP refusal would be one)."""
        assert self.errors == []


async def new_page(
    browser: Browser,
    log: PageLog,
    *,
    viewport: Mapping[str, int] = DESKTOP,
    color_scheme: str = "light",
    **options: Any,
) -> Page:
    """A page in a context of its own (its own cookies and storage: another user)."""
    context: BrowserContext = await browser.new_context(
        viewport=dict(viewport), color_scheme=color_scheme, **options
    )
    context.set_default_timeout(TIMEOUT_MS)
    return log.watch(await context.new_page())


async def screenshot(page: Page, name: str) -> Path:
    """Save what `page` shows as `test-artifacts/{name}.png`; returns the path."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), animations="disabled")
    return path


def marker() -> str:
    """A word no other test's message contains, for the fake model's plans to `match`."""
    return f"m{secrets.token_hex(5)}"
