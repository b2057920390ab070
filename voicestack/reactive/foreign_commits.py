"""Commits made by other processes on the same database file, found for the hub.

apsw's hooks only see this process's writer. Another process's commit shows up as a new
`PRAGMA data_version` on the hub's reader, with its rows in the change log; the hub reads them
when that process's commit notice arrives (voicestack/store/commit_notices.py), and at the
latest at its poll, every `poll_s`.

Busy writers elsewhere send a notice per commit, and reading the log for each would cost more
than it saves. So after a read a notice caused, notices wait a gap. When more came during it,
they are read at once and the gap doubles, up to the poll's interval: a steady stream of commits
is read as often as polling would read it. When none came, the gap is short again, so sparse
commits (a reply's deltas, a message) arrive at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from voicestack.store.changes import ChangeSet
from voicestack.store.commit_notices import CommitNotices

log = logging.getLogger(__name__)

NOTICE_GAP_S = 0.002
PEER_LOOK_S = 1.0  # a new process of the file gets notices within this; it polls meanwhile


class ForeignCommits:
    """Reads other processes' commits (`read`) and hands each to `receive`, on notice or poll."""

    def __init__(
        self,
        notices: CommitNotices | None,
        poll_s: float,
        read: Callable[[], Awaitable[list[ChangeSet]]],
        receive: Callable[[ChangeSet], None],
    ) -> None:
        self._notices = notices
        self._poll_s = poll_s
        self._read = read
        self._receive = receive
        self._noticed = asyncio.Event()
        self._gap_s = NOTICE_GAP_S
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped = False

    async def run(self) -> None:
        """Read the change log at every notice (spaced as above) or poll, until stopped."""
        self._loop = asyncio.get_running_loop()
        self._watch()
        next_look = 0.0
        while not self._stopped:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancel that
            # lands just as the event is set, and this loop would then outlive the hub.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_s):
                    await self._noticed.wait()
            if self._stopped:
                return
            if self._notices is not None and self._loop.time() >= next_look:
                # Off the writer thread: the socket table can be long on a busy host.
                next_look = self._loop.time() + PEER_LOOK_S
                await self._loop.run_in_executor(None, self._notices.look_for_peers)
            noticed = self._noticed.is_set()
            self._noticed.clear()
            try:
                changesets = await self._read()
            except Exception:
                log.exception("reading the change log failed")
                changesets = []
            for changeset in changesets:
                self._receive(changeset)
            if noticed:
                await self._space_notices()

    def stop(self) -> None:
        """Stop watching for notices (before the store closes their socket)."""
        self._stopped = True
        self._unwatch()

    def _on_notice(self) -> None:
        if self._notices is None:
            return
        self._notices.drain()
        # Until the change log is read, more notices add nothing: stop waking up for them.
        self._unwatch()
        self._noticed.set()

    async def _space_notices(self) -> None:
        if self._notices is None:
            return
        await asyncio.sleep(self._gap_s)
        if self._notices.drain():
            self._gap_s = min(self._gap_s * 2, self._poll_s)
            self._noticed.set()
        else:
            self._gap_s = NOTICE_GAP_S
        self._watch()

    def _watch(self) -> None:
        if self._notices is None or self._loop is None or self._stopped:
            return
        try:
            self._loop.add_reader(self._notices.fileno(), self._on_notice)
        except (OSError, ValueError, RuntimeError):
            # The socket or the loop is closing: the poll still finds every commit.
            log.debug("commit notices not watched", exc_info=True)

    def _unwatch(self) -> None:
        if self._notices is None or self._loop is None or self._loop.is_closed():
            return
        with contextlib.suppress(OSError, ValueError):
            self._loop.remove_reader(self._notices.fileno())
