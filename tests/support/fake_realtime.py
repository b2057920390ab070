"""A client of the fake Realtime provider: a real WebSocket, JSON events in and out, speech from
espeak-ng and sox, and the openai package's own event types to check what the fake says."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from openai.types.beta.realtime.realtime_server_event import (
    RealtimeServerEvent as BetaServerEvent,
)
from openai.types.realtime.realtime_server_event import RealtimeServerEvent
from pydantic import TypeAdapter
from websockets.asyncio.client import ClientConnection, connect

from tests.support.realtime import spoken_pcm
from tests.support.voice import INSTALL, SOX
from voicestack.testing.fake_openai import FakeOpenAI

MODEL = "gpt-realtime"
TIMEOUT_S = 10.0
_GA: TypeAdapter[Any] = TypeAdapter(RealtimeServerEvent)
_BETA: TypeAdapter[Any] = TypeAdapter(BetaServerEvent)


def ws_url(fake: FakeOpenAI, model: str = MODEL) -> str:
    """The Realtime URL a client derives from the fake's base URL."""
    return f"{fake.api_base.replace('http://', 'ws://')}/realtime?model={model}"


def check_ga(event: dict[str, Any]) -> None:
    """Fail unless `event` parses as a GA server event of the openai package."""
    _GA.validate_python(event)


def check_beta(event: dict[str, Any]) -> None:
    """Fail unless `event` parses as a beta server event of the openai package."""
    _BETA.validate_python(event)


def outline(events: list[dict[str, Any]]) -> list[str]:
    """Event types in order, each run of one repeated type collapsed to one entry."""
    types = [e["type"] for e in events]
    return [t for i, t in enumerate(types) if i == 0 or types[i - 1] != t]


def spoken_ulaw(directory: Path, text: str) -> bytes:
    """`text` spoken by espeak-ng as raw 8 kHz μ-law, encoded by sox."""
    pcm = spoken_pcm(directory, text, 8000)
    if SOX is None:
        pytest.skip(f"sox is needed for μ-law ({INSTALL})")
    raw = ["-t", "raw", "-r", "8000", "-c", "1"]
    done = subprocess.run(
        [SOX, *raw, "-b", "16", "-e", "signed-integer", "-", *raw, "-e", "u-law", "-"],
        input=pcm,
        capture_output=True,
        check=True,
    )
    return done.stdout


class RealtimeClient:
    """One open connection; every received event is kept in `events`."""

    def __init__(self, ws: ClientConnection) -> None:
        """Wrap an open WebSocket."""
        self.ws = ws
        self.events: list[dict[str, Any]] = []

    async def send(self, type_: str, **fields: Any) -> None:
        """Send one client event."""
        await self.ws.send(json.dumps({"type": type_, **fields}))

    async def recv(self, timeout: float = TIMEOUT_S) -> dict[str, Any]:
        """The next server event."""
        event: dict[str, Any] = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        self.events.append(event)
        return event

    async def until(self, type_: str, timeout: float = TIMEOUT_S) -> list[dict[str, Any]]:
        """Events up to and including the next one of `type_`."""
        got = [await self.recv(timeout)]
        while got[-1]["type"] != type_:
            got.append(await self.recv(timeout))
        return got

    async def quiet(self, seconds: float) -> list[dict[str, Any]]:
        """Whatever arrives within `seconds` (a silent server sends nothing)."""
        got: list[dict[str, Any]] = []
        try:
            while True:
                got.append(await self.recv(seconds))
        except TimeoutError:
            return got

    async def append(self, audio: bytes, chunk_bytes: int = 4800) -> None:
        """Stream audio as input_audio_buffer.append events, faster than real time."""
        for i in range(0, len(audio), chunk_bytes):
            piece = base64.b64encode(audio[i : i + chunk_bytes]).decode("ascii")
            await self.send("input_audio_buffer.append", audio=piece)

    async def say(self, text: str) -> None:
        """Add a user text message and ask for a response."""
        content = [{"type": "input_text", "text": text}]
        await self.send(
            "conversation.item.create", item={"type": "message", "role": "user", "content": content}
        )
        await self.send("response.create")


@asynccontextmanager
async def realtime(
    fake: FakeOpenAI, *, beta: bool = False, model: str = MODEL
) -> AsyncIterator[RealtimeClient]:
    """A connection to the fake's Realtime socket, GA or (with the beta header) beta."""
    headers = {"Authorization": "Bearer test"}
    if beta:
        headers["OpenAI-Beta"] = "realtime=v1"
    async with connect(ws_url(fake, model), additional_headers=headers, max_size=None) as ws:
        yield RealtimeClient(ws)


def audio_bytes(events: list[dict[str, Any]], beta: bool = False) -> bytes:
    """The decoded audio of every output audio delta among `events`."""
    name = "response.audio.delta" if beta else "response.output_audio.delta"
    return b"".join(base64.b64decode(e["delta"]) for e in events if e["type"] == name)
