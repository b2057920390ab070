"""How a chat stream's end is judged: `[DONE]` or a finish_reason makes a reply whole; a body
that just ends, cleanly, with neither, is a stream cut off mid-reply; and an answer with no event
in it, not typed as an event stream, is not a stream at all."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from tests.support.raw_http import answer, raw_server
from tests.test_llm import (  # noqa: F401 (a fixture)
    KEY,
    MakeProvider,
    collect,
    failure,
    make,
)
from voicestack.agent.llm import (
    ChatProvider,
    Finish,
    ProviderSettings,
    StreamEvent,
    TextDelta,
    Usage,
)
from voicestack.testing.fake_openai import FakeOpenAI

pytestmark = pytest.mark.anyio

HI = b'data: {"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": null}]}\n\n'
STOP = b'data: {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}\n\n'
DONE = b"data: [DONE]\n\n"
USAGE = b'data: {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}\n\n'
OTHER_CHOICE_STOP = b'data: {"choices": [{"index": 1, "delta": {}, "finish_reason": "stop"}]}\n\n'


async def test_a_body_that_ends_with_neither_done_nor_a_finish_reason_is_cut_off(
    fake: FakeOpenAI,
    make: MakeProvider,  # noqa: F811
) -> None:
    # Chunks: the role, then one per word; the body ends cleanly after "two ".
    fake.script({"text": "one two three four", "end_after_chunks": 3}, {"text": "unused"})
    events, error = await failure(make())
    assert events == [TextDelta("one "), TextDelta("two ")]
    assert (error.code, error.message, error.retryable) == (
        "provider_stream_broken",
        "The model provider's stream was cut off mid-reply (the stream ended with neither [DONE]"
        " nor a finish_reason).",
        True,
    )
    assert len(fake.requests("chat")) == 1  # what streamed is kept: a retry would repeat it


async def test_a_body_that_ends_before_any_output_is_retried(
    fake: FakeOpenAI,
    make: MakeProvider,  # noqa: F811
) -> None:
    fake.script({"text": "lost", "end_after_chunks": 1}, {"text": "ok"})
    events = await collect(make())
    assert (events[0], events[-1]) == (TextDelta("ok"), Finish("stop"))
    assert len(fake.requests("chat")) == 2


@pytest.mark.parametrize(
    ("body", "events"),
    [
        pytest.param(HI + STOP, [TextDelta("hi"), Finish("stop")], id="finish-reason-no-done"),
        pytest.param(HI + DONE, [TextDelta("hi"), Finish("stop")], id="done-no-finish-reason"),
        pytest.param(HI + STOP + DONE, [TextDelta("hi"), Finish("stop")], id="both"),
        # Gateways that end the body without the last event's blank line, or its newline.
        pytest.param(HI + STOP[:-1], [TextDelta("hi"), Finish("stop")], id="stop-one-newline"),
        pytest.param(HI + STOP[:-2], [TextDelta("hi"), Finish("stop")], id="stop-no-newline"),
        pytest.param(HI + DONE[:-2], [TextDelta("hi"), Finish("stop")], id="done-no-newline"),
        # The usage chunk that follows the finish_reason, with no [DONE] after it.
        pytest.param(
            HI + STOP + USAGE,
            [TextDelta("hi"), Usage(3, 1), Finish("stop")],
            id="usage-after-stop-no-done",
        ),
        pytest.param(HI + OTHER_CHOICE_STOP, [TextDelta("hi"), Finish("stop")], id="index-1-stop"),
    ],
)
async def test_done_or_a_finish_reason_makes_the_reply_whole(
    body: bytes, events: list[StreamEvent]
) -> None:
    async with _provider_answering(body) as provider:
        assert await collect(provider) == events


async def test_a_body_closed_by_the_connection_with_neither_is_cut_off() -> None:
    # No length and not chunked: the body is whatever comes before the connection closes.
    async with _provider_answering(HI, delimit="close") as provider:
        events, error = await failure(provider)
    assert events == [TextDelta("hi")]
    assert error.code == "provider_stream_broken"
    assert "neither [DONE] nor a finish_reason" in error.message


@pytest.mark.parametrize(
    ("content_type", "body", "named"),
    [
        pytest.param(
            "text/html; charset=utf-8", b"<!doctype html><p>Dashboard</p>", "text/html", id="page"
        ),
        pytest.param("text/plain", b"Hello", "text/plain", id="text"),
        pytest.param("", b"", "no content type", id="nothing"),
        pytest.param("Text/HTML", b"<p>Hi</p>", "text/html", id="upper-case"),
    ],
)
async def test_an_answer_that_is_not_an_event_stream_says_so(
    content_type: str, body: bytes, named: str
) -> None:
    async with _provider_answering(body, content_type=content_type) as provider:
        events, error = await failure(provider)
        where = provider.where
    assert events == []
    assert (error.code, error.message, error.retryable) == (
        "provider_bad_response",
        f"The model provider at {where} answered {named} instead of an event stream. Check the"
        " base URL: an OpenAI-compatible API's usually ends in /v1.",
        False,
    )


@pytest.mark.parametrize("content_type", ["text/event-stream", "Text/Event-Stream"])
async def test_an_empty_event_stream_is_cut_off(content_type: str) -> None:
    async with _provider_answering(b": ping\n\n", content_type=content_type) as provider:
        events, error = await failure(provider)
    assert (events, error.code) == ([], "provider_stream_broken")


@asynccontextmanager
async def _provider_answering(
    body: bytes, delimit: str = "length", content_type: str = "text/event-stream"
) -> AsyncIterator[ChatProvider]:
    """A ChatProvider whose server answers every request with `body` (by default as an event
    stream), delimited by its length or by closing the connection."""
    if delimit == "length":
        reply = answer("200 OK", content_type, body)
    else:
        reply = f"HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\nconnection: close\r\n\r\n"
        reply = reply.encode() + body
    async with raw_server(reply) as (base, _):
        settings = ProviderSettings(base_url=base, api_key=KEY, timeout_s=10, max_retries=0)
        provider = ChatProvider(settings)
        try:
            yield provider
        finally:
            await provider.aclose()
