"""REST routes for agent threads (DESIGN §4); each calls the built-in function of the same job."""

from __future__ import annotations

from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from voicestack.http.body import json_object, parse_int64, read_limited
from voicestack.http.errors import ApiError
from voicestack.http.functions import json_response
from voicestack.http.sse import ChannelResponse
from voicestack.http.state import (
    CATCH_UP_HEADER,
    CURSOR_HEADER,
    FROM_EDGE_KEY,
    MEMBER_HEADER,
    MEMBER_STATE_HEADER,
    SHARE_HEADER,
    THREAD_NEWEST_HEADER,
    caller,
    runtime,
    viewer,
)
from voicestack.http.watch import last_event_id
from voicestack.reactive.deflate import accepts_deflate


async def _json_object(request: Request) -> dict[str, Any]:
    return json_object(await read_limited(request, runtime(request).settings.max_body_bytes))


def _query_int(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return parse_int64(raw)
    except ValueError:
        raise ApiError(422, "invalid_args", f"{name} must be a whole number.") from None
    except OverflowError:  # SQLite's range: a bigger one fails in a query
        raise ApiError(422, "invalid_args", f"{name} is outside the 64-bit range.") from None


async def list_threads(request: Request) -> Response:
    """GET /api/threads: the caller's threads, newest first (`?limit=&before=`)."""
    args: dict[str, Any] = {}
    limit = _query_int(request, "limit")
    if limit is not None:
        args["limit"] = limit
    if request.query_params.get("before"):
        args["before"] = request.query_params["before"]
    result = await runtime(request).query("threads.list", args, caller(request))
    return json_response(result.value)


async def _call(
    request: Request, kind: Literal["query", "mutation"], name: str, args: Any, status: int = 200
) -> Response:
    """Call the function `name` as the request's caller; its value as the JSON response."""
    rt = runtime(request)
    call = rt.query if kind == "query" else rt.mutation
    result = await call(name, args, caller(request))
    return json_response(result.value, status)


async def create_thread(request: Request) -> Response:
    """POST /api/threads `{"title"?, "agent"?}`: a new thread → `{"id"}`."""
    return await _call(request, "mutation", "threads.create", await _json_object(request), 201)


async def get_thread(request: Request) -> Response:
    """GET /api/threads/{id}: the thread with usage, messages and tool calls."""
    return await _call(request, "query", "threads.get", {"id": request.path_params["thread_id"]})


async def send_message(request: Request) -> Response:
    """POST /api/threads/{id}/messages `{"text"}`: save it, start the reply."""
    args = {**await _json_object(request), "threadId": request.path_params["thread_id"]}
    return await _call(request, "mutation", "messages.send", args, 201)


async def cancel_reply(request: Request) -> Response:
    """POST /api/threads/{id}/cancel: stop the streaming reply, keeping its text."""
    args = {"threadId": request.path_params["thread_id"]}
    return await _call(request, "mutation", "messages.cancel", args)


async def thread_events(request: Request) -> Response | ChannelResponse:
    """GET /api/threads/{id}/events: the thread feed, resumable with Last-Event-ID or `?since=`;
    deflated when the client accepts it (unless --no-feed-compression).

    An edge's request for the catch-up alone gets it as one response, with the event id live
    events continue after (the edge joins those from its own stream of the thread)."""
    resumed = last_event_id(request)
    cursor = resumed if resumed is not None else _query_int(request, "since")
    thread_id = request.path_params["thread_id"]
    rt = runtime(request)
    if request.scope.get(FROM_EDGE_KEY):
        edge_answer = await _edge_feed(request, thread_id, cursor)
        if edge_answer is not None:
            return edge_answer
    negotiated = not rt.settings.no_feed_compression
    deflate = negotiated and accepts_deflate(", ".join(request.headers.getlist("accept-encoding")))
    stream = await rt.open_thread_feed(thread_id, viewer(request), cursor, deflate)
    return ChannelResponse(stream, vary_encoding=negotiated)


async def _edge_feed(
    request: Request, thread_id: str, cursor: int | None
) -> Response | ChannelResponse | None:
    """What an edge asks of a thread feed besides a stream of its own: a catch-up alone, a
    shared stream of the thread, or a client's joining of one (voicestack/agent/shared_feeds.py);
    None for a plain stream."""
    rt = runtime(request)
    share = request.headers.get(SHARE_HEADER)
    member = request.headers.get(MEMBER_HEADER)
    if share is not None and member is None:
        stream, after, newest = await rt.shared_feeds.open(
            share, thread_id, viewer(request), cursor
        )
        response = ChannelResponse(stream)
        response.headers.append((CURSOR_HEADER.encode(), str(after).encode()))
        response.headers.append((THREAD_NEWEST_HEADER.encode(), str(newest).encode()))
        return response
    if CATCH_UP_HEADER not in request.headers:
        return None
    headers = {"content-type": "text/event-stream"}
    if share is not None and member is not None:
        catch_up = request.headers[CATCH_UP_HEADER] != "0"
        events, after, state = await rt.shared_feeds.join(
            share, member, viewer(request), cursor, catch_up
        )
        headers[MEMBER_STATE_HEADER] = state.encode()
    else:
        events, after = await rt.feed_catch_up(thread_id, viewer(request), cursor)
    headers[CURSOR_HEADER] = str(after)
    return Response(events, headers=headers)


async def list_tools(request: Request) -> Response:
    """GET /api/tools: loaded tools and plugins that failed to load."""
    return json_response(runtime(request).tools.describe())


async def list_agents(request: Request) -> Response:
    """GET /api/agents: the server's agents (the query `agents.list`)."""
    return await _call(request, "query", "agents.list", {})


routes = [
    Route("/api/threads", list_threads, methods=["GET"]),
    Route("/api/threads", create_thread, methods=["POST"]),
    Route("/api/threads/{thread_id}", get_thread, methods=["GET"]),
    Route("/api/threads/{thread_id}/messages", send_message, methods=["POST"]),
    Route("/api/threads/{thread_id}/cancel", cancel_reply, methods=["POST"]),
    Route("/api/threads/{thread_id}/events", thread_events, methods=["GET"]),
    Route("/api/tools", list_tools, methods=["GET"]),
    Route("/api/agents", list_agents, methods=["GET"]),
]
