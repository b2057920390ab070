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

The poll is a timer on the loop that first asks a `moved()` check (DataVersionProbe: a few
microseconds, on the loop's own thread) and reads the log only when it says something may have
committed, or when it is time to look for new processes of the file. An idle server then only
looks; it used to send a read to the hub's thread at every poll, forty a second, waking two
threads each time.

A read can run inside the snapshot of a batch that waits for another process's commit it
already sees. The log it reads ends at that snapshot, and a later commit whose notice was spent
on it would wait for the next commit or poll; so when the snapshot ends, the hub asks for one
more read if the probe finds a commit not yet received. For the same reason the probe keeps
saying "moved" until that commit is received.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from voicestack.store.changes import ChangeSet
from voicestack.store.commit_notices import CommitNotices
from voicestack.store.data_version import DataVersionProbe

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
        self._moved: Callable[[], bool] = lambda: True
        self._wake = asyncio.Event()
        self._noticed = False  # a notice came: read, then space the next ones
        self._polled = False  # a poll found the file moved: read
        self._in_snapshot = False  # a read ran in a batch's snapshot: read again after it
        self._gap_s = NOTICE_GAP_S
        self._loop: asyncio.AbstractEventLoop | None = None
        self._poll: asyncio.TimerHandle | None = None
        self._next_look = 0.0
        self._stopped = False
        self.reads = 0  # change-log reads so far, whatever asked for them

    async def run(
        self, probe: DataVersionProbe | None = None, known: Callable[[], int] = int
    ) -> None:
        """Read the change log at every notice (spaced as above), and at every poll that finds
        a commit newer than `known()` (the version up to which every commit has been
        received) through `probe`, or at every poll with no probe; until stopped. The probe is
        closed on the way out."""
        self._loop = asyncio.get_running_loop()
        if probe is not None:
            self._moved = lambda: probe.committed_after(known())
        self._watch()
        self._on_poll()
        try:
            while not self._stopped:
                await self._wake.wait()
                self._wake.clear()
                if self._stopped:
                    return
                await self._look_for_peers()
                if not (self._noticed or self._polled):
                    continue
                noticed, self._noticed, self._polled = self._noticed, False, False
                self.reads += 1
                try:
                    changesets = await self._read()
                except Exception:
                    log.exception("reading the change log failed")
                    changesets = []
                for changeset in changesets:
                    self._receive(changeset)
                if noticed:
                    await self._space_notices()
        finally:
            if self._poll is not None:
                self._poll.cancel()
            if probe is not None:
                probe.close()

    def stop(self) -> None:
        """Stop watching for notices (before the store closes their socket) and polling."""
        self._stopped = True
        self._unwatch()
        if self._poll is not None:
            self._poll.cancel()
        self._wake.set()

    def reading_in_snapshot(self) -> None:
        """Note that the read under way runs in the hub's snapshot of a batch (on the hub's
        thread). The log it sees ends there, so a commit made since, whose notice may have led
        to this read, is read once the snapshot has ended (`snapshot_ended`)."""
        self._in_snapshot = True

    def snapshot_ended(self) -> None:
        """The hub's batch snapshot has ended: if a read ran in it, read the change log again,
        soon, when the probe finds a commit not yet received."""
        if self._in_snapshot and not self._stopped:
            self._in_snapshot = False
            if self._moved():
                self._polled = True
                self._wake.set()

    def _on_poll(self) -> None:
        loop = self._loop
        if self._stopped or loop is None:
            return
        self._poll = loop.call_later(self._poll_s, self._on_poll)
        if self._moved():
            self._polled = True
            self._wake.set()
        elif self._look_due():
            self._wake.set()

    def _look_due(self) -> bool:
        return (
            self._notices is not None
            and self._loop is not None
            and (self._loop.time() >= self._next_look)
        )

    async def _look_for_peers(self) -> None:
        if self._notices is not None and self._loop is not None and self._look_due():
            # Off the loop and the writer thread: the socket table can be long on a busy host.
            self._next_look = self._loop.time() + PEER_LOOK_S
            await self._loop.run_in_executor(None, self._notices.look_for_peers)

    def _on_notice(self) -> None:
        if self._notices is None:
            return
        self._notices.drain()
        # Until the change log is read, more notices add nothing: stop waking up for them.
        self._unwatch()
        self._noticed = True
        self._wake.set()

    async def _space_notices(self) -> None:
        if self._notices is None:
            return
        await asyncio.sleep(self._gap_s)
        if self._notices.drain():
            self._gap_s = min(self._gap_s * 2, self._poll_s)
            self._noticed = True
            self._wake.set()
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
