"""ChatProvider against a real fake OpenAI server: streaming, tool calls, retries and errors."""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

import pytest

from tests.support.raw_http import read_request as read_request
from tests.support.server import free_port
from voicestack.agent.llm import (
    NOT_CONFIGURED_MESSAGE,
    ChatProvider,
    Finish,
    ProviderError,
    ProviderSettings,
    StreamEvent,
    TextDelta,
    ToolCallRequest,
    Usage,
    _retry_after,
)
from voicestack.testing.fake_openai import FakeOpenAI

pytestmark = pytest.mark.anyio

KEY = "sk-test-0123456789abcdef"
USER = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "Current weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
USAGE = {"prompt_tokens": 11, "completion_tokens": 5}

MakeProvider = Callable[..., ChatProvider]


@pytest.fixture
async def make(fake: FakeOpenAI) -> AsyncIterator[MakeProvider]:
    providers: list[ChatProvider] = []

    def make(**overrides: Any) -> ChatProvider:
        settings: dict[str, Any] = {
            "base_url": fake.api_base,
            "api_key": KEY,
            "retry_cap_s": 0.05,
            **overrides,
        }
        providers.append(ChatProvider(ProviderSettings(**settings)))
        return providers[-1]

    yield make
    for provider in providers:
        await provider.aclose()


async def collect(
    provider: ChatProvider, tools: list[dict[str, Any]] | None = None
) -> list[StreamEvent]:
    return [event async for event in provider.stream(USER, tools)]


async def drain(provider: ChatProvider, into: list[StreamEvent]) -> None:
    async for event in provider.stream(USER):
        into.append(event)


async def failure(provider: ChatProvider) -> tuple[list[StreamEvent], ProviderError]:
    events: list[StreamEvent] = []
    with pytest.raises(ProviderError) as caught:
        await drain(provider, events)
    return events, caught.value


async def test_text_streams_as_deltas_then_usage_then_finish(
    fake: FakeOpenAI, make: MakeProvider
) -> None:
    fake.script({"text": "It is sunny in Paris.", "usage": USAGE})
    assert await collect(make()) == [
        TextDelta("It "),
        TextDelta("is "),
        TextDelta("sunny "),
        TextDelta("in "),
        TextDelta("Paris."),
        Usage(prompt_tokens=11, completion_tokens=5),
        Finish("stop"),
    ]


async def test_request_carries_model_messages_tools_and_include_usage(
    fake: FakeOpenAI, make: MakeProvider
) -> None:
    fake.script({"text": "ok"})
    await collect(make(model="gpt-test", temperature=0.2), tools=[WEATHER_TOOL])
    [request] = fake.requests("chat")
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["authorization"] == f"Bearer {KEY}"
    assert request["body"] == {
        "model": "gpt-test",
        "messages": USER,
        "tools": [WEATHER_TOOL],
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.2,
    }


