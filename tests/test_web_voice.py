"""The page's microphone and spoken replies, in Chromium with a fake microphone.

The page is held to the voice contract, not to one server's voice implementation: the test
answers `POST /voice` and `GET /api/files/{id}` itself (checking what the page sent), starts the
reply through the real server, and announces the reply's `speech` events through the test app
`tests.apps.web_speech`. Then: does the page record, post, and play the audio in order?
"""

from __future__ import annotations

import io
import math
import struct
import wave
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from playwright.async_api import Route, expect

from tests.support.browser import FAKE_MIC_ARGS, PageLog, chromium, marker, new_page, screenshot
from tests.support.server import ServerProcess
from voicestack.testing.fake_openai import FakeOpenAI

pytestmark = pytest.mark.anyio

# Records, in the page, the byte size of each audio blob when it starts and when it ends playing
# (each test file has its own length, so sizes name files).
PLAYBACK_JS = """
(() => {
  const sizes = new Map();
  const made = URL.createObjectURL;
  URL.createObjectURL = (blob) => {
    const url = made(blob);
    sizes.set(url, blob.size);
    return url;
  };
  const play = HTMLMediaElement.prototype.play;
  window.__played = [];
  HTMLMediaElement.prototype.play = function () {
    const size = sizes.get(this.src);
    window.__played.push(["play", size]);
    this.addEventListener("ended", () => window.__played.push(["ended", size]), { once: true });
    return play.call(this);
  };
})();
"""


def tone(seconds: float, hz: int = 440, rate: int = 8000) -> bytes:
    """A short WAV tone: real audio the browser decodes and plays."""
    frames = b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * hz * i / rate)))
        for i in range(int(seconds * rate))
    )
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(frames)
    return out.getvalue()


FILES = {f"file-{n}": tone(0.15 + 0.05 * n) for n in (1, 2, 3)}


