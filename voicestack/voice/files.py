"""Audio kept in the database: the `files` table's rows, written and read back in byte ranges."""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass

import apsw

from voicestack.agent.records import now
from voicestack.ids import new_id
from voicestack.store.db import ReadDB, WriteDB


@dataclass(frozen=True, slots=True)
class Audio:
    """Audio bytes with what is known about them before they are stored."""

    data: bytes
    content_type: str
    sha256: str
    duration_s: float | None

    @classmethod
    def of(cls, data: bytes, content_type: str, duration_s: float | None) -> Audio:
        """Wrap `data`, hashing it (call off the event loop for big uploads)."""
        return cls(data, content_type, hashlib.sha256(data).hexdigest(), duration_s)


@dataclass(frozen=True, slots=True)
class FileInfo:
    """A stored file's row without its bytes."""

    id: str
    rowid: int
    thread_id: str
    content_type: str
    size: int
    sha256: str


def insert_file(
    db: WriteDB, thread_id: str, message_id: str | None, kind: str, audio: Audio
) -> str:
    """Store `audio` as a `files` row of `kind` ('upload' or 'speech'); returns its id."""
    file_id = new_id("file")
    db.execute(
        "INSERT INTO files(id, thread_id, message_id, kind, content_type, size, sha256, data,"
        " duration_s, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            file_id,
            thread_id,
            message_id,
            kind,
            audio.content_type,
            len(audio.data),
            audio.sha256,
            audio.data,
            audio.duration_s,
            now(),
        ),
    )
    return file_id


def link_file(db: WriteDB, file_id: str, message_id: str) -> None:
    """Record which message a file belongs to."""
    db.execute("UPDATE files SET message_id = ? WHERE id = ?", (message_id, file_id))


def file_info(db: ReadDB, file_id: str) -> FileInfo | None:
    """The row of file `file_id` without its bytes, or None."""
    row = db.one(
        "SELECT rowid, id, thread_id, content_type, size, sha256 FROM files WHERE id = ?",
        (file_id,),
    )
    if row is None:
        return None
    return FileInfo(
        row["id"], row["rowid"], row["thread_id"], row["content_type"], row["size"], row["sha256"]
    )


def read_bytes(conn: apsw.Connection, info: FileInfo, start: int, length: int) -> bytes:
    """`length` bytes of the file from `start`, read incrementally (never the whole blob)."""
    if length <= 0:
        return b""
    # closing(), not the blob's own `with`: apsw types Blob.__exit__ as returning bool, so mypy
    # would take it for one that can swallow exceptions.
    with contextlib.closing(conn.blob_open("main", "files", "data", info.rowid, False)) as blob:
        blob.seek(start)
        return blob.read(length)
