"""The page's Talk mode: a spoken conversation on the thread's audio socket, in a real Chromium.

Chromium's fake microphone plays a WAV of espeak-ng's speech (a question between silences) into
the page's AudioWorklet; the real server finds the turn with its VAD, the fake provider
transcribes and answers it, and the page plays the reply's audio and reports what it played.
Playwright sees every WebSocket frame both ways; a script in the page records the bar's states
and the microphone streams and audio contexts the page opened, to check they are let go.
"""

from __future__ import annotations

import json
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page, WebSocket, expect

from tests.support.browser import FAKE_MIC_ARGS, PageLog, chromium, marker, new_page, screenshot
from tests.support.realtime import SPOKEN_TURN_OF_TWO_SENTENCES, silence, spoken_pcm
from tests.support.server import ServerProcess
from tests.support.voice import requires_espeak
from voicestack.testing.fake_openai import FakeOpenAI

pytestmark = [pytest.mark.anyio, requires_espeak]

QUESTION = "What is the weather like today?"
ANSWER = "It is sunny in Paris. Enjoy your day."
MIC_RATE = 48000
# The fake provider speaks 0.06 s a character at 24 kHz, the page's session rate: the reply's
# sentences last exactly this long, and the page's last `played` report is their sum.
SENTENCE_MS = (1260, 900)
# Generous, for a loaded 2-core machine: the turn itself takes about 4 s of audio time.
WAIT_MS = 20_000

# Records the Talk bar's states in order, and every microphone stream and AudioContext the page
# makes (to see the End button stop the tracks and close the context).
RECORDER_JS = """
(() => {
  window.__talk = { states: [], streams: [], contexts: [] };
  const gum = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
  navigator.mediaDevices.getUserMedia = async (constraints) => {
    const stream = await gum(constraints);
    window.__talk.streams.push(stream);
    return stream;
  };
  const Context = window.AudioContext;
  window.AudioContext = class extends Context {
    constructor(...args) {
      super(...args);
      window.__talk.contexts.push(this);
    }
  };
  document.addEventListener("DOMContentLoaded", () => {
    const bar = document.getElementById("talk-bar");
    new MutationObserver((records) => {
      records.forEach((record, n) => {
        const value = n + 1 < records.length ? records[n + 1].oldValue : bar.dataset.state;
        if (window.__talk.states.at(-1) !== value) window.__talk.states.push(value);
      });
    }).observe(bar, { attributeFilter: ["data-state"], attributeOldValue: true });
  });
})();
"""
CLOSED_JS = "() => window.__talk.contexts.every((c) => c.state === 'closed')"
LET_GO_JS = """
() => ({
  tracks: window.__talk.streams.flatMap((s) => s.getTracks().map((t) => t.readyState)),
  contexts: window.__talk.contexts.map((c) => c.state),
})
"""


def question_wav(directory: Path) -> Path:
    """The question spoken between 1 s of silence before and 6 s after, as a 48 kHz WAV: the
    server's 550 ms of silence ends the turn long before the file does."""
    speech = spoken_pcm(directory, QUESTION, MIC_RATE)
    path = directory / "question.wav"
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(MIC_RATE)
        wav.writeframes(silence(1000, MIC_RATE) + speech + silence(6000, MIC_RATE))
    return path


class Frames:
    """What the page sent and received on its audio socket: JSON messages and binary byte counts."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.received: list[dict[str, Any]] = []
        self.audio_sent = 0
        self.audio_received = 0
        self.sockets: list[WebSocket] = []

    def watch(self, page: Page) -> None:
        """Record the frames of every audio socket `page` opens."""
        page.on("websocket", self._opened)

    def _opened(self, socket: WebSocket) -> None:
        if "/audio" not in socket.url:
            return
        self.sockets.append(socket)
        socket.on("framesent", self._sent)
        socket.on("framereceived", self._received)

    def _sent(self, payload: str | bytes) -> None:
        if isinstance(payload, bytes):
            self.audio_sent += len(payload)
        else:
            self.sent.append(json.loads(payload))

    def _received(self, payload: str | bytes) -> None:
        if isinstance(payload, bytes):
            self.audio_received += len(payload)
        else:
            self.received.append(json.loads(payload))

    def kinds(self) -> list[str]:
        """The types of the server's events, in order."""
        return [event["type"] for event in self.received]


