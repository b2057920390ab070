"""The fast lane: the API's hottest calls answered in front of the middleware stack.

Sending a message to a thread and calling a function by name are most of what a busy server
answers. Through Starlette's layers (the security headers, the error catcher, the body timer, the
token, the limits, the exception handlers, the router and the route's Request) such a request
costs about 0.2 ms of Python here before its function runs, a tenth of a sent message's way to
its watchers. The lane takes the same steps with the same functions, in one frame:
- the bearer token (AccessGuard.identify) and the rate limits (RequestRates.admit, the buckets
  RequestLimits spends too);
- the body, whole in hand, parsed as the route parses it;
- the call, and its answer or error as the route and the exception handlers give it, with the
  security headers.

It answers only what it can answer exactly as the stack would. Everything else goes on to the
stack untouched, the body it read handed back: a request with no `Authorization: Bearer`
(a sign-in cookie, or nothing), a token the guard does not know, a body still arriving or one the
route would refuse, a client waiting for `100 Continue`, a function of another kind or none, a
request an edge forwards, a path under a root path. create_app leaves the lane out when CORS is
on. An error of the lane's own (the token's lookup failing, say) is answered as CatchAll answers
it in the stack: the logged JSON 500.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from voicestack.functions.calls import CallResult
from voicestack.functions.registry import Kind
from voicestack.http.auth import CALLER_KEY, CHECKED_AT_KEY, IDENTITY_KEY, presented_token
from voicestack.http.body import call_args, json_object
from voicestack.http.errors import ApiError, error_answer, log_unhandled, unhandled_error
from voicestack.http.functions import CallResponse, json_response
from voicestack.http.headers import secured
from voicestack.http.limits import RequestRates
from voicestack.http.read_timeouts import body_arrival
from voicestack.http.state import FROM_EDGE_KEY
from voicestack.runtime import Runtime

_SEND = re.compile(r"/api/threads/([^/]+)/messages")
_CALL = re.compile(r"/api/(query|mutation|action)/([^/]+)")

# What a lane call runs: (kind, function name, arguments, the answer for its result).
_Call = tuple[Kind, str, Any, Callable[[CallResult], Response]]


class FastLane:
    """ASGI middleware, outermost: answers `POST /api/threads/{id}/messages` and
    `POST /api/{query,mutation,action}/{name}` itself when it can (module docstring)."""

    def __init__(self, app: ASGIApp, rates: RequestRates) -> None:
        self.app = app
        self.rates = rates

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # Anything the lane does not take is handed on without a frame of this layer.
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and not scope.get("root_path")
            and not scope.get(FROM_EDGE_KEY)
        ):
            route = _SEND.fullmatch(scope["path"]) or _CALL.fullmatch(scope["path"])
            if route is not None:
                return self._take(route, scope, receive, send)
        return self.app(scope, receive, send)

    async def _take(self, route: re.Match[str], scope: Scope, receive: Receive, send: Send) -> None:
        token, _problem = presented_token(scope)
        arrived = body_arrival(receive)
        # A client waiting for `100 Continue` would get it on the lane's read of the body, which
        # the stack's refusals before reading it never send.
        if token is None or arrived is None or not arrived() or _expects_continue(scope):
            await self.app(scope, receive, send)
            return
        # From here on the lane stands where CatchAll stands in the stack.
        try:
            message, answer = await self._answer(route, token, scope, receive)
        except Exception:
            await unhandled_error(scope)(scope, receive, secured(send))
            return
        if answer is None:
            await self.app(scope, _replaying(message, receive), send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await answer(scope, receive, secured(tracking_send))
        except Exception:
            if started:
                log_unhandled(scope)
                raise  # half a response is out: only closing the connection can say so
            await unhandled_error(scope)(scope, receive, secured(send))

    async def _answer(
        self, route: re.Match[str], token: str, scope: Scope, receive: Receive
    ) -> tuple[Message, Response | None]:
        """The request's body message, and the lane's answer (None: the stack answers)."""
        runtime: Runtime = scope["app"].state.runtime
        guard = runtime.access
        checked_at = guard.generation
        identity = await guard.identify(token)
        message = await receive()
        call = None if identity is None else _call_of(route, message, runtime)
        if identity is None or call is None:
            return message, None
        scope[IDENTITY_KEY] = identity
        scope[CALLER_KEY] = identity.caller
        scope[CHECKED_AT_KEY] = checked_at
        refusal = self.rates.admit(identity.token_id, "POST", scope["path"])
        return message, refusal or await self._run(scope, runtime, call)

    async def _run(self, scope: Scope, runtime: Runtime, call: _Call) -> Response:
        kind, name, args, answer = call
        caller = scope[CALLER_KEY]
        try:
            if kind == "mutation":
                result = await runtime.mutation(name, args, caller)
            elif kind == "query":
                result = await runtime.query(name, args, caller)
            else:
                result = await runtime.action(name, args, caller)
            return answer(result)
        except Exception as exc:
            return await error_answer(Request(scope), exc)


def _call_of(route: re.Match[str], message: Message, runtime: Runtime) -> _Call | None:
    """The call the request makes, when its route would make it (None: the stack answers)."""
    body: bytes = message.get("body", b"")
    settings = runtime.settings
    if message["type"] != "http.request" or message.get("more_body", False):
        return None
    if len(body) > settings.max_body_bytes:
        return None
    try:
        if route.re is _SEND:
            args = {**json_object(body), "threadId": route[1]}
            return "mutation", "messages.send", args, _created
        kind: Kind = route[1]  # type: ignore[assignment]
        function = runtime.registry.get(route[2])
        if function is None or function.kind != kind:
            return None
        return kind, route[2], call_args(body, settings.max_args_bytes), CallResponse
    except ApiError:
        return None


def _expects_continue(scope: Scope) -> bool:
    return any(name == b"expect" for name, _ in scope["headers"])


def _created(result: CallResult) -> Response:
    """A sent message's answer, as its route gives it."""
    return json_response(result.value, 201)


def _replaying(message: Message, receive: Receive) -> Receive:
    """`receive`, giving `message` (already read) first."""
    given = False

    async def replayed() -> Message:
        nonlocal given
        if not given:
            given = True
            return message
        return await receive()

    return replayed
