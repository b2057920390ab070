"""Phone calls through Twilio (DESIGN §10): the signed webhook answers TwiML with a one-time
stream token, and the call's Media Streams socket becomes a live conversation on a new thread.

The tests play Twilio: they sign webhooks with the auth token as Twilio does (HMAC-SHA1 over the
URL and the sorted form fields, written out here rather than taken from the server's code), and
replay a call over a real WebSocket: `connected`, `start`, real speech from espeak-ng turned
into 8 kHz μ-law by sox, sent as `media` messages, marks echoed back as if played, and `stop`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apsw
import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.support.agent import Threads, chat_bodies, marker
from tests.support.server import ServerProcess
from tests.support.voice import ESPEAK, INSTALL, SOX, requires_espeak
from voicestack.testing.fake_openai import FakeOpenAI

PUBLIC_URL = "https://voice.example.com"
AUTH_TOKEN = "twilio-auth-token-for-tests"
CALLER, CALLED = "+15550001111", "+15550009999"
FRAME = 160  # 20 ms of 8 kHz μ-law, as Twilio sends it
MULAW_SILENCE = b"\xff"
TOKEN_PARAMETER = re.compile(r'<Parameter name="token" value="([^"]+)"/>')

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.agent_server("--public-url", PUBLIC_URL, "--twilio-auth-token", AUTH_TOKEN),
]

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
        """One Media Streams message from "Twilio"."""
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
        await self.send("start", sequenceNumber="1", start=start, streamSid=self.stream_sid)

    async def say(self, mulaw: bytes) -> None:
        """The caller's audio as 20 ms `media` messages, faster than real time."""
        for n, offset in enumerate(range(0, len(mulaw), FRAME)):
            payload = base64.b64encode(mulaw[offset : offset + FRAME]).decode()
            media = {"track": "inbound", "chunk": str(n), "payload": payload}
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


# -- the webhook ----------------------------------------------------------------------------


async def test_a_signed_webhook_is_answered_with_twiml_streaming_to_the_public_host(
    server: ServerProcess,
) -> None:
    params = call_params(new_call_sid())
    signature = twilio_signature(f"{PUBLIC_URL}/twilio/voice", params)
    response = await post_webhook(server, params, signature)

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/xml; charset=utf-8"
    found = TOKEN_PARAMETER.search(response.text)
    assert found is not None, response.text
    token = found.group(1)
    assert response.text == (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Connect>'
        '<Stream url="wss://voice.example.com/twilio/stream">'
        f'<Parameter name="token" value="{token}"/>'
        "</Stream></Connect></Response>"
    )
    assert len(token) >= 40
    # Every call gets a token of its own.
    assert await stream_token(server, new_call_sid()) != token


@pytest.mark.parametrize(
    "signature",
    [
        None,
        "",
        "not-a-signature",
        # Signed with another account's token, or over the URL the server sees itself.
        twilio_signature(f"{PUBLIC_URL}/twilio/voice", call_params("CAx"), "another-token"),
        twilio_signature("http://127.0.0.1/twilio/voice", call_params("CAx")),
    ],
    ids=["missing", "empty", "garbage", "other-token", "private-url"],
)
async def test_a_webhook_without_a_valid_signature_is_403(
    server: ServerProcess, threads: Threads, signature: str | None
) -> None:
    response = await post_webhook(server, call_params("CAx"), signature)

    assert response.status_code == 403
    assert response.json() == {
        "error": {
            "code": "invalid_signature",
            "message": "X-Twilio-Signature is missing or does not match this request; check"
            " --twilio-auth-token and that --public-url is the URL Twilio calls.",
        }
    }


async def test_a_signature_covers_every_field(server: ServerProcess) -> None:
    params = call_params(new_call_sid())
    signature = twilio_signature(f"{PUBLIC_URL}/twilio/voice", params)
    response = await post_webhook(server, {**params, "From": "+15550002222"}, signature)

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "invalid_signature"


