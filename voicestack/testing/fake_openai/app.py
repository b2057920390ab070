"""The fake OpenAI Starlette app: /v1 endpoints driven by scripted plans, plus /_control/."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from voicestack.testing.fake_openai.audio import (
    file_summary,
    speech_response,
    transcription_response,
    validate_speech,
)
from voicestack.testing.fake_openai.chat import chat_response, last_user_text
from voicestack.testing.fake_openai.embeddings import (
    embeddings_match_text,
    embeddings_response,
    validate_embeddings,
)
from voicestack.testing.fake_openai.multipart import MultipartError, parse_form
from voicestack.testing.fake_openai.plan import KINDS, Kind, Plan, parse_plans
from voicestack.testing.fake_openai.realtime import realtime_routes
from voicestack.testing.fake_openai.state import FakeState
from voicestack.testing.fake_openai.wire import error_response, invalid_request, planned_error

DEFAULT_MODEL = "gpt-4o-mini"
MODELS = (DEFAULT_MODEL, "whisper-1", "tts-1")
_MODEL_CREATED = 1_700_000_000


async def _disconnected_within(request: Request, seconds: float) -> bool:
    """Sleep up to `seconds`; True as soon as the client hangs up (the body is already read)."""

    async def disconnect() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    try:
        await asyncio.wait_for(disconnect(), seconds)
    except TimeoutError:
        return False
    return True


async def _read_json(request: Request) -> tuple[Any, Response | None]:
    raw = await request.body()
    try:
        return json.loads(raw), None
    except (json.JSONDecodeError, UnicodeDecodeError):
        message = (
            "We could not parse the JSON body of your request. The API expects a JSON payload."
        )
        return raw.decode("utf-8", "replace"), invalid_request(message)


def _validate_chat(body: Any) -> Response | None:
    if not isinstance(body, dict):
        return invalid_request("The request body must be a JSON object.")
    if not body.get("model"):
        return invalid_request("you must provide a model parameter")
    messages = body.get("messages")
    if messages is None:
        return invalid_request(
            "Missing required parameter: 'messages'.",
            param="messages",
            code="missing_required_parameter",
        )
    if not isinstance(messages, list) or not messages:
        return invalid_request(
            "Invalid 'messages': expected a non-empty array.", param="messages", code="empty_array"
        )
    return None


class _Endpoints:
    """The app's request handlers, bound to one FakeState."""

    def __init__(self, state: FakeState) -> None:
        self.state = state

    async def _serve(
        self,
        request: Request,
        kind: Kind,
        match_text: str,
        answer: Callable[[Plan | None], Response],
    ) -> Response:
        plan = self.state.take(kind, match_text)
        if plan is not None and plan.hang_s and await _disconnected_within(request, plan.hang_s):
            return Response(status_code=499)  # nobody is listening any more
        if plan is not None and plan.error is not None:
            return planned_error(plan.error)
        return answer(plan)

    def _record(self, kind: str, request: Request, body: Any) -> None:
        peer = request.client
        client = f"{peer.host}:{peer.port}" if peer else None
        self.state.record(kind, request.url.path, body, dict(request.headers), client)

    async def _serve_json(
        self,
        request: Request,
        kind: Kind,
        validate: Callable[[Any], Response | None],
        match_text: Callable[[dict[str, Any]], str],
        answer: Callable[[Plan | None, dict[str, Any]], Response],
    ) -> Response:
        """Read, log and check a JSON request of `kind`, then serve it like `_serve`."""
        body, problem = await _read_json(request)
        self._record(kind, request, body)
        problem = problem or validate(body)
        if problem is not None:
            return problem
        return await self._serve(request, kind, match_text(body), lambda plan: answer(plan, body))

    async def chat(self, request: Request) -> Response:
        """POST /v1/chat/completions."""
        return await self._serve_json(
            request,
            "chat",
            _validate_chat,
            lambda body: last_user_text(body["messages"]),
            chat_response,
        )

    async def transcription(self, request: Request) -> Response:
        """POST /v1/audio/transcriptions (multipart)."""
        raw = await request.body()
        try:
            fields, files = parse_form(raw, request.headers.get("content-type", ""))
        except MultipartError as exc:
            self._record("transcription", request, {"raw_bytes": len(raw)})
            return invalid_request(f"Could not parse multipart form: {exc}")
        upload = files.get("file")
        logged: dict[str, Any] = dict(fields)
        if upload is not None:
            logged["file"] = file_summary(upload)
        self._record("transcription", request, logged)
        missing = "model" if not fields.get("model") else "file" if upload is None else None
        if missing is not None or upload is None:
            return invalid_request(
                f"Missing required parameter: '{missing}'.",
                param=missing,
                code="missing_required_parameter",
            )
        match_text = f"{upload.filename}\n{fields.get('prompt', '')}"
        return await self._serve(
            request,
            "transcription",
            match_text,
            lambda plan: transcription_response(plan, fields, upload),
        )

    async def speech(self, request: Request) -> Response:
        """POST /v1/audio/speech."""
        return await self._serve_json(
            request,
            "speech",
            validate_speech,
            lambda body: body["input"],
            lambda _plan, body: speech_response(body),
        )

    async def embeddings(self, request: Request) -> Response:
        """POST /v1/embeddings."""
        return await self._serve_json(
            request, "embedding", validate_embeddings, embeddings_match_text, embeddings_response
        )

    async def models(self, request: Request) -> Response:
        """GET /v1/models."""
        return JSONResponse({"object": "list", "data": [_model(m) for m in MODELS]})

    async def model(self, request: Request) -> Response:
        """GET /v1/models/{model}."""
        name = request.path_params["model"]
        if name not in MODELS:
            return error_response(404, f"The model '{name}' does not exist", param="model")
        return JSONResponse(_model(name))

    async def script(self, request: Request) -> Response:
        """POST /_control/script: queue one plan or a list of plans."""
        body, problem = await _read_json(request)
        if problem is not None:
            return problem
        try:
            plans = parse_plans(body if isinstance(body, list) else [body])
        except (ValidationError, TypeError) as exc:
            return error_response(422, str(exc))
        self.state.add_plans(plans)
        return JSONResponse({"queued": len(plans), "pending": len(self.state.pending())})

    async def pending(self, request: Request) -> Response:
        """GET /_control/script: the plans not used up yet."""
        return JSONResponse(self.state.pending(_kind_param(request)))

    async def requests(self, request: Request) -> Response:
        """GET /_control/requests: received /v1 requests, oldest first."""
        return JSONResponse(self.state.requests(request.query_params.get("kind")))

    async def clear_requests(self, request: Request) -> Response:
        """DELETE /_control/requests."""
        self.state.clear_requests()
        return JSONResponse({"ok": True})

    async def reset(self, request: Request) -> Response:
        """POST /_control/reset: drop plans and logged requests."""
        self.state.reset()
        return JSONResponse({"ok": True})

    async def health(self, request: Request) -> Response:
        """GET /_control/health."""
        return JSONResponse({"ok": True})


