"""Health, the function listing, and calling each kind of function over HTTP (one shared server)."""

from __future__ import annotations

import pytest

import voicestack

pytestmark = [pytest.mark.anyio, pytest.mark.shared_server]


NO_ARGS = {
    "additionalProperties": False,
    "description": "Arguments of a function that takes none.",
    "properties": {},
    "title": "NoArgs",
    "type": "object",
}
ITEM_ARGS = {
    "description": "A new item.",
    "properties": {"name": {"maxLength": 200, "minLength": 1, "title": "Name", "type": "string"}},
    "required": ["name"],
    "title": "ItemArgs",
    "type": "object",
}
ID_ARGS = {
    "description": "One row, by id.",
    "properties": {"id": {"title": "Id", "type": "integer"}},
    "required": ["id"],
    "title": "IdArgs",
    "type": "object",
}
NOTE_ARGS = {
    "description": "A new audit note.",
    "properties": {"note": {"title": "Note", "type": "string"}},
    "required": ["note"],
    "title": "NoteArgs",
    "type": "object",
}
SEARCH_ARGS = {
    "description": "Items whose name starts with `prefix`, at most `limit` of them.",
    "properties": {
        "prefix": {"title": "Prefix", "type": "string"},
        "limit": {"default": 10, "maximum": 100, "minimum": 1, "title": "Limit", "type": "integer"},
    },
    "required": ["prefix"],
    "title": "SearchArgs",
    "type": "object",
}
RENAME_ARGS = {
    "description": "An item's new name.",
    "properties": {
        "id": {"title": "Id", "type": "integer"},
        "name": {"maxLength": 200, "minLength": 1, "title": "Name", "type": "string"},
    },
    "required": ["id", "name"],
    "title": "RenameArgs",
    "type": "object",
}
BLOB_ARGS = {
    "description": "How many random bytes to store.",
    "properties": {
        "size": {"exclusiveMinimum": 0, "maximum": 67108864, "title": "Size", "type": "integer"}
    },
    "required": ["size"],
    "title": "BlobArgs",
    "type": "object",
}


def listed(name, kind, description, args):
    return {
        "name": name,
        "kind": kind,
        "description": description,
        "app": "tests.apps.inventory",
        "args": args,
    }


async def test_healthz(client):
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"ok": True, "version": voicestack.__version__}


async def test_functions_are_listed_with_their_argument_schemas(client):
    response = await client.get("/api/functions")
    assert response.status_code == 200
    ours = [f for f in response.json() if f["app"] == "tests.apps.inventory"]
    assert ours == [
        listed("audit.add", "mutation", "Insert an audit note; returns its id.", NOTE_ARGS),
        listed("audit.list", "query", "Every audit note, oldest first.", NO_ARGS),
        listed("blobs.add", "mutation", "Store `size` random bytes in one row.", BLOB_ARGS),
        listed("db.dump", "query", "Every row of every table of this app.", NO_ARGS),
        listed("items.add", "mutation", "Insert an item; returns its id.", ITEM_ARGS),
        listed(
            "items.add_and_count",
            "action",
            "Add an item through its mutation, then count items through the query.",
            ITEM_ARGS,
        ),
        listed(
            "items.add_returning_bytes",
            "mutation",
            "Insert an item, then return a value JSON cannot hold.",
            ITEM_ARGS,
        ),
        listed(
            "items.add_then_fail",
            "mutation",
            "Insert an item and an audit note, then refuse: neither may survive.",
            ITEM_ARGS,
        ),
        listed("items.broken", "query", "Read items, then fail like a bug would.", NO_ARGS),
        listed("items.count", "query", "How many items exist.", NO_ARGS),
        listed(
            "items.explode", "mutation", "Insert an item, then fail like a bug would.", ITEM_ARGS
        ),
        listed(
            "items.get",
            "query",
            "One item; refuses with 404 not_found when there is none.",
            ID_ARGS,
        ),
        listed("items.list", "query", "Every item, oldest first.", NO_ARGS),
        listed(
            "items.parsed",
            "query",
            "Names after a prefix parsed as JSON by SQLite; fails while any of them is not JSON.",
            SEARCH_ARGS,
        ),
        listed("items.rename", "mutation", "Rename an item.", RENAME_ARGS),
        listed(
            "items.search",
            "query",
            "Items whose name starts with a prefix, oldest first.",
            SEARCH_ARGS,
        ),
    ]


async def test_query_mutation_and_action(client, api):
    before = await api.query("items.count")
    added = await api.mutation("items.add", {"name": "pen"})
    assert added.version > before.version

    counted = await api.action("items.add_and_count", {"name": "ink"})
    assert counted.value == {"id": added.value["id"] + 1, "count": before.value + 2}
    assert counted.version == added.version + 1

    got = await api.query("items.get", {"id": counted.value["id"]})
    assert (got.value, got.version) == ({"id": counted.value["id"], "name": "ink"}, counted.version)


async def test_an_empty_body_means_no_arguments(client, api):
    expected = await api.query("items.count")
    for body in (b"", b"  \n", b'{"args": null}', b"{}"):
        response = await client.post("/api/query/items.count", content=body)
        assert response.status_code == 200
        assert response.json() == {"value": expected.value, "version": expected.version}
