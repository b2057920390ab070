"""GET /openapi.json: public, a valid OpenAPI 3.1 document, generated from every route and from
the functions of the apps the server loaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from starlette.routing import Route

from tests.support.server import ServerProcess
from voicestack.config import Settings
from voicestack.http.app import create_app
from voicestack.http.auth import is_public
from voicestack.http.schemas import FUNCTION_ROUTES, OPERATIONS

pytestmark = pytest.mark.shared_server

ERROR_RESPONSE = {
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
}


@pytest.fixture
def document(server: ServerProcess) -> dict[str, Any]:
    """The shared server's document, fetched without a token."""
    response = httpx.get(f"{server.url}/openapi.json", timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()


def test_every_route_is_in_the_operations_table(tmp_path: Path) -> None:
    app = create_app(Settings(db=tmp_path / "unused.db"))
    missing = [
        (method, route.path)
        for route in app.routes
        if isinstance(route, Route)
        for method in sorted((route.methods or set()) - {"HEAD"})
        if (method, route.path) not in OPERATIONS and route.path not in FUNCTION_ROUTES
    ]
    assert missing == []


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    schemathesis.openapi.from_dict(document).validate()


def test_function_routes_become_one_path_per_loaded_function(
    document: dict[str, Any], server: ServerProcess
) -> None:
    with server.sync_client() as client:
        functions = client.get("/api/functions").json()
    expected = sorted(f"/api/{f['kind']}/{f['name']}" for f in functions)
    assert (
        sorted(
            p
            for p in document["paths"]
            if p.startswith(("/api/query/", "/api/mutation/", "/api/action/"))
        )
        == expected
    )
    assert "/api/query/{name}" not in document["paths"]
    add = document["paths"]["/api/mutation/items.add"]["post"]
    assert add["summary"] == "Insert an item; returns its id."
    assert add["tags"] == ["tests.apps.inventory"]
    body = add["requestBody"]["content"]["application/json"]["schema"]
    assert body == {
        "type": "object",
        "properties": {"args": {"$ref": "#/components/schemas/ItemArgs"}},
        "additionalProperties": False,
    }
    assert document["components"]["schemas"]["ItemArgs"] == {
        "description": "A new item.",
        "properties": {
            "name": {"maxLength": 200, "minLength": 1, "title": "Name", "type": "string"}
        },
        "required": ["name"],
        "title": "ItemArgs",
        "type": "object",
    }
    answer = add["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer["properties"]["value"] == {"type": "object", "additionalProperties": True}
    count = document["paths"]["/api/query/items.count"]["post"]["responses"]["200"]
    assert count["content"]["application/json"]["schema"]["properties"]["value"] == {
        "type": "integer"
    }


def test_built_in_functions_keep_their_argument_names(document: dict[str, Any]) -> None:
    send = document["paths"]["/api/mutation/messages.send"]["post"]
    ref = send["requestBody"]["content"]["application/json"]["schema"]["properties"]["args"]
    schema = document["components"]["schemas"][ref["$ref"].rsplit("/", 1)[-1]]
    assert sorted(schema["properties"]) == ["text", "threadId"]
    assert schema["additionalProperties"] is False


def test_errors_auth_and_limits(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes == {
        "bearer": {"type": "http", "scheme": "bearer"},
        "queryToken": {
            "type": "apiKey",
            "in": "query",
            "name": "token",
            "description": "The token as `?token=`, on event streams only.",
        },
    }
    assert document["components"]["schemas"]["ErrorBody"]["required"] == ["error"]
    for path, item in document["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            if is_public(path):
                assert operation["security"] == [], (method, path)
                assert "401" not in responses, (method, path)
            else:
                assert operation["security"][0] == {"bearer": []}, (method, path)
                assert {k: v for k, v in responses["401"].items() if k != "description"} == (
                    ERROR_RESPONSE
                )
    paths = document["paths"]
    # The shared server runs with the default per-token limits: writes and streams may be 429.
    assert "429" in paths["/api/mutation/items.add"]["post"]["responses"]
    assert "429" in paths["/api/threads/{thread_id}/events"]["get"]["responses"]
    assert "429" not in paths["/api/query/items.count"]["post"]["responses"]
    assert "429" not in paths["/api/threads"]["get"]["responses"]


def test_streams_and_public_routes(document: dict[str, Any]) -> None:
    paths = document["paths"]
    events = paths["/api/threads/{thread_id}/events"]["get"]
    assert list(events["responses"]["200"]["content"]) == ["text/event-stream"]
    assert events["security"] == [{"bearer": []}, {"queryToken": []}]
    assert [p["name"] for p in events["parameters"]] == [
        "thread_id",
        "since",
        "Last-Event-ID",
        "lastEventId",
    ]
    watch = paths["/api/watch/{name}"]["get"]
    name = next(p for p in watch["parameters"] if p["name"] == "name")
    assert "items.count" in name["schema"]["enum"]
    assert "items.add" not in name["schema"]["enum"]  # a mutation cannot be watched
    assert (
        paths["/healthz"]["get"]["summary"]
        == "Liveness, with the server's version; no authentication."
    )
    assert sorted(paths["/"]["get"]["responses"]) == ["200", "304", "404"]
    assert "post" not in paths["/api/functions"]
