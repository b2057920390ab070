"""The page's sign-in in Chromium: a person signs in with the identity provider
(tests/support/oidc_provider.py), chats, signs out; a second person signs in on the same
browser and sees none of the first one's threads."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from playwright.async_api import Browser, Page, expect

from tests.support.browser import PageLog, chromium, marker, new_page, screenshot
from tests.support.oidc_provider import OidcProvider, oidc_provider, signin_server
from tests.support.page import replies, send
from tests.support.server import ServerProcess
from voicestack.testing.fake_openai import FakeOpenAI

pytestmark = pytest.mark.anyio

# Chrome logs each refused request: GET /api/me before anyone signed in (401), and the first
# person's thread asked for by the second (404).
REFUSED = tuple(
    f"Failed to load resource: the server responded with a status of {status}"
    for status in (401, 404)
)


@pytest.fixture(scope="module")
def idp() -> Iterator[OidcProvider]:
    with oidc_provider() as running:
        yield running


@pytest.fixture(scope="module")
def signin_site(
    idp: OidcProvider, provider: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("signin-page")
    args = ["--openai-base-url", provider.api_base, "--flush-ms", "20"]
    with signin_server(workdir, idp, *args) as server:
        yield server


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as browser:
        yield browser


async def sign_in_as(page: Page, idp: OidcProvider, subject: str, email: str) -> None:
    """From the sign-in screen, sign in with the provider as this person."""
    idp.login_as(subject, email)
    await expect(page.locator("#signin-title")).to_be_visible()
    await page.get_by_role("link", name="Sign in with SSO").click()
    await expect(page.locator("#who")).to_have_text(email)
    await expect(page.locator("#signin")).to_be_hidden()


async def test_sign_in_chat_sign_out_and_another_person_sees_none_of_it(
    browser: Browser, signin_site: ServerProcess, idp: OidcProvider, provider: FakeOpenAI
) -> None:
    log = PageLog(expected=REFUSED)
    page = await new_page(browser, log)
    await page.goto(signin_site.url)
    await expect(page.locator(".app")).to_be_hidden()
    await screenshot(page, "signin-screen")

    await sign_in_as(page, idp, "page-ana", "ana@example.com")
    mark = marker()
    provider.script({"match": f"{mark} hello", "text": "Hello, Ana."})
    await send(page, f"{mark} hello")
    await expect(replies(page).last).to_have_attribute("data-status", "complete")
    await expect(replies(page).last.locator(".msg-text")).to_have_text("Hello, Ana.")
    thread_id = page.url.split("#")[1]
    await expect(page.get_by_role("link", name=f"{mark} hello")).to_be_visible()
    await screenshot(page, "signin-chatting")

    await page.locator("#sign-out").click()
    await expect(page.locator("#signin-title")).to_be_visible()
    cookies = {c["name"] for c in await page.context.cookies()}
    assert cookies.isdisjoint({"vs_session", "vs_csrf"})

    await sign_in_as(page, idp, "page-bea", "bea@example.com")
    await expect(page.locator("#threads-empty")).to_be_visible()
    await expect(page.locator("#thread-list li")).to_have_count(0)
    await page.goto(f"{signin_site.url}/#{thread_id}")
    await expect(page.locator("#thread-title")).to_have_text("Thread not found")
    log.assert_clean()
