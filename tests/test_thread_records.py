"""What a new message announces on its thread's feed (voicestack/agent/threads.py), and who may
see a thread (voicestack/agent/membership.py)."""

from __future__ import annotations

import json

import pytest

from voicestack.agent.membership import ThreadNotFound, add_member, require_thread, thread_visible
from voicestack.agent.records import load_message
from voicestack.agent.threads import insert_thread, start_turn
from voicestack.identity import Caller
from voicestack.runtime import Runtime

pytestmark = pytest.mark.anyio


async def test_a_new_message_announces_the_row_it_was_saved_as(rt: Runtime):
    thread_id = (await rt.mutation("threads.create", {"title": "t"}, None)).value["id"]

    def turn(db) -> list[tuple[object, object]]:
        ids = start_turn(db, thread_id, "hello there", None, agent="assistant")
        announced = {
            row["ref"]: json.loads(row["data"])
            for row in db.all(
                "SELECT ref, data FROM thread_events WHERE thread_id = ? AND kind = 'message'",
                (thread_id,),
            )
        }
        return [(announced[i], load_message(db, i)) for i in ids.values()]

    pairs = (await rt.store.write(turn)).value
    assert len(pairs) == 2  # the person's message and the pending reply
    for announced, saved in pairs:
        assert announced == saved
    assert [saved["order"] for _, saved in pairs] == [1, 2]


async def test_reading_a_thread_and_judging_its_visibility_agree(rt: Runtime):
    """require_thread (queries, mutations) and thread_visible (the access guard) decide alike."""
    owner, member = Caller("u_owner", "owner"), Caller("u_member", "member")
    stranger, admin = Caller("u_stranger", "stranger"), Caller("u_admin", "admin", "admin")

    def decide(db) -> list[tuple[str, bool, bool]]:
        for user in (owner, member, stranger, admin):
            db.execute(
                "INSERT INTO auth_users(id, name, role, created_at) VALUES (?, ?, ?, 0)",
                (user.id, user.name, user.role),
            )
        thread_id = insert_thread(db, owner, title="t")
        add_member(db, thread_id, member.id, "member")
        answers = []
        for who, user in (
            ("owner", owner),
            ("member", member),
            ("stranger", stranger),
            ("admin", admin),
            ("server", None),
        ):
            for asked in (thread_id, "thr_missing"):
                try:
                    read = require_thread(db, asked, user)["id"] == asked
                except ThreadNotFound:
                    read = False
                answers.append(
                    (f"{who} {asked == thread_id}", read, thread_visible(db, asked, user))
                )
        return answers

    answers = (await rt.store.write(decide)).value
    assert all(read == visible for _, read, visible in answers), answers
    assert [who for who, read, _ in answers if read] == [
        "owner True",
        "member True",
        "admin True",
        "server True",
    ]
