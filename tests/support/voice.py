"""Voice from a client's side: real speech recorded by espeak-ng, converted by sox and ffmpeg,
posted to `POST /voice` as multipart or JSON, and raw uploads that never finish.

espeak-ng, sox and ffmpeg are Debian packages (`apt-get install -y espeak-ng sox ffmpeg`): sox
makes FLAC and Ogg Vorbis, ffmpeg MP3, Opus, WebM and M4A. A test that needs a missing one is
skipped, saying which.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import shutil
import subprocess
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apsw
import httpx
import pytest

from tests.support.server import ServerProcess
from tests.support.sse import Event

ESPEAK = shutil.which("espeak-ng")
SOX = shutil.which("sox")
FFMPEG = shutil.which("ffmpeg")
INSTALL = "apt-get install -y espeak-ng sox ffmpeg"

requires_espeak = pytest.mark.skipif(
    ESPEAK is None, reason=f"espeak-ng is not installed, so there is no real speech ({INSTALL})"
)

# How each format is made from espeak-ng's WAV: (tool, output file name, extra arguments).
CONVERSIONS: dict[str, tuple[str, str, list[str]]] = {
    "wav": ("", "speech.wav", []),
    "flac": ("sox", "speech.flac", []),
    "ogg": ("sox", "speech.ogg", []),
    "mp3": ("ffmpeg", "speech.mp3", ["-c:a", "libmp3lame"]),
    "opus": ("ffmpeg", "speech.opus", ["-c:a", "libopus"]),
    "webm": ("ffmpeg", "speech.webm", ["-c:a", "libopus"]),
    "m4a": ("ffmpeg", "speech.m4a", ["-c:a", "aac"]),
}
# What the server stores for each (content type, name of the detected format).
STORED_TYPE = {
    "wav": "audio/wav",
    "flac": "audio/flac",
    "ogg": "audio/ogg",
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "webm": "audio/webm",
    "m4a": "audio/mp4",
}
UPLOAD_NAME = {"opus": "recording.ogg", "m4a": "recording.m4a"}


class Recordings:
    """Real speech, recorded once per run by espeak-ng and converted to each format on demand."""

    def __init__(self, directory: Path, text: str = "What is the weather like today?") -> None:
        self.directory = directory
        self.text = text
        self._made: dict[str, bytes] = {}

    def wav_path(self) -> Path:
        """espeak-ng's own recording of the text."""
        path = self.directory / "speech.wav"
        if not path.exists():
            if ESPEAK is None:
                pytest.skip(f"espeak-ng is not installed ({INSTALL})")
            subprocess.run([ESPEAK, "-w", str(path), self.text], check=True)
        return path

    def audio(self, fmt: str) -> bytes:
        """The recording in `fmt` (a key of CONVERSIONS); skips when the converter is missing."""
        if fmt not in self._made:
            tool, name, extra = CONVERSIONS[fmt]
            source, target = self.wav_path(), self.directory / name
            if tool == "sox":
                if SOX is None:
                    pytest.skip(f"sox is not installed, needed for {fmt} ({INSTALL})")
                subprocess.run([SOX, str(source), str(target)], check=True)
            elif tool == "ffmpeg":
                if FFMPEG is None:
                    pytest.skip(f"ffmpeg is not installed, needed for {fmt} ({INSTALL})")
                command = [FFMPEG, "-loglevel", "error", "-y", "-i", str(source), *extra]
                subprocess.run([*command, str(target)], check=True)
            self._made[fmt] = target.read_bytes()
        return self._made[fmt]


def sha256(data: bytes) -> str:
    """The hex sha256 of `data`."""
    return hashlib.sha256(data).hexdigest()


def wav_seconds(data: bytes) -> float:
    """The duration of WAV bytes, rounded as the server rounds it."""
    with wave.open(io.BytesIO(data)) as wav:
        return round(wav.getnframes() / wav.getframerate(), 3)


@dataclass(frozen=True)
class Posted:
    """A successful `POST /voice`: the ids it answered with."""

    transcript: str
    message_id: str
    reply_id: str
    file_id: str


def posted(response: httpx.Response) -> Posted:
    """Assert `response` is the 201 of a saved voice turn and return its ids."""
    assert response.status_code == 201, response.text
    body = response.json()
    assert sorted(body) == ["fileId", "messageId", "replyId", "transcript"], body
    return Posted(body["transcript"], body["messageId"], body["replyId"], body["fileId"])


async def post_form(
    client: httpx.AsyncClient,
    thread_id: str | None,
    audio: bytes | None,
    *,
    filename: str = "upload.bin",
    content_type: str = "application/octet-stream",
    **fields: str,
) -> httpx.Response:
    """POST /voice as multipart: an `audio` file part (unless None) and text fields."""
    data = {**({"threadId": thread_id} if thread_id is not None else {}), **fields}
    files = {"audio": (filename, audio, content_type)} if audio is not None else None
    if files is None:  # httpx sends form fields urlencoded unless some file makes it multipart
        return await client.post("/voice", content=multipart_body(data), headers=FORM_HEADERS)
    return await client.post("/voice", data=data, files=files)


