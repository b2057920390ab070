"""The WebSocket to the speech-to-speech provider: connect with a bearer key, send events, read
them back under their GA names.

One ProviderLink is one provider session. Connecting is bounded by a timeout; a refused or
failed handshake, an unreachable host and a timeout are all ProviderUnavailable, with a reason
the client and the log can show. Reading raises ProviderGone when the socket closes, and
TimeoutError when the provider stays silent for longer than asked.
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from voicestack.voice.relay.events import BadEvent, append_audio_text, normalized

log = logging.getLogger(__name__)

# Audio deltas of a long response may be large; a provider is trusted up to this per frame.
MAX_EVENT_BYTES = 16 * 1024 * 1024
NO_KEY = "no-key"


class ProviderUnavailable(Exception):
    """The provider's socket could not be opened; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ProviderGone(Exception):
    """The provider's socket closed; `reason` says how."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def realtime_url(base_url: str | None, explicit: str | None, model: str) -> str | None:
    """The provider's WebSocket URL: `explicit` (--realtime-url) as given, else the chat base
    URL with a ws scheme and `/realtime?model=MODEL`; None when neither is set."""
    if explicit:
        return explicit
    if not base_url:
        return None
    parts = urlsplit(base_url.rstrip("/"))
    scheme = {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme)
    path = parts.path + "/realtime"
    return urlunsplit((scheme, parts.netloc, path, urlencode({"model": model}), ""))


class ProviderLink:
    """An open provider session."""

    def __init__(self, socket: ClientConnection) -> None:
        self._socket = socket

    @classmethod
    async def open(cls, url: str, api_key: str | None, timeout_s: float) -> ProviderLink:
        """Connect within `timeout_s`; raises ProviderUnavailable."""
        # A local provider wants no key, but the header is expected: a stand-in costs nothing.
        headers = {"Authorization": f"Bearer {api_key or NO_KEY}"}
        try:
            socket = await connect(
                url,
                additional_headers=headers,
                open_timeout=timeout_s,
                max_size=MAX_EVENT_BYTES,
                # Deflating base64 audio saves little and cost half the relay's CPU per frame.
                compression=None,
                ping_interval=20,
                ping_timeout=timeout_s,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            raise ProviderUnavailable(
                f"the provider refused the connection (HTTP {status})"
            ) from None
        except (WebSocketException, ValueError) as exc:  # a bad URL, a failed handshake
            raise ProviderUnavailable(f"the provider's handshake failed: {exc}") from None
        except TimeoutError:
            raise ProviderUnavailable(f"no connection within {timeout_s:g} s") from None
        except OSError as exc:
            raise ProviderUnavailable(f"cannot reach the provider: {exc.strerror or exc}") from None
        return cls(socket)

    async def send(self, event: dict[str, Any]) -> None:
        """Send one client event; raises ProviderGone when the socket has closed."""
        try:
            await self._socket.send(json.dumps(event))
        except ConnectionClosed as exc:
            raise ProviderGone(_closed_reason(exc)) from None

    async def send_audio(self, audio: bytes) -> None:
        """`input_audio_buffer.append` of `audio` (in the provider's input format); raises
        ProviderGone when the socket has closed."""
        try:
            await self._socket.send(append_audio_text(audio))
        except ConnectionClosed as exc:
            raise ProviderGone(_closed_reason(exc)) from None

    async def receive(self) -> dict[str, Any]:
        """The next event, `type` under its GA name (frames that are not events are skipped);
        raises ProviderGone when the socket closes."""
        while True:
            try:
                frame = await self._socket.recv()
            except ConnectionClosed as exc:
                raise ProviderGone(_closed_reason(exc)) from None
            try:
                return normalized(frame)
            except BadEvent as exc:
                log.warning("realtime provider sent a frame that is not an event: %s", exc)

    async def close(self) -> None:
        """Close the socket (quietly when it is gone already)."""
        with contextlib.suppress(Exception):
            await self._socket.close()


def _closed_reason(exc: ConnectionClosed) -> str:
    received = exc.rcvd
    if received is None:
        return "the provider's connection dropped"
    reason = f": {received.reason}" if received.reason else ""
    return f"the provider closed the connection ({received.code}{reason})"
