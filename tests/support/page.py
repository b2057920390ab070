"""The browser page as a test sees it: where things are, and what a page has shown over time."""

from __future__ import annotations

from typing import Any

from playwright.async_api import Locator, Page, Request

# Installed in a page: records, per assistant message, each new length of its shown text, and
# per tool call each new "status percent" its card shows, as the DOM changes.
RECORDER_JS = """() => {
  const seen = { texts: {}, tools: {} };
  const push = (list, value) => { if (list[list.length - 1] !== value) list.push(value); };
  const record = () => {
    for (const a of document.querySelectorAll('#messages article[data-role="assistant"]')) {
      const text = a.querySelector(".msg-text").textContent;
      push((seen.texts[a.dataset.messageId] ||= []), text.length);
    }
    for (const card of document.querySelectorAll("#tool-list li")) {
      const percent = card.querySelector(".tool-percent")?.textContent;
      const shown = percent ? `${card.dataset.status} ${percent}` : card.dataset.status;
      push((seen.tools[card.dataset.name] ||= []), shown);
    }
  };
  const options = { subtree: true, childList: true, characterData: true, attributes: true };
  new MutationObserver(record).observe(document.getElementById("messages"), options);
  new MutationObserver(record).observe(document.getElementById("tool-list"), options);
  window.__seen = seen;
}"""


async def record(page: Page) -> None:
    """Start recording what `page` shows (see RECORDER_JS)."""
    await page.evaluate(RECORDER_JS)


async def recorded(page: Page) -> dict[str, Any]:
    """`{"texts": {messageId: [lengths]}, "tools": {name: [shown states]}}` so far."""
    return await page.evaluate("() => window.__seen")


def replies(page: Page) -> Locator:
    """The assistant messages of the open thread, in order."""
    return page.locator('#messages article[data-role="assistant"]')


def tool_card(page: Page, name: str) -> Locator:
    """The tool-panel card of the (only) call of tool `name`."""
    return page.locator(f'#tool-list li[data-name="{name}"]')


async def send(page: Page, text: str) -> None:
    """Type `text` into the send box and press Enter."""
    box = page.locator("#composer-input")
    await box.fill(text)
    await box.press("Enter")


def api_requests(page: Page) -> list[Request]:
    """Every request the page makes to voicestack's API from now on (collected live)."""
    seen: list[Request] = []

    def keep(request: Request) -> None:
        path = request.url.split("?")[0]
        if "/api/" in path or path.endswith("/voice"):
            seen.append(request)

    page.on("request", keep)
    return seen
