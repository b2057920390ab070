"""Shared thread streams on a primary (voicestack/agent/shared_feeds.py), in one process on a
real database file: a member that loses its access is ended by a control inside the shared
stream, ahead of every event of the commit that took the access away, and the others are not;
a joining's answer carries the member's state; a member that left, or an overtaken joining,
cannot join late.
"""

from __future__ import annotations

import json

import anyio
import pytest

from voicestack.agent.membership import add_member
from voicestack.agent.records import emit
from voicestack.agent.shared_feeds import LIVE, MemberState
from voicestack.auth.users import create_token, revoke_token
from voicestack.functions.errors import FunctionError
from voicestack.reactive.access import Viewer
from voicestack.reactive.channel import Outbox
from voicestack.runtime import Runtime
from voicestack.store.db import WriteDB

pytestmark = pytest.mark.anyio

SHARE = "edge.thread-stream"


async def people(rt: Runtime, *names: str) -> list[tuple[str, Viewer]]:
    """A new user with a token for each name: the token, and the viewer it identifies (all
    identified once every token exists, so that none is re-checked when it joins)."""
    made = [await rt.store.write(lambda db, name=name: create_token(db, name)[0]) for name in names]
    with anyio.fail_after(5):  # until the access guard has heard of every new token
        while rt.hub.version < made[-1].version:
            await anyio.sleep(0.005)
    tokens = [write.value for write in made]
    found = []
    for token in tokens:
        identity = await rt.access.identify(token)
        assert identity is not None
        found.append((token, Viewer(identity, rt.access.generation)))
    return found


async def shared_thread(rt: Runtime, owner: Viewer, member: Viewer) -> str:
    """A thread of `owner`'s with `member` in it."""
    created = await rt.mutation("threads.create", {"title": "shared"}, owner.caller)
    thread_id: str = created.value["id"]
    await rt.store.write(lambda db: add_member(db, thread_id, member.caller.id, "member"))
    return thread_id


async def until(outbox: Outbox, wanted: bytes) -> bytes:
    """Everything the shared stream sends until `wanted` has been sent."""
    seen = b""
    with anyio.fail_after(5):
        while wanted not in seen:
            chunk = await outbox.next_chunk()
            assert chunk is not None, seen
            seen += chunk
    return seen


def controls(sent: bytes, until_text: bytes) -> list[tuple[str, str]]:
    """The members ended in `sent` before the event holding `until_text`, and why."""
    ended = []
    for block in sent[: sent.index(until_text)].split(b"\n\n"):
        if block.startswith(b"event: voicestack-member\n"):
            note = json.loads(block.split(b"data: ", 1)[1])
            if "end" in note:
                ended.append((note["member"], note["end"]))
    return ended


@pytest.mark.parametrize("why", ["token_revoked", "access_removed"])
async def test_a_member_losing_access_is_ended_ahead_of_that_commits_events(
    rt: Runtime, why: str
) -> None:
    (_, owner), (token, member) = await people(rt, "owner", "member")
    thread_id = await shared_thread(rt, owner, member)
    stream, after, _ = await rt.shared_feeds.open(SHARE, thread_id, owner, None)
    *_, staying = await rt.shared_feeds.join(SHARE, "owner-1", owner, after, catch_up=False)
    *_, leaving = await rt.shared_feeds.join(SHARE, "member-1", member, after, catch_up=False)
    assert (staying, leaving) == (MemberState(0, LIVE), MemberState(0, LIVE))

    def take_access_and_post(db: WriteDB) -> None:
        if why == "token_revoked":
            revoke_token(db, token)
        else:
            db.execute(
                "DELETE FROM thread_members WHERE thread_id = ? AND user_id = ?",
                (thread_id, member.caller.id),
            )
        emit(db, thread_id, "speech", "n1", {"text": "in that commit"})

    await rt.store.write(take_access_and_post)
    sent = await until(stream.outbox, b"in that commit")
    stream.close()
    assert controls(sent, b"in that commit") == [("member-1", why)]


async def test_a_joining_is_refused_for_a_member_that_left_or_a_stream_not_held(
    rt: Runtime,
) -> None:
    (_, owner), (_, member), (_, outsider) = await people(rt, "owner", "member", "outsider")
    thread_id = await shared_thread(rt, owner, member)
    stream, after, _ = await rt.shared_feeds.open(SHARE, thread_id, owner, None)
    await rt.shared_feeds.join(SHARE, "member-1.2", member, after, catch_up=False)
    with pytest.raises(FunctionError) as older:  # an earlier joining, overtaken on its way
        await rt.shared_feeds.join(SHARE, "member-1.1", member, after, catch_up=False)
    assert (older.value.status, older.value.code) == (409, "joining_superseded")
    assert rt.shared_feeds.members == 1
    rt.shared_feeds.leave(SHARE, "member-1")
    assert rt.shared_feeds.members == 0
    with pytest.raises(FunctionError) as late:
        await rt.shared_feeds.join(SHARE, "member-1.3", member, after, catch_up=False)
    assert (late.value.status, late.value.code) == (410, "member_left")
    stream.close()
    with pytest.raises(FunctionError) as gone:
        await rt.shared_feeds.join(SHARE, "member-2", member, after, catch_up=False)
    assert (gone.value.status, gone.value.code) == (503, "feed_not_open")
    stream, after, _ = await rt.shared_feeds.open(SHARE, thread_id, owner, None)
    with pytest.raises(FunctionError) as refused:
        await rt.shared_feeds.join(SHARE, "outsider-1", outsider, after, catch_up=True)
    assert (refused.value.status, refused.value.code) == (404, "thread_not_found")
    assert rt.shared_feeds.members == 0
    stream.close()


def test_a_member_state_reads_back_as_written() -> None:
    for state in (MemberState(0, "live"), MemberState(3, "held"), MemberState(7, "ended", "x")):
        assert MemberState.decode(state.encode()) == state
    assert MemberState.decode("held") is None
    assert MemberState.decode("one live") is None
