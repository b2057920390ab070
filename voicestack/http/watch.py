"""Watching queries over Server-Sent Events: one query per stream, or several on one stream."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.routing import Route

from voicestack.http.body import check_args_size, parse_int64, parse_json
from voicestack.http.errors import ApiError, validation_fields
from voicestack.http.sse import ChannelResponse
from voicestack.http.state import runtime, viewer
from voicestack.reactive.streams import WatchQuery
from voicestack.runtime import Runtime

MAX_WATCHES_PER_STREAM = 100


class WatchItem(BaseModel):
    """One subscription of a multi-watch stream."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=100)
    name: str = Field(min_length=1, max_length=200)
    args: dict[str, Any] = Field(default_factory=dict)


def last_event_id(request: Request) -> int | None:
    """The version a reconnecting EventSource last received, if it sent a usable one."""
    raw = request.headers.get("last-event-id") or request.query_params.get("lastEventId")
    # An id this server never sent (junk, signed, over 64 bits) is ignored: a snapshot instead.
    if raw is None or not (raw.strip().isascii() and raw.strip().isdigit()):
        return None
    try:
        return parse_int64(raw)
    except OverflowError:
        return None


def _parse_query(rt: Runtime, sub_id: str | None, name: str, raw: Any) -> WatchQuery:
    function = rt.function(name, "query")
    return WatchQuery(sub_id, function, function.parse_args(raw))


async def watch_one(request: Request) -> ChannelResponse:
    """GET /api/watch/{name}?args=JSON: the query's value now and after every change."""
    rt = runtime(request)
    name = request.path_params["name"]
    raw_args = request.query_params.get("args")
    rt.function(name, "query")
    if raw_args:
        check_args_size(raw_args, rt.settings.max_args_bytes, "The arguments in ?args=")
    args = parse_json(raw_args, "The args parameter") if raw_args else {}
    if not isinstance(args, dict):
        raise ApiError(422, "invalid_args", "The args parameter must be a JSON object.")
    query = _parse_query(rt, None, name, args)
    stream = await rt.watch([query], viewer(request), last_event_id(request), multi=False)
    return ChannelResponse(stream)


def _parse_items(raw: str | None, args_limit: int) -> list[WatchItem]:
    if raw is None:
        raise ApiError(400, "missing_parameter", 'Pass q=[{"id", "name", "args"}, ...] as JSON.')
    check_args_size(raw, args_limit, "The subscriptions in ?q=")
    data = parse_json(raw, "The q parameter")
    if not isinstance(data, list) or not data:
        raise ApiError(422, "invalid_args", "q must be a non-empty JSON array of subscriptions.")
    if len(data) > MAX_WATCHES_PER_STREAM:
        raise ApiError(
            422, "invalid_args", f"At most {MAX_WATCHES_PER_STREAM} subscriptions per stream."
        )
    try:
        items = [WatchItem.model_validate(entry) for entry in data]
    except ValidationError as exc:
        raise ApiError(
            422,
            "invalid_args",
            "Each q entry needs an id, a name and args.",
            fields=validation_fields(exc),
        ) from None
    ids = [item.id for item in items]
    if len(set(ids)) != len(ids):
        raise ApiError(422, "invalid_args", "Subscription ids in q must be unique.")
    return items


async def watch_many(request: Request) -> ChannelResponse:
    """GET /api/watch?q=JSON: several queries on one stream, each commit's changes together."""
    rt = runtime(request)
    items = _parse_items(request.query_params.get("q"), rt.settings.max_args_bytes)
    queries = []
    for item in items:
        try:
            queries.append(_parse_query(rt, item.id, item.name, item.args))
        except ValidationError as exc:
            raise ApiError(
                422,
                "invalid_args",
                f"Invalid arguments for subscription {item.id!r}.",
                fields=validation_fields(exc),
            ) from None
    stream = await rt.watch(queries, viewer(request), last_event_id(request), multi=True)
    return ChannelResponse(stream)


routes = [
    Route("/api/watch", watch_many, methods=["GET"]),
    Route("/api/watch/{name}", watch_one, methods=["GET"]),
]
