"""A raw HTTP server for a provider that misbehaves: it answers every request with fixed bytes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


async def read_request(reader: asyncio.StreamReader) -> None:
    """Read one HTTP request, its head and its Content-Length body, from a raw connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.lower().split(b"\r\n")
            if line.startswith(b"content-length:")
        ),
        0,
    )
    await reader.readexactly(length)


def answer(status: str, content_type: str, body: bytes, *headers: str) -> bytes:
    """An HTTP/1.1 answer with a Content-Length (no Content-Type when `content_type` is '')."""
    lines = [f"HTTP/1.1 {status}", *headers, f"content-length: {len(body)}"]
    if content_type:
        lines.append(f"content-type: {content_type}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@asynccontextmanager
async def raw_server(reply: bytes) -> AsyncIterator[tuple[str, list[int]]]:
    """A server that reads each request, counts it, writes `reply` as it is and closes the
    connection; its base URL (ending in /v1) and a list that grows by one per request."""
    asked: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        asked.append(1)
        writer.write(reply)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1", asked
    finally:
        server.close()
        await server.wait_closed()
