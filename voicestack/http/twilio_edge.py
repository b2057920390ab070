"""The primary's side of a phone call that runs on an edge (DESIGN §12, voicestack/scale/
edge_calls.py): `POST /twilio/stream/start`.

An edge that takes a call's media stream asks here how the call talks. A pipeline call runs on
the edge, near Twilio: this route spends the stream's one-time token, creates the call's thread
as a single server does, and gives the edge a sign-in session of the thread's owner
(--twilio-user) to speak for the call with. That session is the call's alone: it never slides,
the edge ends it when the call ends (`POST /auth/logout`), and it expires by itself after the
longest call Twilio places (24 hours), should the edge die first. A call whose agent talks
through a speech-to-speech model runs on the edge too, when the edge says it can
(`"relayHere": true`): the edge holds the provider's connection, on a short-lived key minted
here, and the answer carries the conversation's plan (relay_records.plan_body). When no such key
can be had, or for an edge that does not say so, the token is left unspent, and the edge relays
the whole socket to this server, which runs the call.

It answers an edge's own calls alone (a request over NATS carrying EDGE_CALL_HEADER): anyone
else gets 404, as for a route that does not exist.

- `{"token", "callSid", "relayHere"?}` → 201 `{"mode": "pipeline", "threadId", "session"}`,
  201 `{"mode": "realtime", "threadId", "session", "plan"}`, or 200 `{"mode": "realtime"}`
  (relay the socket here); 401 `invalid_token` when the token is not good for the call (it is
  spent all the same), 404 `twilio_not_configured`, 503 `server_shutting_down`.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from voicestack.auth.sessions import CALL_PROVIDER, create_session
from voicestack.http.body import parse_json, read_limited
from voicestack.http.errors import ApiError
from voicestack.http.functions import json_response
from voicestack.http.relay_records import plan_body
from voicestack.http.state import EDGE_CALL_HEADER, FROM_EDGE_KEY, runtime
from voicestack.http.twilio import configured
from voicestack.store.db import WriteDB
from voicestack.voice.relay.provider import ProviderUnavailable
from voicestack.voice.telephony.calls import start_call_thread

log = logging.getLogger(__name__)

START_PATH = "/twilio/stream/start"
# Twilio ends any call within a day (four hours unless the account allows up to 24); a call's
# session lasts that, and a little more.
CALL_SESSION_S = 24 * 3600.0 + 600.0


def _strings(body: Any) -> tuple[str, str]:
    if not isinstance(body, dict):
        raise ApiError(422, "invalid_args", "The body must be a JSON object.")
    token, call_sid = body.get("token"), body.get("callSid")
    if not isinstance(token, str) or not isinstance(call_sid, str):
        raise ApiError(422, "invalid_args", "token and callSid must be strings.")
    return token, call_sid


async def start_edge_call(request: Request) -> Response:
    """POST /twilio/stream/start: how the call of an edge's media stream talks; for a pipeline
    call, its thread and the session the edge speaks for it with (see the module's
    docstring)."""
    if not request.scope.get(FROM_EDGE_KEY) or EDGE_CALL_HEADER not in request.headers:
        raise ApiError(404, "not_found", "No such route.")
    rt = runtime(request)
    configured(rt)
    raw = await read_limited(request, rt.settings.max_body_bytes)
    body = parse_json(raw, "The request body")
    token, call_sid = _strings(body)
    if rt.shutting_down:
        raise ApiError(503, "server_shutting_down", "The server is shutting down.")
    mode, key = rt.live.call_voice_mode(), None
    if mode == "realtime":
        if body.get("relayHere") is not True:  # an edge that relays such calls whole
            return json_response({"mode": "realtime"})
        try:
            key = await rt.live.edge_provider_key()
        except ProviderUnavailable as exc:
            log.warning("a call is relayed to this server: no short-lived key: %s", exc.reason)
            return json_response({"mode": "realtime"})
    owner_name = rt.settings.twilio_user

    def start(db: WriteDB) -> dict[str, str] | None:
        call = start_call_thread(db, token, call_sid, owner_name)
        if call is None:
            return None
        session = create_session(db, call.owner.id, CALL_PROVIDER, CALL_SESSION_S)
        return {"mode": mode, "threadId": call.thread_id, "session": session}

    started: dict[str, Any] | None = (await rt.store.write(start)).value
    if started is None:
        raise ApiError(401, "invalid_token", "The stream's token is not good for this call.")
    if mode == "realtime":
        agent = await rt.live.relay_agent(started["threadId"])
        if agent is None:  # the call's agent was redefined meanwhile: a pipeline call after all
            started["mode"] = "pipeline"
        else:
            started["plan"] = plan_body(rt.live, agent, key)
    return json_response(started, 201)


routes = [Route(START_PATH, start_edge_call, methods=["POST"])]
