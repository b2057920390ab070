"""The live conversations of one process, and how they end when it shuts down: no new one is
taken, and each open one ends after its current sentence, within --drain-s."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

from voicestack.voice.realtime.wire import CLOSE_GOING_AWAY, ProtocolError

log = logging.getLogger(__name__)


class Draining(Protocol):
    """A live conversation, as the drain sees it."""

    async def wind_down(self, timeout: float) -> None:
        """End after the current sentence (within `timeout` seconds), and close."""
        ...


class SessionDrain:
    """The open live conversations of this process."""

    def __init__(self, drain_s: float) -> None:
        self._drain_s = drain_s
        self._sessions: set[Draining] = set()
        self._wind_down: asyncio.Task[None] | None = None
        self._empty = asyncio.Event()  # set when the last conversation is discarded

    def __len__(self) -> int:
        return len(self._sessions)

    def add(self, session: Draining) -> None:
        """A conversation began. Raises ProtocolError (close 1001) once shutting down."""
        self.refuse_when_shutting_down()
        self._sessions.add(session)

    def discard(self, session: Draining) -> None:
        """A conversation ended."""
        self._sessions.discard(session)
        if not self._sessions:
            self._empty.set()

    async def emptied(self, timeout: float) -> None:
        """Wait (at most `timeout` seconds) until every conversation has ended, its close
        included."""
        if self._sessions:
            self._empty.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._empty.wait(), timeout)

    def refuse_when_shutting_down(self) -> None:
        """Raise ProtocolError (close 1001) once the process is shutting down."""
        if self._wind_down is not None:
            raise ProtocolError(
                "server_shutting_down", "The server is shutting down.", CLOSE_GOING_AWAY
            )

    def begin_wind_down(self) -> None:
        """Shutdown (call on the event loop, once is enough): refuse new conversations, and end
        each open one after its current sentence, within --drain-s."""
        if self._wind_down is None:
            self._wind_down = asyncio.get_running_loop().create_task(
                self._end_all(), name="voicestack-voice-drain"
            )

    async def ended(self) -> None:
        """Wait (at most `--drain-s` and a second) until the wind-down has ended every live
        conversation."""
        if self._wind_down is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._wind_down), self._drain_s + 1)

    async def _end_all(self) -> None:
        sessions = list(self._sessions)
        if sessions:
            log.info("ending %d live conversations after their current sentence", len(sessions))
        await asyncio.gather(
            *(session.wind_down(self._drain_s) for session in sessions),
            return_exceptions=True,
        )
