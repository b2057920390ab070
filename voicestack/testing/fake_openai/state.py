"""Thread-safe scripted-plan queues and request log shared by the fake server and its owner."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from voicestack.testing.fake_openai.plan import KINDS, Kind, Plan
from voicestack.testing.fake_openai.realtime_state import RealtimeState


@dataclass
class _Slot:
    plan: Plan
    remaining: int | None


class FakeState:
    """Per-kind FIFO plan queues plus the log of requests the fake server received."""

    def __init__(self) -> None:
        # The owning test thread and the server's event-loop thread both touch this state.
        self._lock = threading.Lock()
        self._queues: dict[Kind, list[_Slot]] = {kind: [] for kind in KINDS}
        self._requests: list[dict[str, Any]] = []
        # The Realtime WebSocket's scripts and per-connection records.
        self.realtime = RealtimeState()

    def add_plans(self, plans: list[Plan]) -> None:
        """Append plans to the end of their kind's queue, in order."""
        with self._lock:
            for plan in plans:
                self._queues[plan.kind].append(_Slot(plan, plan.times))

    def take(self, kind: Kind, text: str) -> Plan | None:
        """Consume the plan for a request whose match text is `text`; None means default."""
        with self._lock:
            queue = self._queues[kind]
            matching = (s for s in queue if s.plan.match is not None and s.plan.match in text)
            slot = next(matching, None) or next((s for s in queue if s.plan.match is None), None)
            if slot is None:
                return None
            if slot.remaining is not None:
                slot.remaining -= 1
                if slot.remaining <= 0:
                    queue.remove(slot)
            return slot.plan

    def pending(self, kind: Kind | None = None) -> list[dict[str, Any]]:
        """Return the not yet used-up plans (with their remaining uses), oldest first."""
        with self._lock:
            kinds = KINDS if kind is None else (kind,)
            return [
                {**s.plan.model_dump(exclude_defaults=True), "kind": k, "remaining": s.remaining}
                for k in kinds
                for s in self._queues[k]
            ]

    def record(
        self, kind: str, path: str, body: Any, headers: dict[str, str], client: str | None = None
    ) -> None:
        """Append one received request to the log; `client` is the connection's "host:port",
        the same for requests that came on one kept-alive connection."""
        entry = {
            "kind": kind,
            "path": path,
            "timestamp": time.time(),
            "body": body,
            "headers": headers,
            "client": client,
        }
        with self._lock:
            self._requests.append(entry)

    def requests(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Return logged requests in arrival order, optionally only those of one kind."""
        with self._lock:
            return [dict(r) for r in self._requests if kind is None or r["kind"] == kind]

    def clear_requests(self) -> None:
        """Forget all logged requests."""
        with self._lock:
            self._requests.clear()

    def reset(self) -> None:
        """Drop every pending plan and every logged request."""
        with self._lock:
            for queue in self._queues.values():
                queue.clear()
            self._requests.clear()
        self.realtime.reset()
