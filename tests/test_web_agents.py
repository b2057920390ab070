"""The browser page with named agents: a new thread's agent is picked on the page, and the open
thread shows its agent, live through a handoff."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from playwright.async_api import Browser, expect

from tests.support.agent import chat_bodies
from tests.support.agents import running_agents_server
from tests.support.browser import PageLog, chromium, marker, new_page, screenshot
from tests.support.page import replies, send
from tests.support.server import ServerProcess
from tests.support.web_server import call_plan
from voicestack.testing.fake_openai import FakeOpenAI

pytestmark = pytest.mark.anyio


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def agents_site(
    provider: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    with running_agents_server(tmp_path_factory.mktemp("web-agents"), provider.api_base) as site:
        yield site


async def test_a_new_thread_answers_as_the_picked_agent_and_shows_its_handoff(
    browser: Browser, log: PageLog, agents_site: ServerProcess, provider: FakeOpenAI
) -> None:
    mark = marker()
    provider.script(
        call_plan(mark, "transfer_to_billing", {}, "call_transfer"),
        {"match": mark, "text": "Billing here."},
    )
    page = await new_page(browser, log)
    await page.goto(agents_site.page_url)
    picker = page.locator("#agent-picker")
    await expect(page.locator("#agent-choice")).to_be_visible()
    await expect(picker.locator("option")).to_have_text(
        ["assistant", "researcher", "support", "billing", "ping", "pong"]
    )
    await picker.select_option("support")

    await send(page, f"{mark} my refund")

    await expect(page.locator("#agent-choice")).to_be_hidden()
    await expect(replies(page).last).to_have_attribute("data-status", "complete")
    await expect(page.locator("#thread-agent")).to_have_text("Agent: billing")
    system = page.locator('#messages article[data-role="system"] .msg-text')
    await expect(system).to_have_text("Transferred to billing")
    await screenshot(page, "web-agent-handoff")
    assert [body["model"] for body in chat_bodies(provider, mark)] == [
        "support-model",
        "billing-model",
    ]