@pytest.fixture
async def client(site: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with site.client() as client:
        yield client


async def new_thread(client: httpx.AsyncClient, title: str) -> str:
    response = await client.post("/api/threads", json={"title": title})
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def announce_speech(
    client: httpx.AsyncClient, thread_id: str, message_id: str, seq: int
) -> None:
    args = {
        "threadId": thread_id,
        "messageId": message_id,
        "seq": seq,
        "fileId": f"file-{seq}",
        "text": f"Sentence {seq}.",
    }
    response = await client.post("/api/mutation/web_test.speech", json={"args": args})
    assert response.status_code == 200, response.text


def form_fields(body: bytes, content_type: str) -> dict[str, Any]:
    """The parts of a multipart body: name → text, or (filename, content type, size) for files."""
    boundary = content_type.split("boundary=")[1].encode()
    fields: dict[str, Any] = {}
    for part in body.split(b"--" + boundary)[1:-1]:
        head, _, data = part.strip(b"\r\n").partition(b"\r\n\r\n")
        headers = head.decode()
        name = headers.split('name="')[1].split('"')[0]
        if 'filename="' in headers:
            filename = headers.split('filename="')[1].split('"')[0]
            part_type = headers.split("Content-Type: ")[1].split("\r\n")[0]
            fields[name] = (filename, part_type, len(data))
        else:
            fields[name] = data.decode()
    return fields


async def test_record_send_and_hear_the_reply_in_order(
    site: ServerProcess, provider: FakeOpenAI, client: httpx.AsyncClient, log: PageLog
) -> None:
    mark = marker()
    thread_id = await new_thread(client, f"voice {mark}")
    provider.script({"match": mark, "text": "Sentence 1. Sentence 2. Sentence 3."})
    posted: list[dict[str, Any]] = []
    fetched: list[tuple[str, str | None]] = []

    async def voice_route(route: Route) -> None:
        request = route.request
        if request.method == "GET":  # the page asks whether this server has voice: it does
            error = {"code": "method_not_allowed", "message": "GET is not allowed on /voice."}
            await route.fulfill(status=405, json={"error": error})
            return
        fields = form_fields(request.post_data_buffer or b"", request.headers["content-type"])
        posted.append({**fields, "authorization": request.headers.get("authorization")})
        response = await client.post(
            f"/api/threads/{thread_id}/messages", json={"text": f"{mark} spoken question"}
        )
        ids = response.json()
        # The first sentence may be announced before the page hears back from /voice.
        await announce_speech(client, thread_id, ids["replyId"], 1)
        body = {"transcript": f"{mark} spoken question", **ids}
        await route.fulfill(status=201, json=body)
        posted[-1]["replyId"] = ids["replyId"]

    async def file_route(route: Route) -> None:
        file_id = route.request.url.rsplit("/", 1)[1]
        fetched.append((file_id, route.request.headers.get("authorization")))
        await route.fulfill(status=200, body=FILES[file_id], content_type="audio/wav")

    async with chromium(*FAKE_MIC_ARGS) as browser:
        page = await new_page(browser, log, permissions=["microphone"])
        await page.add_init_script(PLAYBACK_JS)
        await page.route("**/voice", voice_route)
        await page.route("**/api/files/*", file_route)
        await page.goto(f"{site.page_url}#{thread_id}")
        mic = page.locator("#mic")
        await expect(mic).to_have_attribute("aria-label", "Record a voice message")

        await mic.click()
        await expect(mic).to_have_attribute("data-state", "recording")
        await expect(mic).to_have_attribute("aria-pressed", "true")
        await expect(mic.locator(".mic-time")).to_have_text("0:01")
        await screenshot(page, "web-voice-recording")
        await mic.click()
        await expect(mic).to_have_attribute("data-state", "idle")
        await expect(page.locator('#messages article[data-role="user"] .msg-text')).to_have_text(
            f"{mark} spoken question"
        )
        assert len(posted) == 1
        reply_id = posted[0].pop("replyId")
        filename, audio_type, size = posted[0].pop("audio")
        assert (filename, audio_type) == ("voice.webm", "audio/webm")
        assert size > 1000  # a second of Opus from the fake microphone
        assert posted == [
            {"threadId": thread_id, "speak": "true", "authorization": f"Bearer {site.token}"}
        ]

        await announce_speech(client, thread_id, reply_id, 2)
        await announce_speech(client, thread_id, reply_id, 3)
        sizes = [len(FILES[f"file-{n}"]) for n in (1, 2, 3)]
        await page.wait_for_function(
            "n => window.__played.filter(([what]) => what === 'ended').length === n", arg=3
        )
        played = await page.evaluate("() => window.__played")
        # One audio element plays them one after another: each to its end, in seq order.
        assert [size for what, size in played if what == "play"] == sizes
        assert [size for what, size in played if what == "ended"] == sizes
        assert fetched == [(f"file-{n}", f"Bearer {site.token}") for n in (1, 2, 3)]
        listen = page.locator(f'#msg-{reply_id} button:has-text("Listen")')
        await expect(listen).to_be_visible()
        await screenshot(page, "web-voice-reply")


async def test_the_microphone_is_off_when_the_server_has_no_voice(
    site: ServerProcess, client: httpx.AsyncClient, log: PageLog
) -> None:
    thread_id = await new_thread(client, "no voice here")

    async def no_voice(route: Route) -> None:
        error = {"code": "not_found", "message": "No route matches /voice."}
        await route.fulfill(status=404, json={"error": error})

    async with chromium(*FAKE_MIC_ARGS) as browser:
        page = await new_page(browser, log)
        await page.route("**/voice", no_voice)
        await page.goto(f"{site.page_url}#{thread_id}")
        mic = page.locator("#mic")
        await expect(mic).to_have_attribute("aria-disabled", "true")
        await expect(mic).to_have_attribute("title", "Voice is not enabled on this server.")
        await mic.focus()  # still focusable: the keyboard gets the reason too
        await page.keyboard.press("Enter")
        await expect(page.locator("#toast")).to_have_text("Voice is not enabled on this server.")
        await expect(mic).to_have_attribute("data-state", "idle")


async def test_the_microphone_is_off_without_a_microphone_api(
    site: ServerProcess, client: httpx.AsyncClient, log: PageLog
) -> None:
    thread_id = await new_thread(client, "no microphone")
    async with chromium() as browser:
        page = await new_page(browser, log)
        await page.add_init_script(
            "Object.defineProperty(navigator, 'mediaDevices', {value: undefined})"
        )
        await page.goto(f"{site.page_url}#{thread_id}")
        mic = page.locator("#mic")
        await expect(mic).to_have_attribute("aria-disabled", "true")
        await expect(mic).to_have_attribute("title", "This browser cannot record audio.")
        await expect(mic).to_have_attribute(
            "aria-label", "Voice unavailable: This browser cannot record audio."
        )


async def test_the_voice_route_end_to_end(
    site: ServerProcess, provider: FakeOpenAI, client: httpx.AsyncClient, log: PageLog
) -> None:
    """The real POST /voice and /api/files (the voice issue's routes) with the page's recording."""
    mark = marker()
    answer = "Hi there. This is the second sentence. And a third one."
    provider.script(
        {"kind": "transcription", "transcript": f"{mark} say hi"},
        {"match": mark, "text": answer},
    )
    thread_id = await new_thread(client, f"real voice {mark}")
    async with chromium(*FAKE_MIC_ARGS) as browser:
        page = await new_page(browser, log, permissions=["microphone"])
        await page.add_init_script(PLAYBACK_JS)
        files: list[str] = []
        page.on("requestfinished", lambda r: "/api/files/" in r.url and files.append(r.url))
        await page.goto(f"{site.page_url}#{thread_id}")
        mic = page.locator("#mic")
        await expect(mic).to_have_attribute("aria-label", "Record a voice message")
        await mic.click()
        await expect(mic.locator(".mic-time")).to_have_text("0:01")
        await mic.click()

        user = page.locator('#messages article[data-role="user"]')
        await expect(user.locator(".msg-text")).to_have_text(f"{mark} say hi")
        await expect(user.get_by_role("button", name="Play the recording")).to_be_visible()
        reply = page.locator('#messages article[data-role="assistant"]')
        await expect(reply).to_have_attribute("data-status", "complete")
        await expect(reply.locator(".msg-text")).to_have_text(answer)
        await expect(reply.get_by_role("button", name="Listen")).to_be_visible()
        # Each of the three sentences was fetched and played to its end, one after another.
        await page.wait_for_function(
            "() => window.__played.filter(([what]) => what === 'ended').length === 3"
        )
        played = await page.evaluate("() => window.__played")
        plays = [size for what, size in played if what == "play"]
        assert [size for what, size in played if what == "ended"] == plays, played
        assert len(plays) == len(files) == 3, (files, played)