@dataclass
class Talked:
    """One whole conversation held by the page: its thread as saved, the socket's frames, the
    bar's states, what the page still held after End, and what it logged."""

    thread_id: str
    transcript: str
    thread: dict[str, Any]
    shown: list[str]
    frames: Frames
    states: list[str]
    let_go: dict[str, list[str]]
    socket_url: str
    socket_closed: bool
    log: PageLog


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"  # module-wide, for the one conversation that the module's tests look at


@pytest.fixture(scope="module")
async def talked(
    site: ServerProcess, provider: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory
) -> Talked:
    """Talk in a real Chromium: the page hears the question, shows the reply, ends on End."""
    mark = marker()
    transcript = f"What is the weather like today {mark}?"
    provider.script(
        {"kind": "transcription", "transcript": transcript},
        {"match": mark, "text": ANSWER},
    )
    # %noloop: the fake microphone plays the file once, then silence.
    wav = question_wav(tmp_path_factory.mktemp("talk"))
    fake_mic = f"--use-file-for-fake-audio-capture={wav}%noloop"
    frames, log = Frames(), PageLog()
    async with site.client() as client:
        created = await client.post("/api/threads", json={"title": f"talk {mark}"})
        thread_id = created.json()["id"]
        async with chromium(*FAKE_MIC_ARGS, fake_mic) as browser:
            page = await new_page(browser, log, permissions=["microphone"])
            await page.add_init_script(RECORDER_JS)
            frames.watch(page)
            await page.goto(f"{site.page_url}#{thread_id}")
            await converse(page, transcript)
            shown = await page.locator("#messages article .msg-text").all_text_contents()
            states = await page.evaluate("() => window.__talk.states")
            let_go = await page.evaluate(LET_GO_JS)
            socket = frames.sockets[0]
            if not socket.is_closed():
                await socket.wait_for_event("close")
        thread = (await client.get(f"/api/threads/{thread_id}")).json()
    return Talked(
        thread_id,
        transcript,
        thread,
        shown,
        frames,
        states,
        let_go,
        socket.url,
        socket.is_closed(),
        log,
    )


async def converse(page: Page, transcript: str) -> None:
    """Click Talk, wait for the turn, its reply and the end of its audio; then End."""
    talk, bar, state = page.locator("#talk"), page.locator("#talk-bar"), page.locator("#talk-state")
    await expect(talk).to_have_attribute("aria-label", "Talk: a spoken conversation")
    await expect(bar).to_be_hidden()
    await talk.click()
    await expect(bar).to_have_attribute("data-state", "listening", timeout=WAIT_MS)
    await expect(state).to_have_text("Listening")
    await expect(talk).to_have_attribute("aria-pressed", "true")
    await expect(talk).to_have_attribute("aria-label", "End the conversation")

    user = page.locator('#messages article[data-role="user"]')
    await expect(user.locator(".msg-text")).to_have_text(transcript, timeout=WAIT_MS)
    reply = page.locator('#messages article[data-role="assistant"]')
    await expect(reply.locator(".msg-text")).to_have_text(ANSWER, timeout=WAIT_MS)
    await expect(bar).to_have_attribute("data-state", "speaking", timeout=WAIT_MS)
    await expect(state).to_have_text("Speaking")
    await screenshot(page, "web-talk-speaking")
    await page.wait_for_function(
        "() => (s => s.includes('speaking') && s.at(-1) !== 'speaking')(window.__talk.states)",
        timeout=WAIT_MS,
    )
    await expect(reply.locator(".voice-metrics")).to_be_visible(timeout=WAIT_MS)

    await page.get_by_role("button", name="End", exact=True).click()
    await expect(bar).to_have_attribute("data-state", "ended", timeout=WAIT_MS)
    await expect(state).to_have_text("Conversation ended")
    await expect(talk).to_have_attribute("aria-pressed", "false")
    await expect(talk).to_have_attribute("aria-label", "Talk: a spoken conversation")
    await page.wait_for_function(CLOSED_JS)
    await screenshot(page, "web-talk-ended")


def reply_id(talked: Talked) -> str:
    """The id of the reply the server spoke."""
    return str(talked.frames.received[4]["messageId"])


async def test_the_bar_shows_listening_thinking_speaking_then_listening_again(
    talked: Talked,
) -> None:
    assert talked.states == [
        "connecting",
        "listening",
        "thinking",
        "speaking",
        "listening",
        "ended",
    ]


async def test_the_page_logs_no_error(talked: Talked) -> None:
    assert talked.log.errors == []