@pytest.mark.parametrize(
    "signed_url",
    [f"{PUBLIC_URL}/twilio/voice", "https://voice.example.com:443/twilio/voice"],
    ids=["no-port", "default-port"],
)
async def test_a_signature_over_the_url_with_or_without_its_default_port_is_good(
    server: ServerProcess, signed_url: str
) -> None:
    params = call_params(new_call_sid())
    response = await post_webhook(server, params, twilio_signature(signed_url, params))

    assert response.status_code == 200, response.text


async def test_a_signature_covers_the_query_string(server: ServerProcess) -> None:
    params = call_params(new_call_sid())
    query = "tenant=acme&line=2"
    signed = twilio_signature(f"{PUBLIC_URL}/twilio/voice?{query}", params)
    unsigned_query = twilio_signature(f"{PUBLIC_URL}/twilio/voice", params)

    assert (await post_webhook(server, params, signed, query)).status_code == 200
    refused = await post_webhook(server, params, unsigned_query, query)
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "invalid_signature")


@pytest.mark.agent_server("--public-url", f"{PUBLIC_URL}/phone", "--twilio-auth-token", AUTH_TOKEN)
async def test_a_public_url_with_a_path_is_signed_and_streamed_under_it(
    server: ServerProcess,
) -> None:
    # The proxy serves the server under /phone and strips it: Twilio signs the URL it called.
    params = call_params(new_call_sid())
    bare = await post_webhook(
        server, params, twilio_signature(f"{PUBLIC_URL}/twilio/voice", params)
    )
    response = await post_webhook(
        server, params, twilio_signature(f"{PUBLIC_URL}/phone/twilio/voice", params)
    )

    assert bare.status_code == 403
    assert response.status_code == 200, response.text
    assert '<Stream url="wss://voice.example.com/phone/twilio/stream">' in response.text


@pytest.mark.agent_server(provider=False)
async def test_without_an_auth_token_phone_calls_are_off(server: ServerProcess) -> None:
    params = call_params(new_call_sid())
    response = await post_webhook(
        server, params, twilio_signature(f"{PUBLIC_URL}/twilio/voice", params)
    )

    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "code": "twilio_not_configured",
            "message": "Phone calls are off: start the server with --twilio-auth-token and"
            " --public-url.",
        }
    }


# -- the media stream -------------------------------------------------------------------------


async def test_a_started_call_is_a_thread_with_the_call_in_its_metadata(
    server: ServerProcess, threads: Threads
) -> None:
    call_sid = new_call_sid()
    token = await stream_token(server, call_sid)
    async with phone_call(server) as call:
        await call.start(token, call_sid)
        await call.send("stop", streamSid=call.stream_sid, stop={"callSid": call_sid})
        assert await call.closing() == (1000, "call_ended")

    thread = await call_thread(threads, call_sid)
    assert thread["title"] == f"Call from {CALLER}"
    assert thread["metadata"] == {
        "channel": "twilio",
        "callSid": call_sid,
        "from": CALLER,
        "to": CALLED,
    }
    assert thread["messages"] == []


