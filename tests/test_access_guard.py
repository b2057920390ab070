"""The access guard in one process on a real database file: a membership commit costs the hub a
batch only while some stream is watched, and a stream watched after such a commit is still
judged by it (its own access check reads it)."""

from __future__ import annotations

import anyio
import pytest

from voicestack.agent.membership import add_member, thread_visible
from voicestack.auth.users import create_token
from voicestack.reactive.access import Viewer
from voicestack.reactive.channel import Channel
from voicestack.runtime import Runtime

pytestmark = pytest.mark.anyio


async def settled(rt: Runtime) -> int:
    """The hub's batch count once it has heard of every commit so far."""
    version = await rt.store.read(lambda snapshot: snapshot.version)
    with anyio.fail_after(5):
        while rt.hub.version < version:
            await anyio.sleep(0.005)
    await anyio.sleep(0.05)  # a batch under way ends
    return rt.hub.batches


async def viewer(rt: Runtime, name: str) -> Viewer:
    token = (await rt.store.write(lambda db: create_token(db, name)[0])).value
    await settled(rt)
    identity = await rt.access.identify(token)
    assert identity is not None
    return Viewer(identity, rt.access.generation)


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
