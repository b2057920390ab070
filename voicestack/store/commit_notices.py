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
that every path to the same file agrees) and its own pid; peers are found in /proc/net/unix, by
the hub once a second, off the writer thread. Abstract sockets vanish with their process: a
crash leaves nothing to clean up. They carry no permissions either, so at most MAX_PEERS names
of the exact shape are taken: anyone on the host could bind names, but not make a commit send
more than that many notices.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import socket
import threading
from pathlib import Path

log = logging.getLogger(__name__)

MAX_PEERS = 64
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
        self._looked = False
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
        sock: socket.socket | None = None
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            sock.setblocking(False)
            sock.bind("\0" + name)
        except OSError as exc:  # no such sockets here, no file descriptors left, forbidden
            if sock is not None:
                sock.close()
            log.info("commit notices are off (%s): other processes poll for commits", exc)
            return None
        return cls(sock, prefix, name)

    def fileno(self) -> int:
        """The socket to watch for notices (readable when one arrived)."""
        return self._sock.fileno()

    def look_for_peers(self) -> None:
        """Find the other processes of the file now (reads /proc/net/unix; call it off the
        writer thread, about once a second). Never raises."""
        try:
            found = _abstract_names(self._prefix, self._name)
        except OSError:
            return
        with self._lock:
            self._peers = found
            self._looked = True

    def notify(self) -> None:
        """Tell every other process of the file that a commit happened. Never raises, never
        blocks: a peer that cannot take the notice finds the commit at its next poll."""
        if not self._looked:  # no hub looks for this Store's peers (a CLI command): once here
            self.look_for_peers()
        with self._lock:
            peers = self._peers
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
    def name(self) -> str:
        """This process's socket name for the file (abstract: without its leading NUL)."""
        return self._name

    @property
    def peers(self) -> int:
        """How many other processes of the file were found at the last look."""
        return len(self._peers)

    def close(self) -> None:
        """Close the socket (its name is released with it)."""
        self._sock.close()


def _abstract_names(prefix: str, own: str) -> list[str]:
    """The abstract Unix socket names `prefix` + pid + "-" + 8 hex digits, other than `own`;
    at most MAX_PEERS of them."""
    shape = re.compile("@" + re.escape(prefix) + r"\d+-[0-9a-f]{8}")
    found: set[str] = set()
    with _PROC_UNIX.open(encoding="utf-8", errors="replace") as table:
        for line in table:
            path = line.rstrip("\n").rpartition(" ")[2]
            if shape.fullmatch(path) and path[1:] != own:
                found.add(path[1:])
                if len(found) >= MAX_PEERS:
                    break
    return sorted(found)
