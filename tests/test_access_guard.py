"""The access guard in one process on a real database file: a membership commit costs the hub a
batch only while some stream is watched, and a stream watched after such a commit is still
judged by it (its own access check reads it)."""

from __future__ import annotations

import anyio
import pytest

from tests.support.guard import settled, viewer
from voicestack.agent.membership import add_member, thread_visible
from voicestack.reactive.channel import Channel
from voicestack.runtime import Runtime

pytestmark = pytest.mark.anyio


async def test_membership_commits_cost_a_batch_only_while_streams_are_watched(
    rt: Runtime,
) -> None:
    owner, member = await viewer(rt, "owner"), await viewer(rt, "member")
    thread_id = (await rt.mutation("threads.create", {}, owner.caller)).value["id"]
    before = await settled(rt)
    await rt.store.write(lambda db: add_member(db, thread_id, member.caller.id, "member"))
    assert await settled(rt) == before  # nobody watches: no snapshot, no batch

    stream = Channel(multi=False)
    rt.access.watch(stream, member, lambda db: thread_visible(db, thread_id, member.caller))
    rt.access.checked(stream, await rt.store.read(lambda snapshot: snapshot.version))
    await rt.store.write(
        lambda db: db.execute(
            "DELETE FROM thread_members WHERE thread_id = ? AND user_id = ?",
            (thread_id, member.caller.id),
        )
    )
    with anyio.fail_after(5):
        while not stream.closed:
            await anyio.sleep(0.005)
    assert rt.hub.batches > before
