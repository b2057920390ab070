"""A provider that answers with a redirect: the call is not followed there (a 301 or 302 would
resend it as a GET without its body, and to another host without its key); the error names the
redirect's target instead."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

import pytest

from tests.support.raw_http import answer, raw_server
from tests.test_llm import KEY, failure
from voicestack.agent.embedding import EMBEDDING_ROLE, Embedder, EmbeddingSettings
from voicestack.agent.llm import ChatProvider, ProviderError, ProviderSettings

pytestmark = pytest.mark.anyio


async def _chat_failure(settings: ProviderSettings) -> ProviderError:
    provider = ChatProvider(settings)
    try:
        _, error = await failure(provider)
    finally:
        await provider.aclose()
    return error


async def _embedding_failure(settings: ProviderSettings) -> ProviderError:
    embedder = Embedder(EmbeddingSettings("text-embedding-3-small", None, settings))
    try:
        with pytest.raises(ProviderError) as raised:
            await asyncio.to_thread(embedder.embed_query, "where is my order")
    finally:
        await embedder.aclose()
    return raised.value


def _redirect(status: str, location: str) -> bytes:
    return answer(status, "", b"", f"location: {location}")


@pytest.mark.parametrize("status", ["301 Moved Permanently", "307 Temporary Redirect"])
async def test_a_chat_call_is_not_followed_to_the_redirects_target(status: str) -> None:
    async with AsyncExitStack() as servers:
        unused = answer("500 Unused", "", b"")
        target, seen = await servers.enter_async_context(raw_server(unused))
        redirect = _redirect(status, f"{target}/chat/completions")
        base, asked = await servers.enter_async_context(raw_server(redirect))
        settings = ProviderSettings(base_url=base, api_key=KEY, timeout_s=10, max_retries=2)
        provider = ChatProvider(settings)
        try:
            events, error = await failure(provider)
        finally:
            await provider.aclose()
    assert (events, seen, len(asked)) == ([], [], 1)  # not followed, and not retried
    assert (error.code, error.retryable) == ("provider_bad_request", False)
    assert error.message == (
        f"The model provider at {base} answered HTTP {status[:3]}, a redirect to"
        f" {target}/chat/completions. Check the base URL: voicestack does not follow a"
        " provider's redirects."
    )


async def test_a_relative_redirect_is_named_in_full_without_credentials() -> None:
    async with raw_server(_redirect("302 Found", "/login?next=%2Fv1")) as (base, _):
        with_credentials = base.replace("http://", "http://user:secret@")
        error = await _chat_failure(ProviderSettings(base_url=with_credentials, api_key=KEY))
    origin = base.removesuffix("/v1")
    assert error.message == (
        f"The model provider at {base} answered HTTP 302, a redirect to {origin}/login. Check"
        " the base URL: voicestack does not follow a provider's redirects."
    )
    assert "secret" not in error.message


async def test_an_embedding_query_is_not_followed_either() -> None:
    redirect = _redirect("308 Permanent Redirect", "https://elsewhere.test/v1")
    async with raw_server(redirect) as (base, asked):
        settings = ProviderSettings(base_url=base, api_key=KEY, max_retries=0, role=EMBEDDING_ROLE)
        error = await _embedding_failure(settings)
    assert len(asked) == 1
    assert error.code == "provider_bad_request"
    assert "answered HTTP 308, a redirect to https://elsewhere.test/v1." in error.message


async def test_a_malformed_location_is_said_so() -> None:
    async with raw_server(_redirect("302 Found", "http://[bad/v1")) as (base, _):
        error = await _chat_failure(ProviderSettings(base_url=base, api_key=KEY))
    assert (error.code, error.message) == (
        "provider_bad_request",
        f"The model provider at {base} answered HTTP 302, a redirect to a malformed Location.",
    )


@pytest.mark.parametrize("path", ["chat", "embedding"])
async def test_a_redirect_that_quotes_the_key_does_not_show_it(path: str) -> None:
    async with raw_server(_redirect("302 Found", f"/{KEY}/v1")) as (base, _):
        settings = ProviderSettings(base_url=base, api_key=KEY, max_retries=0, role=EMBEDDING_ROLE)
        if path == "chat":
            error = await _chat_failure(settings)
        else:
            error = await _embedding_failure(settings)
    assert KEY not in error.message
    assert error.message.endswith(
        "a redirect to " + base.removesuffix("/v1") + "/[redacted]/v1. Check the base URL:"
        " voicestack does not follow a provider's redirects."
    )
