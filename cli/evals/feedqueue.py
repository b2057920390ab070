"""A thread's feed read on a thread of its own, so that a turn can stop waiting at its deadline
or at once after Ctrl-C while a read blocks (the server may send nothing for a long time)."""

from __future__ import annotations

import queue
import threading
import time

from cli.client import ApiClient
from cli.errors import CliError
from cli.feed import FeedEvent, FeedFollower

POLL_S = 0.2  # how soon a waiting turn notices Ctrl-C


class _Stopped(Exception):
    """The feed's reader is no longer wanted."""


class FeedQueue:
    """A thread's feed, read on a thread of its own into a queue."""

    def __init__(self, api: ApiClient, thread_id: str) -> None:
        self.items: queue.Queue[FeedEvent | CliError] = queue.Queue()
        self.stopped = threading.Event()
        self.follower = FeedFollower(api, thread_id, on_status=self._reconnecting)
        self.reader = threading.Thread(target=self._read, name="eval-feed", daemon=True)
        self.reader.start()

    def _reconnecting(self, _status: str | None) -> None:
        if self.stopped.is_set():
            raise _Stopped  # no reconnecting for a conversation that has ended

    def _read(self) -> None:
        events = self.follower.events()
        try:
            for event in events:
                if self.stopped.is_set():
                    return
                self.items.put(event)
        except _Stopped:
            pass
        except CliError as exc:
            self.items.put(exc)
        except Exception as exc:  # the client closed under a blocked read, say
            if not self.stopped.is_set():
                self.items.put(CliError(f"The thread's feed failed: {exc}"))
        finally:
            events.close()

    def next(self, deadline: float, cancel: threading.Event) -> FeedEvent | None:
        """The next event; None once `deadline` (monotonic) has passed or `cancel` is set."""
        while not cancel.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                item = self.items.get(timeout=min(left, POLL_S))
            except queue.Empty:
                continue
            if isinstance(item, CliError):
                raise item
            return item
        return None

    def close(self) -> None:
        """Stop reading (the reader ends with its current read, or when the client closes)."""
        self.stopped.set()
