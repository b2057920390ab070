"""Quoting a client's input back in an error message, never more than a short prefix of it.

An error that repeats what it refuses helps the client find its mistake; repeating all of a
200,000-character argument only costs bandwidth and log space, so every message that quotes
input passes it through `echoed` first.
"""

from __future__ import annotations

ECHO_CHARS = 100  # enough for any id or name voicestack makes, and for a URL path


def echoed(text: str, limit: int = ECHO_CHARS) -> str:
    """`text` as an error message may quote it: whole up to `limit` characters, else its first
    `limit` characters and "…"."""
    return text if len(text) <= limit else text[:limit] + "…"
