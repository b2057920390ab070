"""Calling server functions over HTTP: list them, run a query, a mutation or an action."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from voicestack import jsoncodec
from voicestack.http.body import read_call_args
from voicestack.http.state import caller, runtime
from voicestack.runtime import CallResult


def json_response(value: object, status: int = 200) -> Response:
    """`value` as a JSON response, serialized by voicestack's codec."""
    return Response(jsoncodec.dumps(value), status, media_type="application/json")


def _result(result: CallResult) -> Response:
    return Response(result.response_body(), media_type="application/json")


async def list_functions(request: Request) -> Response:
    """GET /api/functions: every registered function with its argument JSON schema."""
    return json_response(runtime(request).registry.describe())


async def call_query(request: Request) -> Response:
    """POST /api/query/{name}: the query's value and the version it was read at."""
    rt = runtime(request)
    name = request.path_params["name"]
    rt.function(name, "query")
    args = await read_call_args(request, rt.settings.max_body_bytes)
    return _result(await rt.query(name, args, caller(request)))


async def call_mutation(request: Request) -> Response:
    """POST /api/mutation/{name}: the mutation's value and its commit version."""
    rt = runtime(request)
    name = request.path_params["name"]
    rt.function(name, "mutation")
    args = await read_call_args(request, rt.settings.max_body_bytes)
    return _result(await rt.mutation(name, args, caller(request)))


async def call_action(request: Request) -> Response:
    """POST /api/action/{name}: the action's value and the newest version after it ran."""
    rt = runtime(request)
    name = request.path_params["name"]
    rt.function(name, "action")
    args = await read_call_args(request, rt.settings.max_body_bytes)
    return _result(await rt.action(name, args, caller(request)))


routes = [
    Route("/api/functions", list_functions, methods=["GET"]),
    Route("/api/query/{name}", call_query, methods=["POST"]),
    Route("/api/mutation/{name}", call_mutation, methods=["POST"]),
    Route("/api/action/{name}", call_action, methods=["POST"]),
]
