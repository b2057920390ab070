"""A live-conversation client: real speech as PCM frames over the audio WebSocket.

Speech is espeak-ng's, resampled by sox to the session's rate; it is sent faster than real
time (the server's turn-taking counts audio time, not wall time) with silence after it. A task
reads everything the server sends: JSON events in order, and the binary audio in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.support.agent import marker
from tests.support.server import ServerProcess
from tests.support.voice import ESPEAK, INSTALL, SOX
from voicestack.testing.fake_openai import FakeOpenAI

RATE = 16000
FRAME_BYTES = 640  # 20 ms of 16 kHz 16-bit PCM
# Frames are sent in bursts of this many, with a yield between, far faster than real time.
BURST = 25


# The events of one spoken turn answered in two sentences, in order.
SPOKEN_TURN_OF_TWO_SENTENCES = [
    "ready",
    "user_speech_started",
    "user_speech_stopped",
    "transcript",
    "reply_started",
    "reply_audio",
    "reply_audio",
    "reply_stopped",
]


def spoken_pcm(directory: Path, text: str, rate: int = RATE) -> bytes:
    """`text` spoken by espeak-ng as raw 16-bit mono PCM at `rate`."""
    if ESPEAK is None or SOX is None:
        pytest.skip(f"espeak-ng and sox are needed for real speech ({INSTALL})")
    name = f"{abs(hash((text, rate)))}"
    wav, raw = directory / f"{name}.wav", directory / f"{name}.raw"
    if not raw.exists():
        subprocess.run([ESPEAK, "-w", str(wav), text], check=True)
        convert = [SOX, str(wav), "-r", str(rate), "-c", "1", "-b", "16", "-e", "signed-integer"]
        subprocess.run([*convert, "-t", "raw", str(raw)], check=True)
    return raw.read_bytes()


def silence(ms: int, rate: int = RATE) -> bytes:
    """`ms` milliseconds of 16-bit silence at `rate`."""
    return bytes(rate * ms // 1000 * 2)


def socket_url(server: ServerProcess, thread_id: str, token: str | None = None) -> str:
    """The thread's audio socket, with the admin token unless another is given."""
    base = server.url.replace("http://", "ws://", 1)
    return f"{base}/api/threads/{thread_id}/audio?token={token or server.token}"


