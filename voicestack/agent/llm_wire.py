"""Reading a chat-completions event stream directly: lines, JSON chunks, shape checks.

Parsing the `data:` lines ourselves instead of letting the SDK build a pydantic object per chunk
cut ingest from about 209 to 89 µs per chunk (bench/stream.py); transport failures are still
raised as the SDK's own APITimeoutError / APIConnectionError, so error mapping is unchanged.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

log = logging.getLogger(__name__)


# openai on plain httpx raises httpx's errors; openai 3 runs on its own httpx fork and names
# which of its errors are which, so its functions answer where it is installed. Both are asked
# only once a call failed, by then with the SDK loaded.
def timeout_exceptions() -> tuple[type[Exception], ...]:
    """The transport's timeout errors."""
    try:
        from openai._httpx2 import timeout_exceptions as sdk_timeouts
    except ImportError:
        return (httpx.TimeoutException,)
    return sdk_timeouts()


def request_exceptions() -> tuple[type[Exception], ...]:
    """The transport's other request errors (connection refused, reset, protocol)."""
    try:
        from openai._httpx2 import request_exceptions as sdk_requests
    except ImportError:
        return (httpx.RequestError,)
    return sdk_requests()


# A whole completion answered instead of a stream is read up to this size for its text.
WHOLE_BODY_LIMIT = 4 * 1024 * 1024
# What is read of a stream after its `[DONE]`, at most: normally just the end of the body.
AFTER_DONE_LIMIT_CHARS = 64 * 1024
AFTER_DONE_TIMEOUT_S = 0.25


class NotAChunk(ValueError):
    """Stream data that parsed as JSON but is not a chat completion chunk."""


class NotAStream(ValueError):
    """A stream request answered with a body that held no event at all, in a type that is not
    an event stream (a web page, most often: a base URL that misses the API's path). The
    argument is the answer's media type ('' when it gave none)."""


def media_type(headers: Mapping[str, str]) -> str:
    """An answer's media type, lower case, without its parameters ('' when not given)."""
    return headers.get("content-type", "").split(";")[0].strip().lower()


# What one attempt can fail with; anything else is a bug and propagates as itself.


@dataclass
class StreamEnd:
    """How a chat completion event stream ended (sse_chunks)."""

    done: bool = False  # with `[DONE]`; False: the body just ended
    events: int = 0  # data events read, `[DONE]` included


async def sse_chunks(response: Any, end: StreamEnd | None = None) -> AsyncIterator[dict[str, Any]]:
    """The JSON objects of a chat completion event stream, up to `[DONE]`; `end.done` says
    whether `[DONE]` came.

    Mirrors the SDK's own reading: `data:` lines joined per event, other fields ignored, an
    event whose object carries `error` raised as the provider's APIError.
    """
    data: list[str] = []
    lines = _lines(response)
    async for line in lines:
        if line:
            if line.startswith("data:"):
                data.append(line[6:] if line.startswith("data: ") else line[5:])
            continue
        if not data:
            continue
        payload, data = "\n".join(data), []
        if end is not None:
            end.events += 1
        if payload.startswith("[DONE]"):
            if end is not None:
                end.done = True
            await _read_to_end(lines)
            return
        chunk = json.loads(payload)
        if isinstance(chunk, dict) and chunk.get("error"):
            import openai  # the SDK loads on first use (voicestack/agent/llm.py)

            error = chunk["error"]
            message = error.get("message") if isinstance(error, dict) else None
            raise openai.APIError(
                message if isinstance(message, str) else "An error occurred during streaming",
                response.http_request,
                body=error,
            )
        yield chunk


async def _read_to_end(lines: AsyncIterator[str]) -> None:
    """Read what follows `[DONE]` (normally only the end of the chunked body), so that the
    connection goes back to the client's pool: a body left unread closes it, and every reply
    would then open a new connection (a TLS handshake's round trips before its first token).
    A provider that goes on sending, stays open or drops the connection there is left as is:
    the reply is already whole."""
    import openai  # the SDK loads on first use (voicestack/agent/llm.py)

    left = AFTER_DONE_LIMIT_CHARS
    try:
        async with asyncio.timeout(AFTER_DONE_TIMEOUT_S):
            async for line in lines:
                left -= len(line) + 1
                if left < 0:
                    return
    except TimeoutError:
        log.debug(
            "a chat stream went on past [DONE] for %.2f s; its connection is let go",
            AFTER_DONE_TIMEOUT_S,
        )
    except openai.APIConnectionError:
        pass  # the provider closed it: the next call opens another


async def _lines(response: Any) -> AsyncIterator[str]:
    """The response's lines, with transport failures raised as the SDK raises them, then one
    empty line: a last event whose body ends without its blank line is still read, as the
    SDKs read it (some gateways end a stream so)."""
    import openai  # the SDK loads on first use (voicestack/agent/llm.py)

    try:
        async for line in response.iter_lines():
            yield line
    except timeout_exceptions() as exc:
        raise openai.APITimeoutError(request=response.http_request) from exc
    except request_exceptions() as exc:
        raise openai.APIConnectionError(request=response.http_request) from exc
    yield ""


async def completion_text(response: Any) -> str:
    """The reply text of a whole (non-stream) chat completion body: its first choice's message
    content, or "" when the body is not one or is over WHOLE_BODY_LIMIT bytes."""
    import openai  # the SDK loads on first use (voicestack/agent/llm.py)

    body = bytearray()
    try:
        async for piece in response.iter_bytes():
            body += piece
            if len(body) > WHOLE_BODY_LIMIT:
                return ""
    except timeout_exceptions() as exc:
        raise openai.APITimeoutError(request=response.http_request) from exc
    except request_exceptions() as exc:
        raise openai.APIConnectionError(request=response.http_request) from exc
    try:
        completion = json.loads(body)
    except ValueError:
        return ""
    choices = completion.get("choices") if isinstance(completion, dict) else None
    first = choices[0] if isinstance(choices, list) and choices else None
    message = first.get("message") if isinstance(first, dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, str) else ""


def choices_of(chunk: object) -> list[dict[str, Any]]:
    """The chunk's choices; raises NotAChunk for stream data of any other shape."""
    if isinstance(chunk, dict):
        usage = chunk.get("usage")
        choices = chunk.get("choices")
        if _optional(usage, dict):
            # The usage chunk of some servers has no choices at all.
            if choices is None and usage is not None:
                return []
            if isinstance(choices, list) and all(_is_choice(c) for c in choices):
                return choices
    raise NotAChunk(repr(chunk)[:100])


def _is_choice(choice: object) -> bool:
    if not isinstance(choice, dict):
        return False
    delta = choice.get("delta")
    if delta is None:
        return True
    if not isinstance(delta, dict):
        return False
    calls = delta.get("tool_calls")
    return _optional(delta.get("content"), str) and (
        calls is None or (isinstance(calls, list) and all(_is_tool_call(c) for c in calls))
    )


def _is_tool_call(call: object) -> bool:
    if not isinstance(call, dict):
        return False
    function = call.get("function")
    if function is None:
        return True
    return (
        isinstance(function, dict)
        and _optional(function.get("name"), str)
        and _optional(function.get("arguments"), str)
    )


def _optional(value: object, kind: type) -> bool:
    return value is None or isinstance(value, kind)