async def post_json(
    client: httpx.AsyncClient, thread_id: str, audio: bytes, **extra: Any
) -> httpx.Response:
    """POST /voice as JSON with the audio in base64."""
    body = {"threadId": thread_id, "audioB64": base64.b64encode(audio).decode(), **extra}
    return await client.post("/voice", json=body)


BOUNDARY = "voicestack-test-boundary"
FORM_HEADERS = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}


def multipart_body(fields: dict[str, str], audio: bytes | None = None) -> bytes:
    """A complete multipart/form-data body with BOUNDARY."""
    return multipart_head(fields, audio is not None) + (audio or b"") + multipart_tail()


def multipart_head(fields: dict[str, str], with_audio: bool = True) -> bytes:
    """Everything of a multipart body before the audio file's bytes."""
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in fields.items()
    ]
    if with_audio:
        parts.append(
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="audio";'
            ' filename="big.wav"\r\nContent-Type: audio/wav\r\n\r\n'
        )
    return "".join(parts).encode()


def multipart_tail() -> bytes:
    """The end of a multipart body after the audio file's bytes."""
    return f"\r\n--{BOUNDARY}--\r\n".encode()


@dataclass(frozen=True)
class RawAnswer:
    """A response read off a raw socket, and how much of the body had been sent by then."""

    status: int
    headers: dict[str, str]
    body: bytes
    sent: int

    @property
    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    status_line, *lines = head.strip().split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(status_line.split()[1]), headers, body


async def raw_upload(
    server: ServerProcess,
    head: bytes,
    *,
    send_bytes: int,
    declared_length: int | None = None,
    chunk: int = 65_536,
    timeout: float = 10.0,
) -> RawAnswer:
    """Start a `POST /voice` upload to `server` (with its admin token) on a raw socket and stop
    sending after `send_bytes` of audio, never finishing the body; wait for the server's answer
    to the unfinished request.

    With `declared_length` the body announces that Content-Length, otherwise it is chunked.
    A server that waited for the whole body would never answer: the wait then times out.
    """
    host, port = server.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        framing = (
            f"Content-Length: {declared_length}"
            if declared_length is not None
            else "Transfer-Encoding: chunked"
        )
        writer.write(
            f"POST /voice HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Authorization: Bearer {server.token}\r\n"
            f"Content-Type: {FORM_HEADERS['content-type']}\r\n{framing}\r\n\r\n".encode()
        )

        def frame(data: bytes) -> bytes:
            if declared_length is not None:
                return data
            return b"%x\r\n%s\r\n" % (len(data), data)

        answer = asyncio.ensure_future(_read_answer(reader))
        writer.write(frame(head))
        sent = 0
        while sent < send_bytes and not answer.done():
            piece = b"\x00" * min(chunk, send_bytes - sent)
            writer.write(frame(piece))
            try:
                await asyncio.wait_for(writer.drain(), timeout)
            except (ConnectionError, TimeoutError):
                break
            sent += len(piece)
        try:
            status, headers, body = await asyncio.wait_for(answer, timeout)
        except TimeoutError:
            raise AssertionError(
                f"no answer within {timeout} s to an upload stopped after {sent} bytes:"
                " the server waits for the whole body"
            ) from None
        return RawAnswer(status, headers, body, sent)
    finally:
        writer.close()


def events_outline(events: Sequence[Event]) -> list[tuple[str, str, str | None]]:
    """Each feed event as (kind, message id, status or speech text)."""
    shape: list[tuple[str, str, str | None]] = []
    for event in events:
        data = event.json
        if event.event == "delta":
            shape.append(("delta", data["messageId"], None))
        elif event.event == "speech":
            shape.append(("speech", data["messageId"], data["text"]))
        else:
            shape.append((event.event, data["id"], data.get("status")))
    return shape


def speech_events(events: Sequence[Event]) -> list[dict[str, Any]]:
    """The data of every `speech` event, in feed order."""
    return [event.json for event in events if event.event == "speech"]


def stored_files(db_path: Path, thread_id: str) -> list[dict[str, Any]]:
    """The `files` rows of a thread (without their bytes), read straight from the database."""
    conn = apsw.Connection(str(db_path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        names = ("id", "message_id", "kind", "content_type", "size", "sha256", "duration_s")
        rows = conn.execute(
            f"SELECT {', '.join(names)} FROM files WHERE thread_id = ? ORDER BY rowid",
            (thread_id,),
        )
        return [dict(zip(names, row, strict=True)) for row in rows]
    finally:
        conn.close()
