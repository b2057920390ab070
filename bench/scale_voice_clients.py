"""The clients of bench/scale_voice.py: audio sockets or phone calls, and what they heard.

- Audio sockets (`/api/threads/{id}/audio`, 16 kHz PCM): each counts every event by type, and
  `reply_stopped` by its status. A pipeline conversation's figures are its turns
  (`user_speech_stopped`) and replies (`reply_stopped`); a speech-to-speech one's add the
  replies started (`reply_started`), completed and interrupted (a relayed reply ends
  `complete` once its audio has played, `interrupted` when speech cut it).
- Phone calls (Twilio's media stream, bench/realtime_relay_calls.py): every `mark` is echoed at
  once, as if played. A pipeline call marks each sentence; a speech-to-speech call marks its
  reply's audio every 100 ms or so, so its figures are the marks, the distinct replies they
  belong to (a mark's name is `{messageId}@{ms}`), and the `clear`s (barge-in cuts).
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from websockets.asyncio.client import connect

from bench.realtime import Session, close_sessions
from bench.realtime_relay_calls import TwilioCall

WAIT_S = 30.0


class CountingSession(Session):
    """bench/realtime.py's Session, counting every event by type as well (and `reply_stopped`
    by status, as `reply_stopped:{status}`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.events: Counter[str] = Counter()

    def heard(self, event: dict[str, Any]) -> None:
        """Count the event by type (and `reply_stopped` by status too)."""
        kind = event["type"]
        self.events[kind] += 1
        if kind == "reply_stopped":
            self.events[f"reply_stopped:{event.get('status')}"] += 1


async def open_session(
    http: httpx.AsyncClient, url: str, token: str
) -> tuple[CountingSession, asyncio.Task[None]]:
    """A new thread's audio socket, started at 16 kHz pcm16 (its first message read), with
    its reader task."""
    thread_id = (await http.post("/api/threads", json={})).raise_for_status().json()["id"]
    base = url.replace("http://", "ws://", 1)
    socket = await connect(
        f"{base}/api/threads/{thread_id}/audio?token={token}", max_size=None, compression=None
    )
    await socket.send(json.dumps({"type": "start", "sampleRate": 16000, "format": "pcm16"}))
    json.loads(await asyncio.wait_for(socket.recv(), WAIT_S))  # ready
    session = CountingSession(socket)
    return session, asyncio.create_task(session.read())


class MarkedCall(TwilioCall):
    """TwilioCall noting which replies its echoed marks belong to."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.replies: set[str] = set()

    @classmethod
    async def dial(cls, url: str, number: int) -> MarkedCall:
        """TwilioCall.open, typed as this class."""
        call = await cls.open(url, number)
        assert isinstance(call, MarkedCall)
        return call

    async def _event(self, kind: str, **fields: Any) -> None:
        if kind == "mark":
            self.replies.add(str(fields["mark"]["name"]).rpartition("@")[0])
        await super()._event(kind, **fields)


@dataclass
class Clients:
    """The load's sockets: each sends paced 20 ms frames; `heard` counts what they heard so far
    (by name, see `HEARD`); `close` hangs them all up."""

    senders: Sequence[Session | TwilioCall]
    heard: Callable[[], dict[str, int]]
    close: Callable[[list[asyncio.Task[None]]], Awaitable[None]]


async def audio_sockets(
    http: httpx.AsyncClient, url: str, token: str, count: int, relayed: bool
) -> Clients:
    """`count` audio sockets, each on a new thread; `relayed`: speech-to-speech figures."""
    sessions = [await open_session(http, url, token) for _ in range(count)]
    talks = [session for session, _ in sessions]

    def heard() -> dict[str, int]:
        counts = {"turns": sum(s.turns for s in talks), "replies": sum(s.replies for s in talks)}
        if relayed:
            for name, event in (
                ("replies_started", "reply_started"),
                ("replies_complete", "reply_stopped:complete"),
                ("replies_interrupted", "reply_stopped:interrupted"),
            ):
                counts[name] = sum(s.events[event] for s in talks)
        return counts

    async def close(senders: list[asyncio.Task[None]]) -> None:
        await close_sessions(senders, sessions)

    return Clients(talks, heard, close)


async def phone_calls(url: str, count: int, relayed: bool) -> Clients:
    """`count` Twilio calls; `relayed`: speech-to-speech figures."""
    calls = [await MarkedCall.dial(url, n) for n in range(count)]

    def heard() -> dict[str, int]:
        marks = sum(call.stamps.events["mark"] for call in calls)
        if not relayed:
            return {"turns": 0, "replies": marks}
        return {
            "marks": marks,
            "replies_marked": sum(len(call.replies) for call in calls),
            "clears": sum(call.stamps.events["clear"] for call in calls),
        }

    async def close(senders: list[asyncio.Task[None]]) -> None:
        for sender in senders:
            sender.cancel()
        await asyncio.gather(*senders, return_exceptions=True)
        await asyncio.gather(*(call.close() for call in calls))

    return Clients(calls, heard, close)


def heard_columns(calls: bool, relayed: bool) -> list[tuple[str, str]]:
    """The table's columns of what the clients heard: (row key, heading)."""
    if calls:
        if relayed:
            return [("marks", "marks"), ("replies_marked", "replies marked"), ("clears", "clears")]
        return [("replies", "sentences marked")]
    columns = [("turns", "turns")]
    if relayed:
        columns += [
            ("replies_started", "replies started"),
            ("replies_complete", "complete"),
            ("replies_interrupted", "interrupted"),
        ]
    else:
        columns += [("replies", "replies")]
    return columns