@dataclass
class Conversation:
    """An open audio socket: `events` so far, and `audio` bytes received after each event."""

    socket: ClientConnection
    events: list[dict[str, Any]] = field(default_factory=list)
    audio: dict[int, list[bytes]] = field(default_factory=dict)  # event index → frames after it
    received_at: list[float] = field(default_factory=list)  # when each event came (monotonic)
    first_audio_at: float | None = None  # when the first audio frame came
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def read(self) -> None:
        """Collect what the server sends until the socket closes."""
        try:
            async for message in self.socket:
                if isinstance(message, bytes):
                    self.audio.setdefault(len(self.events) - 1, []).append(message)
                    self.first_audio_at = self.first_audio_at or time.monotonic()
                else:
                    self.events.append(json.loads(message))
                    self.received_at.append(time.monotonic())
                self._changed.set()
        except ConnectionClosed:
            pass
        finally:
            self.closed.set()
            self._changed.set()

    async def send_json(self, message: dict[str, Any]) -> None:
        """Send one JSON message."""
        await self.socket.send(json.dumps(message))

    async def start(self, rate: int = RATE, fmt: str = "pcm16") -> dict[str, Any]:
        """Send `start` and wait for `ready`."""
        await self.send_json({"type": "start", "sampleRate": rate, "format": fmt})
        return await self.next_event("ready")

    async def say(self, pcm: bytes, frame_bytes: int = FRAME_BYTES) -> None:
        """Send `pcm` in frames, in quick bursts (faster than real time)."""
        for n, offset in enumerate(range(0, len(pcm), frame_bytes)):
            await self.socket.send(pcm[offset : offset + frame_bytes])
            if n % BURST == BURST - 1:
                await asyncio.sleep(0.005)

    async def wait_for(
        self, found: Callable[[dict[str, Any]], bool], timeout: float = 15.0, after: int = 0
    ) -> dict[str, Any]:
        """The first event from index `after` on for which `found` is true."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    for event in self.events[after:]:
                        if found(event):
                            return event
                    if self.closed.is_set():
                        raise AssertionError(f"closed without it; events: {self.events}")
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"not within {timeout} s; events: {self.events}") from None

    async def wait_for_audio(self, ms: float, rate: int = RATE, timeout: float = 15.0) -> None:
        """Wait until `ms` of reply audio (16-bit PCM at `rate`) has come in all."""
        async with asyncio.timeout(timeout):
            while sum(map(len, (f for frames in self.audio.values() for f in frames))) < (
                ms * rate * 2 / 1000
            ):
                if self.closed.is_set():
                    raise AssertionError(f"closed before {ms} ms of audio came")
                self._changed.clear()
                await self._changed.wait()

    async def next_event(self, kind: str, timeout: float = 15.0, after: int = 0) -> dict[str, Any]:
        """The first event of type `kind` from index `after` on."""
        return await self.wait_for(lambda e: e["type"] == kind, timeout, after)

    def kinds(self) -> list[str]:
        """The types of the events so far, in order."""
        return [event["type"] for event in self.events]

    def audio_after(self, event: dict[str, Any]) -> list[bytes]:
        """The binary frames received right after `event`, before the next event."""
        return self.audio.get(self.events.index(event), [])

    async def closing(self, timeout: float = 10.0) -> tuple[int | None, str | None]:
        """Wait for the server to close; its close code and reason."""
        await asyncio.wait_for(self.closed.wait(), timeout)
        received = self.socket.protocol.close_rcvd
        return (received.code, received.reason) if received else (None, None)


@asynccontextmanager
async def conversation(
    server: ServerProcess, thread_id: str, token: str | None = None
) -> AsyncIterator[Conversation]:
    """An audio socket on the thread, read by a task of its own while the block runs."""
    async with connect(socket_url(server, thread_id, token), max_size=None) as socket:
        talk = Conversation(socket)
        reader = asyncio.create_task(talk.read())
        try:
            yield talk
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader


@dataclass(frozen=True)
class BargeIn:
    """A scripted barge-in: the first question's marker, the interruption's, and their audio."""

    first: str
    second: str
    question: bytes
    interruption: bytes


def script_barge_in(fake: FakeOpenAI, directory: Path, answer: str) -> BargeIn:
    """Script the provider for "Tell me a story" answered slowly with `answer`, interrupted by
    "Stop, tell me about Rome instead", which is answered "Rome is old."; their speech."""
    first, second = marker(), marker()
    fake.script(
        {"kind": "transcription", "transcript": f"Tell me a story {first}"},
        # Slow enough that the text is still streaming when the user speaks over it.
        {"match": first, "text": answer, "tokens_per_second": 8},
        {"kind": "transcription", "transcript": f"Stop, tell me about Rome {second}"},
        {"match": second, "text": "Rome is old."},
    )
    question = spoken_pcm(directory, "Tell me a story.")
    interruption = spoken_pcm(directory, "Stop, tell me about Rome instead.")
    return BargeIn(first, second, question, interruption)


async def interrupt_at(talk: Conversation, barge: BargeIn, seq: int) -> str:
    """Ask `barge`'s question, speak the interruption once sentence `seq` of the reply is
    announced, and wait for the reply to the interruption to stop; returns the interrupted
    reply's id."""
    reply_id = await ask(talk, barge.question)
    await talk.wait_for(lambda e: e["type"] == "reply_audio" and e["seq"] == seq)
    mark = len(talk.events)
    await talk.say(barge.interruption + silence(1000))
    await talk.wait_for(
        lambda e: e["type"] == "reply_stopped" and e["messageId"] != reply_id, after=mark
    )
    return reply_id


async def ask(talk: Conversation, speech: bytes) -> str:
    """Start the session, say `speech`, and return the id of the reply that starts."""
    await talk.start()
    await talk.say(silence(300) + speech + silence(1000))
    started = await talk.next_event("reply_started")
    return str(started["messageId"])


@dataclass(frozen=True)
class TypedTurn:
    """A finished typed turn: its thread, the marker it carried, the session's record and the
    last `reply_stopped` event."""

    thread_id: str
    mark: str
    talk: Conversation
    stopped: dict[str, Any]


async def typed_turn(
    server: ServerProcess, fake: FakeOpenAI, thread_id: str, answer: str = "Hello there."
) -> TypedTurn:
    """Type "Hi <marker>" in a new session on the thread, answered `answer`; the session ends
    once the reply has stopped."""
    mark = marker()
    fake.script({"match": mark, "text": answer})
    async with conversation(server, thread_id) as talk:
        await talk.start()
        await talk.send_json({"type": "text", "text": f"Hi {mark}"})
        stopped = await talk.next_event("reply_stopped")
    return TypedTurn(thread_id, mark, talk, stopped)


@dataclass(frozen=True)
class StoppedMidReply:
    """A conversation whose server got SIGTERM while it spoke a reply: the reply's id, how
    the socket was closed, the server's exit code, and the seconds from signal to close."""

    reply_id: str
    closed: tuple[int | None, str | None]
    exit_code: int
    seconds: float


async def stop_mid_reply(server: ServerProcess, talk: Conversation, text: str) -> StoppedMidReply:
    """Start a session on `talk`, type `text`, and SIGTERM `server` once the reply's first
    sentence is being spoken; wait for the socket to close and the server to exit."""
    await talk.start()
    await talk.send_json({"type": "text", "text": text})
    reply_id = str((await talk.next_event("reply_started"))["messageId"])
    await talk.next_event("reply_audio")
    signalled = time.monotonic()
    stopping = asyncio.create_task(asyncio.to_thread(server.stop, signal.SIGTERM))
    closed = await talk.closing(timeout=15)
    seconds = time.monotonic() - signalled
    return StoppedMidReply(reply_id, closed, await stopping, seconds)
