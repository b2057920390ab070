"""The clients of the relay bench: relayed calls that send paced audio and stamp it both ways.

Two kinds, one surface (`open`, `send`, `read`, `close`):

- AudioCall: the audio socket of a new thread (`/api/threads/{id}/audio`), 16-bit PCM at 24 kHz
  (as the browser page's "Talk" sends it) or 16 kHz; reply audio comes back as binary frames.
- TwilioCall: a phone call as Twilio makes it: the signed `POST /twilio/voice` webhook, the
  one-time token of its TwiML, then `/twilio/stream` with `connected`, `start` and 20 ms `media`
  messages of 8 kHz μ-law; reply audio comes back as `media` messages, and every `mark` is
  echoed at once, as if played.

Each call notes when (CLOCK_MONOTONIC ns) each frame was handed to its socket, with the
milliseconds of audio sent up to the end of that frame, and when reply audio arrived, with the
milliseconds received so far; bench/realtime_relay_match.py pairs them with the provider's.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

FRAME_S = 0.02
PUBLIC_URL = "https://voice.example.com"  # the server's --public-url: the webhook signs it
# Its --twilio-auth-token: a stand-in for a server that lives for one bench run.
TWILIO_TOKEN = "bench-twilio-auth-token"  # noqa: S105
_TWIML_TOKEN = re.compile(r'<Parameter name="token" value="([^"]+)"/>')


@dataclass
class Stamps:
    """One call's audio both ways: (ns, ms of audio so far) at each frame sent and received."""

    sent: list[tuple[int, float]] = field(default_factory=list)
    received: list[tuple[int, float]] = field(default_factory=list)
    sent_ms: float = 0.0
    received_ms: float = 0.0
    events: Counter[str] = field(default_factory=Counter)  # the server's messages, by type
    first_cut: int | None = None  # when the first `clear` (a barge-in) came

    def on_event(self, kind: str) -> None:
        """A message of the server other than audio."""
        self.events[kind] += 1
        if kind == "clear" and self.first_cut is None:
            self.first_cut = time.monotonic_ns()

    def on_sent(self, ms: float) -> None:
        """A frame of `ms` was just handed to the socket."""
        self.sent_ms += ms
        self.sent.append((time.monotonic_ns(), self.sent_ms))

    def on_received(self, ms: float) -> None:
        """A frame of `ms` of reply audio just arrived."""
        self.received_ms += ms
        self.received.append((time.monotonic_ns(), self.received_ms))


class Call:
    """A relayed call: paced sending, a reader task, the stamps of both."""

    frame_ms = 20.0

    def __init__(self, socket: ClientConnection) -> None:
        self.socket = socket
        self.stamps = Stamps()
        self.reader: asyncio.Task[None] | None = None

    async def send(self, frame: bytes) -> None:
        """Send one 20 ms frame of the call's audio."""
        raise NotImplementedError

    async def read(self) -> None:
        """Read the server's messages until the socket closes."""
        raise NotImplementedError

    async def send_paced(self, chunks: Sequence[bytes], start: float) -> None:
        """Send `chunks` at one frame per 20 ms from `start` (loop time)."""
        loop = asyncio.get_running_loop()
        for n, frame in enumerate(chunks):
            await asyncio.sleep(max(0.0, start + n * FRAME_S - loop.time()))
            await self.send(frame)

    async def close(self) -> None:
        """Hang up and stop reading."""
        with contextlib.suppress(Exception):
            await self.socket.close()
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.reader


