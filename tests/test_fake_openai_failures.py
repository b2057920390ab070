"""Failures the fake OpenAI server is scripted to make, as the real openai client sees them:
error statuses, Retry-After, cut and malformed streams, hangs, bad requests."""

from __future__ import annotations

import json
import time

import openai
import pytest
from openai.types.chat import ChatCompletionChunk

from tests.support.openai_chat import USER, collect, drain, text_of
from voicestack.testing.fake_openai import FakeOpenAI

pytestmark = pytest.mark.anyio


async def test_rate_limit_with_retry_after_then_success(
    openai_client: openai.AsyncOpenAI, fake: FakeOpenAI
) -> None:
    fake.script({"error": {"status": 429, "retry_after": 2}, "times": 2}, {"text": "finally"})

    for _ in range(2):
        with pytest.raises(openai.RateLimitError) as caught:
            await collect(openai_client)
        assert caught.value.response.headers["retry-after"] == "2"
        assert caught.value.code == "rate_limit_exceeded"
        assert caught.value.type == "requests"
    assert text_of(await collect(openai_client)) == "finally"
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
    openai_client: openai.AsyncOpenAI, fake: FakeOpenAI, status: int, error: type[Exception]
) -> None:
    fake.script({"error": {"status": status, "message": f"scripted {status}"}})

    with pytest.raises(error) as caught:
        await collect(openai_client)

    assert isinstance(caught.value, openai.APIStatusError)
    assert caught.value.status_code == status
    assert caught.value.message.endswith(f"scripted {status}")
    body = caught.value.body
    assert isinstance(body, dict)
    assert body.keys() == {"message", "type", "param", "code"}


async def test_authentication_error_has_the_real_error_code(
    openai_client: openai.AsyncOpenAI, fake: FakeOpenAI
) -> None:
    fake.script({"error": {"status": 401}})

    with pytest.raises(openai.AuthenticationError) as caught:
        await openai_client.chat.completions.create(model="gpt-4o-mini", messages=USER)

    assert caught.value.code == "invalid_api_key"
    assert caught.value.type == "invalid_request_error"


async def test_cut_stream_raises_before_a_finish_reason(
    openai_client: openai.AsyncOpenAI, fake: FakeOpenAI
) -> None:
    fake.script({"text": "one two three four five", "cut_after_chunks": 3})
    seen: list[ChatCompletionChunk] = []

    stream = await openai_client.chat.completions.create(
        model="gpt-4o-mini", messages=USER, stream=True
    )
    with pytest.raises(openai.APIConnectionError):
        await drain(stream, seen)

    assert len(seen) == 3
    assert text_of(seen) == "one two "
    assert all(c.choices[0].finish_reason is None for c in seen)


async def test_cut_non_streaming_answer_raises(
    openai_client: openai.AsyncOpenAI, fake: FakeOpenAI
) -> None:
    fake.script({"text": "one two", "cut_after_chunks": 0})

    with pytest.raises(openai.APIConnectionError):
        await openai_client.chat.completions.create(model="gpt-4o-mini", messages=USER)


async def test_malformed_chunk_makes_the_client_raise(
    openai_client: openai.AsyncOpenAI, fake: FakeOpenAI
) -> None:
    fake.script({"text": "one two three", "malformed_after_chunks": 2})
    seen: list[ChatCompletionChunk] = []

    stream = await openai_client.chat.completions.create(
        model="gpt-4o-mini", messages=USER, stream=True
    )
    with pytest.raises(json.JSONDecodeError):
        await drain(stream, seen)

    assert text_of(seen) == "one "


async def test_hang_triggers_the_client_timeout(
    openai_client: openai.AsyncOpenAI, fake: FakeOpenAI
) -> None:
    fake.script({"hang_s": 5})
    started = time.monotonic()

    with pytest.raises(openai.APITimeoutError):
        await openai_client.with_options(timeout=0.3).chat.completions.create(
            model="gpt-4o-mini", messages=USER
        )

    assert time.monotonic() - started < 2


async def test_bad_requests_get_the_real_error_envelope(openai_client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await openai_client.chat.completions.create(model="gpt-4o-mini", messages=[])
    assert caught.value.param == "messages"

    with pytest.raises(openai.NotFoundError):  # a route the fake does not serve
        await openai_client.images.generate(model="dall-e-3", prompt="hi")
