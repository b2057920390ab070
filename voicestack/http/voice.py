"""Voice routes: `POST /voice` (recording → transcript → reply) and `GET /api/files/{id}`."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from voicestack.agent.llm import ProviderError
from voicestack.agent.membership import require_thread, thread_visible
from voicestack.echo import echoed
from voicestack.http.errors import ApiError, error_response
from voicestack.http.functions import json_response
from voicestack.http.ranges import RangeNotSatisfiable, parse_range
from voicestack.http.state import caller, runtime
from voicestack.http.voice_body import read_voice_upload
from voicestack.identity import Caller
from voicestack.store.readers import Snapshot
from voicestack.voice.files import Audio, FileInfo, file_info, read_bytes
from voicestack.voice.formats import AudioFormat, detect_audio
from voicestack.voice.recorded import recorded_seconds
from voicestack.voice.turn import VoiceTurn, save_voice_turn

# Files never change once written (ids are never reused), so clients may keep them.
_CACHE_CONTROL = "private, max-age=31536000, immutable"
_UPLOAD_NAME = "recording"


def _unsupported_audio() -> ApiError:
    return ApiError(
        415,
        "unsupported_audio",
        "The upload is not audio in a format voicestack takes: "
        "WAV, WebM, Ogg, MP3, M4A/MP4 or FLAC.",
    )


def _stored_audio(data: bytes, fmt: AudioFormat, reported_s: float | None) -> Audio:
    """The upload as stored: hashed, and timed by its header checked against the provider's
    figure and its size (voicestack.voice.recorded). Runs off the event loop: hashing 25 MiB
    and a bounded container scan would otherwise hold up every other request."""
    return Audio.of(data, fmt.content_type, recorded_seconds(data, fmt, reported_s))


async def post_voice(request: Request) -> Response:
    """POST /voice: transcribe a recording, save it as the user's message, start the reply.

    → 201 `{"transcript", "messageId", "replyId", "fileId"}`. Nothing is saved unless the
    transcript is saved with it: a failed or empty transcription leaves the thread unchanged.
    """
    rt = runtime(request)
    user = caller(request)
    upload = await read_voice_upload(request, rt.settings.max_audio_bytes)
    fmt = detect_audio(upload.audio)
    if fmt is None:
        raise _unsupported_audio()
    thread_id = upload.fields.thread_id
    await rt.store.read(lambda snap: require_thread(snap.db(), thread_id, user))
    try:
        heard = await rt.transcriber.transcribe(
            upload.audio, fmt, _UPLOAD_NAME, upload.fields.language
        )
    except ProviderError as exc:
        raise ApiError(
            502, "transcription_failed", f"Transcription failed: {exc.message}", reason=exc.code
        ) from None
    transcript = heard.text.strip()
    if not transcript:
        raise ApiError(422, "no_speech", "No speech was heard in the recording; nothing was saved.")
    audio = await asyncio.to_thread(_stored_audio, upload.audio, fmt, heard.duration_s)
    turn = VoiceTurn(thread_id, user, transcript, audio, upload.fields.speak)
    saved = await rt.store.write(lambda db: save_voice_turn(db, turn))
    return json_response({"transcript": transcript, **saved.value}, 201)


@dataclass(frozen=True, slots=True)
class _FileSlice:
    info: FileInfo
    span: tuple[int, int] | None  # None: the whole file
    data: bytes
    satisfiable: bool = True


def _read_file(
    snap: Snapshot, file_id: str, range_header: str | None, user: Caller | None
) -> _FileSlice:
    info = file_info(snap.db(), file_id)
    # A file is as private as its thread, and one you may not see does not exist for you.
    if info is None or not thread_visible(snap.db(), info.thread_id, user):
        raise ApiError(404, "file_not_found", f"No file has id {echoed(file_id)!r}.")
    try:
        span = parse_range(range_header, info.size)
    except RangeNotSatisfiable:
        return _FileSlice(info, None, b"", satisfiable=False)
    first, last = span if span is not None else (0, info.size - 1)
    return _FileSlice(info, span, read_bytes(snap.conn, info, first, last - first + 1))


async def get_file(request: Request) -> Response:
    """GET /api/files/{id}: a stored file's bytes, whole or one byte range (206, or 416)."""
    file_id = request.path_params["file_id"]
    range_header = request.headers.get("range")
    user = caller(request)
    part = await runtime(request).store.read(
        lambda snap: _read_file(snap, file_id, range_header, user)
    )
    size = part.info.size
    if not part.satisfiable:
        response = error_response(
            416,
            "range_not_satisfiable",
            f"The range {echoed(range_header or '')!r} is outside the file's {size} bytes.",
        )
        response.headers["content-range"] = f"bytes */{size}"
        return response
    headers = {
        "accept-ranges": "bytes",
        "etag": f'"{part.info.sha256}"',
        "cache-control": _CACHE_CONTROL,
    }
    if part.span is None:
        return Response(part.data, 200, headers, media_type=part.info.content_type)
    headers["content-range"] = f"bytes {part.span[0]}-{part.span[1]}/{size}"
    return Response(part.data, 206, headers, media_type=part.info.content_type)


routes = [
    Route("/voice", post_voice, methods=["POST"]),
    Route("/api/files/{file_id}", get_file, methods=["GET"]),
]
