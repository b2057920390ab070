"""The access guard judges only the streams a commit may concern (voicestack/reactive/access.py):
those whose credential or user it changed, and those of the threads whose membership it changed.
These are the cases where what a commit changed is easy to misread: a removal committed with a
new thread whose first member takes the removed row's rowid, in one transaction or in two
concurrent mutations, and an id changed in place, which the schema refuses.

A real Runtime on a real file; the feed is the one a client of the thread would get.
"""

from __future__ import annotations

import asyncio

import apsw
import pytest

from tests.support.guard import settled, viewer
from voicestack.agent.threads import insert_thread
from voicestack.reactive.access import Viewer
from voicestack.reactive.streams import Stream
from voicestack.runtime import Runtime
from voicestack.store.db import WriteDB

pytestmark = pytest.mark.anyio


async def _bob_follows_a_thread(rt: Runtime) -> tuple[Viewer, Viewer, Viewer, str, Stream]:
    """Ana's thread, Bob invited last (his membership row has the largest rowid) and following
    its feed; Cy, a third user."""
    ana, bob, cy = [await viewer(rt, name) for name in ("ana", "bob", "cy")]
    thread_id = (await rt.mutation("threads.create", {}, ana.caller)).value["id"]
    await rt.mutation("threads.invite", {"id": thread_id, "user": "bob"}, ana.caller)
    await settled(rt)
    feed = await rt.open_thread_feed(thread_id, bob, None)
    await settled(rt)
    assert not feed.outbox.closed
    return ana, bob, cy, thread_id, feed


async def test_what_concerns_no_stream_leaves_it_open(rt: Runtime) -> None:
    _, _, cy, _, feed = await _bob_follows_a_thread(rt)
    await rt.mutation("threads.create", {}, cy.caller)
    await viewer(rt, "dee")
    await settled(rt)
    assert not feed.outbox.closed


async def test_a_removal_committed_with_a_new_thread_ends_the_removed_members_feed(
    rt: Runtime,
) -> None:
    _, bob, cy, thread_id, feed = await _bob_follows_a_thread(rt)

    def remove_bob_and_add_a_thread(db: WriteDB) -> None:
        db.execute(
            "DELETE FROM thread_members WHERE thread_id = ? AND user_id = ?",
            (thread_id, bob.caller.id),
        )
        insert_thread(db, cy.caller)  # its owner's row takes Bob's rowid

    await rt.store.write(remove_bob_and_add_a_thread)
    await settled(rt)
    assert feed.outbox.closed


async def test_a_removal_and_another_users_new_thread_at_once_end_the_feed(rt: Runtime) -> None:
    ana, _, cy, thread_id, feed = await _bob_follows_a_thread(rt)
    await asyncio.gather(
        rt.mutation("threads.leave", {"id": thread_id, "user": "bob"}, ana.caller),
        rt.mutation("threads.create", {}, cy.caller),
    )
    await settled(rt)
    assert feed.outbox.closed


async def test_a_membership_never_moves_to_another_thread(rt: Runtime) -> None:
    _, bob, cy, thread_id, feed = await _bob_follows_a_thread(rt)
    other = (await rt.mutation("threads.create", {}, cy.caller)).value["id"]

    def move(db: WriteDB) -> None:
        db.execute(
            "UPDATE thread_members SET thread_id = ? WHERE thread_id = ? AND user_id = ?",
            (other, thread_id, bob.caller.id),
        )

    with pytest.raises(apsw.ConstraintError, match="a membership's thread never changes"):
        await rt.store.write(move)
    with pytest.raises(apsw.ConstraintError, match="a token's id never changes"):
        await rt.store.write(
            lambda db: db.execute("UPDATE auth_tokens SET id = 'tok_other' WHERE rowid = 1")
        )
    await settled(rt)
    assert not feed.outbox.closed