@requires_espeak
async def test_a_turn_is_answered_with_media_and_a_mark_after_each_sentence(
    fake: FakeOpenAI, server: ServerProcess, threads: Threads, tmp_path: Path
) -> None:
    mark = marker()
    answer = "It is sunny in Paris. Enjoy your day."
    fake.script(
        {"kind": "transcription", "transcript": f"What is the weather in Paris {mark}"},
        {"match": mark, "text": answer},
    )
    call_sid = new_call_sid()
    token = await stream_token(server, call_sid)
    question = spoken_mulaw(tmp_path, "What is the weather in Paris?")

    async with phone_call(server) as call:
        await call.start(token, call_sid)
        await call.say(silence(300) + question + silence(1000))
        marks = await call.wait_for_marks(2)
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

    assert closed == (1000, "call_ended")
    reply = thread["messages"][1]
    # A mark after each sentence, named after the reply and the ms of its audio sent so far.
    assert [m.name for m in marks] == [
        f"{reply['id']}@{-(-m.audio_bytes // 8)}" for m in call.marks[:2]
    ]
    assert marks[-1].audio_bytes == len(call.audio)
    assert 0 < marks[0].audio_bytes < marks[1].audio_bytes
    assert {m["event"] for m in call.messages} == {"media", "mark"}
    assert {m["streamSid"] for m in call.messages} == {call.stream_sid}
    # Frames of 20 ms of 8 kHz μ-law (the last of a sentence may be shorter).
    sizes = {len(base64.b64decode(m["media"]["payload"])) for m in call.messages[:10]}
    assert sizes == {FRAME}
    assert [(m["role"], m["status"], m["text"]) for m in thread["messages"]] == [
        ("user", "complete", f"What is the weather in Paris {mark}"),
        ("assistant", "complete", answer),
    ]
    # The call's thread is the --twilio-user's (default `twilio`), who speaks its turns.
    assert thread["messages"][0]["author"] == thread["owner"]
    assert thread["messages"][0]["authorName"] == "twilio"
    assert thread["messages"][1]["voice"]["audioOutSeconds"] == pytest.approx(
        len(call.audio) / 8000, abs=0.01
    )


@requires_espeak
async def test_barge_in_clears_the_call_and_keeps_only_the_marked_words(
    fake: FakeOpenAI, server: ServerProcess, threads: Threads, tmp_path: Path
) -> None:
    first, second = marker(), marker()
    fake.script(
        {"kind": "transcription", "transcript": f"Tell me a story {first}"},
        {"match": first, "text": " ".join(SENTENCES), "tokens_per_second": 8},
        {"kind": "transcription", "transcript": f"Stop, tell me about Rome {second}"},
        {"match": second, "text": "Rome is old."},
    )
    call_sid = new_call_sid()
    token = await stream_token(server, call_sid)
    question = spoken_mulaw(tmp_path, "Tell me a story.")
    interruption = spoken_mulaw(tmp_path, "Stop, tell me about Rome instead.")

    async with phone_call(server) as call:
        await call.start(token, call_sid)
        await call.say(silence(300) + question + silence(1000))
        # The first sentence has played; the second has been sent but not yet played.
        first_mark, second_mark = await call.wait_for_marks(2)
        await call.echo(first_mark)
        await call.say(interruption + silence(1000))
        clear = await call.wait_for_event("clear")
        # After a clear, Twilio echoes the marks it dropped: they must not count as played.
        await call.echo(second_mark)
        thread = await settled(threads, call_sid, 4)

    assert clear == {"event": "clear", "streamSid": call.stream_sid}
    assert [(m["role"], m["status"], m["text"]) for m in thread["messages"]] == [
        ("user", "complete", f"Tell me a story {first}"),
        ("assistant", "interrupted", SENTENCES[0]),
        ("user", "complete", f"Stop, tell me about Rome {second}"),
        ("assistant", "complete", "Rome is old."),
    ]
    assert thread["messages"][1]["error"]["code"] == "barge_in"
    (body,) = chat_bodies(fake, second)
    assert body["messages"][-2] == {"role": "assistant", "content": SENTENCES[0]}


