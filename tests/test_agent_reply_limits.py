"""A reply always ends, and says why when the model did not finish it: an overall deadline, a
size cap, a cap on tool calls per step, and the finish reasons that are not a clean stop.

The tests share a server wired to the FakeOpenAI with small limits; every reply keeps the text
it streamed, and a reply cut short is `failed` with the exact reason.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.agent import (
    Threads,
    ask,
    chat_bodies,
    marker,
    streamed,
    tool_call_rows,
)
from voicestack.testing.fake_openai import FakeOpenAI

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.agent_server(
        "--provider-timeout-s",
        "1",
        "--reply-timeout-s",
        "2",
        "--max-reply-chars",
        "40",
        "--max-tool-calls-per-step",
        "2",
    ),
]

WORDS = "One two three four five six seven eight nine ten"


async def reply_to(
    fake: FakeOpenAI, client: httpx.AsyncClient, plan: dict[str, Any]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Send a message whose reply follows `plan`; its final row (checked against the thread and
    the streamed text) and the tool-call rows of the feed."""
    threads = Threads(client)
    mark = marker()
    fake.script({"match": mark, **plan})
    thread_id, _, reply_id, events = await ask(client, threads, mark, timeout=15.0)
    row = events[-1].json
    assert row == (await threads.get(thread_id))["messages"][-1]
    assert row["text"] == streamed(events, reply_id)
    assert len(chat_bodies(fake, mark)) == 1  # none of these is retried
    return row, tool_call_rows(events)


def outcome(row: dict[str, Any]) -> tuple[str, dict[str, str] | None, str]:
    return row["status"], row["error"], row["text"]


@pytest.mark.parametrize("keepalive", ["comment", "empty_delta"])
async def test_a_stream_kept_alive_forever_ends_at_the_reply_deadline(
    fake: FakeOpenAI, client: httpx.AsyncClient, keepalive: str
) -> None:
    # Two words, then keep-alives every 0.3 s: never a gap of --provider-timeout-s.
    plan = {"text": WORDS, "stall_after_chunks": 3, "keepalive_s": 0.3, "keepalive": keepalive}

    row, _ = await reply_to(fake, client, plan)

    message = "The reply ran past its 2 s limit (--reply-timeout-s) and was stopped."
    assert outcome(row) == ("failed", {"code": "reply_timeout", "message": message}, "One two ")


@pytest.mark.parametrize(
    ("finish_reason", "code", "message"),
    [
        (
            "length",
            "reply_truncated",
            "The model stopped at its output token limit (finish_reason length): the reply is"
            " cut short.",
        ),
        (
            "content_filter",
            "content_filtered",
            "The model provider's content filter stopped the reply (finish_reason content_filter).",
        ),
    ],
)
async def test_a_reply_the_model_did_not_finish_says_why(
    fake: FakeOpenAI, client: httpx.AsyncClient, finish_reason: str, code: str, message: str
) -> None:
    row, _ = await reply_to(fake, client, {"text": "Cut short", "finish_reason": finish_reason})

    assert outcome(row) == ("failed", {"code": code, "message": message}, "Cut short")


async def test_a_reply_with_no_text_and_no_tool_calls_is_empty(
    fake: FakeOpenAI, client: httpx.AsyncClient
) -> None:
    row, _ = await reply_to(fake, client, {"text": ""})

    message = "The model provider ended the reply without any text or tool calls."
    assert outcome(row) == ("failed", {"code": "empty_reply", "message": message}, "")


async def test_a_whole_completion_instead_of_a_stream_keeps_its_text_and_says_so(
    fake: FakeOpenAI, client: httpx.AsyncClient
) -> None:
    row, _ = await reply_to(fake, client, {"text": "All at once.", "whole_completion": True})

    message = (
        f"The model provider at {fake.api_base} answered with a whole completion"
        " (application/json) instead of an event stream; use a server that streams chat"
        " completions."
    )
    error = {"code": "provider_not_streaming", "message": message}
    assert outcome(row) == ("failed", error, "All at once.")


async def test_a_reply_stops_at_its_size_limit_keeping_what_fits(
    fake: FakeOpenAI, client: httpx.AsyncClient
) -> None:
    row, _ = await reply_to(fake, client, {"text": WORDS})

    message = "The reply reached its 40-character limit (--max-reply-chars) and was stopped."
    error = {"code": "reply_too_long", "message": message}
    assert outcome(row) == ("failed", error, WORDS[:40])


async def test_more_tool_calls_in_one_step_than_allowed_run_none(
    fake: FakeOpenAI, client: httpx.AsyncClient
) -> None:
    calls = [{"name": "slow_count", "arguments": {"n": 1}}] * 3

    row, rows = await reply_to(fake, client, {"tool_calls": calls})

    message = (
        "The model asked for more than 2 tool calls in one step (--max-tool-calls-per-step);"
        " none was run."
    )
    assert outcome(row) == ("failed", {"code": "too_many_tool_calls", "message": message}, "")
    assert rows == []
