"""Chat Completions answers of the fake OpenAI server: streamed chunks or one completion."""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.responses import Response, StreamingResponse

from voicestack.testing.fake_openai.plan import Plan
from voicestack.testing.fake_openai.wire import StreamCut, dumps, new_id, request_id, sse

_WORD = re.compile(r"\s*\S+\s*")
_ARGUMENT_PIECE = 8
_FINGERPRINT = "fp_fake0001"
# What a client sees when a scripted malformed line arrives: a truncated JSON object.
_MALFORMED = b'data: {"id":"chatcmpl-broken","object":"chat.completion.chunk","choices":[{\n\n'


@dataclass
class ToolCallOut:
    """A tool call as it will be emitted: its id, name and argument fragments."""

    id: str
    name: str
    fragments: list[str]

    @property
    def arguments(self) -> str:
        """Return the full argument string."""
        return "".join(self.fragments)


@dataclass
class ChatReply:
    """Everything the fake model says in answer to one chat request."""

    pieces: list[str]
    tool_calls: list[ToolCallOut] = field(default_factory=list)
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def text(self) -> str:
        """Return the full reply text."""
        return "".join(self.pieces)


def message_text(message: Any) -> str:
    """Return the text of a chat message whose content is a string or a list of parts."""
    if not isinstance(message, dict):
        return ""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [p.get("text", "") for p in content if isinstance(p, dict)]
        return " ".join(t for t in texts if isinstance(t, str))
    return ""


def last_user_text(messages: list[Any]) -> str:
    """Return the text of the last user message, or "" when there is none."""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return message_text(message)
    return ""


def split_text(text: str, chunk_chars: int | None = None) -> list[str]:
    """Split text into token-like pieces (words with their trailing whitespace) or fixed sizes."""
    if chunk_chars:
        return [text[i : i + chunk_chars] for i in range(0, len(text), chunk_chars)]
    pieces = _WORD.findall(text)
    return pieces or ([text] if text else [])


def split_arguments(arguments: str, chunk_chars: int | None = None) -> list[str]:
    """Split an argument string into at least two fragments whenever it has two characters."""
    size = min(chunk_chars or _ARGUMENT_PIECE, max(1, math.ceil(len(arguments) / 2)))
    return [arguments[i : i + size] for i in range(0, len(arguments), size)]


def build_reply(plan: Plan, body: dict[str, Any]) -> ChatReply:
    """Decide the reply for a chat request: the plan's, or an echo of the last user message."""
    messages = body.get("messages") or []
    chunk_chars = plan.chunk_chars
    if plan.text is not None or plan.tool_calls:
        text = plan.text or ""
    else:
        said = last_user_text(messages).strip()
        text = f"You said: {said}" if said else "You said nothing."
    pieces = split_text(text, chunk_chars)
    calls = [
        ToolCallOut(
            id=call.id or new_id("call_"),
            name=call.name,
            fragments=split_arguments(call.arguments_json(), chunk_chars),
        )
        for call in plan.tool_calls
    ]
    finish = "tool_calls" if calls else "stop"
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if isinstance(limit, int) and limit < len(pieces):
        pieces, calls, finish = pieces[:limit], [], "length"
    reply = ChatReply(pieces=pieces, tool_calls=calls, finish_reason=finish)
    reply.prompt_tokens = sum(len(message_text(m).split()) for m in messages)
    reply.completion_tokens = len(pieces) + sum(len(c.fragments) for c in calls)
    if plan.finish_reason is not None:
        reply.finish_reason = plan.finish_reason
    if plan.usage is not None and plan.usage.prompt_tokens is not None:
        reply.prompt_tokens = plan.usage.prompt_tokens
    if plan.usage is not None and plan.usage.completion_tokens is not None:
        reply.completion_tokens = plan.usage.completion_tokens
    return reply


