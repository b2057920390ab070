"""Streamed chat completions from any OpenAI-compatible API, with retries and clear errors."""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import os
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import openai
from openai.types.chat import ChatCompletionMessageParam

from voicestack.agent.llm_calls import (
    StreamLimitReached,
    StreamLimits,
    ToolCallAssembler,
    ToolCallRequest,
)
from voicestack.agent.llm_wire import NotAChunk, choices_of, completion_text, sse_chunks

NOT_CONFIGURED_MESSAGE = (
    "No model provider is configured: set OPENAI_API_KEY, "
    "or --openai-base-url for an OpenAI-compatible server."
)
# Local servers ignore the key, but the client refuses to start without one.
_PLACEHOLDER_API_KEY = "no-key-needed"
_BACKOFF_BASE_S = 0.5
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_DETAIL_LIMIT = 300

T = TypeVar("T")


@dataclass(frozen=True)
class ProviderSettings:
    """Where and how to call the model; base_url None means OpenAI's own API."""

    base_url: str | None
    api_key: str | None = field(repr=False)
    model: str = "gpt-4o-mini"
    temperature: float | None = None
    timeout_s: float = 60.0
    max_retries: int = 3
    retry_cap_s: float = 30.0


class ProviderError(Exception):
    """A failed model call: a snake_case `code`, a human `message`, and whether a retry may help."""

    def __init__(self, code: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable


@dataclass(frozen=True)
class TextDelta:
    """A piece of the reply's text, as it arrived."""

    text: str


@dataclass(frozen=True)
class Usage:
    """The tokens the provider counted for this completion."""

    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Finish:
    """The end of the stream and why the model stopped ("stop", "tool_calls", "length", ...)."""

    reason: str


StreamEvent = TextDelta | ToolCallRequest | Usage | Finish


_FAILURES = (openai.OpenAIError, json.JSONDecodeError, UnicodeDecodeError, NotAChunk)


@dataclass
class _Progress:
    """How far one attempt got, which decides both the error code and whether to retry."""

    responded: bool = False
    yielded: bool = False


class ChatProvider:
    """Streams chat completions from one OpenAI-compatible provider."""

    def __init__(self, settings: ProviderSettings) -> None:
        """Prepare a client for the settings; nothing touches the network yet."""
        self.settings = settings
        self._client: openai.AsyncOpenAI | None = None
        if self.configured:
            self._client = openai.AsyncOpenAI(
                base_url=settings.base_url,
                api_key=settings.api_key or _PLACEHOLDER_API_KEY,
                max_retries=0,  # retries are ours: only before any output has streamed
                timeout=settings.timeout_s,
            )

    @property
    def configured(self) -> bool:
        """False when neither an API key nor a base URL is set."""
        return bool(self.settings.api_key or self.settings.base_url)

    async def stream(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        limits: StreamLimits | None = None,
    ) -> AsyncIterator[StreamEvent]:
        """Yield text deltas, then complete tool calls, then Usage, then Finish; or raise.

        Raises ProviderError, or StreamLimitReached once the text up to `limits` is yielded.
        A provider that answers a whole completion instead of a stream gets its text yielded,
        then ProviderError `provider_not_streaming`.
        """
        if self._client is None:
            raise ProviderError("provider_not_configured", NOT_CONFIGURED_MESSAGE)
        retries = max(0, self.settings.max_retries)
        for attempt in range(retries + 1):
            progress = _Progress()
            try:
                events = self._attempt(self._client, messages, tools, progress, limits)
                async with aclosing(events) as it:
                    async for event in it:
                        progress.yielded = True
                        yield event
            except _FAILURES as exc:
                error = self._error_for(exc, progress, attempt)
                # Once output has streamed the caller keeps it; a retry would repeat it.
                if progress.yielded or not error.retryable or attempt == retries:
                    raise error from exc
                await asyncio.sleep(self._retry_delay(exc, attempt))
            else:
                return

    async def request(self, model: str, send: Callable[[openai.AsyncOpenAI], Awaitable[T]]) -> T:
        """One request that is not a chat stream (transcription, speech) to the same provider.

        `send(client)` makes the call; it gets the chat's retries (429 and 5xx, with backoff or
        the provider's Retry-After) and its errors the same clear ProviderError, naming `model`.
        """
        if self._client is None:
            raise ProviderError("provider_not_configured", NOT_CONFIGURED_MESSAGE)
        retries = max(0, self.settings.max_retries)
        for attempt in range(retries + 1):
            try:
                return await send(self._client)
            except _FAILURES as exc:
                error = self._error_for(exc, _Progress(), attempt, model)
                if not error.retryable or attempt == retries:
                    raise error from exc
                await asyncio.sleep(self._retry_delay(exc, attempt))
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def aclose(self) -> None:
        """Close the provider's connections."""
        if self._client is not None:
            await self._client.close()

    async def _attempt(
        self,
        client: openai.AsyncOpenAI,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        progress: _Progress,
        limits: StreamLimits | None,
    ) -> AsyncGenerator[StreamEvent, None]:
        options: dict[str, Any] = {"tools": tools} if tools else {}
        if self.settings.temperature is not None:
            options["temperature"] = self.settings.temperature
        # The raw event stream, parsed here: the SDK's per-chunk model objects cost more CPU than
        # everything else a streamed token does in this server (bench/stream.py).
        request = client.chat.completions.with_streaming_response.create(
            model=self.settings.model,
            # Our messages are plain JSON dicts in the wire shape the SDK spells as TypedDicts.
            messages=cast(list[ChatCompletionMessageParam], messages),
            stream=True,
            stream_options={"include_usage": True},
            **options,
        )
        limits = limits or StreamLimits()
        calls = ToolCallAssembler(limits.max_tool_calls)
        left = limits.max_chars if limits.max_chars is not None else math.inf
        usage: Usage | None = None
        finish: str | None = None
        async with request as response:
            progress.responded = True
            if response.headers.get("content-type", "").startswith("application/json"):
                text = await completion_text(response)
                if text:
                    yield TextDelta(text if len(text) <= left else text[: int(left)])
                raise self._not_streaming()
            async for chunk in sse_chunks(response):
                choices = choices_of(chunk)
                counted = chunk.get("usage")
                if counted is not None:
                    counts = counted.get("prompt_tokens"), counted.get("completion_tokens")
                    usage = Usage(*(count if isinstance(count, int) else 0 for count in counts))
                for choice in choices:
                    if choice.get("index") not in (0, None):
                        continue
                    delta = choice.get("delta")
                    if delta is not None:
                        content = delta.get("content")
                        if content:
                            if len(content) > left:
                                if left:
                                    yield TextDelta(content[: int(left)])
                                raise StreamLimitReached("chars")
                            left -= len(content)
                            yield TextDelta(content)
                        for fragment in delta.get("tool_calls") or ():
                            left -= calls.add(fragment)
                            if left < 0:
                                raise StreamLimitReached("chars")
                    reason = choice.get("finish_reason")
                    if reason and finish is None:
                        finish = reason
                        for request_ in calls.drain():
                            yield request_
        for request_ in calls.drain():
            yield request_
        if usage is not None:
            yield usage
        # A stream that ends without a finish_reason is taken at its word.
        yield Finish(finish or ("tool_calls" if calls.total else "stop"))

    def _not_streaming(self) -> ProviderError:
        where = _display_url(str(self._client.base_url if self._client else ""))
        return ProviderError(
            "provider_not_streaming",
            f"The model provider at {where} answered with a whole completion (application/json)"
            " instead of an event stream; use a server that streams chat completions.",
        )

    def _retry_delay(self, exc: Exception, attempt: int) -> float:
        cap = self.settings.retry_cap_s
        if isinstance(exc, openai.APIStatusError):
            asked = _retry_after(exc.response.headers)
            if asked is not None:
                return min(cap, asked)
        return min(cap, _BACKOFF_BASE_S * 2.0**attempt) * random.uniform(0.75, 1.0)

    def _error_for(
        self, exc: Exception, progress: _Progress, retries: int, model: str | None = None
    ) -> ProviderError:
        code, message, retryable = self._describe(
            exc, progress, _after(retries), model or self.settings.model
        )
        if self.settings.api_key:
            message = message.replace(self.settings.api_key, "[redacted]")
        return ProviderError(code, message, retryable=retryable)

    def _describe(
        self, exc: Exception, progress: _Progress, after: str, model: str
    ) -> tuple[str, str, bool]:
        where = _display_url(str(self._client.base_url if self._client else ""))
        if isinstance(exc, openai.APITimeoutError):
            late = "went silent mid-reply for" if progress.responded else "did not answer within"
            message = f"The model provider at {where} {late} {self.settings.timeout_s:g} s{after}."
            return "provider_timeout", message, True
        if isinstance(exc, openai.APIConnectionError) and progress.responded:
            broken = f"The model provider's stream was cut off mid-reply{after} ({_reason(exc)})."
            return "provider_stream_broken", broken, True
        if isinstance(exc, openai.APIConnectionError):
            return (
                "provider_unreachable",
                f"Could not connect to the model provider at {where}{after} ({_reason(exc)}). "
                "Check that it is running and that the base URL is right.",
                True,
            )
        if isinstance(exc, openai.APIStatusError):
            return _describe_status(exc.status_code, _detail(exc), model, after)
        if isinstance(exc, openai.OpenAIError):
            return "provider_error", f"The model provider reported an error: {_detail(exc)}.", False
        if isinstance(exc, json.JSONDecodeError):
            bad = f"a stream chunk that is not valid JSON ({exc.msg} at character {exc.pos})"
        elif isinstance(exc, UnicodeDecodeError):
            bad = "a stream that is not UTF-8"
        else:
            bad = f"data that is not a chat completion chunk: {exc}"
        return "provider_bad_response", f"The model provider sent {bad}.", False


def _describe_status(status: int, detail: str, model: str, after: str) -> tuple[str, str, bool]:
    """Code, message and retryability for an HTTP error status the provider answered."""
    http = f"HTTP {status}: {detail}" if detail else f"HTTP {status}, with no explanation"
    if status == 401:
        message = f"The model provider rejected the API key ({http}). Check OPENAI_API_KEY."
        return "provider_auth_failed", message, False
    if status == 403:
        message = f"The model provider refused access ({http}). Check that the key may use"
        return "provider_auth_failed", f"{message} model {model!r}.", False
    if status == 429:
        message = f"The model provider is rate limiting requests ({http}){after}."
        return "provider_rate_limited", f"{message} Wait a moment and try again.", True
    if status >= 500:
        message = f"The model provider failed ({http}){after}."
        return "provider_error", message, status in _RETRY_STATUSES
    hint = f" Check the model name {model!r} and the base URL." if status == 404 else ""
    return "provider_bad_request", f"The model provider rejected the request ({http}).{hint}", False


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds the provider asked to wait: retry-after-ms, or Retry-After seconds or HTTP-date."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        try:
            seconds = float(headers.get(name, "")) * scale
        except ValueError:
            continue
        if math.isfinite(seconds):
            return max(0.0, seconds)
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, moment.timestamp() - time.time())


