"""The far end of a live conversation (the audio socket's client, or a phone call), and how a
conversation ends when its thread feed does."""

from __future__ import annotations

from typing import Protocol

from voicestack.reactive.access import ACCESS_REMOVED, TOKEN_REVOKED
from voicestack.voice.realtime.wire import (
    CLOSE_BAD_TOKEN,
    CLOSE_GOING_AWAY,
    CLOSE_NOT_FOUND,
    event,
)

# Why a feed ends (its outbox's `ended_by`), as the socket's close code, reason and message.
_FEED_ENDS = {
    ACCESS_REMOVED: (CLOSE_NOT_FOUND, "thread_not_found", "You can no longer see this thread."),
    TOKEN_REVOKED: (
        CLOSE_BAD_TOKEN,
        "invalid_token",
        "The token of this conversation was revoked.",
    ),
}


class VoiceClient(Protocol):
    """The far end of a session: JSON events and binary audio frames."""

    async def send_event(self, text: str) -> None:
        """Send one JSON event."""

    async def send_audio(self, data: bytes) -> None:
        """Send one binary audio frame."""

    async def close(self, code: int, reason: str) -> None:
        """End the connection."""


async def close_at_feed_end(client: VoiceClient, ended_by: str | None) -> None:
    """Close `client` as its thread feed ended: lost access or a revoked token get an `error`
    event and their own close code; anything else (shutdown) is 1001 `server_shutting_down`."""
    ending = _FEED_ENDS.get(ended_by or "")
    if ending is None:
        await client.close(CLOSE_GOING_AWAY, "server_shutting_down")
        return
    code, reason, message = ending
    await client.send_event(event("error", code=reason, message=message))
    await client.close(code, reason)
