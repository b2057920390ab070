"""How a stream's messages travel from a primary to an edge: numbered, and split to fit NATS.

Every message of a stream carries `Voicestack-Seq` (1, 2, ...), so an edge that misses one (a
slow consumer, a reconnect) knows and resyncs instead of skipping events unawares. A payload
larger than NATS's max_payload goes as several parts, each but the last marked
`Voicestack-Part: more`; the edge joins them before it looks at the message.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nats.aio.client import Client

SEQ_HEADER = "Voicestack-Seq"
PART_HEADER = "Voicestack-Part"
# Room for the headers and the protocol line within max_payload.
_MARGIN = 4096
# Room in a message for an envelope's head: a body larger than max_payload less this goes in
# parts (a call's body), or elsewhere (an attaching edge's catch-up).
HEAD_ROOM = 64 * 1024
# The answer to an edge's opening of a thread stream shared by every edge
# (voicestack/scale/thread_streams.py): which instance it follows, and from which message on.
THREAD_STREAM_HEADER = "voicestack-thread-stream"
FIRST_SEQ_HEADER = "voicestack-first-seq"
# On the opening: the edge follows the thread's subject, and may be answered with such a stream.
FOLLOW_HEADER = "voicestack-thread-follow"


class StreamPublisher:
    """Publishes one stream's messages, numbered and split, in order."""

    def __init__(self, nc: Client, subject: str) -> None:
        self._nc = nc
        self.subject = subject
        self.seq = 0

    @property
    def next_seq(self) -> int:
        """The number the next message's first part will carry: a subscriber that takes the
        stream from there gets whole messages only."""
        return self.seq + 1

    async def send(self, payload: bytes, headers: dict[str, str] | None = None) -> None:
        """Publish `payload` (in parts if it must be), `headers` on its last part."""
        limit = max(1024, self._nc.max_payload - _MARGIN)
        parts = [payload[i : i + limit] for i in range(0, len(payload), limit)] or [b""]
        first = self.seq + 1
        self.seq += len(parts)  # numbered at once: `next_seq` never falls inside a message
        for n, part in enumerate(parts):
            marks = {SEQ_HEADER: str(first + n)}
            if n < len(parts) - 1:
                marks[PART_HEADER] = "more"
            else:
                marks.update(headers or {})
            await self._nc.publish(self.subject, part, headers=marks)


@dataclass(slots=True)
class Reassembly:
    """An edge's side of one stream: the next number it expects, and parts so far."""

    seq: int = 0
    parts: list[bytes] = field(default_factory=list)

    def take(self, headers: dict[str, str] | None, payload: bytes) -> bytes | bool | None:
        """The whole message once its last part is in (None before), or False: one was
        missed, the stream must resync."""
        marks = headers or {}
        try:
            seq = int(marks.get(SEQ_HEADER, ""))
        except ValueError:
            return False
        if seq != self.seq + 1:
            return False
        self.seq = seq
        if marks.get(PART_HEADER) == "more":
            self.parts.append(payload)
            return None
        if self.parts:
            payload, self.parts = b"".join([*self.parts, payload]), []
        return payload
