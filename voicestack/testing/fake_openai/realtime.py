"""The fake Realtime provider's routes: `WS /v1/realtime?model=...` and its /_control/ API.

A test queues scripts (realtime_script.Script) and reads back what each connection received;
the connection itself is served by realtime_connection.Connection.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from voicestack.testing.fake_openai.realtime_connection import Connection
from voicestack.testing.fake_openai.realtime_script import Naming, Script
from voicestack.testing.fake_openai.realtime_state import RealtimeState
from voicestack.testing.fake_openai.wire import error_response

__all__ = ["realtime_routes"]


def _naming(script: Script, ws: WebSocket) -> Naming:
    if script.naming is not None:
        return script.naming
    # The real API serves its beta interface to clients that send this header.
    return "beta" if "realtime=v1" in ws.headers.get("openai-beta", "") else "ga"


EPHEMERAL_PREFIX = "ek_"
# The real API's bounds on an ephemeral key's lifetime (expires_after.seconds), and its default.
SECRET_SECONDS = (10, 7200, 600)


def _refusal(ws: WebSocket, state: RealtimeState) -> Response | None:
    if not ws.query_params.get("model"):
        return error_response(
            400,
            "Missing required parameter: 'model'.",
            param="model",
            code="missing_required_parameter",
        )
    authorization = ws.headers.get("authorization", "")
    if not authorization.startswith("Bearer "):
        return error_response(
            401,
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            code="invalid_api_key",
        )
    key = authorization.removeprefix("Bearer ")
    if key.startswith(EPHEMERAL_PREFIX) and not state.secret_valid(key):
        return error_response(401, "Invalid or expired ephemeral key.", code="invalid_api_key")
    return None


class _Routes:
    def __init__(self, state: RealtimeState) -> None:
        self.state = state

    async def socket(self, ws: WebSocket) -> None:
        """WS /v1/realtime: refuse bad handshakes with HTTP errors, else serve the script."""
        refusal = _refusal(ws, self.state)
        model = ws.query_params.get("model", "")
        # A refused handshake uses up no script; a scripted refusal uses up its own.
        script = self.state.take(model) if refusal is None else Script()
        if script.reject is not None:
            reject = script.reject
            refusal = error_response(reject.status, reject.message, code=reject.code)
        if refusal is not None:
            await ws.send_denial_response(refusal)
            return
        await ws.accept()
        conn = Connection(ws, self.state, script, _naming(script, ws), model)
        self.state.open_session(conn.record, conn)
        try:
            await conn.serve()
        finally:
            self.state.close_session(conn.record, conn.close_code)

    async def script(self, request: Request) -> Response:
        """POST /_control/realtime: queue one script or a list of them."""
        try:
            body: Any = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return error_response(400, "The body must be JSON.")
        try:
            scripts = self.state.script(body if isinstance(body, list) else [body])
        except (ValidationError, TypeError) as exc:
            return error_response(422, str(exc))
        return JSONResponse({"queued": len(scripts), "pending": len(self.state.pending())})

    async def client_secret(self, request: Request) -> Response:
        """POST /v1/realtime/client_secrets: an ephemeral key for one client's connections,
        minted with a real key (`{"expires_after": {"seconds"}, "session": {...}}`)."""
        if not self.state.mints_secrets:
            return error_response(404, "Invalid URL (POST /v1/realtime/client_secrets)")
        key = request.headers.get("authorization", "").removeprefix("Bearer ")
        if not key or key.startswith(EPHEMERAL_PREFIX):
            return error_response(401, "Incorrect API key provided.", code="invalid_api_key")
        try:
            body: Any = json.loads(await request.body() or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError):
            return error_response(400, "The body must be JSON.")
        if not isinstance(body, dict):
            return error_response(400, "The body must be a JSON object.")
        expires = body.get("expires_after", {})
        low, high, default = SECRET_SECONDS
        seconds = expires.get("seconds", default) if isinstance(expires, dict) else None
        if type(seconds) is not int or not low <= seconds <= high:
            message = f"expires_after.seconds must be an integer from {low} to {high}."
            return error_response(400, message, param="expires_after.seconds")
        if expires.get("anchor", "created_at") != "created_at":
            message = "expires_after.anchor must be 'created_at'."
            return error_response(400, message, param="expires_after.anchor")
        session = body.get("session", {})
        if not isinstance(session, dict) or session.get("type", "realtime") != "realtime":
            message = "session must be an object of type 'realtime'."
            return error_response(400, message, param="session.type")
        value, expires_at = self.state.mint_secret(seconds)
        return JSONResponse(
            {
                "value": value,
                "expires_at": expires_at,
                "session": {"type": "realtime", "object": "realtime.session", **session},
            }
        )

    async def read(self, request: Request) -> Response:
        """GET /_control/realtime: pending scripts and every connection's record."""
        return JSONResponse({"pending": self.state.pending(), "sessions": self.state.sessions()})

    async def forget(self, request: Request) -> Response:
        """DELETE /_control/realtime: drop pending scripts and records."""
        self.state.reset()
        return JSONResponse({"ok": True})

    async def inject(self, request: Request) -> Response:
        """POST /_control/realtime/inject: {"session"?, "event": {...}} or {"drop": true}."""
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return error_response(400, "The body must be JSON.")
        if not isinstance(body, dict) or not (
            isinstance(body.get("event"), dict) or body.get("drop")
        ):
            return error_response(422, "Give an 'event' object or 'drop': true.")
        live = self.state.live(body.get("session"))
        if live is None:
            return error_response(404, "No such open realtime session.")
        if body.get("drop"):
            await live.drop()
        else:
            await live.inject(body["event"])
        return JSONResponse({"ok": True})


def realtime_routes(state: RealtimeState) -> list[BaseRoute]:
    """The Realtime WebSocket route and its control routes, serving `state`."""
    routes = _Routes(state)
    return [
        WebSocketRoute("/v1/realtime", routes.socket),
        Route("/v1/realtime/client_secrets", routes.client_secret, methods=["POST"]),
        Route("/_control/realtime", routes.script, methods=["POST"]),
        Route("/_control/realtime", routes.read, methods=["GET"]),
        Route("/_control/realtime", routes.forget, methods=["DELETE"]),
        Route("/_control/realtime/inject", routes.inject, methods=["POST"]),
    ]
