"""Following a thread's feed (`GET /api/threads/{id}/events`) the way an EventSource does.

A fresh connection starts with a snapshot of the thread (events without ids) and a `ready` event
whose id is the resume point; every live event has an id. When the connection drops or the server
ends the stream (a restart), the follower reconnects with `Last-Event-ID` after a backoff, and the
server continues exactly after the last event seen: nothing twice, nothing missing.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from httpx_sse import ServerSentEvent, SSEError, connect_sse

from cli.client import ApiClient
from cli.errors import CliError

# The server pings an idle stream every 15 s by default; a read this long with nothing at all
# means the connection is dead even if TCP has not noticed.
READ_TIMEOUT_S = 60.0
BACKOFF_FIRST_S = 0.2
BACKOFF_MAX_S = 2.0

FINAL_STATUSES = frozenset({"complete", "failed", "interrupted"})


@dataclass(frozen=True)
class FeedEvent:
    """One event of a thread feed: its kind, its id (None in a snapshot) and its data."""

    event: str
    id: int | None
    data: Any

    def as_json(self) -> dict[str, Any]:
        """The event as one line of `thread tail --json`: `{"event", "id", "data"}`."""
        return {"event": self.event, "id": self.id, "data": self.data}


class _Retry(Exception):
    """A failure worth reconnecting after (a dropped connection, a server error)."""


StatusCallback = Callable[[str | None], None]


def _ignore(_status: str | None) -> None:
    pass


def backoff_s(failures: int) -> float:
    """How long to wait before reconnect attempt number `failures` (1, 2, ...), with jitter."""
    delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2.0 ** (failures - 1))
    return delay * random.uniform(0.8, 1.0)


def _parse(sse: ServerSentEvent) -> FeedEvent:
    try:
        data = json.loads(sse.data) if sse.data else None
    except ValueError:
        raise CliError(f"The server sent a {sse.event!r} event whose data is not JSON.") from None
    try:
        event_id = int(sse.id) if sse.id else None
    except ValueError:
        raise CliError(f"The server sent an event with the id {sse.id!r}.") from None
    return FeedEvent(sse.event, event_id, data)


def _is_keepalive(sse: ServerSentEvent) -> bool:
    # A `: ping` comment after an event with an id reaches httpx-sse as a nameless, empty event.
    return sse.event in ("", "message") and sse.data == ""


class FeedFollower:
    """Yields a thread's feed events forever, reconnecting with Last-Event-ID when cut off.

    The first connection must succeed (an unreachable server or unknown thread is a CliError);
    after that, connection failures are reported through `on_status` ("reconnecting …", then
    None once connected again) and retried with backoff. HTTP 4xx answers are never retried.
    """

    def __init__(
        self,
        api: ApiClient,
        thread_id: str,
        *,
        since: int | None = None,
        on_status: StatusCallback = _ignore,
        read_timeout_s: float = READ_TIMEOUT_S,
    ) -> None:
        self.api = api
        self.thread_id = thread_id
        self.last_id = since
        self.on_status = on_status
        self.timeout = httpx.Timeout(api.timeout, read=read_timeout_s)
        self.connections = 0

    @property
    def path(self) -> str:
        """The feed's URL path."""
        return f"/api/threads/{self.thread_id}/events"

    def events(self) -> Generator[FeedEvent, None, None]:
        """Every event from now (or from `since`) on; the iterator only ends when closed."""
        failures = 0
        while True:
            try:
                for event in self._one_connection():
                    if failures:
                        failures = 0
                        self.on_status(None)
                    yield event
                reason = "The server ended the feed"
            except _Retry as exc:
                reason = str(exc)
            failures += 1
            self.on_status(f"{reason}; reconnecting (attempt {failures}) …")
            time.sleep(backoff_s(failures))

    def _one_connection(self) -> Iterator[FeedEvent]:
        headers = {} if self.last_id is None else {"Last-Event-ID": str(self.last_id)}
        first = self.connections == 0
        try:
            with connect_sse(
                self.api.http, "GET", self.path, headers=headers, timeout=self.timeout
            ) as source:
                response = source.response
                if response.status_code >= 500 and not first:
                    raise _Retry(f"The server answered HTTP {response.status_code}")
                self.api.check(response)
                self.connections += 1
                for sse in source.iter_sse():
                    if _is_keepalive(sse):
                        continue
                    event = _parse(sse)
                    if event.id is not None:
                        self.last_id = event.id
                    yield event
        except httpx.TransportError as exc:
            if first:
                self.api.transport_failed(exc)
            raise _Retry(self.api.transport_message(exc).rstrip(".")) from None
        except SSEError:
            raise CliError(
                f"{self.api.url}{self.path} is not an event stream; is it a voicestack server?"
            ) from None
