"""Watching queries over SSE against a real server: first value, changes, fan-out, snapshots.

The tests share one server; each expects exactly the rows that were there when it started plus
its own, or reads a query narrowed to its own rows (`items.search` by a prefix of its own).
"""

from __future__ import annotations

import json

import pytest

from tests.support.api import Api
from tests.support.sse import watch

pytestmark = [pytest.mark.anyio, pytest.mark.shared_server]


def search(prefix: str) -> dict[str, str]:
    return {"args": json.dumps({"prefix": prefix})}


def compact(value) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


async def test_watch_sends_the_value_then_every_change(start_server):
    fresh = start_server()
    async with fresh.client() as client:
        api = Api(client)
        async with watch(client, "/api/watch/items.list") as stream:
            first = await stream.next()
            start = (await api.query("items.count")).version
            added = await api.mutation("items.add", {"name": "pen"})
            change = await stream.next()

    assert (first.event, first.id, first.json) == (
        "value",
        str(start),
        {"value": [], "version": start},
    )
    assert added.value == {"id": 1}
    assert added.version > start
    assert (change.event, change.id, change.json) == (
        "value",
        str(added.version),
        {"value": [{"id": 1, "name": "pen"}], "version": added.version},
    )


async def test_write_to_an_unrelated_table_sends_nothing(client, api):
    before = await api.query("items.list")
    async with watch(client, "/api/watch/items.list") as stream:
        first = await stream.next()
        audit = await api.mutation("audit.add", {"note": "not an item"})
        added = await api.mutation("items.add", {"name": "unrelated"})
        change = await stream.next()
        await stream.quiet(0.3)

    assert (first.id, first.json) == (
        str(before.version),
        {"value": before.value, "version": before.version},
    )
    assert added.version > audit.version > before.version
    assert (change.id, change.json) == (
        str(added.version),
        {
            "value": [*before.value, {"id": added.value["id"], "name": "unrelated"}],
            "version": added.version,
        },
    )


async def test_two_watchers_of_one_query_get_the_same_event(client, api):
    async with (
        watch(client, "/api/watch/items.search", params=search("twin-")) as first,
        watch(client, "/api/watch/items.search", params=search("twin-")) as second,
    ):
        assert (await first.next()) == (await second.next())
        added = await api.mutation("items.add", {"name": "twin-1"})
        a = await first.next()
        b = await second.next()

    assert a == b
    expected = {"value": [{"id": added.value["id"], "name": "twin-1"}], "version": added.version}
    assert (a.event, a.id, a.data) == ("value", str(added.version), compact(expected))


async def test_a_stream_says_its_connection_closes_when_it_ends(client, api):
    # Its end closes the connection (a direct-write stream writes its last chunk, then closes
    # the socket): a client told keep-alive reused it, and its next request got no response.
    thread_id = (await api.mutation("threads.create", {})).value["id"]
    async with (
        watch(client, "/api/watch/items.search", params=search("conn-")) as values,
        watch(client, f"/api/threads/{thread_id}/events") as feed,
    ):
        headers = [values.response.headers["connection"], feed.response.headers["connection"]]
    assert headers == ["close", "close"]


async def test_watch_with_args(client, api):
    ink = await api.mutation("items.add", {"name": "args-ink"})
    await api.mutation("items.add", {"name": "args-pen"})
    await api.mutation("items.add", {"name": "other"})
    params = {"args": json.dumps({"prefix": "args-", "limit": 1})}
    async with watch(client, "/api/watch/items.search", params=params) as stream:
        first = await stream.next()
        current = await api.query("items.count")

    assert first.json == {
        "value": [{"id": ink.value["id"], "name": "args-ink"}],
        "version": current.version,
    }


