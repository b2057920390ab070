"""Commit notices between the processes that share one database file.

Under `serve --workers N`, or several `serve` processes on one file, a process learns of
another's commits by polling `PRAGMA data_version` (the hub's foreign-commit loop, every 25 ms).
A notice makes that immediate: after each commit, the writer sends an empty datagram to every
other process of the file, and each one reads the change log at once instead of at its next
poll.

A notice says only "look now"; the change log stays the truth. So a lost notice costs nothing
but the poll's delay: a peer not yet found (peers are looked up at most once a second), a full
socket buffer, or a system without abstract Unix sockets (anywhere but Linux), where notices are
simply off.

Each process binds an abstract Unix datagram socket named after the file's device and inode (so
that every path to the same file agrees) and its own pid; peers are found in /proc/net/unix.
Abstract sockets vanish with their process: a crash leaves nothing to clean up.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

PEER_REFRESH_S = 1.0  # a new process is found within this; the poll covers it meanwhile
_PROC_UNIX = Path("/proc/net/unix")
_NOTICE = b"!"


class CommitNotices:
    """This process's notice socket for one database file: `notify()` after a commit (any
    thread), `drain()` when `fileno()` is readable (the event loop)."""

    def __init__(self, sock: socket.socket, prefix: str, name: str) -> None:
        self._sock = sock
        self._prefix = prefix  # without the leading NUL, as /proc/net/unix shows it after "@"
        self._name = name
        self._peers: list[str] = []
        self._looked_at = -PEER_REFRESH_S
        self._lock = threading.Lock()
        self.sent = 0
        self.received = 0

    @classmethod
    def open(cls, db_path: Path) -> CommitNotices | None:
        """Bind this process's notice socket for the file at `db_path`; None where notices
        cannot work (no abstract Unix sockets, no /proc/net/unix, no such file)."""
        if not _PROC_UNIX.exists():
            return None
        try:
            stat = db_path.stat()
        except OSError:
            return None
        prefix = f"voicestack-commits-{stat.st_dev:x}-{stat.st_ino:x}-"
        name = f"{prefix}{os.getpid()}-{secrets.token_hex(4)}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            sock.setblocking(False)
            sock.bind("\0" + name)
        except OSError as exc:
            sock.close()
            log.info("commit notices are off (%s): other processes poll for commits", exc)
            return None
        return cls(sock, prefix, name)

    def fileno(self) -> int:
        """The socket to watch for notices (readable when one arrived)."""
        return self._sock.fileno()

    def notify(self) -> None:
        """Tell every other process of the file that a commit happened. Never raises, never
        blocks: a peer that cannot take the notice finds the commit at its next poll."""
        with self._lock:
            peers = self._current_peers()
            gone: list[str] = []
            for peer in peers:
                try:
                    self._sock.sendto(_NOTICE, "\0" + peer)
                    self.sent += 1
                except (ConnectionRefusedError, FileNotFoundError):
                    gone.append(peer)  # its process ended
                except OSError:
                    pass  # its buffer is full: it has notices to read already
            if gone:
                self._peers = [peer for peer in self._peers if peer not in gone]

    def drain(self) -> int:
        """Read every waiting notice; how many there were."""
        count = 0
        while True:
            try:
                self._sock.recv(16)
            except OSError:  # BlockingIOError: none left
                break
            count += 1
        self.received += count
        return count

    @property
    def peers(self) -> int:
        """How many other processes of the file were found at the last look."""
        return len(self._peers)

    def close(self) -> None:
        """Close the socket (its name is released with it)."""
        self._sock.close()

    def _current_peers(self) -> list[str]:
        now = time.monotonic()
        if now - self._looked_at >= PEER_REFRESH_S:
            self._looked_at = now
            with contextlib.suppress(OSError):
                self._peers = _abstract_names(self._prefix, self._name)
        return self._peers


def _abstract_names(prefix: str, own: str) -> list[str]:
    """The abstract Unix socket names starting with `prefix`, other than `own`."""
    marker = "@" + prefix
    found: set[str] = set()
    with _PROC_UNIX.open(encoding="utf-8", errors="replace") as table:
        for line in table:
            path = line.rstrip("\n").rpartition(" ")[2]
            if path.startswith(marker) and path[1:] != own:
                found.add(path[1:])
    return sorted(found)
