"""How the benchmarks reach the servers they start: with the first admin token, and without the
per-token limits, which are set for people and would cap a load generator long before the server.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from voicestack.serve.first_admin import token_file

# A limit of 0 is off (voicestack/http/limits.py). Environment variables rather than flags, so
# that a source tree from before the limits (`--source`) ignores them instead of failing.
NO_LIMITS_ENV = {
    "VOICESTACK_MAX_STREAMS_PER_TOKEN": "0",
    "VOICESTACK_RATE_MUTATIONS_PER_MIN": "0",
    "VOICESTACK_RATE_REPLIES_PER_MIN": "0",
    "VOICESTACK_RATE_VOICE_PER_MIN": "0",
}


def server_token(db: Path) -> str | None:
    """The first admin token `voicestack serve` made for database `db` and keeps beside it; None
    when there is no such file (a stand-in server, or a source tree from before tokens)."""
    with contextlib.suppress(OSError):
        return token_file(db).read_text().strip() or None
    return None


def auth_line(token: str | None) -> str:
    """The `Authorization: Bearer` header line of a raw request (CRLF included); "" without one."""
    return f"Authorization: Bearer {token}\r\n" if token else ""


def auth_headers(token: str | None) -> dict[str, str]:
    """The `Authorization: Bearer` header for an httpx client; {} without a token."""
    return {"Authorization": f"Bearer {token}"} if token else {}