async def test_multi_watch_advances_every_subscription_together(client, api):
    q = json.dumps(
        [
            {"id": "list", "name": "items.search", "args": {"prefix": "multi-"}},
            {"id": "count", "name": "items.count"},
        ]
    )
    count = await api.query("items.count")
    async with watch(client, "/api/watch", params={"q": q}) as stream:
        initial = [await stream.next(), await stream.next()]
        added = await api.mutation("items.add", {"name": "multi-1"})
        changed = [await stream.next(), await stream.next()]
        await stream.quiet(0.3)

    v0, v1 = count.version, added.version
    assert {e.json["id"]: (e.event, e.id, e.json) for e in initial} == {
        "list": ("value", str(v0), {"id": "list", "value": [], "version": v0}),
        "count": ("value", str(v0), {"id": "count", "value": count.value, "version": v0}),
    }
    row = {"id": added.value["id"], "name": "multi-1"}
    assert {e.json["id"]: (e.event, e.id, e.json) for e in changed} == {
        "list": ("value", str(v1), {"id": "list", "value": [row], "version": v1}),
        "count": ("value", str(v1), {"id": "count", "value": count.value + 1, "version": v1}),
    }


async def test_multi_watch_sends_only_the_subscriptions_that_changed(client, api):
    q = json.dumps(
        [
            {"id": "items", "name": "items.list", "args": {}},
            {"id": "audit", "name": "audit.list", "args": {}},
        ]
    )
    before = await api.query("audit.list")
    async with watch(client, "/api/watch", params={"q": q}) as stream:
        await stream.next()
        await stream.next()
        noted = await api.mutation("audit.add", {"note": "hello"})
        change = await stream.next()
        await stream.quiet(0.3)

    assert change.json == {
        "id": "audit",
        "value": [*before.value, {"id": noted.value["id"], "note": "hello"}],
        "version": noted.version,
    }


async def test_a_query_that_failed_once_still_reacts_to_changes(client, api):
    params = search("parsed:")
    async with watch(client, "/api/watch/items.parsed", params=params) as stream:
        assert (await stream.next()).json["value"] == []
        good = await api.mutation("items.add", {"name": 'parsed:"pen"'})
        assert (await stream.next()).json == {
            "value": [{"id": good.value["id"], "parsed": "pen"}],
            "version": good.version,
        }

        bad = await api.mutation("items.add", {"name": "parsed:not json {"})
        failed = await stream.next()
        assert (failed.event, failed.id, failed.json) == (
            "error",
            str(bad.version),
            {
                "error": {
                    "code": "internal_error",
                    "message": "The query failed (SQLError); see the server log.",
                },
                "version": bad.version,
            },
        )

        fixed = await api.mutation("items.rename", {"id": bad.value["id"], "name": "parsed:[2]"})
        recovered = await stream.next()

    assert (recovered.event, recovered.json) == (
        "value",
        {
            "value": [
                {"id": good.value["id"], "parsed": "pen"},
                {"id": bad.value["id"], "parsed": "[2]"},
            ],
            "version": fixed.version,
        },
    )


async def test_resume_after_only_unrelated_commits_sends_nothing(client, api):
    async with watch(client, "/api/watch/items.list") as stream:
        seen = await stream.next()
    await api.mutation("audit.add", {"note": "not an item"})

    headers = {"Last-Event-ID": seen.id}
    async with watch(client, "/api/watch/items.list", headers=headers) as stream:
        await stream.quiet(1.0)


async def test_multi_watch_resume_sends_only_what_changed(client, api):
    q = json.dumps(
        [
            {"id": "items", "name": "items.search", "args": {"prefix": "resume-"}},
            {"id": "audit", "name": "audit.list"},
        ]
    )
    async with watch(client, "/api/watch", params={"q": q}) as stream:
        seen = [await stream.next(), await stream.next()]
    assert seen[0].id == seen[1].id
    noted = await api.mutation("audit.add", {"note": "hello"})
    audit = await api.query("audit.list")

    headers = {"Last-Event-ID": seen[0].id}
    async with watch(client, "/api/watch", params={"q": q}, headers=headers) as stream:
        current = await stream.next(timeout=2.0)
        await stream.quiet(0.5)

    assert (current.id, current.json) == (
        str(noted.version),
        {"id": "audit", "value": audit.value, "version": noted.version},
    )


async def test_resume_from_a_version_this_database_never_had_sends_the_value(client, api):
    # An id newer than the database (it was restored from a backup, or replaced) says nothing
    # about what the client holds: it must get the current value, not silence.
    current = await api.query("items.list")
    headers = {"Last-Event-ID": str(current.version + 1000)}
    async with watch(client, "/api/watch/items.list", headers=headers) as stream:
        first = await stream.next(timeout=2.0)

    assert (first.id, first.json) == (
        str(current.version),
        {"value": current.value, "version": current.version},
    )