class AudioCall(Call):
    """The audio socket of a new thread, 16-bit PCM."""

    def __init__(self, socket: ClientConnection, rate: int) -> None:
        super().__init__(socket)
        self.bytes_per_ms = rate * 2 / 1000

    @classmethod
    async def open(cls, http: httpx.AsyncClient, url: str, token: str, rate: int) -> AudioCall:
        """A new thread's audio socket at `rate` Hz, started and `ready` (the provider is
        connected)."""
        thread = (await http.post("/api/threads", json={})).raise_for_status().json()["id"]
        socket = await connect(
            f"{url.replace('http://', 'ws://', 1)}/api/threads/{thread}/audio?token={token}",
            max_size=None,
            compression=None,
        )
        await socket.send(json.dumps({"type": "start", "sampleRate": rate, "format": "pcm16"}))
        ready = json.loads(await asyncio.wait_for(socket.recv(), 30))
        if ready.get("type") != "ready":
            raise RuntimeError(f"the audio socket did not get ready: {ready}")
        call = cls(socket, rate)
        call.reader = asyncio.create_task(call.read())
        return call

    async def send(self, frame: bytes) -> None:
        """One binary frame."""
        self.stamps.on_sent(len(frame) / self.bytes_per_ms)
        await self.socket.send(frame)

    async def read(self) -> None:
        """Binary frames are reply audio; events are counted."""
        with contextlib.suppress(Exception):
            async for message in self.socket:
                if isinstance(message, bytes):
                    self.stamps.on_received(len(message) / self.bytes_per_ms)
                    continue
                data = json.loads(message)
                self.stamps.on_event(data["type"])


def twilio_signature(url: str, params: dict[str, str]) -> str:
    """X-Twilio-Signature of a webhook: HMAC-SHA1 of the URL and the sorted form fields."""
    signed = url + "".join(name + params[name] for name in sorted(params))
    digest = hmac.new(TWILIO_TOKEN.encode(), signed.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


class TwilioCall(Call):
    """A phone call's media stream, 8 kHz μ-law."""

    def __init__(self, socket: ClientConnection, stream_sid: str) -> None:
        super().__init__(socket)
        self.stream_sid = stream_sid
        self.chunk = 0

    @classmethod
    async def open(cls, url: str, number: int) -> TwilioCall:
        """Call `number`'s webhook and stream, `start`ed (the relay connects meanwhile)."""
        call_sid, stream_sid = f"CAbench{number:026d}", f"MZbench{number:026d}"
        params = {
            "AccountSid": "AC" + "0" * 32,
            "CallSid": call_sid,
            "CallStatus": "ringing",
            "Direction": "inbound",
            "From": f"+1555{number:07d}",
            "To": "+15550009999",
        }
        headers = {"X-Twilio-Signature": twilio_signature(f"{PUBLIC_URL}/twilio/voice", params)}
        async with httpx.AsyncClient(timeout=30) as anonymous:
            twiml = await anonymous.post(f"{url}/twilio/voice", data=params, headers=headers)
        found = _TWIML_TOKEN.search(twiml.raise_for_status().text)
        if found is None:
            raise RuntimeError(f"the webhook's TwiML has no token: {twiml.text}")
        socket = await connect(
            f"{url.replace('http://', 'ws://', 1)}/twilio/stream", max_size=None, compression=None
        )
        call = cls(socket, stream_sid)
        await call._event("connected", protocol="Call", version="1.0.0")
        start = {
            "accountSid": params["AccountSid"],
            "streamSid": stream_sid,
            "callSid": call_sid,
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": {"token": found.group(1)},
        }
        await call._event("start", sequenceNumber="1", start=start, streamSid=stream_sid)
        call.reader = asyncio.create_task(call.read())
        return call

    async def _event(self, kind: str, **fields: Any) -> None:
        await self.socket.send(json.dumps({"event": kind, **fields}))

    async def send(self, frame: bytes) -> None:
        """One `media` message."""
        self.chunk += 1
        payload = base64.b64encode(frame).decode()
        media = {"track": "inbound", "chunk": str(self.chunk), "payload": payload}
        text = json.dumps({"event": "media", "streamSid": self.stream_sid, "media": media})
        self.stamps.on_sent(len(frame) / 8)
        await self.socket.send(text)

    async def read(self) -> None:
        """`media` is reply audio; a `mark` is echoed at once (played); others are counted."""
        with contextlib.suppress(Exception):
            async for message in self.socket:
                data = json.loads(message)
                kind = data.get("event")
                if kind == "media":
                    payload = base64.b64decode(data["media"]["payload"])
                    self.stamps.on_received(len(payload) / 8)
                    continue
                self.stamps.on_event(str(kind))
                if kind == "mark":
                    await self._event("mark", streamSid=self.stream_sid, mark=data["mark"])

    async def close(self) -> None:
        """`stop`, then hang up."""
        with contextlib.suppress(Exception):
            await self._event("stop", streamSid=self.stream_sid, stop={})
        await super().close()
