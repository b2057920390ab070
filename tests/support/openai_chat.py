"""The fake OpenAI server read with the real openai client: chat requests and their chunks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import openai
from openai.types.chat import ChatCompletionChunk

USER = [{"role": "user", "content": "hello there friend"}]


async def collect(client: openai.AsyncOpenAI, **kwargs: Any) -> list[ChatCompletionChunk]:
    """Every chunk of one streamed chat completion (by default gpt-4o-mini answering USER)."""
    kwargs.setdefault("model", "gpt-4o-mini")
    kwargs.setdefault("messages", USER)
    stream = await client.chat.completions.create(stream=True, **kwargs)
    return [chunk async for chunk in stream]


async def drain(
    stream: AsyncIterator[ChatCompletionChunk], into: list[ChatCompletionChunk]
) -> None:
    """Append each chunk of `stream` to `into`, so a caller keeps them when the stream raises."""
    async for chunk in stream:
        into.append(chunk)


def text_of(chunks: list[ChatCompletionChunk]) -> str:
    """The text the chunks stream."""
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def finish_of(chunks: list[ChatCompletionChunk]) -> str | None:
    """The finish reason of the last chunk with a choice; asserts no earlier one has one."""
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert all(r is None for r in reasons[:-1])
    return reasons[-1]
