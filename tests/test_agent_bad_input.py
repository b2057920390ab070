"""Bad requests to the thread routes get the one JSON error shape, and change nothing."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.agent import Threads
from tests.support.api import error_of

# No provider: nothing here may get as far as a reply.
pytestmark = [pytest.mark.anyio, pytest.mark.agent_server(provider=False)]

MISSING = "thr_0000000000000000missing"


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({}, [{"field": "text", "message": "Field required"}]),
        ({"text": ""}, [{"field": "text", "message": "String should have at least 1 character"}]),
        ({"text": None}, [{"field": "text", "message": "Input should be a valid string"}]),
    ],
    ids=["missing", "empty", "null"],
)
async def test_a_message_without_text_is_refused(
    client: httpx.AsyncClient, body: dict[str, Any], fields: list[dict[str, str]]
) -> None:
    threads = Threads(client)
    thread_id = await threads.create()

    response = await client.post(f"/api/threads/{thread_id}/messages", json=body)

    error = error_of(response, 422, "invalid_args")
    assert error["fields"] == fields
    assert error["message"] == f"Invalid arguments: text: {fields[0]['message']}."
    assert (await threads.get(thread_id))["messages"] == []


async def test_a_message_body_that_is_not_an_object_is_refused(client: httpx.AsyncClient) -> None:
    threads = Threads(client)
    thread_id = await threads.create()

    response = await client.post(f"/api/threads/{thread_id}/messages", json=["hello"])

    assert error_of(response, 422, "invalid_args") == {
        "code": "invalid_args",
        "message": "The body must be a JSON object.",
    }
    assert (await threads.get(thread_id))["messages"] == []


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "", None),
        ("POST", "/messages", {"text": "hello"}),
        ("GET", "/events", None),
        ("POST", "/cancel", None),
    ],
    ids=["get", "messages", "events", "cancel"],
)
async def test_an_unknown_thread_is_not_found(
    client: httpx.AsyncClient, method: str, path: str, body: dict[str, str] | None
) -> None:
    response = await client.request(method, f"/api/threads/{MISSING}{path}", json=body)

    assert error_of(response, 404, "thread_not_found") == {
        "code": "thread_not_found",
        "message": f"No thread has id {MISSING!r}.",
    }


@pytest.mark.parametrize("path", ["/api/threads", "/api/threads/{id}/messages"])
async def test_a_body_that_is_not_json_is_refused(client: httpx.AsyncClient, path: str) -> None:
    threads = Threads(client)
    thread_id = await threads.create()

    response = await client.post(
        path.format(id=thread_id),
        content=b'{"text": hello}',
        headers={"content-type": "application/json"},
    )

    assert error_of(response, 400, "invalid_json") == {
        "code": "invalid_json",
        "message": "The request body is not valid JSON: Expecting value: line 1 column 10"
        " (char 9).",
    }
    assert (await threads.get(thread_id))["messages"] == []
