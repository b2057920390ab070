"""The fake OpenAI server's misbehaving streams, on the wire: a stream that idles while kept
alive with SSE comments or empty deltas, and a whole completion answered to a stream request."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.support.openai_chat import USER
from voicestack.testing.fake_openai import FakeOpenAI

pytestmark = pytest.mark.anyio

STREAM = {"model": "gpt-4o-mini", "messages": USER, "stream": True}


async def post(fake: FakeOpenAI, plan: dict[str, Any]) -> httpx.Response:
    fake.script(plan)
    async with httpx.AsyncClient(base_url=fake.base_url, timeout=10) as http:
        return await http.post("/v1/chat/completions", json=STREAM)


async def test_a_stall_kept_alive_with_comments_sends_comment_lines_between_chunks(
    fake: FakeOpenAI,
) -> None:
    plan = {"text": "a b", "stall_after_chunks": 2, "stall_s": 0.35, "keepalive_s": 0.1}

    events = (await post(fake, plan)).text.split("\n\n")

    assert events[2:5] == [": keepalive"] * 3
    data = [json.loads(e.removeprefix("data: ")) for e in events[:2] + events[5:-2]]
    assert [c["choices"][0]["delta"].get("content") for c in data] == ["", "a ", "b", None]
    assert events[-2:] == ["data: [DONE]", ""]


async def test_a_stall_kept_alive_with_empty_deltas_sends_chunks_with_empty_content(
    fake: FakeOpenAI,
) -> None:
    plan = {
        "text": "a",
        "stall_after_chunks": 1,
        "stall_s": 0.25,
        "keepalive_s": 0.1,
        "keepalive": "empty_delta",
    }

    events = (await post(fake, plan)).text.split("\n\n")

    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-2]]
    assert [c["choices"][0] for c in chunks[1:3]] == [
        {"index": 0, "delta": {"content": ""}, "logprobs": None, "finish_reason": None}
    ] * 2
    assert len({c["id"] for c in chunks}) == 1
    assert [c["choices"][0]["delta"].get("content") for c in chunks[3:]] == ["a", None]


async def test_a_whole_completion_answers_a_stream_request_with_json(fake: FakeOpenAI) -> None:
    response = await post(fake, {"text": "All at once.", "whole_completion": True})

    assert response.headers["content-type"] == "application/json"
    completion = response.json()
    assert completion["object"] == "chat.completion"
    assert completion["choices"][0]["message"]["content"] == "All at once."
    assert completion["choices"][0]["finish_reason"] == "stop"