async def test_no_tools_and_no_temperature_are_left_out(
    fake: FakeOpenAI, make: MakeProvider
) -> None:
    fake.script({"text": "ok"})
    await collect(make(api_key=None))
    [request] = fake.requests("chat")
    # A local server needs no key; the client still sends a placeholder.
    assert request["headers"]["authorization"] == "Bearer no-key-needed"
    assert request["body"] == {
        "model": "gpt-4o-mini",
        "messages": USER,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def test_tool_call_split_across_chunks_is_assembled(
    fake: FakeOpenAI, make: MakeProvider
) -> None:
    arguments = '{"city": "Paris", "unit": "celsius"}'
    fake.script(
        {
            "tool_calls": [{"name": "weather", "arguments": arguments, "id": "call_1"}],
            "chunk_chars": 3,
            "usage": USAGE,
        }
    )
    assert await collect(make(), tools=[WEATHER_TOOL]) == [
        ToolCallRequest(call_id="call_1", name="weather", arguments=arguments),
        Usage(prompt_tokens=11, completion_tokens=5),
        Finish("tool_calls"),
    ]


async def test_two_tool_calls_come_in_index_order(fake: FakeOpenAI, make: MakeProvider) -> None:
    fake.script(
        {
            "tool_calls": [
                {"name": "weather", "arguments": {"city": "Paris"}, "id": "call_a"},
                {"name": "weather", "arguments": {"city": "Oslo"}, "id": "call_b"},
            ],
            "usage": USAGE,
        }
    )
    assert await collect(make(), tools=[WEATHER_TOOL]) == [
        ToolCallRequest(call_id="call_a", name="weather", arguments='{"city":"Paris"}'),
        ToolCallRequest(call_id="call_b", name="weather", arguments='{"city":"Oslo"}'),
        Usage(prompt_tokens=11, completion_tokens=5),
        Finish("tool_calls"),
    ]


async def test_text_then_tool_call(fake: FakeOpenAI, make: MakeProvider) -> None:
    fake.script(
        {
            "text": "Let me check.",
            "tool_calls": [{"name": "weather", "arguments": "{not json", "id": "call_x"}],
            "usage": USAGE,
        }
    )
    assert await collect(make(), tools=[WEATHER_TOOL]) == [
        TextDelta("Let "),
        TextDelta("me "),
        TextDelta("check."),
        ToolCallRequest(call_id="call_x", name="weather", arguments="{not json"),
        Usage(prompt_tokens=11, completion_tokens=5),
        Finish("tool_calls"),
    ]


async def test_finish_reason_length_is_passed_on(fake: FakeOpenAI, make: MakeProvider) -> None:
    fake.script({"text": "cut short", "finish_reason": "length", "usage": USAGE})
    events = await collect(make())
    assert events[-1] == Finish("length")


async def test_rate_limit_honours_retry_after_then_succeeds(
    fake: FakeOpenAI, make: MakeProvider
) -> None:
    fake.script({"error": {"status": 429, "retry_after": 0.2}, "times": 2}, {"text": "ok"})
    started = time.monotonic()
    # A generous cap: exponential backoff would wait over 1 s, Retry-After asks for 0.4 s.
    events = await collect(make(retry_cap_s=30.0))
    elapsed = time.monotonic() - started
    assert events[0] == TextDelta("ok")
    assert len(fake.requests("chat")) == 3
    assert 0.4 <= elapsed < 1.0


async def test_retry_after_is_capped(fake: FakeOpenAI, make: MakeProvider) -> None:
    fake.script({"error": {"status": 429, "retry_after": 30}}, {"text": "ok"})
    started = time.monotonic()
    events = await collect(make(retry_cap_s=0.1))
    assert events[0] == TextDelta("ok")
    assert time.monotonic() - started < 1.0


async def test_rate_limited_after_max_retries(fake: FakeOpenAI, make: MakeProvider) -> None:
    fake.script(
        {
            "error": {"status": 429, "message": "Slow down.", "retry_after": 0.01},
            "times": None,
        }
    )
    events, error = await failure(make(max_retries=2))
    assert events == []
    assert (error.code, error.message, error.retryable) == (
        "provider_rate_limited",
        "The model provider is rate limiting requests (HTTP 429: Slow down) after 2 retries. "
        "Wait a moment and try again.",
        True,
    )
    assert len(fake.requests("chat")) == 3


async def test_auth_failure_is_not_retried_and_hides_the_key(
    fake: FakeOpenAI, make: MakeProvider
) -> None:
    fake.script({"error": {"status": 401, "message": f"Incorrect API key provided: {KEY}."}})
    _, error = await failure(make())
    assert (error.code, error.message, error.retryable) == (
        "provider_auth_failed",
        "The model provider rejected the API key "
        "(HTTP 401: Incorrect API key provided: [redacted]). Check OPENAI_API_KEY.",
        False,
    )
    assert len(fake.requests("chat")) == 1


async def test_forbidden_is_an_auth_failure(fake: FakeOpenAI, make: MakeProvider) -> None:
    fake.script({"error": {"status": 403, "message": "Project has no access."}})
    _, error = await failure(make())
    assert (error.code, error.message) == (
        "provider_auth_failed",
        "The model provider refused access (HTTP 403: Project has no access). "
        "Check that the key may use model 'gpt-4o-mini'.",
    )
    assert len(fake.requests("chat")) == 1


@pytest.mark.parametrize(
    ("status", "hint"),
    [(400, ""), (404, " Check the model name 'gpt-4o-mini' and the base URL."), (422, "")],
)
async def test_bad_request_is_not_retried(
    fake: FakeOpenAI, make: MakeProvider, status: int, hint: str
) -> None:
    fake.script({"error": {"status": status, "message": "Invalid 'tools[0]'."}, "times": None})
    _, error = await failure(make())
    assert (error.code, error.message, error.retryable) == (
        "provider_bad_request",
        f"The model provider rejected the request (HTTP {status}: Invalid 'tools[0]').{hint}",
        False,
    )
    assert len(fake.requests("chat")) == 1


async def test_server_error_then_success_is_retried(fake: FakeOpenAI, make: MakeProvider) -> None:
    fake.script({"error": {"status": 500}}, {"text": "ok"})
    assert (await collect(make()))[0] == TextDelta("ok")
    assert len(fake.requests("chat")) == 2


async def test_server_error_after_max_retries(fake: FakeOpenAI, make: MakeProvider) -> None:
    fake.script({"error": {"status": 503, "message": "Overloaded."}, "times": None})
    _, error = await failure(make(max_retries=1))
    assert (error.code, error.message, error.retryable) == (
        "provider_error",
        "The model provider failed (HTTP 503: Overloaded) after 1 retry.",
        True,
    )
    assert len(fake.requests("chat")) == 2


async def test_connection_refused_is_unreachable(make: MakeProvider) -> None:
    base = f"http://127.0.0.1:{free_port()}/v1"
    _, error = await failure(make(base_url=base, max_retries=1))
    assert (error.code, error.message, error.retryable) == (
        "provider_unreachable",
        f"Could not connect to the model provider at {base} after 1 retry (Connection refused). "
        "Check that it is running and that the base URL is right.",
        True,
    )


async def test_no_answer_within_timeout(fake: FakeOpenAI, make: MakeProvider) -> None:
    fake.script({"hang_s": 5, "times": None})
    started = time.monotonic()
    _, error = await failure(make(timeout_s=0.3, max_retries=0))
    assert time.monotonic() - started < 2.0
    assert (error.code, error.message) == (
        "provider_timeout",
        f"The model provider at {fake.api_base} did not answer within 0.3 s.",
    )


async def test_timeout_before_output_is_retried(fake: FakeOpenAI, make: MakeProvider) -> None:
    fake.script({"hang_s": 5}, {"text": "ok"})
    assert (await collect(make(timeout_s=0.3, max_retries=1)))[0] == TextDelta("ok")
    assert len(fake.requests("chat")) == 2


async def test_silence_mid_reply_is_a_timeout_and_final(
    fake: FakeOpenAI, make: MakeProvider
) -> None:
    fake.script({"text": "one two", "tokens_per_second": 2}, {"text": "never used"})
    events, error = await failure(make(timeout_s=0.3, max_retries=3))
    assert events == [TextDelta("one ")]
    assert (error.code, error.message) == (
        "provider_timeout",
        f"The model provider at {fake.api_base} went silent mid-reply for 0.3 s.",
    )
    assert len(fake.requests("chat")) == 1


async def test_cut_stream_keeps_earlier_deltas_and_is_not_retried(
    fake: FakeOpenAI, make: MakeProvider
) -> None:
    # Chunks: the role, then one per word.
    fake.script({"text": "one two three four", "cut_after_chunks": 3}, {"text": "unused"})
    events, error = await failure(make())
    assert events == [TextDelta("one "), TextDelta("two ")]
    assert (error.code, error.message, error.retryable) == (
        "provider_stream_broken",
        "The model provider's stream was cut off mid-reply (peer closed connection without "
        "sending complete message body (incomplete chunked read)).",
        True,
    )
    assert len(fake.requests("chat")) == 1


async def test_cut_before_any_output_is_retried(fake: FakeOpenAI, make: MakeProvider) -> None:
    fake.script({"text": "lost", "cut_after_chunks": 1}, {"text": "ok"})
    assert (await collect(make()))[0] == TextDelta("ok")
    assert len(fake.requests("chat")) == 2


async def test_malformed_chunk_is_a_bad_response(fake: FakeOpenAI, make: MakeProvider) -> None:
    fake.script({"text": "one two", "malformed_after_chunks": 2, "times": None})
    events, error = await failure(make())
    assert events == [TextDelta("one ")]
    assert (error.code, error.message, error.retryable) == (
        "provider_bad_response",
        "The model provider sent a stream chunk that is not valid JSON "
        "(Expecting property name enclosed in double quotes at character 69).",
        False,
    )
    assert len(fake.requests("chat")) == 1


async def test_not_configured_fails_at_once(fake: FakeOpenAI) -> None:
    provider = ChatProvider(ProviderSettings(base_url=None, api_key=None))
    assert provider.configured is False
    _, error = await failure(provider)
    assert (error.code, error.message, error.retryable) == (
        "provider_not_configured",
        NOT_CONFIGURED_MESSAGE,
        False,
    )
    await provider.aclose()
    assert fake.requests() == []


async def test_closing_the_stream_early_releases_it(fake: FakeOpenAI, make: MakeProvider) -> None:
    fake.script({"text": "one two three"}, {"text": "again"})
    provider = make()
    async with aclosing(provider.stream(USER)) as events:
        async for event in events:
            assert event == TextDelta("one ")
            break
    assert (await collect(provider))[0] == TextDelta("again")


async def test_data_that_is_not_a_chunk_is_a_bad_response(make: MakeProvider) -> None:
    body = b'data: {"choices": [{"index": 0, "delta": {"content": "hi"}}]}\n\ndata: 42\n\n'

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        events, error = await failure(make(base_url=f"http://127.0.0.1:{port}/v1"))
    finally:
        server.close()
        await server.wait_closed()
    assert events == [TextDelta("hi")]
    assert (error.code, error.message) == (
        "provider_bad_response",
        "The model provider sent data that is not a chat completion chunk: 42.",
    )


def test_retry_after_parsing() -> None:
    soon = email.utils.formatdate(time.time() + 3, usegmt=True)
    assert _retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert _retry_after({"retry-after": "1.5"}) == 1.5
    assert 1.0 < (_retry_after({"retry-after": soon}) or 0) <= 3.0
    assert _retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert _retry_after({"retry-after": "soon"}) is None
    assert _retry_after({}) is None


def test_settings_repr_hides_the_key() -> None:
    assert KEY not in repr(ProviderSettings(base_url=None, api_key=KEY))
