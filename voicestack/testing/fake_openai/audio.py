"""Audio answers of the fake OpenAI server: transcriptions and generated speech."""

from __future__ import annotations

import array
import hashlib
import io
import math
import sys
import wave
from typing import Any

from starlette.responses import JSONResponse, PlainTextResponse, Response

from voicestack.testing.fake_openai.multipart import UploadedFile
from voicestack.testing.fake_openai.plan import Plan
from voicestack.testing.fake_openai.wire import error_response, invalid_request, request_id

DEFAULT_TRANSCRIPT = "hello from the fake transcriber"
SPEECH_SAMPLE_RATE = 24_000
SPEECH_SECONDS_PER_CHAR = 0.06
_TONE_HZ = 400  # divides the sample rate, so one period tiles seamlessly
_MAX_SPEECH_INPUT = 4096
_TEXT_FORMATS = ("text", "srt", "vtt")


def file_summary(upload: UploadedFile) -> dict[str, Any]:
    """Describe an uploaded file for the request log: name, type, byte length and sha256."""
    return {
        "filename": upload.filename,
        "content_type": upload.content_type,
        "bytes": len(upload.data),
        "sha256": hashlib.sha256(upload.data).hexdigest(),
    }


def audio_duration(data: bytes) -> float:
    """Return the length in seconds of WAV bytes, or a 16 kHz 16-bit mono guess otherwise."""
    try:
        with wave.open(io.BytesIO(data), "rb") as wav:
            return wav.getnframes() / wav.getframerate()
    except (wave.Error, EOFError):
        return len(data) / 32_000


def transcription_response(
    plan: Plan | None, fields: dict[str, str], upload: UploadedFile
) -> Response:
    """Answer a transcription request with the plan's transcript in the requested format."""
    digest = hashlib.sha256(upload.data).hexdigest()
    if plan is not None and plan.expect_sha256 and plan.expect_sha256.lower() != digest:
        return invalid_request(
            f"Uploaded audio does not match the expected sha256 {plan.expect_sha256} "
            f"(got {digest}, {len(upload.data)} bytes).",
            param="file",
        )
    text = (
        plan.transcript if plan is not None and plan.transcript is not None else DEFAULT_TRANSCRIPT
    )
    fmt = fields.get("response_format") or "json"
    duration = round(audio_duration(upload.data), 3)
    headers = {"x-request-id": request_id()}
    if fmt == "json":
        return JSONResponse({"text": text}, headers=headers)
    if fmt == "verbose_json":
        segment = {
            "id": 0,
            "seek": 0,
            "start": 0.0,
            "end": duration,
            "text": text,
            "tokens": [],
            "temperature": 0.0,
            "avg_logprob": 0.0,
            "compression_ratio": 1.0,
            "no_speech_prob": 0.0,
        }
        body = {
            "task": "transcribe",
            "language": fields.get("language") or "english",
            "duration": duration,
            "text": text,
            "segments": [segment],
        }
        return JSONResponse(body, headers=headers)
    if fmt in _TEXT_FORMATS:
        return PlainTextResponse(_as_text_format(fmt, text, duration), headers=headers)
    return invalid_request(
        f"Invalid response_format {fmt!r}; expected json, text, srt, verbose_json or vtt.",
        param="response_format",
    )


def _as_text_format(fmt: str, text: str, duration: float) -> str:
    if fmt == "text":
        return text
    if fmt == "srt":
        return f"1\n00:00:00,000 --> {_stamp(duration, ',')}\n{text}\n\n"
    return f"WEBVTT\n\n00:00:00.000 --> {_stamp(duration, '.')}\n{text}\n\n"


def _stamp(seconds: float, separator: str) -> str:
    millis = round(seconds * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"{hours:02d}:{minutes:02d}:{rest // 1000:02d}{separator}{rest % 1000:03d}"


def speech_pcm(text: str, speed: float = 1.0) -> bytes:
    """Return quiet 16-bit little-endian mono 24 kHz PCM whose length is proportional to the
    text: what OpenAI answers for `response_format="pcm"`, headerless."""
    seconds = min(60.0, max(0.25, len(text) * SPEECH_SECONDS_PER_CHAR / speed))
    period = SPEECH_SAMPLE_RATE // _TONE_HZ
    samples = array.array(
        "h", (round(3000 * math.sin(2 * math.pi * i / period)) for i in range(period))
    )
    if sys.byteorder == "big":
        samples.byteswap()
    one = samples.tobytes()
    frames = round(seconds * SPEECH_SAMPLE_RATE)
    return (one * (frames // period + 1))[: frames * 2]


def wav_bytes(pcm: bytes, sample_rate: int = SPEECH_SAMPLE_RATE) -> bytes:
    """Wrap 16-bit mono PCM in a RIFF WAV container."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm)
    return buffer.getvalue()


def validate_speech(body: Any) -> Response | None:
    """Return the real API's 400 for an invalid speech request, or None when it is fine."""
    if not isinstance(body, dict):
        return invalid_request("The request body must be a JSON object.")
    for name in ("model", "input", "voice"):
        if not body.get(name):
            return invalid_request(
                f"Missing required parameter: '{name}'.",
                param=name,
                code="missing_required_parameter",
            )
    if not isinstance(body["input"], str) or len(body["input"]) > _MAX_SPEECH_INPUT:
        return invalid_request(
            f"'input' must be a string of at most {_MAX_SPEECH_INPUT} characters.", param="input"
        )
    speed = body.get("speed", 1.0)
    if not isinstance(speed, int | float) or not 0.25 <= speed <= 4.0:
        return invalid_request("'speed' must be a number between 0.25 and 4.0.", param="speed")
    return None


def speech_response(body: dict[str, Any]) -> Response:
    """Answer a validated speech request with playable audio bytes."""
    fmt = body.get("response_format") or "mp3"
    pcm = speech_pcm(body["input"], float(body.get("speed", 1.0)))
    headers = {"x-request-id": request_id()}
    if fmt == "pcm":
        return Response(pcm, media_type="audio/pcm", headers=headers)
    if fmt not in ("wav", "mp3", "opus", "aac", "flac"):
        return error_response(400, f"Invalid response_format {fmt!r}.", param="response_format")
    # Stand-in: the fake has no mp3/opus/aac/flac encoder, so every one of those formats gets
    # the same WAV bytes, labelled as the WAV they really are.
    return Response(wav_bytes(pcm), media_type="audio/wav", headers=headers)
