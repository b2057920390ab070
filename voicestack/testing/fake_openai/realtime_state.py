"""What the fake Realtime provider shares with its owner: queued scripts, what each connection
received and sent, and a handle on the live connections for injected events."""

from __future__ import annotations

import asyncio
import copy
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from voicestack.testing.fake_openai.realtime_script import Script, ScriptInput, parse_scripts

_INJECT_TIMEOUT_S = 10.0


class Live(Protocol):
    """A live connection the owner can poke."""

    loop: asyncio.AbstractEventLoop

    async def inject(self, event: dict[str, Any]) -> None:
        """Send a raw server event now."""

    async def drop(self) -> None:
        """Drop the socket abruptly."""


@dataclass
class _Slot:
    script: Script
    remaining: int | None


class RealtimeState:
    """Scripts waiting for connections, and the record of every connection, oldest first."""

    def __init__(self) -> None:
        # The owning test thread and the server's event-loop thread both touch this state.
        self._lock = threading.Lock()
        self._queue: list[_Slot] = []
        self._sessions: list[dict[str, Any]] = []
        self._live: dict[str, Live] = {}
        self._secrets: dict[str, float] = {}  # ephemeral key → when it expires (epoch s)
        # False: `POST /v1/realtime/client_secrets` answers 404, as a provider without them.
        self.mints_secrets = True

    def mint_secret(self, seconds: int) -> tuple[str, int]:
        """A new ephemeral key (`ek_...`) good for `seconds`, and when it expires."""
        value = f"ek_{secrets.token_hex(16)}"
        expires_at = int(time.time()) + seconds
        with self._lock:
            self._secrets[value] = expires_at
        return value, expires_at

    def secret_valid(self, value: str) -> bool:
        """True when `value` is an ephemeral key this fake minted and it has not expired."""
        with self._lock:
            expires_at = self._secrets.get(value)
        return expires_at is not None and time.time() < expires_at

    def minted(self) -> int:
        """How many ephemeral keys were minted."""
        with self._lock:
            return len(self._secrets)

    def script(self, *scripts: ScriptInput | Iterable[ScriptInput]) -> list[Script]:
        """Validate and queue scripts (dicts, Scripts or lists of them) in order; return them."""
        parsed = parse_scripts(scripts)
        with self._lock:
            self._queue.extend(_Slot(s, s.times) for s in parsed)
        return parsed

    def take(self, model: str) -> Script:
        """The script for a new connection to `model`: a matching one, the first unmatched
        one, or the default script."""
        with self._lock:
            slot = next(
                (s for s in self._queue if s.script.match is not None and s.script.match in model),
                None,
            ) or next((s for s in self._queue if s.script.match is None), None)
            if slot is None:
                return Script()
            if slot.remaining is not None:
                slot.remaining -= 1
                if slot.remaining <= 0:
                    self._queue.remove(slot)
            return slot.script

    def pending(self) -> list[dict[str, Any]]:
        """The scripts not used up yet, with their remaining uses."""
        with self._lock:
            return [
                {**s.script.model_dump(exclude_defaults=True), "remaining": s.remaining}
                for s in self._queue
            ]

    def open_session(self, record: dict[str, Any], live: Live) -> None:
        """Start recording a connection (its record is mutated through `update`)."""
        with self._lock:
            self._sessions.append(record)
            self._live[record["id"]] = live

    def update(self, record: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> None:
        """Apply `change` to a connection's record under the lock."""
        with self._lock:
            change(record)

    def close_session(self, record: dict[str, Any], code: int | None) -> None:
        """Mark a connection closed."""
        with self._lock:
            record["open"], record["close_code"] = False, code
            self._live.pop(record["id"], None)

    def sessions(self) -> list[dict[str, Any]]:
        """Copies of every connection's record, oldest first."""
        with self._lock:
            return copy.deepcopy(self._sessions)

    def session(self, index: int = -1) -> dict[str, Any]:
        """A copy of one connection's record (default: the latest); IndexError if none."""
        with self._lock:
            return copy.deepcopy(self._sessions[index])

    def wait_for(
        self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 10.0
    ) -> list[dict[str, Any]]:
        """Block until `predicate(sessions())` holds; return those sessions (TimeoutError)."""
        deadline = time.monotonic() + timeout
        while True:
            sessions = self.sessions()
            if predicate(sessions):
                return sessions
            if time.monotonic() > deadline:
                raise TimeoutError(f"realtime sessions never matched: {sessions!r:.2000}")
            time.sleep(0.02)

    async def until(
        self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 10.0
    ) -> list[dict[str, Any]]:
        """Like `wait_for`, without blocking the caller's event loop."""
        deadline = time.monotonic() + timeout
        while True:
            sessions = self.sessions()
            if predicate(sessions):
                return sessions
            if time.monotonic() > deadline:
                raise TimeoutError(f"realtime sessions never matched: {sessions!r:.2000}")
            await asyncio.sleep(0.02)

    def live(self, session_id: str | None = None) -> Live | None:
        """The live connection with that id, or the latest open one."""
        with self._lock:
            if session_id is not None:
                return self._live.get(session_id)
            return next(reversed(self._live.values()), None)

    def inject(self, event: dict[str, Any], session_id: str | None = None) -> None:
        """Send a raw server event on a live connection (the latest when no id is given), from
        a thread other than the server's."""
        self._on_live(session_id, lambda live: live.inject(event))

    def drop(self, session_id: str | None = None) -> None:
        """Drop a live connection's socket abruptly, from a thread other than the server's."""
        self._on_live(session_id, lambda live: live.drop())

    def _on_live(self, session_id: str | None, act: Callable[[Live], Any]) -> None:
        live = self.live(session_id)
        if live is None:
            raise LookupError(f"no open realtime session {session_id or ''}".strip())
        asyncio.run_coroutine_threadsafe(act(live), live.loop).result(_INJECT_TIMEOUT_S)

    def reset(self) -> None:
        """Forget queued scripts and recorded connections (live ones keep running)."""
        with self._lock:
            self._queue.clear()
            self._sessions.clear()
