"""Playing Twilio in tests: webhooks signed with the auth token as Twilio signs them (HMAC-SHA1
over the URL and the sorted form fields, written out here rather than taken from the server's
code), and a call replayed over a real WebSocket: `connected`, `start`, real speech from espeak-ng
turned into 8 kHz μ-law by sox, sent as `media` messages, marks echoed back as if played, and
`stop`."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import re
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.support.agent import Threads, marker
from tests.support.server import ServerProcess
from tests.support.voice import ESPEAK, INSTALL, SOX
from voicestack.testing.fake_openai import FakeOpenAI

PUBLIC_URL = "https://voice.example.com"
AUTH_TOKEN = "twilio-auth-token-for-tests"
CALLER, CALLED = "+15550001111", "+15550009999"
FRAME = 160  # 20 ms of 8 kHz μ-law, as Twilio sends it
MULAW_SILENCE = b"\xff"
TOKEN_PARAMETER = re.compile(r'<Parameter name="token" value="([^"]+)"/>')


SENTENCES = [
    "The first sentence is here.",
    "The second sentence follows it now.",
    "A third one comes after that.",
    "The fourth sentence ends the reply.",
]


def twilio_signature(url: str, params: dict[str, str], auth_token: str = AUTH_TOKEN) -> str:
    """X-Twilio-Signature as Twilio computes it."""
    signed = url + "".join(name + params[name] for name in sorted(params))
    digest = hmac.new(auth_token.encode(), signed.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def call_params(call_sid: str) -> dict[str, str]:
    """The form fields of Twilio's webhook for an incoming call."""
    return {
        "AccountSid": "AC" + "0" * 32,
        "CallSid": call_sid,
        "CallStatus": "ringing",
        "Direction": "inbound",
        "From": CALLER,
        "To": CALLED,
    }


def new_call_sid() -> str:
    """A call SID no other test uses."""
    return "CA" + marker()


async def post_webhook(
    server: ServerProcess, params: dict[str, str], signature: str | None, query: str = ""
) -> httpx.Response:
    """POST /twilio/voice (with `?query` if given) as Twilio does (no bearer token), with
    `signature` if not None."""
    headers = {} if signature is None else {"X-Twilio-Signature": signature}
    url = f"{server.url}/twilio/voice" + (f"?{query}" if query else "")
    async with httpx.AsyncClient(timeout=10) as anonymous:
        return await anonymous.post(url, data=params, headers=headers)


async def stream_token(server: ServerProcess, call_sid: str) -> str:
    """The one-time token of the TwiML answering a signed webhook for `call_sid`."""
    params = call_params(call_sid)
    response = await post_webhook(
        server, params, twilio_signature(f"{PUBLIC_URL}/twilio/voice", params)
    )
    assert response.status_code == 200, response.text
    found = TOKEN_PARAMETER.search(response.text)
    assert found is not None, response.text
    return found.group(1)


def spoken_mulaw(directory: Path, text: str) -> bytes:
    """`text` spoken by espeak-ng, as 8 kHz μ-law from sox (what a phone call carries)."""
    if ESPEAK is None or SOX is None:
        pytest.skip(f"espeak-ng and sox are needed for real speech ({INSTALL})")
    name = f"{abs(hash(text))}"
    wav, raw = directory / f"{name}.wav", directory / f"{name}.ul"
    subprocess.run([ESPEAK, "-w", str(wav), text], check=True)
    subprocess.run([SOX, str(wav), "-r", "8000", "-c", "1", "-e", "mu-law", "-t", "raw", str(raw)])
    return raw.read_bytes()


def silence(ms: int) -> bytes:
    """`ms` milliseconds of μ-law silence."""
    return MULAW_SILENCE * (8 * ms)


@dataclass
class Mark:
    """A mark the server sent, with the reply audio received before it."""

    name: str
    audio_bytes: int


