"""The routes through which a live conversation running on an edge keeps its records here, on
the primary (voicestack/voice/realtime/records.py, voicestack/scale/edge_voice.py).

They answer requests forwarded by an edge alone (anything else gets 404, as for a route that
does not exist), each with the credentials of the conversation's client: the caller must see
the thread, as when the conversation runs here.

- `GET /api/threads/{id}/audio/mode`: `{"mode": "pipeline"|"realtime"}`, how the thread's agent
  talks (an edge runs a pipeline conversation itself, and relays a realtime one here);
- `POST /api/threads/{id}/audio/turns`: a spoken turn's WAV (`voicestack-audio-seconds` long),
  transcribed and saved with its reply: `{"messageId", "replyId", "text"}` (201), or
  `{"text": ""}` (200) when no words were heard; 502 `transcription_failed`;
- `POST /api/threads/{id}/audio/typed`: `{"text"}`, a typed turn, saved with its reply;
- `POST /api/threads/{id}/audio/replies/{messageId}`: how a reply's part ended, with its
  metrics (ReplyEnd.encode); 204.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from voicestack.agent.llm import ProviderError
from voicestack.agent.membership import require_thread
from voicestack.functions.errors import FunctionError
from voicestack.http.errors import ApiError
from voicestack.http.functions import json_response
from voicestack.http.state import FROM_EDGE_KEY, caller, runtime
from voicestack.store.db import WriteDB
from voicestack.store.readers import Snapshot
from voicestack.voice.realtime.records import ReplyEnd, SavedTurn, save_reply_end

AUDIO_SECONDS_HEADER = "voicestack-audio-seconds"


def _from_edge(request: Request) -> str:
    """The thread of a request an edge forwarded; 404 for anyone else."""
    if not request.scope.get(FROM_EDGE_KEY):
        raise ApiError(404, "not_found", "No such route.")
    thread_id: str = request.path_params["thread_id"]
    return thread_id


def _saved(turn: SavedTurn) -> Response:
    return json_response(
        {"messageId": turn.message_id, "replyId": turn.reply_id, "text": turn.text}, 201
    )


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except ValueError:
        raise ApiError(400, "invalid_json", "The body is not JSON.") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_body", "The body must be a JSON object.")
    return body


async def voice_mode(request: Request) -> Response:
    """GET /api/threads/{id}/audio/mode: how the thread's agent talks."""
    thread_id = _from_edge(request)
    user = caller(request)
    rt = runtime(request)

    def visible(snapshot: Snapshot) -> None:
        require_thread(snapshot.db(), thread_id, user)

    await rt.store.read(visible)
    return json_response({"mode": await rt.live.voice_mode(thread_id)})


async def spoken_turn(request: Request) -> Response:
    """POST /api/threads/{id}/audio/turns: a spoken turn, transcribed and saved."""
    thread_id = _from_edge(request)
    try:
        seconds = float(request.headers.get(AUDIO_SECONDS_HEADER, ""))
    except ValueError:
        raise ApiError(400, "invalid_audio", f"{AUDIO_SECONDS_HEADER} is not a number.") from None
    records = runtime(request).live.records(thread_id, caller(request))
    try:
        saved = await records.transcribed_turn(await request.body(), seconds)
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
    thread_id = _from_edge(request)
    text = (await _json_body(request)).get("text")
    if not isinstance(text, str) or not text.strip():
        raise ApiError(400, "invalid_text", "`text` must be a non-empty string.")
    records = runtime(request).live.records(thread_id, caller(request))
    return _saved(await records.typed_turn(text))


async def reply_ended(request: Request) -> Response:
    """POST /api/threads/{id}/audio/replies/{messageId}: how a reply's part ended."""
    thread_id = _from_edge(request)
    message_id = request.path_params["message_id"]
    try:
        end, clock = ReplyEnd.decode(await _json_body(request))
    except (KeyError, TypeError, ValueError) as exc:
        raise ApiError(400, "invalid_body", f"Not a reply's end: {exc}.") from None
    user = caller(request)

    def save(db: WriteDB) -> None:
        require_thread(db, thread_id, user)
        if db.scalar("SELECT thread_id FROM messages WHERE id = ?", (message_id,)) != thread_id:
            raise FunctionError("message_not_found", "No such message in this thread.", 404)
        save_reply_end(db, message_id, end, clock)

    await runtime(request).store.write(save)
    return Response(status_code=204)


routes = [
    Route("/api/threads/{thread_id}/audio/mode", voice_mode, methods=["GET"]),
    Route("/api/threads/{thread_id}/audio/turns", spoken_turn, methods=["POST"]),
    Route("/api/threads/{thread_id}/audio/typed", typed_turn, methods=["POST"]),
    Route("/api/threads/{thread_id}/audio/replies/{message_id}", reply_ended, methods=["POST"]),
]
