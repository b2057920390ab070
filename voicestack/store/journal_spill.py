"""How much of a transaction's rollback copies SQLite keeps in memory before it moves them to a
temporary file.

A savepoint (each mutation of a group commit runs in one) and a statement that changes many rows
keep a copy of every page they change, so that they can be undone alone. SQLite keeps 64 KiB of
these copies in memory, then moves them to a temporary file that it creates, writes and closes
inside the transaction: a message's send changes about 20 pages, some 80 KB. With 1 MiB the
usual mutation stays in memory, and a larger one (a migration's backfill, a big delete) still
spills to disk, so memory stays bounded.

SQLite takes the setting only while it is not initialized, so it is set before the process
opens its first connection; when other code has opened one already, the default stays.
"""

from __future__ import annotations

import logging

import apsw

log = logging.getLogger(__name__)

ROLLBACK_COPIES_IN_MEMORY_BYTES = 1 << 20


def keep_rollback_copies_in_memory() -> bool:
    """Let SQLite keep up to ROLLBACK_COPIES_IN_MEMORY_BYTES of a savepoint's or a statement's
    rollback copies in memory, if no connection is open in this process yet; True when set."""
    if apsw.connections():
        log.debug("SQLite's statement journal spill stays at its default: a connection is open")
        return False
    apsw.shutdown()
    try:
        apsw.config(apsw.SQLITE_CONFIG_STMTJRNL_SPILL, ROLLBACK_COPIES_IN_MEMORY_BYTES)
    except apsw.Error as exc:
        log.debug("SQLite's statement journal spill stays at its default: %s", exc)
        return False
    finally:
        apsw.initialize()
    return True
