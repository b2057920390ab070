"""What a new message announces on its thread's feed (voicestack/agent/threads.py)."""

from __future__ import annotations

import json

import pytest

from voicestack.agent.records import load_message
from voicestack.agent.threads import start_turn
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
