"""The routes through which a live conversation running on an edge keeps its records here, on
the primary (voicestack/voice/realtime/records.py, voicestack/scale/edge_voice.py).

They answer an edge's own calls alone: a request over NATS carrying EDGE_CALL_HEADER, which an
edge drops from whatever its clients send (anything else gets 404, as for a route that does not
exist). Each comes with the credentials of the conversation's client, and the caller must see
the thread, as when the conversation runs here; a reply's end must name an assistant message of
that thread.

- `GET /api/threads/{id}/audio/mode`: `{"mode": "pipeline"|"realtime"}`, how the thread's agent
  talks (an edge runs a pipeline conversation itself, and relays a realtime one here);
- `POST /api/threads/{id}/audio/turns`: a spoken turn's WAV (16-bit mono PCM), transcribed
  and saved with its reply: `{"messageId", "replyId", "text"}` (201), or
  `{"text": ""}` (200) when no words were heard; 502 `transcription_failed`;
- `POST /api/threads/{id}/audio/typed`: `{"text"}`, a typed turn, saved with its reply;
- `POST /api/threads/{id}/audio/replies/{messageId}`: how a reply's part ended, with its
  metrics (ReplyEnd.encode); 204.
"""

from __future__ import annotations

import io
import json
import wave
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from voicestack.agent.llm import ProviderError
from voicestack.agent.membership import require_thread
from voicestack.functions.errors import FunctionError
from voicestack.http.errors import ApiError
from voicestack.http.functions import json_response
from voicestack.http.state import EDGE_CALL_HEADER, FROM_EDGE_KEY, caller, runtime
from voicestack.store.db import WriteDB
from voicestack.store.readers import Snapshot
from voicestack.voice.realtime.records import ReplyEnd, SavedTurn, save_reply_end


def from_edge(request: Request) -> str:
    """The thread of an edge's own call; 404 for anyone else."""
    if not request.scope.get(FROM_EDGE_KEY) or EDGE_CALL_HEADER not in request.headers:
        raise ApiError(404, "not_found", "No such route.")
    thread_id: str = request.path_params["thread_id"]
    return thread_id


async def _require_thread(request: Request, thread_id: str) -> None:
    user = caller(request)

    def visible(snapshot: Snapshot) -> None:
        require_thread(snapshot.db(), thread_id, user)

    await runtime(request).store.read(visible)


def _wav_seconds(wav: bytes) -> float:
    """How long a turn's WAV lasts; 400 when it is not a 16-bit mono WAV."""
    try:
        with wave.open(io.BytesIO(wav)) as reader:
            if reader.getsampwidth() != 2 or reader.getnchannels() != 1:
                raise ValueError("not 16-bit mono")
            seconds: float = reader.getnframes() / reader.getframerate()
            return seconds
    except (wave.Error, EOFError, ValueError, ZeroDivisionError) as exc:
        raise ApiError(400, "invalid_audio", f"The turn is not a 16-bit mono WAV: {exc}.") from exc


def _saved(turn: SavedTurn) -> Response:
    return json_response(
        {"messageId": turn.message_id, "replyId": turn.reply_id, "text": turn.text}, 201
    )


async def json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object; 400 when it is not one."""
    try:
        body = json.loads(await request.body())
    except ValueError:
        raise ApiError(400, "invalid_json", "The body is not JSON.") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_body", "The body must be a JSON object.")
    return body


async def voice_mode(request: Request) -> Response:
    """GET /api/threads/{id}/audio/mode: how the thread's agent talks."""
    thread_id = from_edge(request)
    await _require_thread(request, thread_id)
    return json_response({"mode": await runtime(request).live.voice_mode(thread_id)})


async def spoken_turn(request: Request) -> Response:
    """POST /api/threads/{id}/audio/turns: a spoken turn, transcribed and saved."""
    thread_id = from_edge(request)
    wav = await request.body()
    seconds = _wav_seconds(wav)
    await _require_thread(request, thread_id)  # before the provider is paid to transcribe
    records = runtime(request).live.records(thread_id, caller(request))
    try:
        saved = await records.transcribed_turn(wav, seconds)
    except ProviderError as exc:
        raise ApiError(
            502,
            "transcription_failed",
            f"Transcription failed: {exc.message}",
            reason=exc.code,
            providerMessage=exc.message,
        ) from None
    return json_response({"text": ""}) if saved is None else _saved(saved)


async def typed_turn(request: Request) -> Response:
    """POST /api/threads/{id}/audio/typed: a typed turn, saved with its reply."""
    thread_id = from_edge(request)
    text = (await json_body(request)).get("text")
    if not isinstance(text, str) or not text.strip():
        raise ApiError(400, "invalid_text", "`text` must be a non-empty string.")
    records = runtime(request).live.records(thread_id, caller(request))
    return _saved(await records.typed_turn(text))


async def reply_ended(request: Request) -> Response:
    """POST /api/threads/{id}/audio/replies/{messageId}: how a reply's part ended."""
    thread_id = from_edge(request)
    message_id = request.path_params["message_id"]
    try:
        end, clock = ReplyEnd.decode(await json_body(request))
    except (KeyError, TypeError, ValueError) as exc:
        raise ApiError(400, "invalid_body", f"Not a reply's end: {exc}.") from None
    user = caller(request)

    def save(db: WriteDB) -> None:
        require_thread(db, thread_id, user)
        found = db.one("SELECT thread_id, role FROM messages WHERE id = ?", (message_id,))
        if found is None or (found["thread_id"], found["role"]) != (thread_id, "assistant"):
            raise FunctionError("message_not_found", "No such reply in this thread.", 404)
        save_reply_end(db, message_id, end, clock)

    await runtime(request).store.write(save)
    return Response(status_code=204)


routes = [
    Route("/api/threads/{thread_id}/audio/mode", voice_mode, methods=["GET"]),
    Route("/api/threads/{thread_id}/audio/turns", spoken_turn, methods=["POST"]),
    Route("/api/threads/{thread_id}/audio/typed", typed_turn, methods=["POST"]),
    Route("/api/threads/{thread_id}/audio/replies/{message_id}", reply_ended, methods=["POST"]),
]
