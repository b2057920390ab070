"""Reading a `POST /voice` body: multipart or JSON, its audio refused as soon as it is too big.

Multipart is parsed as it streams (voicestack.voice.multipart), counting the bytes of the
`audio` part; JSON is read up to the size its base64 can take. Either way, memory never holds
more than `--max-audio-mb` of audio plus a small allowance for the text fields.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import ClientDisconnect, Request

from voicestack.echo import echoed
from voicestack.http.body import parse_json
from voicestack.http.errors import ApiError
from voicestack.voice.multipart import (
    MultipartError,
    MultipartParser,
    PartData,
    PartEnd,
    PartStart,
    boundary_of,
)

FIELD_BYTES = 65_536  # all text fields together: threadId, speak, language
_AUDIO_PART = "audio"
_NOT_A_FORM = ("audio/", "video/", "application/octet-stream")


class VoiceFields(BaseModel):
    """The text fields of a `POST /voice` request (form fields or JSON keys)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    thread_id: str = Field(alias="threadId", min_length=1, max_length=100)
    audio_b64: str | None = Field(
        None, alias="audioB64", description="The recording, base64 (JSON form only)."
    )
    speak: bool = False
    language: str | None = Field(
        None, min_length=2, max_length=35, pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{1,8})*$"
    )


@dataclass(frozen=True, slots=True)
class VoiceUpload:
    """A read `POST /voice` request: the recording's bytes and what to do with them."""

    fields: VoiceFields
    audio: bytes


def audio_too_large(limit: int) -> ApiError:
    """The 413 for audio over `limit` bytes."""
    return ApiError(
        413,
        "audio_too_large",
        f"The audio is over the {limit / 1_048_576:g} MiB limit (--max-audio-mb); "
        "send a shorter recording.",
    )


def body_limit(max_audio: int) -> int:
    """The most bytes a body carrying `max_audio` bytes of audio may have (base64 and fields)."""
    return 4 * -(-max_audio // 3) + FIELD_BYTES


def _empty_audio() -> ApiError:
    return ApiError(
        400,
        "empty_audio",
        "No audio was sent: post the recording as the multipart 'audio' file, "
        "or base64 in the JSON key 'audioB64'.",
    )


async def _read_multipart(request: Request, boundary: bytes, max_audio: int) -> VoiceUpload:
    parser = MultipartParser(boundary)
    texts: dict[str, bytearray] = {}
    audio: list[bytes] | None = None
    audio_size = text_size = 0
    current: str | None = None
    received, limit = 0, body_limit(max_audio)
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:  # a preamble, epilogue or part headers that never end
            raise audio_too_large(max_audio)
        for event in parser.feed(chunk):
            if isinstance(event, PartStart):
                current = _start_part(event, texts, audio is not None)
                if current == _AUDIO_PART:
                    audio = []
            elif isinstance(event, PartData) and current == _AUDIO_PART and audio is not None:
                audio_size += len(event.data)
                if audio_size > max_audio:
                    raise audio_too_large(max_audio)
                audio.append(event.data)
            elif isinstance(event, PartData) and current is not None:
                text_size += len(event.data)
                if text_size > FIELD_BYTES:
                    raise ApiError(
                        413, "body_too_large", f"The form fields are over {FIELD_BYTES} bytes."
                    )
                texts[current] += event.data
            elif isinstance(event, PartEnd):
                current = None
    parser.close()
    try:
        values = {name: value.decode() for name, value in texts.items()}
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_multipart", "A form field is not UTF-8 text.") from None
    fields = VoiceFields.model_validate(values)
    return VoiceUpload(fields, b"".join(audio or ()))


def _start_part(part: PartStart, texts: dict[str, bytearray], have_audio: bool) -> str:
    if part.name == _AUDIO_PART:
        if have_audio:
            raise ApiError(422, "invalid_args", "Send one 'audio' file per request.")
        return part.name
    if part.filename is not None:
        raise ApiError(
            422,
            "invalid_args",
            f"Unexpected file field {echoed(part.name)!r}: send the recording as the 'audio' file.",
        )
    if part.name in texts:
        raise ApiError(422, "invalid_args", f"The form field {echoed(part.name)!r} is repeated.")
    texts[part.name] = bytearray()
    return part.name


async def _read_json(request: Request, max_audio: int) -> VoiceUpload:
    limit = body_limit(max_audio)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise audio_too_large(max_audio)
        chunks.append(chunk)
    body: Any = parse_json(b"".join(chunks), "The request body") if size else {}
    if not isinstance(body, dict):
        raise ApiError(422, "invalid_args", "The body must be a JSON object.")
    fields = VoiceFields.model_validate(body)
    audio = await asyncio.to_thread(_decode_base64, fields.audio_b64 or "")
    if len(audio) > max_audio:
        raise audio_too_large(max_audio)
    return VoiceUpload(fields, audio)


def _decode_base64(text: str) -> bytes:
    # A browser's FileReader.readAsDataURL gives "data:audio/webm;base64,...": take it as is.
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        message = "audioB64 is not valid base64."
        field = {"field": "audioB64", "message": "Invalid base64"}
        raise ApiError(422, "invalid_args", message, fields=[field]) from None


async def read_voice_upload(request: Request, max_audio: int) -> VoiceUpload:
    """The fields and audio of a `POST /voice` request, within the audio limit.

    Raises ApiError: 413 `audio_too_large` while reading, 400 `empty_audio`, 400
    `invalid_multipart` / `invalid_json`, 415 `unsupported_media_type`, 422 `invalid_args`.
    """
    content_type = request.headers.get("content-type", "")
    if content_type.lower().startswith(_NOT_A_FORM):
        raise ApiError(
            415,
            "unsupported_media_type",
            "Send multipart/form-data with an 'audio' file, or JSON {threadId, audioB64}.",
        )
    boundary = boundary_of(content_type) if "multipart/" in content_type.lower() else None
    if "multipart/" in content_type.lower() and boundary is None:
        raise ApiError(400, "invalid_multipart", "A multipart/form-data body needs a boundary.")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > body_limit(max_audio):
        raise audio_too_large(max_audio)
    try:
        if boundary is not None:
            upload = await _read_multipart(request, boundary, max_audio)
        else:
            upload = await _read_json(request, max_audio)
    except MultipartError as exc:
        message = f"The form is not valid multipart: {exc}."
        raise ApiError(400, "invalid_multipart", message) from None
    except ClientDisconnect:
        raise ApiError(400, "client_disconnected", "The client went away mid-body.") from None
    if not upload.audio:
        raise _empty_audio()
    return upload
