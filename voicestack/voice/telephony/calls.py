"""A phone call's way in: the TwiML that connects it to the media stream with a one-time token,
and the thread the stream becomes once that token is spent.

A token is issued when Twilio's signed webhook asks for the call's TwiML, and is good once, for
STREAM_TOKEN_TTL_S seconds, for that call only: the stream's `start` must carry it with the same
call SID. Spending it and creating the call's thread are one transaction, so a wrong, expired or
reused token creates nothing (a token shown by another call is spent: it has leaked).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from urllib.parse import urlsplit
from xml.sax.saxutils import quoteattr

from voicestack.agent.threads import insert_thread
from voicestack.auth.users import ensure_user, token_hash
from voicestack.identity import Caller
from voicestack.store.db import WriteDB

# Twilio opens the stream right after it fetches the TwiML: a minute is ample.
STREAM_TOKEN_TTL_S = 60.0
STREAM_PATH = "/twilio/stream"


@dataclass(frozen=True, slots=True)
class CallDetails:
    """What Twilio's signed webhook said about a call."""

    call_sid: str
    caller: str | None  # the caller's number (`From`)
    called: str | None  # the number they dialled (`To`)


@dataclass(frozen=True, slots=True)
class CallThread:
    """The thread a call's stream became, and the user who owns it."""

    thread_id: str
    owner: Caller


def stream_url(public_url: str) -> str:
    """The media stream's WebSocket URL under the server's public URL (wss for https)."""
    parts = urlsplit(public_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}{STREAM_PATH}"


def connect_twiml(url: str, token: str) -> str:
    """TwiML that connects the call to the media stream at `url`, passing `token`."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f"<Response><Connect><Stream url={quoteattr(url)}>"
        f'<Parameter name="token" value={quoteattr(token)}/>'
        "</Stream></Connect></Response>"
    )


def issue_stream_token(db: WriteDB, call: CallDetails) -> str:
    """A new one-time token for `call`'s media stream (expired ones are dropped meanwhile)."""
    stamp = time.time()
    db.execute("DELETE FROM twilio_stream_tokens WHERE expires_at < ?", (stamp,))
    token = secrets.token_urlsafe(32)
    db.execute(
        "INSERT INTO twilio_stream_tokens(token_hash, call_sid, caller, called, expires_at)"
        " VALUES (?, ?, ?, ?, ?)",
        (token_hash(token), call.call_sid, call.caller, call.called, stamp + STREAM_TOKEN_TTL_S),
    )
    return token


def start_call_thread(db: WriteDB, token: str, call_sid: str, owner_name: str) -> CallThread | None:
    """Spend `token` on the call `call_sid` and create its thread, owned by the user
    `owner_name` (created if missing), with the call in the thread's metadata.

    None, and no thread, when the token is not good for this call; a token presented by another
    call is spent all the same, since it has leaked.
    """
    row = db.one(
        "DELETE FROM twilio_stream_tokens WHERE token_hash = ?"
        " RETURNING call_sid, caller, called, expires_at",
        (token_hash(token),),
    )
    if row is None or row["expires_at"] < time.time() or row["call_sid"] != call_sid:
        return None
    owner = ensure_user(db, owner_name)
    title = f"Call from {row['caller']}" if row["caller"] else "Phone call"
    metadata = {
        "channel": "twilio",
        "callSid": call_sid,
        "from": row["caller"],
        "to": row["called"],
    }
    return CallThread(insert_thread(db, owner, title=title, metadata=metadata), owner)


class CallSlots:
    """The phone call sockets this process holds open, started or not: at most `limit` (0: no
    limit), so sockets that never start cannot pile up on a route without bearer tokens."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0

    def take(self) -> bool:
        """Count one more open call socket; False, counting nothing, when all are taken."""
        if self.limit and self.open >= self.limit:
            return False
        self.open += 1
        return True

    def give_back(self) -> None:
        """A call socket taken with `take` has closed."""
        self.open -= 1
