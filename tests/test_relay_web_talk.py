"""The page's Talk mode in relay mode, in a real Chromium: its fake microphone plays espeak-ng's
question into the audio socket, the server relays it to the fake Realtime provider, and the page
shows both transcripts as they are saved, plays the reply's audio and reports what it played.
"""

from __future__ import annotations

import json
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page, expect

from tests.support.browser import FAKE_MIC_ARGS, PageLog, chromium, new_page
from tests.support.realtime import silence, spoken_pcm
from tests.support.server import ServerProcess
from tests.support.voice import requires_espeak
from tests.support.web_server import web_server
from voicestack.testing.fake_openai import FakeOpenAI

pytestmark = [pytest.mark.anyio, requires_espeak]

QUESTION = "What is the weather like today"
ANSWER = "It is sunny in Paris. Enjoy your day."
MIC_RATE = 48000
WAIT_MS = 20_000


@pytest.fixture(scope="module")
def relay_site(
    provider: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A page server whose live conversations are relayed to the module's fake provider."""
    workdir = tmp_path_factory.mktemp("relay-web")
    with web_server(workdir, provider.api_base, "--voice-mode", "realtime") as server:
        yield server


def question_wav(directory: Path) -> Path:
    """The question between 1 s of silence before and 5 s after, as a 48 kHz WAV."""
    speech = spoken_pcm(directory, f"{QUESTION}?", MIC_RATE)
    path = directory / "question.wav"
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(MIC_RATE)
        wav.writeframes(silence(1000, MIC_RATE) + speech + silence(5000, MIC_RATE))
    return path


async def talk(page: Page) -> None:
    """Click Talk, wait for both transcripts and the end of the reply's audio; then End."""
    bar = page.locator("#talk-bar")
    await page.locator("#talk").click()
    await expect(bar).to_have_attribute("data-state", "listening", timeout=WAIT_MS)
    user = page.locator('#messages article[data-role="user"]')
    await expect(user.locator(".msg-text")).to_have_text(QUESTION, timeout=WAIT_MS)
    reply = page.locator('#messages article[data-role="assistant"]')
    await expect(reply.locator(".msg-text")).to_have_text(ANSWER, timeout=WAIT_MS)
    await expect(reply.locator(".voice-metrics")).to_be_visible(timeout=WAIT_MS)
    await page.get_by_role("button", name="End", exact=True).click()
    await expect(bar).to_have_attribute("data-state", "ended", timeout=WAIT_MS)


async def test_the_page_talks_to_a_relayed_model_and_shows_the_thread_live(
    relay_site: ServerProcess, provider: FakeOpenAI, log: PageLog, tmp_path: Path
) -> None:
    provider.realtime.script(
        {"turns": [QUESTION], "responses": [{"text": ANSWER, "audio_ms": 1500}]}
    )
    fake_mic = f"--use-file-for-fake-audio-capture={question_wav(tmp_path)}%noloop"
    reports = PlayedReports()
    async with relay_site.client() as client:
        thread_id = (await client.post("/api/threads", json={})).json()["id"]
        async with chromium(*FAKE_MIC_ARGS, fake_mic) as browser:
            page = await new_page(browser, log, permissions=["microphone"])
            page.on("websocket", lambda socket: socket.on("framesent", reports.seen))
            await page.goto(f"{relay_site.page_url}#{thread_id}")
            await talk(page)
        thread = (await client.get(f"/api/threads/{thread_id}")).json()

    user, reply = thread["messages"]
    assert (user["text"], user["status"]) == (QUESTION, "complete")
    assert (reply["text"], reply["status"]) == (ANSWER, "complete")
    assert reply["voice"]["interrupted"] is False
    assert abs(reply["voice"]["audioOutSeconds"] - 1.5) < 0.03
    # The page reported playing the reply's audio, as with the pipeline.
    assert reports.played
    assert reports.played[-1]["messageId"] == reply["id"]
    assert provider.realtime.session(-1)["truncations"] == []


class PlayedReports:
    """The `played` reports the page sent on its audio socket."""

    def __init__(self) -> None:
        self.played: list[dict[str, Any]] = []

    def seen(self, payload: str | bytes) -> None:
        """A frame the page sent."""
        if isinstance(payload, str):
            message = json.loads(payload)
            if message.get("type") == "played":
                self.played.append(message)
