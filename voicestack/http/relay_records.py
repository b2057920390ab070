"""The route through which a speech-to-speech conversation running on an edge keeps its records
here, on the primary (voicestack/voice/relay/records.py, voicestack/scale/edge_relay.py).

`POST /api/threads/{id}/audio/relay` takes `{"op": NAME, ...}`. Like the pipeline's routes
(voice_records.py) it answers an edge's own calls alone (anything else gets 404), each with the
credentials of the conversation's client, who must see the thread; a message an op names must be
one of that thread's, of the role the op writes.

- `start`: `{"agent", "settings", "flushMs", "key"}`: what the edge tells the provider of the
  thread's agent, how the relay runs (the --realtime-* flags, without the key), and a key for
  its first provider connection, short-lived, minted with this server's key. 409 `relay_here`
  when the thread's agent does not talk speech-to-speech, or no short-lived key can be had
  (the provider mints none, or this server has no key for it): the edge then relays the socket
  here, and this server holds the provider's connection.
- `key`: `{"key"}`, a short-lived key for another connection (after a drop); 503
  `realtime_unavailable` when none can be had.
- `history` `{"limit"}`: `{"items"}`.
- `user_turn` `{"audioS"}` and `typed` `{"text"}`: `{"messageId"}`.
- `user_delta` `{"messageId", "text", "seq"}`, `user_end` `{"messageId", "text", "error"}`.
- `reply` `{"replyTo", "agent", "audioInS"}`: `{"messageId", "position"}`.
- `reply_delta` `{"messageId", "text", "seq"}`, `response` `{"messageId"}`,
  `usage` `{"messageId", "usage": [input, output] | null}`,
  `reply_end` `{"messageId", "status", "wallMs", "error"}`.
- `calls` `{"messageId", "step", "requests": [{"callId", "name", "arguments"}]}`:
  `{"outputs": [[callId, output], ...], "agent"}`, once the calls ran here as the message's
  agent (approvals included; `agent` is who answers now, another one after a handoff); 409
  `reply_stopped` when the reply was stopped meanwhile, or its calls by `stop_calls`
  `{"messageId"}` (a barge-in).

Ops that write answer 204 unless they say otherwise. How a reply's audio ended goes through the
pipeline's `POST .../audio/replies/{messageId}`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from voicestack.agent.llm_calls import ToolCallRequest
from voicestack.agent.membership import require_thread
from voicestack.agent.reply_state import Claim
from voicestack.agent.reply_tools import ReplyStopped
from voicestack.http.errors import ApiError
from voicestack.http.functions import json_response
from voicestack.http.state import caller, runtime
from voicestack.http.voice_records import from_edge, json_body
from voicestack.identity import Caller
from voicestack.store.readers import Snapshot
from voicestack.voice.live_sessions import LiveSessions
from voicestack.voice.relay.provider import ProviderUnavailable
from voicestack.voice.relay.records import StoreRelayRecords, VoiceAgent

log = logging.getLogger(__name__)

Op = Callable[["_Call"], Awaitable[Response]]
_NO_CONTENT = 204


class _Call:
    """One op of an edge's conversation: its body, caller and thread, read with checks."""

    def __init__(self, request: Request, thread_id: str, body: dict[str, Any]) -> None:
        self.request = request
        self.thread_id = thread_id
        self.body = body
        self.user: Caller | None = caller(request)
        self.live = runtime(request).live

    def records(self) -> StoreRelayRecords:
        """The thread's records, as this caller's; calls needing approval wait on this
        server's commits."""
        wait = runtime(self.request).runner.wait_for_approval
        return self.live.relay_records(self.thread_id, self.user, wait)

    def text(self, name: str) -> str:
        """The body's non-empty string `name`; 400 when it is not one."""
        value = self.body.get(name)
        if not isinstance(value, str) or not value:
            raise ApiError(400, "invalid_body", f"`{name}` must be a non-empty string.")
        return value

    def number(self, name: str) -> float:
        """The body's number `name`; 400 when it is not one."""
        value = self.body.get(name)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ApiError(400, "invalid_body", f"`{name}` must be a number.")
        return float(value)

    def error(self) -> tuple[str, str] | None:
        """The body's `error` ([code, message] or null)."""
        value = self.body.get("error")
        if value is None:
            return None
        if not _strings(value, 2):
            raise ApiError(400, "invalid_body", "`error` must be [code, message] or null.")
        return str(value[0]), str(value[1])

    async def visible(self) -> None:
        """404 unless the caller sees the thread."""
        thread_id, user = self.thread_id, self.user

        def check(snapshot: Snapshot) -> None:
            require_thread(snapshot.db(), thread_id, user)

        await runtime(self.request).store.read(check)

    async def message(self, role: str, key: str = "messageId") -> Claim:
        """The body's message id `key`, a `role` message of the thread the caller sees, as
        the claim of its reply; 404 when it is not one."""
        message_id, thread_id, user = self.text(key), self.thread_id, self.user

        def find(snapshot: Snapshot) -> dict[str, Any] | None:
            db = snapshot.db()
            require_thread(db, thread_id, user)
            return db.one(
                "SELECT position, agent FROM messages WHERE id = ? AND thread_id = ? AND role = ?",
                (message_id, thread_id, role),
            )

        row = await runtime(self.request).store.read(find)
        if row is None:
            raise ApiError(404, "message_not_found", f"No such {role} message in this thread.")
        author = self.user.id if self.user else None
        agent = str(row["agent"] or "")
        return Claim(message_id, thread_id, int(row["position"]), author, False, agent)


