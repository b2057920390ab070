"""The browser page end to end: two users on one thread in Chromium, against a real server.

User A writes and invites user B; B, in another browser context, sees the reply grow and the
tool-call panel change live, and approves or denies tools. Screenshots land in test-artifacts/.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import NamedTuple

import pytest
from playwright.async_api import Browser, Page, expect

from tests.support.browser import PHONE, PageLog, chromium, marker, new_page, screenshot
from tests.support.page import api_requests, record, recorded, replies, send, tool_card
from tests.support.server import ServerProcess
from tests.support.web_server import call_plan, words
from voicestack.testing.fake_openai import FakeOpenAI

pytestmark = pytest.mark.anyio

GREETING = "Hello! What shall I count?"


class Users(NamedTuple):
    """The tokens of user A (ana) and user B (bea)."""

    a: str
    b: str


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def users(site: ServerProcess) -> Users:
    """Two users who are not admins: each sees only the threads they own or were invited to."""
    return Users(site.create_token("ana"), site.create_token("bea"))


async def start_thread(
    browser: Browser,
    log: PageLog,
    site: ServerProcess,
    users: Users,
    provider: FakeOpenAI,
    mark: str,
    **b_opts,
) -> tuple[Page, Page]:
    """User A starts a thread from the page and invites user B, who opens it from B's own
    thread list."""
    provider.script({"match": f"{mark} hello", "text": GREETING})
    a = await new_page(browser, log)
    await a.goto(f"{site.url}/?token={users.a}")
    await send(a, f"{mark} hello")
    await expect(replies(a).last).to_have_attribute("data-status", "complete")
    thread_id = a.url.split("#")[1]
    async with site.client(token=users.a) as http:
        invited = await http.post(
            "/api/mutation/threads.invite", json={"args": {"id": thread_id, "user": "bea"}}
        )
        assert invited.status_code == 200, invited.text
    b = await new_page(browser, log, **b_opts)
    await b.goto(f"{site.url}/?token={users.b}")
    await b.get_by_role("link", name=f"{mark} hello").click()
    await expect(b.locator("#thread-title")).to_have_text(f"{mark} hello")
    await expect(replies(b).locator(".msg-text")).to_have_text([GREETING])
    asked = b.locator('#messages article[data-role="user"] .msg-meta span')
    await expect(asked).to_have_text(["ana"])  # the author's name, not their id
    return a, b


async def test_one_user_sends_the_other_sees_it_stream(
    browser: Browser, log: PageLog, site: ServerProcess, users: Users, provider: FakeOpenAI
) -> None:
    mark = marker()
    answer = f"I counted to four. {words(40)}"
    a_requests = None
    provider.script(
        call_plan(f"{mark} count", "slow_count", {"n": 4, "delay_s": 0.3}, "call_count"),
        {"match": f"{mark} count", "text": answer, "tokens_per_second": 40},
    )
    a, b = await start_thread(browser, log, site, users, provider, mark, color_scheme="dark")
    a_requests = api_requests(a)
    await record(b)

    await send(a, f"{mark} count to four")

    card = tool_card(b, "slow_count")
    await expect(card).to_have_attribute("data-status", "running")
    await expect(card.locator(".tool-args")).to_have_text("n: 4, delay_s: 0.3")
    await expect(card.locator(".tool-percent")).to_have_text(re.compile(r"^[1-9]\d?%$"))
    await screenshot(b, "web-user-b-tool-running")
    await expect(card).to_have_attribute("data-status", "done", timeout=10_000)
    await expect(card.locator(".tool-result")).to_have_text('{"counted":4}')
    await expect(b.locator("#stop")).to_be_visible()  # the reply streams after the tool
    reply_b = replies(b).last
    await expect(reply_b).to_have_attribute("data-status", "complete", timeout=10_000)
    await expect(reply_b.locator(".msg-text")).to_have_text(answer)
    await expect(reply_b.locator(".chip")).to_have_text("slow_count · Done")
    await expect(b.locator("#stop")).to_be_hidden()

    seen = await recorded(b)
    reply_id = await reply_b.get_attribute("data-message-id")
    lengths = seen["texts"][reply_id]
    partial = [n for n in lengths if 0 < n < len(answer)]
    assert len(set(partial)) >= 2, lengths  # B saw the text grow, not just appear
    assert lengths == sorted(lengths), lengths
    assert lengths[-1] == len(answer)
    states = seen["tools"]["slow_count"]
    assert states[0].startswith(("pending", "running")), states
    assert states[-1] == "done", states
    progress = [s for s in states if s.startswith("running ") and s != "running 0%"]
    assert len(progress) >= 2, states  # the progress bar moved while B watched

    reply_a = replies(a).last
    await expect(reply_a.locator(".msg-text")).to_have_text(answer)
    await expect(tool_card(a, "slow_count")).to_have_attribute("data-status", "done")
    for page in (a, b):
        await expect(page.locator("#usage")).to_contain_text("1 tool call")
        await expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    await screenshot(a, "web-user-a")
    await screenshot(b, "web-user-b-dark")

    # The token from the page's URL goes with every API call: a header, or ?token= on streams.
    assert a_requests, "user A's page made no API request"
    for request in a_requests:
        query_token = f"token={users.a}" in request.url
        header = await request.header_value("authorization")
        assert query_token or header == f"Bearer {users.a}", (request.method, request.url)


async def test_approve_a_guarded_tool_from_the_other_page(
    browser: Browser, log: PageLog, site: ServerProcess, users: Users, provider: FakeOpenAI
) -> None:
    mark = marker()
    provider.script(
        call_plan(f"{mark} echo", "guarded_echo", {"text": "hello"}, "call_echo"),
        {"match": f"{mark} echo", "text": "Echoed: hello."},
    )
    a, b = await start_thread(browser, log, site, users, provider, mark)
    await send(a, f"{mark} echo hello")

    card = tool_card(b, "guarded_echo")
    await expect(card).to_have_attribute("data-status", "awaiting_approval")
    await expect(card.locator(".status-badge")).to_have_text("Needs approval")
    await expect(tool_card(a, "guarded_echo").get_by_role("button")).to_have_count(2)
    await screenshot(b, "web-user-b-awaiting-approval")
    await card.get_by_role("button", name="Approve guarded_echo").click()

    for page in (a, b):
        done = tool_card(page, "guarded_echo")
        await expect(done).to_have_attribute("data-status", "done")
        await expect(done.locator(".tool-result")).to_have_text('{"echo":"hello"}')
        await expect(done.get_by_role("button")).to_have_count(0)
        await expect(replies(page).last.locator(".msg-text")).to_have_text("Echoed: hello.")


async def test_deny_a_guarded_tool(
    browser: Browser, log: PageLog, site: ServerProcess, users: Users, provider: FakeOpenAI
) -> None:
    mark = marker()
    provider.script(
        call_plan(f"{mark} echo", "guarded_echo", {"text": "secret"}, "call_echo"),
        {"match": f"{mark} echo", "text": "Understood, I will not echo it."},
    )
    a, b = await start_thread(browser, log, site, users, provider, mark)
    await send(a, f"{mark} echo a secret")
    card = tool_card(a, "guarded_echo")
    await card.get_by_role("button", name="Deny guarded_echo").click()
    for page in (a, b):
        denied = tool_card(page, "guarded_echo")
        await expect(denied).to_have_attribute("data-status", "failed")
        await expect(denied.locator(".tool-error")).to_have_text("denied by the user")
        await expect(replies(page).last.locator(".msg-text")).to_have_text(
            "Understood, I will not echo it."
        )


async def test_stop_a_streaming_reply_on_a_phone(
    browser: Browser, log: PageLog, site: ServerProcess, provider: FakeOpenAI
) -> None:
    mark = marker()
    provider.script({"match": f"{mark} long", "text": words(200), "tokens_per_second": 15})
    phone = await new_page(browser, log, viewport=PHONE)
    await phone.goto(site.page_url)
    await send(phone, f"{mark} long story please")
    reply = replies(phone).last
    await expect(reply).to_have_attribute("data-status", "streaming")
    await expect(reply.locator(".msg-text")).to_contain_text("w3 ")
    await screenshot(phone, "web-phone-streaming")
    await phone.get_by_role("button", name="Stop").click()

    await expect(reply).to_have_attribute("data-status", "interrupted")
    await expect(reply.locator(".msg-meta")).to_contain_text("The reply was stopped.")
    await expect(phone.get_by_role("button", name="Stop")).to_be_hidden()
    kept = await reply.locator(".msg-text").text_content()
    assert kept, "the stopped reply lost its text"
    assert words(200).startswith(kept), kept
    assert len(kept) < len(words(200)), kept

    # The thread list is a drawer on a phone.
    await phone.get_by_role("button", name="Threads").click()
    link = phone.get_by_role("link", name=f"{mark} long story please")
    await expect(link).to_be_visible()
    await expect(link).to_have_attribute("aria-current", "page")
    await screenshot(phone, "web-phone-threads")
    await phone.keyboard.press("Escape")
    await expect(link).to_be_hidden()


async def test_enter_sends_and_shift_enter_adds_a_line(
    browser: Browser, log: PageLog, site: ServerProcess, provider: FakeOpenAI
) -> None:
    mark = marker()
    provider.script({"match": mark, "text": "Two lines received."})
    page = await new_page(browser, log)
    await page.goto(f"{site.page_url}#new")
    box = page.locator("#composer-input")
    await expect(box).to_be_focused()
    await box.type(f"{mark} first line")
    await box.press("Shift+Enter")
    await box.type("second line")
    await expect(box).to_have_value(f"{mark} first line\nsecond line")
    await box.press("Enter")
    await expect(box).to_have_value("")
    user = page.locator('#messages article[data-role="user"]')
    await expect(user.locator(".msg-text")).to_have_text(f"{mark} first line\nsecond line")
    await expect(replies(page).last.locator(".msg-text")).to_have_text("Two lines received.")
    await expect(page.locator("#thread-title")).to_have_text(f"{mark} first line")
    assert page.url.split("#")[1].startswith("thr_")


async def test_a_thread_that_does_not_exist(browser: Browser, site: ServerProcess) -> None:
    # The page asks the server why the feed was refused, and Chrome logs the 404s.
    log = PageLog(expected=("Failed to load resource: the server responded with a status of 404",))
    page = await new_page(browser, log)
    await page.goto(f"{site.page_url}#thr_nothing_here")
    await expect(page.locator("#thread-title")).to_have_text("Thread not found")
    await expect(page.locator("#empty-text")).to_have_text(
        "This thread does not exist. Pick one from the list or start a new one."
    )
    await expect(page.locator("#toast")).to_have_text("No thread has id 'thr_nothing_here'.")
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    log.assert_clean()
