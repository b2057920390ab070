"""The NATS subjects primaries and edges speak on (one place, so both sides agree)."""

from __future__ import annotations

import re

PREFIX = "voicestack"
# Requests from edges, answered by any primary (a queue group): calls and stream openings.
CALL = f"{PREFIX}.call"
OPEN = f"{PREFIX}.open"
SOCKET = f"{PREFIX}.socket"  # a WebSocket's opening
PRIMARIES = "primaries"  # the queue group
# A primary announces itself here every HELLO_S seconds: `{"primary": id}`.
HELLO = f"{PREFIX}.hello"
HELLO_S = 1.0
# Missed hellos after which edges take a primary for gone and reopen its streams elsewhere.
PRIMARY_GONE_S = 4.0
# Ids that are one NATS subject token (thread ids the server makes always are).
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,128}")


def is_token(value: str) -> bool:
    """Whether `value` can stand as one token of a subject."""
    return _TOKEN.fullmatch(value) is not None


def stream_subject(edge: str, stream: str) -> str:
    """Where the events of an edge's stream are published."""
    return f"{PREFIX}.stream.{edge}.{stream}"


def edge_streams(edge: str) -> str:
    """What an edge subscribes to: every stream of its own, in one ordered subscription."""
    return f"{PREFIX}.stream.{edge}.*"


def request_bodies(edge: str) -> str:
    """Where a primary reads, part by part, a request body an edge holds (one too large for
    one message)."""
    return f"{PREFIX}.body.{edge}"


def call_on(primary: str) -> str:
    """Where an edge sends a call that one primary alone can answer (a client joining a shared
    stream that primary holds)."""
    return f"{CALL}.{primary}"


def open_on(primary: str) -> str:
    """Where an edge opens a stream on one primary of its choosing (a thread's, on the primary
    every edge picks for that thread)."""
    return f"{OPEN}.{primary}"


def primary_inbox(primary: str) -> str:
    """Where an edge tells one primary which of its streams it still holds, or closes."""
    return f"{PREFIX}.primary.{primary}"


def socket_frames(primary: str, edge: str, stream: str) -> str:
    """Where an edge sends its client's frames of a relayed WebSocket."""
    return f"{PREFIX}.frames.{primary}.{edge}.{stream}"


def primary_frames(primary: str) -> str:
    """What a primary subscribes to: the frames of every socket it holds."""
    return f"{PREFIX}.frames.{primary}.>"


def thread_subject(thread_id: str, instance: str) -> str:
    """Where a primary publishes its stream `instance` of a thread, once for every edge that
    follows the thread there (voicestack/scale/thread_streams.py)."""
    return f"{PREFIX}.thread.{thread_id}.{instance}"


def thread_streams(thread_id: str) -> str:
    """What an edge subscribes to before it opens a thread's stream: that thread's stream on
    whichever primary answers."""
    return f"{PREFIX}.thread.{thread_id}.*"