def _after(retries: int) -> str:
    if not retries:
        return ""
    return f" after {retries} {'retry' if retries == 1 else 'retries'}"


def _detail(exc: openai.OpenAIError) -> str:
    """The provider's own error message, on one line and not too long ('' when it gave none)."""
    message = _explanation(getattr(exc, "body", None))
    if message is None and not isinstance(exc, openai.APIStatusError):
        message = str(exc)  # the client's own words; a status error's are only "Error code: N"
    text = " ".join((message or "").split()).rstrip(".")
    return text if len(text) <= _DETAIL_LIMIT else text[: _DETAIL_LIMIT - 3] + "..."


def _explanation(body: object) -> str | None:
    """The text of an error body in the shapes providers use: OpenAI's `{"message"}`, Ollama's
    `{"error": "..."}`, FastAPI's `{"detail": "..."}`, or plain text."""
    if isinstance(body, str):
        return body if body.strip() else None
    if isinstance(body, dict):
        for key in ("message", "error", "detail"):
            found = _explanation(body.get(key))
            if found is not None:
                return found
    return None


def _reason(exc: BaseException) -> str:
    """The deepest cause of a transport failure in its own words, e.g. "Connection refused"."""
    for _ in range(10):
        inner = exc.__cause__ or exc.__context__
        if inner is None:
            break
        exc = inner
    if isinstance(exc, OSError) and exc.errno and exc.errno > 0:
        return os.strerror(exc.errno)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _display_url(url: str) -> str:
    """The URL without credentials or query, safe to show in an error message."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}{parts.path}".rstrip("/")
