"""The providers' HTTP transport (voicestack/agent/llm_transport.py): what the SDK's own
transport did, it still does, through aiohttp."""

from __future__ import annotations

import asyncio
import gzip

import pytest

from tests.test_llm import KEY, collect, read_request
from voicestack.agent.llm import ChatProvider, Finish, ProviderError, ProviderSettings, TextDelta

pytestmark = pytest.mark.anyio

STREAM = (
    b'data: {"choices": [{"index": 0, "delta": {"content": "Bonjour "}}]}\n\n'
    b'data: {"choices": [{"index": 0, "delta": {"content": "\xc3\xa0 tous"}, '
    b'"finish_reason": "stop"}]}\n\n'
    b"data: [DONE]\n\n"
)


async def serve_once(head: bytes, body: bytes) -> tuple[asyncio.Server, str, list[bytes]]:
    """A raw HTTP server answering each request with `head` and `body`; the requests' heads
    are logged."""
    heads: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        length = next(
            (
                int(line.split(b":", 1)[1])
                for line in heads[-1].split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ),
            0,
        )
        await reader.readexactly(length)
        writer.write(head + b"content-length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/v1", heads


async def test_a_gzip_encoded_stream_is_read_as_text() -> None:
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-encoding: gzip\r\n"
    server, base_url, heads = await serve_once(head, gzip.compress(STREAM))
    provider = ChatProvider(ProviderSettings(base_url=base_url, api_key=KEY))
    try:
        events = await collect(provider)
    finally:
        await provider.aclose()
        server.close()
        await server.wait_closed()
    assert events == [TextDelta("Bonjour "), TextDelta("à tous"), Finish("stop")]
    request_head = heads[0].decode("latin-1").lower()
    assert "accept-encoding: gzip" in request_head
    assert "transfer-encoding" not in request_head
    assert f"authorization: bearer {KEY}".lower() in request_head


async def test_an_answer_that_is_not_http_is_reported_with_the_address() -> None:
    server = await asyncio.start_server(_garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    base_url = f"http://127.0.0.1:{port}/v1"
    provider = ChatProvider(ProviderSettings(base_url=base_url, api_key=KEY, max_retries=0))
    try:
        with pytest.raises(ProviderError) as caught:
            await collect(provider)
    finally:
        await provider.aclose()
        server.close()
        await server.wait_closed()
    assert caught.value.code == "provider_unreachable"
    assert caught.value.message.startswith(
        f"Could not connect to the model provider at {base_url} ("
    )


async def _garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(b"this is not HTTP\r\n\r\n")
    await writer.drain()
    writer.close()
