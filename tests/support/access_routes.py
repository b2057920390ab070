"""The access matrix's table: every route of the public contract, and what each kind of caller
who is let through gets (tests/test_access_matrix.py runs it)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

CALLERS = ("none", "bad", "revoked", "other", "member", "owner", "admin")
SSE = "text/event-stream; charset=utf-8"
# (status, error code or None): what a caller gets.
Answer = tuple[int, str | None]
UNAUTHORIZED: dict[str, Answer] = {
    "none": (401, "unauthorized"),
    "bad": (401, "invalid_token"),
    "revoked": (401, "invalid_token"),
}


@dataclass(frozen=True)
class Route:
    """One request of the matrix and what each caller who is let through gets."""

    name: str
    method: str
    path: str  # `{thread}`, `{file}` and `{call}` are filled in
    granted: Answer | dict[str, Answer]
    json: dict[str, Any] | None = None
    params: dict[str, str] | None = None
    voice: bool = False
    stream: bool = False
    query_token: bool = False  # the token goes in `?token=`, as EventSource sends it
    outsider: Answer | None = (404, "thread_not_found")  # None: outsiders are let through too

    def expected(self, caller: str) -> Answer:
        """What `caller` must get."""
        if caller in UNAUTHORIZED:
            return UNAUTHORIZED[caller]
        if caller == "other" and self.outsider is not None:
            return self.outsider
        if isinstance(self.granted, dict):
            return self.granted[caller]
        return self.granted

    def refuses(self, caller: str) -> bool:
        """True when `caller` must not be let through."""
        return caller in UNAUTHORIZED or (caller == "other" and self.outsider is not None)


def _watch(args: dict[str, Any]) -> dict[str, str]:
    return {"args": json.dumps(args)}


OK, CREATED = (200, None), (201, None)
T = {"id": "{thread}"}
IN_T = {"threadId": "{thread}"}
EVERYONE: dict[str, Any] = {"outsider": None}

ROUTES = [
    Route("functions", "GET", "/api/functions", OK, **EVERYONE),
    Route("tools", "GET", "/api/tools", OK, **EVERYONE),
    Route("agents", "GET", "/api/agents", OK, **EVERYONE),
    Route("threads list", "GET", "/api/threads", OK, **EVERYONE),
    Route("threads create", "POST", "/api/threads", CREATED, json={"title": "m"}, **EVERYONE),
    Route("thread get", "GET", "/api/threads/{thread}", OK),
    Route("thread send", "POST", "/api/threads/{thread}/messages", CREATED, json={"text": "hello"}),
    Route("thread cancel", "POST", "/api/threads/{thread}/cancel", OK),
    Route("thread events", "GET", "/api/threads/{thread}/events", OK, stream=True),
    Route(
        "thread events ?token=",
        "GET",
        "/api/threads/{thread}/events",
        OK,
        stream=True,
        query_token=True,
    ),
    Route("voice", "POST", "/voice", CREATED, voice=True),
    Route("file", "GET", "/api/files/{file}", OK, outsider=(404, "file_not_found")),
    Route(
        "watch threads.get",
        "GET",
        "/api/watch/threads.get",
        OK,
        params=_watch(T),
        stream=True,
    ),
    Route(
        "watch threads.get ?token=",
        "GET",
        "/api/watch/threads.get",
        OK,
        params=_watch(T),
        stream=True,
        query_token=True,
    ),
    Route(
        "watch messages.list",
        "GET",
        "/api/watch/messages.list",
        OK,
        params=_watch(IN_T),
        stream=True,
    ),
    Route(
        "watch tool_calls.list",
        "GET",
        "/api/watch/tool_calls.list",
        OK,
        params=_watch(IN_T),
        stream=True,
    ),
    Route(
        "watch threads.list",
        "GET",
        "/api/watch/threads.list",
        OK,
        stream=True,
        **EVERYONE,
    ),
    Route(
        "watch many",
        "GET",
        "/api/watch",
        OK,
        params={
            "q": json.dumps(
                [
                    {"id": "list", "name": "threads.list", "args": {}},
                    {"id": "one", "name": "threads.get", "args": T},
                    {"id": "msgs", "name": "messages.list", "args": IN_T},
                ]
            )
        },
        stream=True,
    ),
    Route("query threads.list", "POST", "/api/query/threads.list", OK, json={}, **EVERYONE),
    Route("query threads.get", "POST", "/api/query/threads.get", OK, json={"args": T}),
    Route("query messages.list", "POST", "/api/query/messages.list", OK, json={"args": IN_T}),
    Route("query tool_calls.list", "POST", "/api/query/tool_calls.list", OK, json={"args": IN_T}),
    Route(
        "query memory.search in a thread",
        "POST",
        "/api/query/memory.search",
        OK,
        json={"args": {"query": "hello", **IN_T}},
    ),
    Route(
        "query memory.search everywhere",
        "POST",
        "/api/query/memory.search",
        OK,
        json={"args": {"query": "hello"}},
        **EVERYONE,
    ),
    Route("query scheduler.jobs", "POST", "/api/query/scheduler.jobs", OK, json={}, **EVERYONE),
    Route(
        "mutation threads.create",
        "POST",
        "/api/mutation/threads.create",
        OK,
        json={"args": {"title": "m"}},
        **EVERYONE,
    ),
    Route(
        "mutation messages.send",
        "POST",
        "/api/mutation/messages.send",
        OK,
        json={"args": {**IN_T, "text": "hi"}},
    ),
    Route(
        "mutation messages.cancel", "POST", "/api/mutation/messages.cancel", OK, json={"args": IN_T}
    ),
    Route(
        "mutation messages.post",
        "POST",
        "/api/mutation/messages.post",
        {"member": (403, "forbidden"), "owner": (403, "forbidden"), "admin": OK},
        json={"args": {**IN_T, "text": "a person answers"}},
    ),
    # The call has finished: one who may see the thread learns that, anyone else "not found".
    Route(
        "mutation tool_calls.approve",
        "POST",
        "/api/mutation/tool_calls.approve",
        (409, "not_awaiting_approval"),
        json={"args": {"id": "{call}"}},
        outsider=(404, "tool_call_not_found"),
    ),
    Route(
        "mutation tool_calls.deny",
        "POST",
        "/api/mutation/tool_calls.deny",
        (409, "not_awaiting_approval"),
        json={"args": {"id": "{call}"}},
        outsider=(404, "tool_call_not_found"),
    ),
    Route(
        "mutation threads.invite",
        "POST",
        "/api/mutation/threads.invite",
        {"member": (403, "forbidden"), "owner": OK, "admin": OK},
        json={"args": {**T, "user": "guest"}},
    ),
    Route(
        "mutation threads.leave (remove another)",
        "POST",
        "/api/mutation/threads.leave",
        {
            "member": (403, "forbidden"),
            "owner": (404, "member_not_found"),
            "admin": (404, "member_not_found"),
        },
        json={"args": {**T, "user": "stranger"}},
    ),
    Route(
        "action (the test app's)",
        "POST",
        "/api/action/items.add_and_count",
        OK,
        json={"args": {"name": "matrix"}},
        **EVERYONE,
    ),
    Route(
        "action of a query's name",
        "POST",
        "/api/action/threads.get",
        (400, "wrong_function_kind"),
        json={"args": T},
        **EVERYONE,
    ),
]
