"""Several server processes on one database file (DESIGN §2): each learns of the others' commits.

apsw's hooks only see the writing connection, so a process learns of another's commits by
polling `PRAGMA data_version` and reading the `_changes` log.
"""

from __future__ import annotations

import pytest

from tests.support.api import Api
from tests.support.sse import watch

pytestmark = pytest.mark.anyio


async def test_a_commit_by_another_process_reaches_watchers(start_server):
    first = start_server()
    second = start_server(db_path=first.db_path)
    async with (
        first.client() as watching,
        second.client() as writing,
    ):
        async with watch(watching, "/api/watch/items.list") as stream:
            initial = await stream.next()
            added = await Api(writing).mutation("items.add", {"name": "from the other"})
            change = await stream.next(timeout=3.0)
        again = await Api(watching).mutation("items.add", {"name": "and back"})

    assert initial.json == {"value": [], "version": 0}
    assert (change.id, change.json) == (
        str(added.version),
        {"value": [{"id": 1, "name": "from the other"}], "version": added.version},
    )
    assert again.version == added.version + 1