async def _edge_key(call: _Call, unavailable: int) -> str:
    try:
        return await call.live.edge_provider_key()
    except ProviderUnavailable as exc:
        log.warning("no short-lived realtime key for an edge: %s", exc.reason)
        code = "relay_here" if unavailable == 409 else "realtime_unavailable"
        message = f"The realtime provider gives no short-lived key: {exc.reason}."
        raise ApiError(unavailable, code, message) from None


def plan_body(live: LiveSessions, agent: VoiceAgent, key: str | None) -> dict[str, Any]:
    """A relayed conversation's plan as an edge reads it (voicestack/scale/edge_relay.py
    RelayPlan): what the provider is told of `agent`, the --realtime-* settings without the
    key, the flush interval, and `key`, for the first provider connection."""
    settings = live.relay_settings()
    return {
        "agent": agent.encode(),
        "settings": {
            "url": settings.url,
            "model": settings.model,
            "timeoutS": settings.timeout_s,
            "transcribeModel": settings.transcribe_model,
            "silenceMs": settings.silence_ms,
            "contextMessages": settings.context_messages,
        },
        "flushMs": live.flush_ms,
        "key": key,
    }


async def _start(call: _Call) -> Response:
    await call.visible()
    agent = await call.live.relay_agent(call.thread_id)
    if agent is None:
        raise ApiError(409, "relay_here", "The thread's agent does not talk speech-to-speech.")
    key = await _edge_key(call, 409)
    return json_response(plan_body(call.live, agent, key))


async def _key(call: _Call) -> Response:
    await call.visible()
    return json_response({"key": await _edge_key(call, 503)})


async def _history(call: _Call) -> Response:
    await call.visible()
    limit = int(call.number("limit"))
    return json_response({"items": await call.records().history(max(0, min(limit, 1000)))})


async def _user_turn(call: _Call) -> Response:
    await call.visible()
    message_id = await call.records().open_user_turn(call.number("audioS"))
    return json_response({"messageId": message_id}, 201)


async def _typed(call: _Call) -> Response:
    text = call.text("text")
    await call.visible()
    return json_response({"messageId": await call.records().typed_turn(text)}, 201)


async def _user_delta(call: _Call) -> Response:
    claim = await call.message("user")
    seq = int(call.number("seq"))
    await call.records().user_delta(claim.message_id, call.text("text"), seq)
    return Response(status_code=_NO_CONTENT)


async def _user_end(call: _Call) -> Response:
    claim = await call.message("user")
    text = call.body.get("text")
    if text is not None and not isinstance(text, str):
        raise ApiError(400, "invalid_body", "`text` must be a string or null.")
    await call.records().end_user_turn(claim.message_id, text, call.error())
    return Response(status_code=_NO_CONTENT)


