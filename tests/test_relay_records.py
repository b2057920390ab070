"""The function-call state a server keeps for relayed replies (voicestack/voice/relay/records.py
RepliesWithCalls): a stop that arrives before its reply's calls start still stops them."""

from __future__ import annotations

import pytest

from voicestack.agent.reply_tools import ReplyStopped
from voicestack.voice.relay.records import RepliesWithCalls

pytestmark = pytest.mark.anyio


async def test_a_stop_that_overtakes_its_calls_stops_them_before_they_run() -> None:
    replies = RepliesWithCalls(tools=None)  # type: ignore[arg-type]  # no reply is made here
    replies.stop("msg_1")  # the barge-in's stop came first
    with pytest.raises(ReplyStopped):
        await replies.run("msg_1", calls=None, step=1, requests=[])  # type: ignore[arg-type]