async def test_the_page_opens_the_threads_audio_socket_with_its_token(
    talked: Talked, site: ServerProcess
) -> None:
    assert len(talked.frames.sockets) == 1
    base = site.url.replace("http://", "ws://", 1)
    assert talked.socket_url == f"{base}/api/threads/{talked.thread_id}/audio?token={site.token}"
    assert talked.frames.sent[0] == {"type": "start", "sampleRate": 24000, "format": "pcm16"}


async def test_the_microphone_reaches_the_server_as_one_turn(talked: Talked) -> None:
    frames = talked.frames
    said = [e for e in frames.received if e["type"] == "transcript"]
    assert frames.kinds() == SPOKEN_TURN_OF_TWO_SENTENCES
    assert said == [
        {"type": "transcript", "messageId": said[0]["messageId"], "text": talked.transcript}
    ]
    # 20 ms frames of 24 kHz 16-bit PCM from `ready` to End: more than the 4 s the turn took.
    assert frames.audio_sent % 960 == 0
    assert frames.audio_sent > 4 * 48000


async def test_the_turn_and_its_reply_show_once_in_the_thread_view(talked: Talked) -> None:
    assert talked.shown == [talked.transcript, ANSWER]


async def test_the_turn_and_its_reply_land_in_the_thread(talked: Talked) -> None:
    messages = talked.thread["messages"]
    rows = [(m["role"], m["status"], m["text"]) for m in messages]
    assert rows == [("user", "complete", talked.transcript), ("assistant", "complete", ANSWER)]
    assert messages[1]["id"] == reply_id(talked)
    assert talked.frames.received[-1] == {
        "type": "reply_stopped",
        "messageId": reply_id(talked),
        "status": "complete",
    }


async def test_the_reply_audio_is_played_and_reported_as_played(talked: Talked) -> None:
    frames = talked.frames
    assert frames.audio_received == sum(SENTENCE_MS) * 48  # 24 kHz, 2 bytes a sample
    played = frames.sent[1:-1]
    assert {m["type"] for m in played} == {"played"}
    assert {m["messageId"] for m in played} == {reply_id(talked)}
    reported = [m["ms"] for m in played]
    assert reported == sorted(set(reported))  # each report says more than the one before
    assert SENTENCE_MS[0] in reported  # the end of the first sentence, exactly
    assert reported[-1] == sum(SENTENCE_MS)  # and the end of the reply
    assert len(reported) >= 6  # with one every 250 ms in between
    voice = talked.thread["messages"][1]["voice"]
    assert voice["audioOutSeconds"] == sum(SENTENCE_MS) / 1000
    assert voice["interrupted"] is False
    assert voice["audioInSeconds"] > 1.0


async def test_end_stops_the_session_the_microphone_and_the_audio(talked: Talked) -> None:
    assert talked.frames.sent[-1] == {"type": "stop"}
    assert talked.socket_closed  # the server answered the close: its session is over
    assert talked.let_go == {"tracks": ["ended"], "contexts": ["closed"]}


async def test_a_refused_conversation_shows_the_error_and_the_close_reason(
    site: ServerProcess,
) -> None:
    # The page's own feed is refused first (Chrome logs its 404s); then the audio socket.
    log = PageLog(expected=("Failed to load resource: the server responded with a status of 404",))
    frames = Frames()
    async with chromium(*FAKE_MIC_ARGS) as browser:
        page = await new_page(browser, log, permissions=["microphone"])
        await page.add_init_script(RECORDER_JS)
        frames.watch(page)
        await page.goto(f"{site.page_url}#thr_nothing_here")
        await expect(page.locator("#thread-title")).to_have_text("Thread not found")
        toast = page.locator("#toast")
        await expect(toast).to_be_visible()  # the feed's refusal: hide it, to see the socket's
        await toast.evaluate("(box) => { box.hidden = true; }")

        await page.locator("#talk").click()
        await expect(page.locator("#talk-state")).to_have_text(
            "Ended: thread_not_found (4404)", timeout=WAIT_MS
        )
        refused = {
            "type": "error",
            "code": "thread_not_found",
            "message": "No thread has id 'thr_nothing_here'.",
        }
        assert frames.received == [refused]
        await expect(toast).to_be_visible()
        await expect(toast).to_have_text(refused["message"])
        await expect(page.locator("#talk")).to_have_attribute("aria-pressed", "false")
        await page.wait_for_function(CLOSED_JS)
        assert await page.evaluate(LET_GO_JS) == {"tracks": ["ended"], "contexts": ["closed"]}
        assert await page.evaluate("() => window.__talk.states") == ["connecting", "ended"]
    log.assert_clean()
