"""The page across a server restart: its EventSources reconnect by themselves and the thread
resumes exactly where it stopped (Last-Event-ID), with no text lost or shown twice."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.async_api import expect

from tests.support.browser import PageLog, chromium, marker, new_page, screenshot
from tests.support.page import record, recorded, replies
from tests.support.web_server import web_server, words
from voicestack.testing.fake_openai import FakeOpenAI

pytestmark = pytest.mark.anyio


@pytest.fixture
def provider() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


async def test_the_page_reconnects_after_a_restart_and_resumes_exactly(
    provider: FakeOpenAI, tmp_path: Path
) -> None:
    mark = marker()
    first = "Before the restart."
    answer = f"After the restart: {words(60)}"
    provider.script(
        {"match": f"{mark} one", "text": first},
        {"match": f"{mark} two", "text": answer, "tokens_per_second": 30},
    )
    # While the server is down, Chrome logs each refused reconnection attempt.
    log = PageLog(expected=("Failed to load resource: net::ERR_CONNECTION_REFUSED",))
    with web_server(tmp_path / "server", provider.api_base) as server:
        async with server.client() as client:
            thread_id = (await client.post("/api/threads", json={"title": mark})).json()["id"]
            async with chromium() as browser:
                page = await new_page(browser, log)
                await page.goto(f"{server.page_url}#{thread_id}")
                await client.post(
                    f"/api/threads/{thread_id}/messages", json={"text": f"{mark} one"}
                )
                await expect(replies(page).locator(".msg-text")).to_have_text([first])
                await expect(page.locator("#conn")).to_have_attribute("data-state", "live")
                await record(page)

                # Down first, then up: a restart in one step can be quicker than the page's
                # retry delay, and the page would be live again before the test looked.
                assert server.stop() == 0, server.log()
                await expect(page.locator("#conn")).to_have_attribute("data-state", "reconnecting")
                await expect(page.locator("#conn-text")).to_have_text("Reconnecting…")
                await screenshot(page, "web-reconnecting")
                server.start()
                # The reply starts streaming while the page may still be away.
                response = await client.post(
                    f"/api/threads/{thread_id}/messages", json={"text": f"{mark} two"}
                )
                reply_id = response.json()["replyId"]
                await expect(page.locator("#conn")).to_have_attribute(
                    "data-state", "live", timeout=15_000
                )
                reply = page.locator(f"#msg-{reply_id}")
                await expect(reply).to_have_attribute("data-status", "complete", timeout=15_000)
                await expect(reply.locator(".msg-text")).to_have_text(answer)
                texts = page.locator("#messages article .msg-text")
                await expect(texts).to_have_text([f"{mark} one", first, f"{mark} two", answer])

                lengths = (await recorded(page))["texts"][reply_id]
                # Text only ever grew, to exactly the answer: nothing was applied twice.
                assert lengths == sorted(lengths), lengths
                assert max(lengths) == len(answer), lengths
    log.assert_clean()
