"""The providers' HTTP transport: the SDK's requests carried by aiohttp.

A streamed reply comes one chunk per token. Under the SDK's own transport (httpcore over h11,
HTTP parsed in Python, each read through several layers of async generators) reading those
chunks was about half of the event loop's work at 1,000 concurrent replies (bench/stream.py).
aiohttp parses HTTP in C and hands each read over in one step. The SDK still builds each
request, checks its status and reads its body through its own client; only the bytes travel
through aiohttp.

aiohttp's failures are raised as the SDK's transport errors, so that a timeout, a refused
connection and a stream cut off mid-reply stay told apart (llm_errors.describe_failure), with
the operating system's error underneath as their cause.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx2
import openai

# The SDK's own defaults for its default transport.
DEFAULT_MAX_CONNECTIONS = 1000
DEFAULT_KEEPALIVE_S = 5.0


def provider_http_client() -> httpx2.AsyncClient:
    """The SDK's default client (its timeouts and redirects), on an AiohttpTransport."""
    client: httpx2.AsyncClient = openai.DefaultAsyncHttpxClient(transport=AiohttpTransport())
    return client


class AiohttpTransport(httpx2.AsyncBaseTransport):
    """Sends the SDK's requests through one aiohttp session, made on the first request (in
    the event loop that uses it) and closed by aclose."""

    def __init__(
        self,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        keepalive_s: float = DEFAULT_KEEPALIVE_S,
    ) -> None:
        self._max_connections = max_connections
        self._keepalive_s = keepalive_s
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send `request`; the response's body is read as the SDK reads it."""
        timeout: dict[str, float | None] = request.extensions.get("timeout", {})
        body = await request.aread()
        try:
            response = await self._open().request(
                request.method,
                str(request.url),
                headers=_headers_for(request),
                data=body or None,
                allow_redirects=False,  # the SDK's client follows them itself
                auto_decompress=False,  # and decodes the body by its Content-Encoding
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=timeout.get("pool"),
                    sock_connect=timeout.get("connect"),
                    sock_read=timeout.get("read"),
                ),
                server_hostname=request.extensions.get("sni_hostname"),
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise transport_error(exc) from _cause(exc)
        extensions: dict[str, Any] = {"http_version": b"HTTP/1.1"}
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode("latin-1", "replace")
        return httpx2.Response(
            response.status,
            headers=list(response.raw_headers),
            stream=_ResponseBody(response),
            request=request,
            extensions=extensions,
        )

    async def aclose(self) -> None:
        """Close the session and its connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _open(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        # A session belongs to the loop it was made in: a client used again from another (a
        # second asyncio.run) gets a new one.
        if self._session is None or self._session.closed or self._loop is not loop:
            self._loop = loop
            connector = aiohttp.TCPConnector(
                limit=self._max_connections,
                keepalive_timeout=self._keepalive_s,
                ssl=httpx2.create_ssl_context(),
            )
            # trust_env: HTTP(S)_PROXY and NO_PROXY are honoured, as the SDK's own transport does.
            self._session = aiohttp.ClientSession(connector=connector, trust_env=True)
        return self._session


def _headers_for(request: httpx2.Request) -> list[tuple[str, str]]:
    # The body is sent whole (read above), so aiohttp sets its length: a streamed request's
    # `Transfer-Encoding: chunked` would not describe it.
    framing = ("content-length", "transfer-encoding")
    return [(k, v) for k, v in request.headers.multi_items() if k.lower() not in framing]


class _ResponseBody(httpx2.AsyncByteStream):
    """A response's body as it arrives. Read to its end, the connection goes back to the pool;
    closed before that, the connection is closed."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for piece in self._response.content.iter_any():
                yield piece
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise transport_error(exc) from _cause(exc)

    async def aclose(self) -> None:
        self._response.release()


def transport_error(exc: aiohttp.ClientError | TimeoutError) -> httpx2.TransportError:
    """The SDK's transport error for an aiohttp failure."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx2.ConnectTimeout(_words(exc, "connecting timed out"))
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return httpx2.ReadTimeout(_words(exc, "reading timed out"))
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return httpx2.PoolTimeout(_words(exc, "no connection became free in time"))
    if isinstance(exc, aiohttp.ClientProxyConnectionError | aiohttp.ClientHttpProxyError):
        return httpx2.ProxyError(_words(exc, "the proxy failed"))
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx2.ConnectError(_words(exc, "could not connect"))
    if isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
        return httpx2.UnsupportedProtocol(_words(exc, "not an http(s) URL"))
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return httpx2.RemoteProtocolError("the connection closed before the answer was whole")
    if isinstance(exc, aiohttp.ClientResponseError):
        # aiohttp's parser says what it found over several lines, with a caret under it.
        found = str(exc.message).split("\n", 1)[0].rstrip(": ")
        return httpx2.RemoteProtocolError(f"the answer was not HTTP ({found or exc.status})")
    return httpx2.NetworkError(_words(exc, type(exc).__name__))


def _cause(exc: BaseException) -> BaseException | None:
    # A connection closed early or an answer that is not HTTP is said in transport_error's
    # words: aiohttp's own (a parser's status, message and caret) would be the deepest cause,
    # which error messages quote (llm_errors._reason).
    if isinstance(
        exc,
        aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError | aiohttp.ClientResponseError,
    ):
        return None
    return exc


def _words(exc: BaseException, fallback: str) -> str:
    return str(exc) or fallback
