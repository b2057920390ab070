"""Streamed chat completions from any OpenAI-compatible API, with retries and clear errors.

The OpenAI SDK is imported on first use, here and in every module that calls a provider, not
when voicestack is: it is about 0.8 s of CPU, a third of a server's start, and a server with no
provider configured never needs it. A configured provider loads it as the server starts
(`ChatProvider`), so no call waits for it.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from voicestack.agent.llm_calls import (
    StreamLimitReached,
    StreamLimits,
    ToolCallAssembler,
    ToolCallRequest,
)
from voicestack.agent.llm_errors import (
    CHAT_ROLE,
    FOLLOW_REDIRECTS,
    after_retries,
    describe_failure,
    display_url,
    redact,
)
from voicestack.agent.llm_errors import NOT_CONFIGURED_MESSAGE as NOT_CONFIGURED_MESSAGE
from voicestack.agent.llm_errors import ProviderRole as ProviderRole
from voicestack.agent.llm_errors import retry_after as _retry_after
from voicestack.agent.llm_wire import (
    NotAChunk,
    NotAStream,
    StreamEnd,
    choices_of,
    completion_text,
    media_type,
    sse_chunks,
)

if TYPE_CHECKING:
    import openai

# Local servers ignore the key, but the client refuses to start without one.
_PLACEHOLDER_API_KEY = "no-key-needed"
_BACKOFF_BASE_S = 0.5

T = TypeVar("T")


@dataclass(frozen=True)
class ProviderSettings:
    """Where and how to call the model; base_url None means OpenAI's own API. `role` says what
    the provider is for (chat, transcription, speech), as its error messages name it."""

    base_url: str | None
    api_key: str | None = field(repr=False)
    model: str = "gpt-4o-mini"
    temperature: float | None = None
    timeout_s: float = 60.0
    max_retries: int = 3
    retry_cap_s: float = 30.0
    role: ProviderRole = CHAT_ROLE


class ProviderError(Exception):
    """A failed model call: a snake_case `code`, a human `message`, and whether a retry may help."""

    def __init__(self, code: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable


@dataclass(frozen=True)
class CallOptions:
    """The model and temperature of one chat call (None: the provider's default temperature)."""

    model: str
    temperature: float | None = None


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


def _failures() -> tuple[type[Exception], ...]:
    """What a call may raise that becomes a ProviderError (asked once a call failed)."""
    import openai

    return (openai.OpenAIError, json.JSONDecodeError, UnicodeDecodeError, NotAChunk, NotAStream)


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
            import openai

            self._client = openai.AsyncOpenAI(
                base_url=settings.base_url,
                api_key=settings.api_key or _PLACEHOLDER_API_KEY,
                max_retries=0,  # retries are ours: only before any output has streamed
                timeout=settings.timeout_s,
                http_client=openai.DefaultAsyncHttpxClient(
                    timeout=settings.timeout_s, follow_redirects=FOLLOW_REDIRECTS
                ),
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
        options: CallOptions | None = None,
    ) -> AsyncIterator[StreamEvent]:
        """Yield text deltas, then complete tool calls, then Usage, then Finish; or raise.

        `options` name the model and temperature of this call (an agent's), instead of the
        provider's own.
        Raises ProviderError, or StreamLimitReached once the text up to `limits` is yielded.
        A provider that answers a whole completion instead of a stream gets its text yielded,
        then ProviderError `provider_not_streaming`.
        """
        if self._client is None:
            raise ProviderError("provider_not_configured", self.settings.role.not_configured)
        retries = max(0, self.settings.max_retries)
        for attempt in range(retries + 1):
            progress = _Progress()
            try:
                events = self._attempt(self._client, messages, tools, progress, limits, options)
                async with aclosing(events) as it:
                    async for event in it:
                        progress.yielded = True
                        yield event
            except _failures() as exc:
                error = self._error_for(exc, progress, attempt, options.model if options else None)
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
            raise ProviderError("provider_not_configured", self.settings.role.not_configured)
        retries = max(0, self.settings.max_retries)
        for attempt in range(retries + 1):
            try:
                return await send(self._client)
            except _failures() as exc:
                error = self._error_for(exc, _Progress(), attempt, model)
                if not error.retryable or attempt == retries:
                    raise error from exc
                await asyncio.sleep(self._retry_delay(exc, attempt))
        raise AssertionError("unreachable: the last attempt returns or raises")

    @property
    def where(self) -> str:
        """The provider's base URL, without credentials, as error messages show it."""
        return display_url(str(self._client.base_url if self._client else ""))

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
        call: CallOptions | None = None,
    ) -> AsyncGenerator[StreamEvent, None]:
        call = call or CallOptions(self.settings.model, self.settings.temperature)
        # The messages and tools go in `extra_body`, which the SDK sends as given: its typed
        # transform of `messages` walks every message and costs ~0.3 ms each (12 ms for a
        # 40-message thread, most of a live turn's own latency). Ours are already plain JSON
        # dicts in the wire shape, so nothing is lost.
        body: dict[str, Any] = {"messages": messages}
        if tools:
            body["tools"] = tools
        options: dict[str, Any] = {}
        if call.temperature is not None:
            options["temperature"] = call.temperature
        # The raw event stream, parsed here: the SDK's per-chunk model objects cost more CPU than
        # everything else a streamed token does in this server (bench/stream.py).
        request = client.chat.completions.with_streaming_response.create(
            model=call.model,
            messages=(),
            stream=True,
            stream_options={"include_usage": True},
            extra_body=body,
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
            end = StreamEnd()
            ended = False  # another choice's finish_reason: the stream did end
            async for chunk in sse_chunks(response, end):
                choices = choices_of(chunk)
                counted = chunk.get("usage")
                if counted is not None:
                    counts = counted.get("prompt_tokens"), counted.get("completion_tokens")
                    usage = Usage(*(count if isinstance(count, int) else 0 for count in counts))
                for choice in choices:
                    if choice.get("index") not in (0, None):
                        ended = ended or bool(choice.get("finish_reason"))
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
            if finish is None and not ended and not end.done:
                kind = media_type(response.headers)
                if not end.events and kind != "text/event-stream":
                    raise NotAStream(kind)
                # The body ended cleanly, but with neither `[DONE]` nor a finish_reason: a
                # proxy or a provider that stopped mid-reply, which must not pass for whole.
                import openai

                raise openai.APIConnectionError(
                    message="the stream ended with neither [DONE] nor a finish_reason",
                    request=response.http_request,
                )
        for request_ in calls.drain():
            yield request_
        if usage is not None:
            yield usage
        # A stream that ends with [DONE] but no finish_reason is taken at its word.
        yield Finish(finish or ("tool_calls" if calls.total else "stop"))

    def _not_streaming(self) -> ProviderError:
        where = self.where
        return ProviderError(
            "provider_not_streaming",
            f"The model provider at {where} answered with a whole completion (application/json)"
            " instead of an event stream; use a server that streams chat completions.",
        )

    def _retry_delay(self, exc: Exception, attempt: int) -> float:
        import openai

        cap = self.settings.retry_cap_s
        if isinstance(exc, openai.APIStatusError):
            asked = _retry_after(exc.response.headers)
            if asked is not None:
                return min(cap, asked)
        return min(cap, _BACKOFF_BASE_S * 2.0**attempt) * random.uniform(0.75, 1.0)

    def _error_for(
        self, exc: Exception, progress: _Progress, retries: int, model: str | None = None
    ) -> ProviderError:
        code, message, retryable = describe_failure(
            exc,
            self.settings.role,
            self.where,
            responded=progress.responded,
            after=after_retries(retries),
            model=model or self.settings.model,
            timeout_s=self.settings.timeout_s,
        )
        return ProviderError(code, redact(message, self.settings.api_key), retryable=retryable)