@dataclass
class Call:
    """A replayed call's socket: what the server sent, in order."""

    socket: ClientConnection
    stream_sid: str
    messages: list[dict[str, Any]] = field(default_factory=list)
    audio: bytearray = field(default_factory=bytearray)
    marks: list[Mark] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _sequence: int = 0  # the last message's sequenceNumber
    _chunks: int = 0  # the last media chunk's number

    async def read(self) -> None:
        """Collect the server's messages until it closes the socket."""
        try:
            async for text in self.socket:
                message = json.loads(text)
                self.messages.append(message)
                if message["event"] == "media":
                    self.audio += base64.b64decode(message["media"]["payload"])
                elif message["event"] == "mark":
                    self.marks.append(Mark(message["mark"]["name"], len(self.audio)))
                self._changed.set()
        except ConnectionClosed:
            pass
        finally:
            self.closed.set()
            self._changed.set()

    async def send(self, event: str, **fields: Any) -> None:
        """One Media Streams message from "Twilio" (after `connected`, numbered as Twilio does)."""
        if event != "connected":
            self._sequence += 1
            fields = {"sequenceNumber": str(self._sequence), **fields}
        await self.socket.send(json.dumps({"event": event, **fields}))

    async def start(self, token: str, call_sid: str) -> None:
        """`connected`, then `start` with the token as a custom parameter."""
        await self.send("connected", protocol="Call", version="1.0.0")
        start = {
            "accountSid": "AC" + "0" * 32,
            "streamSid": self.stream_sid,
            "callSid": call_sid,
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": {"token": token},
        }
        await self.send("start", start=start, streamSid=self.stream_sid)

    async def say(self, mulaw: bytes) -> None:
        """The caller's audio as 20 ms `media` messages, faster than real time."""
        for n, offset in enumerate(range(0, len(mulaw), FRAME)):
            payload = base64.b64encode(mulaw[offset : offset + FRAME]).decode()
            # As Twilio numbers them: chunks from 1, a timestamp in ms since the stream began,
            # and one sequence of every message on the socket.
            self._chunks += 1
            media = {
                "track": "inbound",
                "chunk": str(self._chunks),
                "timestamp": str((self._chunks - 1) * 20),
                "payload": payload,
            }
            await self.send("media", streamSid=self.stream_sid, media=media)
            if n % 25 == 24:
                await asyncio.sleep(0.005)

    async def echo(self, mark: Mark) -> None:
        """Twilio's echo of `mark`: the audio before it has played."""
        await self.send("mark", streamSid=self.stream_sid, mark={"name": mark.name})

    async def wait_for_marks(self, count: int, timeout: float = 20.0) -> list[Mark]:
        """The first `count` marks, once they have come."""
        async with asyncio.timeout(timeout):
            while len(self.marks) < count:
                assert not self.closed.is_set(), f"closed early: {self.messages[-3:]}"
                self._changed.clear()
                await self._changed.wait()
        return self.marks[:count]

    async def wait_for_event(self, event: str, timeout: float = 20.0) -> dict[str, Any]:
        """The first message of `event` type."""
        async with asyncio.timeout(timeout):
            while True:
                for message in self.messages:
                    if message["event"] == event:
                        return message
                assert not self.closed.is_set(), f"closed without {event}"
                self._changed.clear()
                await self._changed.wait()

    async def closing(self, timeout: float = 10.0) -> tuple[int | None, str | None]:
        """The server's close code and reason, once it has closed."""
        await asyncio.wait_for(self.closed.wait(), timeout)
        received = self.socket.protocol.close_rcvd
        return (received.code, received.reason) if received else (None, None)


@asynccontextmanager
async def phone_call(server: ServerProcess) -> AsyncIterator[Call]:
    """A Media Streams socket to the server, read by a task while the block runs."""
    url = server.url.replace("http://", "ws://", 1) + "/twilio/stream"
    async with connect(url, max_size=None) as socket:
        call = Call(socket, "MZ" + marker())
        reader = asyncio.create_task(call.read())
        try:
            yield call
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader


async def short_call(server: ServerProcess, call_sid: str, token: str) -> None:
    """A call that starts with `token` and hangs up at once; asserts the server ended it."""
    async with phone_call(server) as call:
        await call.start(token, call_sid)
        await call.send("stop", streamSid=call.stream_sid, stop={"callSid": call_sid})
        assert await call.closing() == (1000, "call_ended")


async def call_thread(threads: Threads, call_sid: str) -> dict[str, Any]:
    """The thread of the call `call_sid`, found by its metadata (the admin sees every thread)."""
    listed = (await threads.client.get("/api/threads", params={"limit": 200})).json()
    (found,) = [t for t in listed if (t["metadata"] or {}).get("callSid") == call_sid]
    return await threads.get(found["id"])


async def settled(threads: Threads, call_sid: str, count: int) -> dict[str, Any]:
    """The call's thread once it has `count` messages, none of them unfinished."""
    async with asyncio.timeout(20):
        while True:
            thread = await call_thread(threads, call_sid)
            messages = thread["messages"]
            if len(messages) == count and all(
                m["status"] in ("complete", "interrupted") for m in messages
            ):
                return thread
            await asyncio.sleep(0.05)


async def thread_count(threads: Threads) -> int:
    """How many threads the server has."""
    return len((await threads.client.get("/api/threads", params={"limit": 200})).json())


WEATHER_QUESTION = "What is the weather in Paris?"
WEATHER_ANSWER = "It is sunny in Paris. Enjoy your day."


@dataclass
class AnsweredCall:
    """A call that asked the weather and heard its answer: the call, its thread once the reply
    had played (with its metrics), the first two marks, and how the server closed the socket."""

    call: Call
    thread: dict[str, Any]
    marks: list[Mark]
    closed: tuple[int | None, str | None]


def script_weather(fake: FakeOpenAI) -> str:
    """Script the weather question's transcript (with a marker) and its two-sentence answer;
    returns the transcript."""
    transcript = f"What is the weather in Paris {marker()}"
    fake.script(
        {"kind": "transcription", "transcript": transcript},
        {"match": transcript.rsplit(" ", 1)[1], "text": WEATHER_ANSWER},
    )
    return transcript


async def weather_call(
    server: ServerProcess,
    threads: Threads,
    call_sid: str,
    token: str,
    directory: Path,
    while_marked: Callable[[], Awaitable[None]] | None = None,
) -> AnsweredCall:
    """Call `server`, ask the weather (scripted with script_weather), echo the answer's two
    marks as played (after `while_marked`, if given), wait for the reply's metrics, hang up."""
    question = spoken_mulaw(directory, WEATHER_QUESTION)
    async with phone_call(server) as call:
        await call.start(token, call_sid)
        await call.say(silence(300) + question + silence(1000))
        marks = await call.wait_for_marks(2)
        if while_marked is not None:
            await while_marked()
        for played in marks:
            await call.echo(played)
        thread = await settled(threads, call_sid, 2)
        # The last mark goes with the last frame; the reply's metrics once it has played.
        async with asyncio.timeout(10):
            while thread["messages"][1]["voice"] is None:
                await asyncio.sleep(0.05)
                thread = await call_thread(threads, call_sid)
        await call.send("stop", streamSid=call.stream_sid, stop={"callSid": call_sid})
        closed = await call.closing()
    return AnsweredCall(call, thread, marks, closed)
