"""Calling server functions over HTTP: list them, run a query, a mutation or an action."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from voicestack import jsoncodec
from voicestack.functions.calls import CallResult
from voicestack.functions.registry import Kind
from voicestack.http.body import read_call_args
from voicestack.http.state import caller, runtime


def json_response(value: object, status: int = 200) -> Response:
    """`value` as a JSON response, serialized by voicestack's codec."""
    return Response(jsoncodec.dumps(value), status, media_type="application/json")


class CallResponse(Response):
    """A call's `{"value", "version"}` as a 200 JSON response: the headers Response would give
    it (content-length, content-type), set directly, for the API's hottest routes."""

    media_type = "application/json"

    def __init__(self, result: CallResult) -> None:
        self.status_code = 200
        self.background = None
        self.body = body = result.response_body()
        self.raw_headers = [
            (b"content-length", b"%d" % len(body)),
            (b"content-type", b"application/json"),
        ]


async def list_functions(request: Request) -> Response:
    """GET /api/functions: every registered function with its argument JSON schema."""
    return json_response(runtime(request).registry.describe())


def _caller_of(kind: Kind) -> Callable[[Request], Awaitable[Response]]:
    async def call(request: Request) -> Response:
        rt = runtime(request)
        name = request.path_params["name"]
        rt.function(name, kind)  # 404 / wrong kind before the body is read
        args = await read_call_args(request, rt.settings.max_body_bytes)
        run = rt.mutation if kind == "mutation" else rt.query if kind == "query" else rt.action
        return CallResponse(await run(name, args, caller(request)))

    call.__doc__ = f"POST /api/{kind}/{{name}}: run the {kind}; its value and database version."
    return call


call_query = _caller_of("query")
call_mutation = _caller_of("mutation")
call_action = _caller_of("action")


routes = [
    Route("/api/functions", list_functions, methods=["GET"]),
    Route("/api/query/{name}", call_query, methods=["POST"]),
    Route("/api/mutation/{name}", call_mutation, methods=["POST"]),
    Route("/api/action/{name}", call_action, methods=["POST"]),
]
