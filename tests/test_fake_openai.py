"""The fake OpenAI server, exercised with the real openai client over real HTTP."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import resource
import subprocess
import sys
import time
import wave
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionChunk

from voicestack.testing.fake_openai import FakeOpenAI

pytestmark = pytest.mark.anyio

USER = [{"role": "user", "content": "hello there friend"}]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(fake: FakeOpenAI) -> None:
    fake.reset()


@pytest.fixture
async def client(fake: FakeOpenAI) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=fake.api_base, api_key="test", max_retries=0) as c:
        yield c


async def collect(client: openai.AsyncOpenAI, **kwargs: Any) -> list[ChatCompletionChunk]:
    kwargs.setdefault("model", "gpt-4o-mini")
    kwargs.setdefault("messages", USER)
    stream = await client.chat.completions.create(stream=True, **kwargs)
    return [chunk async for chunk in stream]


async def drain(
    stream: AsyncIterator[ChatCompletionChunk], into: list[ChatCompletionChunk]
) -> None:
    async for chunk in stream:
        into.append(chunk)


def text_of(chunks: list[ChatCompletionChunk]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def finish_of(chunks: list[ChatCompletionChunk]) -> str | None:
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert all(r is None for r in reasons[:-1])
    return reasons[-1]


def wav(seconds: float, rate: int = 16_000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(bytes(range(256)) * int(seconds * rate * 2 / 256))
    return buffer.getvalue()


async def test_default_reply_echoes_the_last_user_message_word_by_word(
    client: openai.AsyncOpenAI,
) -> None:
    chunks = await collect(client)

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
    client: openai.AsyncOpenAI, fake: FakeOpenAI
) -> None:
    fake.script({"text": "one two three"})
    chunks = await collect(client, stream_options={"include_usage": True})

    *content, last = chunks
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (3, 3)
    assert last.usage.total_tokens == 6
    assert all(c.usage is None for c in content)
    assert text_of(chunks) == "one two three"

    fake.script({"text": "hi", "usage": {"prompt_tokens": 11, "completion_tokens": 7}})
    usage = (await collect(client, stream_options={"include_usage": True}))[-1].usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (11, 7, 18)


async def test_tool_call_deltas_reassemble_into_calls(
    client: openai.AsyncOpenAI, fake: FakeOpenAI
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
    chunks = await collect(client)

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
    client: openai.AsyncOpenAI, fake: FakeOpenAI
) -> None:
    fake.script({"tool_calls": [{"name": "hang_up", "id": "call_fixed"}]})
    chunks = await collect(client)

    first = chunks[0].choices[0].delta
    assert first.role == "assistant"
    assert first.content is None
    assert first.tool_calls is not None
    assert first.tool_calls[0].id == "call_fixed"
    assert text_of(chunks) == ""


async def test_non_streaming_returns_a_chat_completion(
    client: openai.AsyncOpenAI, fake: FakeOpenAI
) -> None:
    fake.script({"text": "Sure.", "tool_calls": [{"name": "f", "arguments": {"x": 1}}]})
    completion = await client.chat.completions.create(model="gpt-4o-mini", messages=USER)

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

    echo = await client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    assert echo.choices[0].message.content == "You said: hello there friend"


async def test_max_tokens_truncates_with_finish_reason_length(client: openai.AsyncOpenAI) -> None:
    chunks = await collect(client, max_tokens=2)

    assert text_of(chunks) == "You said: "
    assert finish_of(chunks) == "length"


async def test_rate_limit_with_retry_after_then_success(
    client: openai.AsyncOpenAI, fake: FakeOpenAI
) -> None:
    fake.script({"error": {"status": 429, "retry_after": 2}, "times": 2}, {"text": "finally"})

    for _ in range(2):
        with pytest.raises(openai.RateLimitError) as caught:
            await collect(client)
        assert caught.value.response.headers["retry-after"] == "2"
        assert caught.value.code == "rate_limit_exceeded"
        assert caught.value.type == "requests"
    assert text_of(await collect(client)) == "finally"
    assert fake.pending() == []


async def test_client_retries_honour_retry_after(fake: FakeOpenAI) -> None:
    fake.script({"error": {"status": 429, "retry_after": 0.01}, "times": 2}, {"text": "ok"})
    async with openai.AsyncOpenAI(base_url=fake.api_base, api_key="k", max_retries=2) as retrying:
        assert text_of(await collect(retrying)) == "ok"
    assert len(fake.requests("chat")) == 3


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, openai.BadRequestError),
        (401, openai.AuthenticationError),
        (404, openai.NotFoundError),
        (500, openai.InternalServerError),
        (503, openai.InternalServerError),
    ],
)
async def test_scripted_errors_map_to_client_exceptions(
    client: openai.AsyncOpenAI, fake: FakeOpenAI, status: int, error: type[Exception]
) -> None:
    fake.script({"error": {"status": status, "message": f"scripted {status}"}})

    with pytest.raises(error) as caught:
        await collect(client)

    assert isinstance(caught.value, openai.APIStatusError)
    assert caught.value.status_code == status
    assert caught.value.message.endswith(f"scripted {status}")
    body = caught.value.body
    assert isinstance(body, dict)
    assert body.keys() == {"message", "type", "param", "code"}


async def test_authentication_error_has_the_real_error_code(
    client: openai.AsyncOpenAI, fake: FakeOpenAI
) -> None:
    fake.script({"error": {"status": 401}})

    with pytest.raises(openai.AuthenticationError) as caught:
        await client.chat.completions.create(model="gpt-4o-mini", messages=USER)

    assert caught.value.code == "invalid_api_key"
    assert caught.value.type == "invalid_request_error"


async def test_cut_stream_raises_before_a_finish_reason(
    client: openai.AsyncOpenAI, fake: FakeOpenAI
) -> None:
    fake.script({"text": "one two three four five", "cut_after_chunks": 3})
    seen: list[ChatCompletionChunk] = []

    stream = await client.chat.completions.create(model="gpt-4o-mini", messages=USER, stream=True)
    with pytest.raises(openai.APIConnectionError):
        await drain(stream, seen)

    assert len(seen) == 3
    assert text_of(seen) == "one two "
    assert all(c.choices[0].finish_reason is None for c in seen)


async def test_cut_non_streaming_answer_raises(
    client: openai.AsyncOpenAI, fake: FakeOpenAI
) -> None:
    fake.script({"text": "one two", "cut_after_chunks": 0})

    with pytest.raises(openai.APIConnectionError):
        await client.chat.completions.create(model="gpt-4o-mini", messages=USER)


async def test_malformed_chunk_makes_the_client_raise(
    client: openai.AsyncOpenAI, fake: FakeOpenAI
) -> None:
    fake.script({"text": "one two three", "malformed_after_chunks": 2})
    seen: list[ChatCompletionChunk] = []

    stream = await client.chat.completions.create(model="gpt-4o-mini", messages=USER, stream=True)
    with pytest.raises(json.JSONDecodeError):
        await drain(stream, seen)

    assert text_of(seen) == "one "


async def test_hang_triggers_the_client_timeout(
    client: openai.AsyncOpenAI, fake: FakeOpenAI
) -> None:
    fake.script({"hang_s": 5})
    started = time.monotonic()

    with pytest.raises(openai.APITimeoutError):
        await client.with_options(timeout=0.3).chat.completions.create(
            model="gpt-4o-mini", messages=USER
        )

    assert time.monotonic() - started < 2


async def test_pacing_delays_first_token_and_spaces_tokens(
    client: openai.AsyncOpenAI, fake: FakeOpenAI
) -> None:
    fake.script({"text": "a b c d e f g h i", "first_token_delay_s": 0.1, "tokens_per_second": 40})
    started = time.monotonic()
    stream = await client.chat.completions.create(model="gpt-4o-mini", messages=USER, stream=True)
    arrivals = [
        time.monotonic() - started async for chunk in stream if chunk.choices[0].delta.content
    ]

    assert len(arrivals) == 9
    assert arrivals[0] >= 0.1
    assert arrivals[-1] - arrivals[0] >= 8 / 40 - 0.02


async def test_match_routes_plans_by_last_user_message(
    client: openai.AsyncOpenAI, fake: FakeOpenAI
) -> None:
    fake.script({"text": "generic"}, {"match": "weather", "text": "Sunny."})

    async def ask(text: str) -> str:
        return text_of(await collect(client, messages=[{"role": "user", "content": text}]))

    assert await ask("what's the weather like?") == "Sunny."
    assert await ask("tell me about the weather") == "generic"
    assert await ask("weather again?") == "You said: weather again?"


async def test_request_log_records_bodies_in_order(
    client: openai.AsyncOpenAI, fake: FakeOpenAI
) -> None:
    await collect(client, messages=[{"role": "user", "content": "first"}])
    await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "second"}]
    )

    log = fake.requests("chat")
    assert [r["body"]["messages"][0]["content"] for r in log] == ["first", "second"]
    assert {r["path"] for r in log} == {"/v1/chat/completions"}
    assert log[0]["timestamp"] <= log[1]["timestamp"]
    assert log[0]["body"]["stream"] is True
    assert log[0]["headers"]["authorization"] == "Bearer test"
    fake.clear_requests()
    assert fake.requests() == []


async def test_control_api_over_http(fake: FakeOpenAI) -> None:
    async with httpx.AsyncClient(base_url=fake.base_url) as http:
        queued = await http.post("/_control/script", json=[{"text": "a"}, {"kind": "speech"}])
        assert queued.json()["queued"] == 2
        pending = (await http.get("/_control/script")).json()
        assert [p["kind"] for p in pending] == ["chat", "speech"]
        bad = await http.post("/_control/script", json={"txt": "typo"})
        assert bad.status_code == 422
        assert "txt" in bad.json()["error"]["message"]

        chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        answer = await http.post("/v1/chat/completions", json=chat)
        assert answer.json()["choices"][0]["message"]["content"] == "a"
        logged = (await http.get("/_control/requests")).json()
        assert [(r["kind"], r["body"]) for r in logged] == [("chat", chat)]

        assert (await http.delete("/_control/requests")).status_code == 200
        assert (await http.get("/_control/requests")).json() == []
        assert (await http.post("/_control/reset")).status_code == 200
        assert (await http.get("/_control/script")).json() == []


async def test_bad_requests_get_the_real_error_envelope(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(model="gpt-4o-mini", messages=[])
    assert caught.value.param == "messages"

    with pytest.raises(openai.NotFoundError):
        await client.embeddings.create(model="text-embedding-3-small", input="hi")


async def test_models_lists_the_default_model(client: openai.AsyncOpenAI) -> None:
    models = [m.id async for m in client.models.list()]

    assert "gpt-4o-mini" in models


async def test_transcription_checks_the_uploaded_bytes(
    client: openai.AsyncOpenAI, fake: FakeOpenAI
) -> None:
    audio = wav(0.5)
    digest = hashlib.sha256(audio).hexdigest()
    fake.script(
        {"transcript": "turn on the lights", "expect_sha256": digest},
        {"transcript": "never served", "expect_sha256": "0" * 64},
    )

    ok = await client.audio.transcriptions.create(
        model="whisper-1", file=("clip.wav", audio, "audio/wav"), language="en"
    )
    assert ok.text == "turn on the lights"
    with pytest.raises(openai.BadRequestError) as caught:
        await client.audio.transcriptions.create(model="whisper-1", file=("clip.wav", audio))
    assert caught.value.param == "file"

    log = fake.requests("transcription")
    assert log[0]["body"]["file"]["sha256"] == digest
    assert log[0]["body"]["file"]["bytes"] == len(audio)
    assert log[0]["body"]["language"] == "en"
    assert log[0]["path"] == "/v1/audio/transcriptions"


async def test_transcription_defaults_and_text_format(client: openai.AsyncOpenAI) -> None:
    default = await client.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav(0.1)))
    text = await client.audio.transcriptions.create(
        model="whisper-1", file=("a.wav", wav(0.1)), response_format="text"
    )

    assert default.text == "hello from the fake transcriber"
    assert text == "hello from the fake transcriber"


async def test_transcription_errors_are_scripted_like_chat(
    client: openai.AsyncOpenAI, fake: FakeOpenAI
) -> None:
    fake.script({"kind": "transcription", "error": {"status": 429, "retry_after": 1}})

    with pytest.raises(openai.RateLimitError):
        await client.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav(0.1)))


async def test_speech_returns_playable_wav(client: openai.AsyncOpenAI) -> None:
    short = await client.audio.speech.create(
        model="tts-1", voice="alloy", input="Hi.", response_format="wav"
    )
    long = await client.audio.speech.create(
        model="tts-1", voice="alloy", input="Hello there, this is a longer sentence."
    )

    assert short.content.startswith(b"RIFF")
    assert long.content.startswith(b"RIFF")
    with wave.open(io.BytesIO(long.content)) as audio:
        assert (audio.getnchannels(), audio.getsampwidth()) == (1, 2)
        assert audio.getnframes() > 0
    assert len(long.content) > len(short.content)


async def test_many_concurrent_streams(fake: FakeOpenAI) -> None:
    fake.script({"text": "a b c d e f g h", "tokens_per_second": 50, "times": None})
    host, port = fake.base_url.removeprefix("http://").split(":")

    async def stream() -> int:
        # Raw sockets keep the client cheap, so this measures the server.
        reader, writer = await asyncio.open_connection(host, int(port))
        body = json.dumps({"model": "m", "stream": True, "messages": USER}).encode()
        head = f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
        writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        raw = await reader.read()
        writer.close()
        await writer.wait_closed()
        return raw.count(b"data: ")

    # Each stream costs a client and a server descriptor in this one process.
    soft_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    streams = min(1000, (soft_limit - 200) // 2)
    counts = await asyncio.gather(*(stream() for _ in range(streams)))

    assert set(counts) == {11}


def test_cli_serves_on_the_port_it_prints() -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "voicestack.testing.fake_openai", "--port", "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            url = line.strip().rsplit(" ", 1)[-1]
            assert url.startswith("http://127.0.0.1:")
            with openai.OpenAI(base_url=f"{url}/v1", api_key="test", max_retries=0) as sync:
                answer = sync.chat.completions.create(model="gpt-4o-mini", messages=USER)
            assert answer.choices[0].message.content == "You said: hello there friend"
        finally:
            proc.terminate()
            proc.wait(timeout=10)