@requires_espeak
async def test_a_sentence_is_marked_once_sent_though_the_next_is_slow_to_speak(
    fake: FakeOpenAI, server: ServerProcess, threads: Threads, tmp_path: Path
) -> None:
    first, second = marker(), marker()
    fake.script(
        {"kind": "transcription", "transcript": f"Tell me a story {first}"},
        {"match": first, "text": " ".join(SENTENCES[:2])},
        {"kind": "speech", "match": SENTENCES[1], "hang_s": 8},
        {"kind": "transcription", "transcript": f"Stop, tell me about Rome {second}"},
        {"match": second, "text": "Rome is old."},
    )
    call_sid = new_call_sid()
    token = await stream_token(server, call_sid)
    question = spoken_mulaw(tmp_path, "Tell me a story.")
    interruption = spoken_mulaw(tmp_path, "Stop, tell me about Rome instead.")

    async with phone_call(server) as call:
        await call.start(token, call_sid)
        await call.say(silence(300) + question + silence(1000))
        (first_mark,) = await call.wait_for_marks(1)
        # The first sentence is marked with its last frame, while the second is still spoken.
        assert first_mark.audio_bytes == len(call.audio)
        await asyncio.sleep(0.5)
        assert (len(call.marks), len(call.audio)) == (1, first_mark.audio_bytes)
        await call.echo(first_mark)
        await call.say(interruption + silence(1000))
        await call.wait_for_event("clear")
        # The next reply is marked in its turn, whatever the interrupted one still reports.
        _, rome_mark = await call.wait_for_marks(2)
        await call.echo(rome_mark)
        thread = await settled(threads, call_sid, 4)

    assert [(m["role"], m["status"], m["text"]) for m in thread["messages"]] == [
        ("user", "complete", f"Tell me a story {first}"),
        ("assistant", "interrupted", SENTENCES[0]),
        ("user", "complete", f"Stop, tell me about Rome {second}"),
        ("assistant", "complete", "Rome is old."),
    ]
    reply_id = thread["messages"][1]["id"]
    assert first_mark.name == f"{reply_id}@{-(-first_mark.audio_bytes // 8)}"
    rome_bytes = rome_mark.audio_bytes - first_mark.audio_bytes
    assert rome_mark.name == f"{thread['messages'][3]['id']}@{-(-rome_bytes // 8)}"


# -- stream tokens ----------------------------------------------------------------------------


async def test_a_used_token_is_refused_and_creates_nothing(
    server: ServerProcess, threads: Threads
) -> None:
    call_sid = new_call_sid()
    token = await stream_token(server, call_sid)
    async with phone_call(server) as call:
        await call.start(token, call_sid)
        await call.send("stop", streamSid=call.stream_sid, stop={"callSid": call_sid})
        assert await call.closing() == (1000, "call_ended")
    before = await thread_count(threads)

    async with phone_call(server) as again:
        await again.start(token, call_sid)
        assert await again.closing() == (4401, "invalid_token")

    assert await thread_count(threads) == before
    assert again.messages == []


async def test_an_expired_token_is_refused_and_creates_nothing(
    server: ServerProcess, threads: Threads
) -> None:
    call_sid = new_call_sid()
    token = await stream_token(server, call_sid)
    # A minute on: the token's expiry, moved into the past in the server's own database file.
    conn = apsw.Connection(str(server.db_path))
    conn.set_busy_timeout(5000)
    conn.execute(
        "UPDATE twilio_stream_tokens SET expires_at = expires_at - 61 WHERE call_sid = ?",
        (call_sid,),
    )
    assert conn.changes() == 1
    conn.close()
    before = await thread_count(threads)

    async with phone_call(server) as call:
        await call.start(token, call_sid)
        assert await call.closing() == (4401, "invalid_token")

    assert await thread_count(threads) == before


@pytest.mark.parametrize("which", ["unknown", "missing", "another-call"])
async def test_a_wrong_token_is_refused_and_creates_nothing(
    server: ServerProcess, threads: Threads, which: str
) -> None:
    call_sid = new_call_sid()
    token = await stream_token(server, call_sid)
    before = await thread_count(threads)

    async with phone_call(server) as call:
        if which == "unknown":
            await call.start(token + "x", call_sid)
        elif which == "missing":
            await call.send("connected", protocol="Call", version="1.0.0")
            start = {"streamSid": call.stream_sid, "callSid": call_sid, "customParameters": {}}
            await call.send("start", start=start, streamSid=call.stream_sid)
        else:
            await call.start(token, new_call_sid())
        assert await call.closing() == (4401, "invalid_token")

    assert await thread_count(threads) == before
    # A token offered by another call has leaked: it is spent, and its own call is refused too.
    if which == "another-call":
        async with phone_call(server) as call:
            await call.start(token, call_sid)
            assert await call.closing() == (4401, "invalid_token")
        assert await thread_count(threads) == before