def _kind_param(request: Request) -> Kind | None:
    kind = request.query_params.get("kind")
    return next((k for k in KINDS if k == kind), None)


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": _MODEL_CREATED, "owned_by": "voicestack-fake"}


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    return error_response(status, f"Invalid URL ({request.method} {request.url.path})")


def build_app(state: FakeState | None = None) -> Starlette:
    """Return the fake OpenAI ASGI app serving the given (or a fresh) state."""
    ep = _Endpoints(state or FakeState())
    routes = [
        Route("/v1/chat/completions", ep.chat, methods=["POST"]),
        Route("/v1/audio/transcriptions", ep.transcription, methods=["POST"]),
        Route("/v1/audio/speech", ep.speech, methods=["POST"]),
        Route("/v1/embeddings", ep.embeddings, methods=["POST"]),
        Route("/v1/models", ep.models, methods=["GET"]),
        Route("/v1/models/{model:path}", ep.model, methods=["GET"]),
        Route("/_control/script", ep.script, methods=["POST"]),
        Route("/_control/script", ep.pending, methods=["GET"]),
        Route("/_control/requests", ep.requests, methods=["GET"]),
        Route("/_control/requests", ep.clear_requests, methods=["DELETE"]),
        Route("/_control/reset", ep.reset, methods=["POST"]),
        Route("/_control/health", ep.health, methods=["GET"]),
    ]
    app = Starlette(
        routes=[*routes, *realtime_routes(ep.state.realtime)],
        exception_handlers={HTTPException: _http_error},
    )
    app.state.fake = ep.state
    return app
