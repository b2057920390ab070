"""The thread feed's events as a voice session reads them: (kind, data) from the SSE bytes.

A session follows its thread through the same feed every watcher gets (the outbox of
`Runtime.open_thread_feed`), so what it speaks is exactly what the thread shows. The outbox
hands over SSE-encoded bytes, one or more events at a time; keep-alive comments are skipped.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from voicestack.reactive.streams import Stream


@dataclass(frozen=True, slots=True)
class FeedEvent:
    """One feed event: `message`, `delta`, `speech`, `tool_call` or `ready`, and its data."""

    kind: str
    data: dict[str, Any]


def parse_events(chunk: bytes) -> list[FeedEvent]:
    """The events in a chunk of whole SSE events."""
    events: list[FeedEvent] = []
    for block in chunk.decode().split("\n\n"):
        kind, data = "message", []
        for line in block.split("\n"):
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                kind = value
            elif name == "data":
                data.append(value)
        if data:
            parsed = json.loads("\n".join(data))
            if isinstance(parsed, dict):
                events.append(FeedEvent(kind, parsed))
    return events


async def feed_events(stream: Stream) -> AsyncIterator[FeedEvent]:
    """Every event of the stream, until it ends (the viewer lost access, or shutdown)."""
    while (chunk := await stream.outbox.next_chunk()) is not None:
        for item in parse_events(chunk):
            yield item
