"""voicestack.js, the page's reusable client, run in Chromium.

Its text state (a `message` replaces, a `delta` appends, a replayed event changes nothing) and
its reconnection against a fake EventSource (tests/web/client_state.js), then `watch` and
`threadFeed` against a real server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import pytest
from playwright.async_api import Page

from tests.support.browser import PageLog, chromium, marker, new_page
from tests.support.server import ServerProcess
from voicestack.testing.fake_openai import FakeOpenAI

pytestmark = pytest.mark.anyio

CLIENT_STATE_JS = (Path(__file__).parent / "web" / "client_state.js").read_text()


@pytest.fixture
async def page(site: ServerProcess) -> AsyncIterator[Page]:
    """A page of the server's origin without the app on it (voicestack.js is imported)."""
    # 404s are expected here: the tests ask about a thread that does not exist.
    log = PageLog(expected=("Failed to load resource: the server responded with a status of 404",))
    async with chromium() as browser:
        page = await new_page(browser, log)
        # Every response of the server forbids scripts (only the app's page allows its own), so
        # the empty document that imports voicestack.js is made up by the browser, at the
        # server's origin.
        blank = f"{site.url}/blank"
        await page.route(blank, lambda route: route.fulfill(body="", content_type="text/html"))
        await page.goto(blank)
        yield page
    log.assert_clean()


async def create_thread(site: ServerProcess, title: str) -> str:
    async with site.client() as client:
        response = await client.post("/api/threads", json={"title": title})
        assert response.status_code == 201, response.text
        return response.json()["id"]


async def test_text_state_and_reconnection(page: Page, site: ServerProcess) -> None:
    thread_id = await create_thread(site, "client state")
    token = site.token
    result = await page.evaluate(CLIENT_STATE_JS, {"realThreadId": thread_id, "token": token})

    assert result["state"] == {
        # message, ready, delta, same event again (ignored), same seq again (ignored), delta,
        # message (replaces), an event from before the cursor (ignored)
        "texts": ["Hel", "Hel", "Hello", None, None, "Hello world", "Hi!", None],
        "cursor": 18,
        "unknown": {"id": "m2", "role": "assistant", "status": "streaming", "text": "resumed"},
        "speech": ["f1", "f2"],
        "repeatedSpeech": None,
    }
    assert result["firstUrl"] == f"/api/threads/{thread_id}/events?token={token}"
    assert result["calls"] == [
        ["open"],
        ["message", "u1", "complete", "Hi"],
        ["message", "a1", "streaming", "Hel"],
        ["toolCall", "c1", "running"],
        ["ready", 20],
        ["delta", "a1", "lo", "Hello"],
        ["delta", "a1", " there", "Hello there"],
        ["error", "disconnected", False, True],
        ["open"],
        ["delta", "a1", "!", "Hello there!"],
        ["toolCall", "c1", "done"],
        ["speech", "a1", 1],
        ["message", "a1", "complete", "Hello there!"],
        # The server was asked why the stream closed; it knows the thread, so it is retried.
        ["error", "disconnected", False, True],
        # A thread the server does not know ends the feed for good.
        ["error", "thread_not_found", True, False],
    ]
    assert result["finalText"] == "Hello there!"
    assert result["reopened"] == f"/api/threads/{thread_id}/events?since=26&token={token}"
    assert result["watchUrl"] == f"/api/watch/threads.list?args={quote('{}')}&token={token}"
    assert result["values"] == [[[{"id": "t1"}], 7]]
    assert result["errors"] == [["boom", False]]


async def test_watch_and_thread_feed_against_the_server(
    page: Page, site: ServerProcess, provider: FakeOpenAI
) -> None:
    mark = marker()
    answer = f"Here is the answer for {mark}, in several words that stream one by one."
    provider.script({"match": mark, "text": answer, "tokens_per_second": 100})
    title = f"feed {mark}"
    script = """async ({ title, question, token }) => {
      const vs = await import("/web/voicestack.js");
      const until = (check) => new Promise((resolve) => {
        const poll = setInterval(() => { if (check()) { clearInterval(poll); resolve(); } }, 20);
      });
      const titles = [];
      const names = (threads) => threads.map((t) => t.title);
      const seen = (threads) => titles.push(names(threads));
      const list = vs.watch("threads.list", {}, seen, { token });
      await until(() => titles.length === 1);
      const { id } = await vs.request("/api/threads", { method: "POST", body: { title }, token });
      await until(() => titles.some((names) => names.includes(title)));
      list.close();

      let cursor = null;
      const grown = [];
      const feed = vs.threadFeed(id, {
        ready: (c) => { cursor = c; },
        delta: (_d, row) => grown.push(row.text),
      }, { token });
      await until(() => cursor !== null);
      const sent = await vs.request(`/api/threads/${id}/messages`, {
        method: "POST", body: { text: question }, token,
      });
      const reply = () => feed.state.messages.get(sent.replyId);
      await until(() => reply()?.status === "complete");
      feed.close();

      // A second client resumes from the first one's snapshot cursor: the same text, once.
      const resumed = vs.threadFeed(id, {}, { since: cursor, token });
      await until(() => resumed.state.messages.get(sent.replyId)?.status === "complete");
      resumed.close();
      return {
        text: reply().text,
        grown,
        resumedText: resumed.state.messages.get(sent.replyId).text,
        resumedReady: resumed.state.ready,
      };
    }"""
    question = f"{mark} question"
    result = await page.evaluate(
        script, {"title": title, "question": question, "token": site.token}
    )
    assert result["text"] == answer
    assert result["resumedText"] == answer
    assert result["resumedReady"] is False  # resumed: no snapshot, so no ready event
    assert len(result["grown"]) >= 2
    assert result["grown"][-1] == answer
    assert all(answer.startswith(text) for text in result["grown"])