async def _reply(call: _Call) -> Response:
    agent, audio_in = call.text("agent"), call.number("audioInS")
    if runtime(call.request).agents.get(agent) is None:
        raise ApiError(400, "unknown_agent", f"No agent {agent!r} is defined here.")
    reply_to = None
    if call.body.get("replyTo") is None:
        await call.visible()
    else:  # the user message it answers, of this thread
        reply_to = (await call.message("user", "replyTo")).message_id
    claim = await call.records().open_reply(reply_to, agent, audio_in)
    return json_response({"messageId": claim.message_id, "position": claim.position}, 201)


async def _reply_delta(call: _Call) -> Response:
    claim = await call.message("assistant")
    await call.records().reply_delta(claim, call.text("text"), int(call.number("seq")))
    return Response(status_code=_NO_CONTENT)


async def _response(call: _Call) -> Response:
    claim = await call.message("assistant")
    await call.records().begin_response(claim.message_id)
    return Response(status_code=_NO_CONTENT)


async def _usage(call: _Call) -> Response:
    claim = await call.message("assistant")
    usage = call.body.get("usage")
    if usage is not None and not (
        isinstance(usage, list) and len(usage) == 2 and all(type(n) is int for n in usage)
    ):
        raise ApiError(400, "invalid_body", "`usage` must be [input, output] or null.")
    counts = (usage[0], usage[1]) if usage is not None else None
    await call.records().response_usage(claim.message_id, counts)
    return Response(status_code=_NO_CONTENT)


async def _reply_end(call: _Call) -> Response:
    claim = await call.message("assistant")
    status = call.text("status")
    if status not in ("complete", "interrupted", "failed"):
        raise ApiError(400, "invalid_body", "`status` must be complete, interrupted or failed.")
    wall_ms = int(call.number("wallMs"))
    await call.records().end_reply(claim, status, wall_ms, call.error())
    return Response(status_code=_NO_CONTENT)


def _strings(value: Any, count: int) -> bool:
    """True when `value` is a list of `count` strings."""
    return (
        isinstance(value, list)
        and len(value) == count
        and all(isinstance(item, str) for item in value)
    )


def _requests(body: dict[str, Any]) -> list[ToolCallRequest]:
    requests = body.get("requests")
    if not isinstance(requests, list) or not requests:
        raise ApiError(400, "invalid_body", "`requests` must be a non-empty list.")
    parsed = []
    for request in requests:
        keys = ("callId", "name", "arguments")
        fields = [request.get(key) for key in keys] if isinstance(request, dict) else None
        if not _strings(fields, 3):
            message = "Each request needs `callId`, `name` and `arguments` (strings)."
            raise ApiError(400, "invalid_body", message)
        parsed.append(ToolCallRequest(*(str(field) for field in fields or [])))
    return parsed


async def _calls(call: _Call) -> Response:
    claim = await call.message("assistant")  # its agent: who answers now, handoffs included
    requests, step = _requests(call.body), int(call.number("step"))
    try:
        results = await call.records().run_calls(claim, claim.agent, step, requests)
    except ReplyStopped:
        raise ApiError(409, "reply_stopped", "The reply was stopped.") from None
    outputs = [[call_id, output] for call_id, output in results.outputs]
    return json_response({"outputs": outputs, "agent": results.agent.encode()})


async def _stop_calls(call: _Call) -> Response:
    claim = await call.message("assistant")
    call.records().stop_calls(claim.message_id)
    return Response(status_code=_NO_CONTENT)


_OPS: dict[str, Op] = {
    "start": _start,
    "key": _key,
    "history": _history,
    "user_turn": _user_turn,
    "typed": _typed,
    "user_delta": _user_delta,
    "user_end": _user_end,
    "reply": _reply,
    "reply_delta": _reply_delta,
    "response": _response,
    "usage": _usage,
    "reply_end": _reply_end,
    "calls": _calls,
    "stop_calls": _stop_calls,
}


async def relay_op(request: Request) -> Response:
    """POST /api/threads/{id}/audio/relay: one op of an edge's relayed conversation."""
    thread_id = from_edge(request)
    body = await json_body(request)
    name = body.get("op")
    op = _OPS.get(name) if isinstance(name, str) else None
    if op is None:
        raise ApiError(400, "invalid_op", f"`op` must be one of: {', '.join(_OPS)}.")
    return await op(_Call(request, thread_id, body))


routes = [Route("/api/threads/{thread_id}/audio/relay", relay_op, methods=["POST"])]