def usage_object(reply: ChatReply) -> dict[str, Any]:
    """Return the `usage` object the real API reports."""
    return {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def stream_chunks(
    reply: ChatReply, *, model: str, include_usage: bool
) -> list[tuple[dict[str, Any], bool]]:
    """Return every chunk of the stream, each flagged True when it carries generated tokens."""
    completion_id, created = new_id("chatcmpl-"), int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": _FINGERPRINT,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            out["usage"] = None
        return out

    chunks: list[tuple[dict[str, Any], bool]] = []
    role: dict[str, Any] = {"role": "assistant", "content": "", "refusal": None}
    if reply.pieces or not reply.tool_calls:
        chunks.append((chunk(role), False))
        role = {}
    chunks.extend((chunk({"content": piece}), True) for piece in reply.pieces)
    for index, call in enumerate(reply.tool_calls):
        head = {
            "index": index,
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        # Like the real API, a tool-only reply announces the role on the first tool chunk.
        first = {**role, "content": None, "tool_calls": [head]} if role else {"tool_calls": [head]}
        role = {}
        chunks.append((chunk(first), True))
        chunks.extend(
            (chunk({"tool_calls": [{"index": index, "function": {"arguments": frag}}]}), True)
            for frag in call.fragments
        )
    chunks.append((chunk({}, reply.finish_reason), False))
    if include_usage:
        final = chunk({})
        final["choices"], final["usage"] = [], usage_object(reply)
        chunks.append((final, False))
    return chunks


def completion_object(reply: ChatReply, *, model: str) -> dict[str, Any]:
    """Return the non-streaming `chat.completion` object for a reply."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": reply.text if reply.pieces or not reply.tool_calls else None,
        "refusal": None,
        "annotations": [],
    }
    if reply.tool_calls:
        message["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in reply.tool_calls
        ]
    return {
        "id": new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": reply.finish_reason}
        ],
        "usage": usage_object(reply),
        "service_tier": "default",
        "system_fingerprint": _FINGERPRINT,
    }


async def sse_events(chunks: list[tuple[dict[str, Any], bool]], plan: Plan) -> AsyncIterator[bytes]:
    """Yield the SSE stream with the plan's pacing and injected faults, ending in [DONE]
    (unless the plan ends it sooner)."""
    loop = asyncio.get_running_loop()
    if plan.first_token_delay_s:
        await asyncio.sleep(plan.first_token_delay_s)
    interval = 1 / plan.tokens_per_second if plan.tokens_per_second else 0.0
    # Pace against absolute deadlines so sleep jitter does not accumulate over long replies.
    started, tokens = loop.time(), 0
    for sent, (chunk, carries_tokens) in enumerate([*chunks, (None, False)]):
        if plan.malformed_after_chunks == sent:
            yield _MALFORMED
        if plan.cut_after_chunks == sent:
            raise StreamCut(f"scripted cut after {sent} chunks")
        if plan.end_after_chunks == sent:
            return  # a whole body, but no finish_reason and no [DONE]
        if plan.stall_after_chunks == sent:
            async for beat in _stall(chunks[0][0], plan):
                yield beat
        if chunk is None:
            break
        if carries_tokens and interval:
            await asyncio.sleep(max(0.0, started + tokens * interval - loop.time()))
            tokens += 1
        yield sse(dumps(chunk))
    yield sse("[DONE]")


async def _stall(envelope: dict[str, Any], plan: Plan) -> AsyncIterator[bytes]:
    """Idle for `plan.stall_s`, sending only keep-alives every `plan.keepalive_s` (if set):
    SSE comment lines, or chunks whose delta carries an empty content string."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    empty = {**envelope, "choices": [{**envelope["choices"][0], "delta": {"content": ""}}]}
    beat = sse(dumps(empty)) if plan.keepalive == "empty_delta" else b": keepalive\n\n"
    # One beat per whole interval of the stall, on absolute deadlines: however late the loop
    # runs, the count is the same.
    beats = math.ceil(plan.stall_s / plan.keepalive_s) - 1 if plan.keepalive_s else 0
    for n in range(1, beats + 1):
        await asyncio.sleep(max(0.0, start + n * (plan.keepalive_s or 0) - loop.time()))
        yield beat
    await asyncio.sleep(max(0.0, start + plan.stall_s - loop.time()))


def chat_response(plan: Plan | None, body: dict[str, Any]) -> Response:
    """Answer a validated chat request according to the plan (None: default echo reply)."""
    plan = plan or Plan()
    reply = build_reply(plan, body)
    model = str(body["model"])
    headers = {"x-request-id": request_id()}
    if body.get("stream") and not plan.whole_completion:
        options = body.get("stream_options") or {}
        include_usage = bool(isinstance(options, dict) and options.get("include_usage"))
        chunks = stream_chunks(reply, model=model, include_usage=include_usage)
        return StreamingResponse(
            sse_events(chunks, plan),
            media_type="text/event-stream; charset=utf-8",
            headers={**headers, "cache-control": "no-cache"},
        )
    payload = dumps(completion_object(reply, model=model)).encode()
    if plan.malformed_after_chunks is not None:
        payload = payload[: len(payload) // 2]
    if plan.cut_after_chunks is not None or plan.first_token_delay_s or plan.tokens_per_second:
        return StreamingResponse(
            _whole_body(payload, plan, len(reply.pieces)),
            media_type="application/json",
            headers=headers,
        )
    return Response(payload, media_type="application/json", headers=headers)


async def _whole_body(payload: bytes, plan: Plan, tokens: int) -> AsyncIterator[bytes]:
    # A non-streaming answer still takes the time its generation would have taken.
    generation = tokens / plan.tokens_per_second if plan.tokens_per_second else 0.0
    await asyncio.sleep(plan.first_token_delay_s + generation)
    if plan.cut_after_chunks is not None:
        yield payload[: len(payload) // 2]
        raise StreamCut("scripted cut of a non-streaming answer")
    yield payload