async def test_a_stream_that_does_not_start_is_closed_with_1008(server: ServerProcess) -> None:
    async with phone_call(server) as call:
        await call.send("media", streamSid=call.stream_sid, media={"payload": "AAAA"})
        assert await call.closing() == (1008, "start_expected")


async def test_dtmf_and_marks_not_ours_are_ignored(server: ServerProcess) -> None:
    call_sid = new_call_sid()
    token = await stream_token(server, call_sid)
    async with phone_call(server) as call:
        await call.start(token, call_sid)
        await call.send("dtmf", streamSid=call.stream_sid, dtmf={"track": "inbound", "digit": "7"})
        for name in ["greeting", "msg@", "@120", "msg@12ms", ""]:
            await call.send("mark", streamSid=call.stream_sid, mark={"name": name})
        await call.send("mark", streamSid=call.stream_sid, mark={})
        await call.send("stop", streamSid=call.stream_sid, stop={"callSid": call_sid})
        assert await call.closing() == (1000, "call_ended")
    assert call.messages == []


# -- the routes' bounds -----------------------------------------------------------------------


async def test_only_the_exact_twilio_paths_go_without_a_bearer_token(
    server: ServerProcess,
) -> None:
    url = server.url.replace("http://", "ws://", 1) + "/twilio/stream/x"
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url):
            pass
    assert refused.value.response.status_code == 403

    params = call_params(new_call_sid())
    async with httpx.AsyncClient(timeout=10) as anonymous:
        response = await anonymous.post(
            f"{server.url}/twilio/voice/",
            data=params,
            headers={"X-Twilio-Signature": twilio_signature(f"{PUBLIC_URL}/twilio/voice/", params)},
        )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


@pytest.mark.agent_server(
    "--public-url", PUBLIC_URL, "--twilio-auth-token", AUTH_TOKEN, "--max-calls", "2"
)
async def test_call_sockets_over_max_calls_are_closed_with_1013(server: ServerProcess) -> None:
    async with phone_call(server) as first, phone_call(server) as second:
        await first.send("connected", protocol="Call", version="1.0.0")
        await second.send("connected", protocol="Call", version="1.0.0")
        # Two sockets that have not started yet hold both places.
        async with phone_call(server) as third:
            assert await third.closing() == (1013, "too_many_calls")
        await first.socket.close()
        await first.closed.wait()
        # The place comes back once the server has seen the socket go.
        async with asyncio.timeout(10):
            while True:
                call_sid = new_call_sid()
                token = await stream_token(server, call_sid)
                async with phone_call(server) as fourth:
                    await fourth.start(token, call_sid)
                    await fourth.send("stop", streamSid=fourth.stream_sid, stop={})
                    closed = await fourth.closing()
                if closed == (1000, "call_ended"):
                    break
                assert closed == (1013, "too_many_calls")
                await asyncio.sleep(0.05)
        assert not second.closed.is_set()


@pytest.mark.agent_server(provider=False)
async def test_without_an_auth_token_the_stream_is_closed_at_once(server: ServerProcess) -> None:
    async with phone_call(server) as call:
        assert await call.closing(timeout=2) == (1008, "twilio_not_configured")
    assert call.messages == []


def test_an_http_public_url_with_an_auth_token_stops_the_server(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "voicestack",
            "serve",
            "--db",
            str(tmp_path / "voicestack.db"),
            "--public-url",
            "http://voice.example.com",
            "--twilio-auth-token",
            AUTH_TOKEN,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert (
        "--twilio-auth-token needs an https:// --public-url: Twilio streams calls over wss://"
        " only." in result.stderr
    )
