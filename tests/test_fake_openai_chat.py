"""The fake OpenAI server's chat completions, read with the real openai client over real HTTP:
streamed chunks and the wire format, usage, tool calls, pacing, routing plans by message."""

from __future__ import annotations

import asyncio
import json
import resource
import time
from typing import Any

import httpx
import openai
import pytest

from tests.support.openai_chat import USER, collect, finish_of, text_of
from voicestack.testing.fake_openai import FakeOpenAI

pytestmark = pytest.mark.anyio


async def test_default_reply_echoes_the_last_user_message_word_by_word(
    openai_client: openai.AsyncOpenAI,
) -> None:
    chunks = await collect(openai_client)

    pieces = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    assert pieces == ["You ", "said: ", "hello ", "there ", "friend"]
    assert text_of(chunks) == "You said: hello there friend"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].id.startswith("chatcmpl-")
    assert {c.model for c in chunks} == {"gpt-4o-mini"}
    assert finish_of(chunks) == "stop"
    assert all(c.usage is None for c in chunks)


async def test_wire_format_is_data_lines_ending_in_done(fake: FakeOpenAI) -> None:
    body = {"model": "m", "messages": USER, "stream": True}
    async with (
        httpx.AsyncClient(base_url=fake.base_url) as http,
        http.stream("POST", "/v1/chat/completions", json=body) as response,
    ):
        raw = (await response.aread()).decode()

    assert response.headers["content-type"].startswith("text/event-stream")
    events = raw.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-2]]
    assert all(e.startswith("data: ") for e in events[:-1])
    for chunk in chunks:
        assert {"id", "object", "created", "model", "choices"} <= chunk.keys()
        assert "usage" not in chunk
        (choice,) = chunk["choices"]
        assert choice.keys() == {"index", "delta", "logprobs", "finish_reason"}
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert chunks[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }


async def test_include_usage_adds_a_final_usage_chunk(
    openai_client: openai.AsyncOpenAI, fake: FakeOpenAI
) -> None:
    fake.script({"text": "one two three"})
    chunks = await collect(openai_client, stream_options={"include_usage": True})

    *content, last = chunks
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (3, 3)
    assert last.usage.total_tokens == 6
    assert all(c.usage is None for c in content)
    assert text_of(chunks) == "one two three"

    fake.script({"text": "hi", "usage": {"prompt_tokens": 11, "completion_tokens": 7}})
    usage = (await collect(openai_client, stream_options={"include_usage": True}))[-1].usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (11, 7, 18)


async def test_tool_call_deltas_reassemble_into_calls(
    openai_client: openai.AsyncOpenAI, fake: FakeOpenAI
) -> None:
    fake.script(
        {
            "text": "Let me check.",
            "tool_calls": [
                {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}},
                {"name": "get_time", "arguments": '{"tz":"Europe/Paris"}'},
            ],
        }
    )
    chunks = await collect(openai_client)

    calls: dict[int, dict[str, Any]] = {}
    fragments: dict[int, int] = {}
    for chunk in chunks:
        for delta in chunk.choices[0].delta.tool_calls or []:
            assert delta.function is not None
            if delta.id is not None:
                assert delta.type == "function"
                assert delta.function.arguments == ""
                calls[delta.index] = {"id": delta.id, "name": delta.function.name, "args": ""}
            else:
                assert delta.function.name is None
                calls[delta.index]["args"] += delta.function.arguments or ""
                fragments[delta.index] = fragments.get(delta.index, 0) + 1

    assert text_of(chunks) == "Let me check."
    assert [c["name"] for c in calls.values()] == ["get_weather", "get_time"]
    assert json.loads(calls[0]["args"]) == {"city": "Paris", "unit": "celsius"}
    assert calls[1]["args"] == '{"tz":"Europe/Paris"}'
    assert all(c["id"].startswith("call_") for c in calls.values())
    assert min(fragments.values()) >= 2
    assert finish_of(chunks) == "tool_calls"


async def test_tool_only_reply_announces_the_role_with_the_first_call(
    openai_client: openai.AsyncOpenAI, fake: FakeOpenAI
) -> None:
    fake.script({"tool_calls": [{"name": "hang_up", "id": "call_fixed"}]})
    chunks = await collect(openai_client)

    first = chunks[0].choices[0].delta
    assert first.role == "assistant"
    assert first.content is None
    assert first.tool_calls is not None
    assert first.tool_calls[0].id == "call_fixed"
    assert text_of(chunks) == ""


async def test_non_streaming_returns_a_chat_completion(
    openai_client: openai.AsyncOpenAI, fake: FakeOpenAI
) -> None:
    fake.script({"text": "Sure.", "tool_calls": [{"name": "f", "arguments": {"x": 1}}]})
    completion = await openai_client.chat.completions.create(model="gpt-4o-mini", messages=USER)

    assert completion.object == "chat.completion"
    (choice,) = completion.choices
    assert choice.message.content == "Sure."
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.type == "function"
    assert (call.function.name, call.function.arguments) == ("f", '{"x":1}')
    assert choice.finish_reason == "tool_calls"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 3

    echo = await openai_client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    assert echo.choices[0].message.content == "You said: hello there friend"


async def test_max_tokens_truncates_with_finish_reason_length(
    openai_client: openai.AsyncOpenAI,
) -> None:
    chunks = await collect(openai_client, max_tokens=2)

    assert text_of(chunks) == "You said: "
    assert finish_of(chunks) == "length"


async def test_pacing_delays_first_token_and_spaces_tokens(
    openai_client: openai.AsyncOpenAI, fake: FakeOpenAI
) -> None:
    fake.script({"text": "a b c d e f g h i", "first_token_delay_s": 0.1, "tokens_per_second": 40})
    started = time.monotonic()
    stream = await openai_client.chat.completions.create(
        model="gpt-4o-mini", messages=USER, stream=True
    )
    arrivals = [
        time.monotonic() - started async for chunk in stream if chunk.choices[0].delta.content
    ]

    assert len(arrivals) == 9
    assert arrivals[0] >= 0.1
    assert arrivals[-1] - arrivals[0] >= 8 / 40 - 0.02


async def test_match_routes_plans_by_last_user_message(
    openai_client: openai.AsyncOpenAI, fake: FakeOpenAI
) -> None:
    fake.script({"text": "generic"}, {"match": "weather", "text": "Sunny."})

    async def ask(text: str) -> str:
        return text_of(await collect(openai_client, messages=[{"role": "user", "content": text}]))

    assert await ask("what's the weather like?") == "Sunny."
    assert await ask("tell me about the weather") == "generic"
    assert await ask("weather again?") == "You said: weather again?"


async def test_many_concurrent_streams(fake: FakeOpenAI) -> None:
    fake.script({"text": "a b c d e f g h", "tokens_per_second": 50, "times": None})
    host, port = fake.base_url.removeprefix("http://").split(":")

    async def stream() -> int:
        # Raw sockets keep the openai_client cheap, so this measures the server.
        reader, writer = await asyncio.open_connection(host, int(port))
        body = json.dumps({"model": "m", "stream": True, "messages": USER}).encode()
        head = f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
        writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        raw = await reader.read()
        writer.close()
        await writer.wait_closed()
        return raw.count(b"data: ")

    # Each stream costs a openai_client and a server descriptor in this one process.
    soft_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    streams = min(1000, (soft_limit - 200) // 2)
    counts = await asyncio.gather(*(stream() for _ in range(streams)))

    assert set(counts) == {11}
