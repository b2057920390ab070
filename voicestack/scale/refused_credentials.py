"""Credentials a primary refused, remembered by an edge so that it refuses them itself.

A token or sign-in session that a primary refuses as unknown, revoked or ended stays refused:
tokens and sessions are random secrets, and revocations and expiries are final. So once a
primary has said so, the edge answers later requests with that credential with the same 401
itself, and the primary hears nothing of them. A client that keeps retrying a revoked token (a
device nobody signed out, a script with an old key, an EventSource reconnecting) costs the
primary one check, however often it retries, on however many routes.

What an edge keeps of credentials that a primary accepted is its shared upstreams and their
members (edge_streams.py, feed_upstream.py): a stream opened with a credential, or a member
joined with it, is that credential's check, shared by every client of it on the edge, and the
primary ends it in the stream itself at the commit that revokes the credential. Plain calls are
checked by the primary, from its own cache of checks, on every call.

Refusals are forgotten after KEEP_S, the oldest first beyond MAX_KEPT, and all of them whenever
the edge hears of a primary process it had not heard of: a restart, or a failover, may come
with a database restored from before the revocation. An answer given before the edge heard of
that process is not kept. Routes that take no credential (the page, sign-in, health) are never
refused here, whatever the request carries, as the primary judges nothing there.
"""

from __future__ import annotations

import collections
import hashlib
import json
import time
from collections.abc import Callable

from starlette.responses import Response
from starlette.types import Scope

from voicestack.http.auth import SELF_CHECKED_SOCKETS, is_public, presented_token
from voicestack.http.signin_auth import session_cookie
from voicestack.scale.envelope import ResponseEnvelope

# The 401 codes that judge the credential itself (voicestack/http/auth.py, signin_auth.py);
# others (no credential, a malformed header, a token where none is taken) judge the request.
REFUSED_CODES = frozenset({"invalid_token", "session_ended"})
MAX_KEPT = 10_000
KEEP_S = 600.0


def fingerprint(said: str) -> str:
    """The key of a credential as a client presents it (`bearer\\0TOKEN`, `session\\0SECRET`):
    a hash, so that the edge keeps no secret."""
    return hashlib.sha256(said.encode("utf-8", "surrogateescape")).hexdigest()


def credential_of(scope: Scope) -> str | None:
    """The credential a request presents, read as a primary reads it (a bearer token, else its
    sign-in cookie), as a fingerprint; None when it presents none, or one that the primary
    refuses for its form alone, or when its route takes no credential
    (voicestack.http.auth.Authenticate lets it through unjudged)."""
    path = scope["path"]
    if is_public(path) if scope["type"] == "http" else path in SELF_CHECKED_SOCKETS:
        return None
    token, problem = presented_token(scope)
    if problem is not None:
        return None
    if token is not None:
        return fingerprint("bearer\0" + token)
    cookie = session_cookie(scope)
    return fingerprint("session\0" + cookie) if cookie else None


def refused_error(status: int, body: bytes) -> tuple[str, str] | None:
    """The error code and message of a 401 that refuses the credential itself, else None."""
    if status != 401:
        return None
    try:
        error = json.loads(body)["error"]
        code, message = error["code"], error["message"]
    except (ValueError, KeyError, TypeError):
        return None
    if code not in REFUSED_CODES or not isinstance(message, str):
        return None
    return code, message


class RefusedCredentials:
    """The credentials a primary refused, by fingerprint, each with that refusal."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._kept: collections.OrderedDict[str, tuple[float, ResponseEnvelope]] = (
            collections.OrderedDict()
        )
        self._primaries = 0
        self.answered = 0  # requests this edge refused from them, the primary asked nothing

    def __len__(self) -> int:
        self._forget_lapsed()
        return len(self._kept)

    def refusal(self, credential: str | None, primaries: int) -> ResponseEnvelope | None:
        """The primary's refusal of `credential`, if it refused it (within KEEP_S, and with no
        primary heard of since, `primaries` being how many the edge has heard of now)."""
        if credential is None or not self._kept:
            return None
        self._current(primaries)
        self._forget_lapsed()
        refusal = self._kept.get(credential)
        if refusal is None:
            return None
        self.answered += 1
        return refusal[1]

    def note(self, credential: str | None, answer: ResponseEnvelope, primaries: int) -> None:
        """Remember `answer` for `credential` if it refuses the credential itself, `primaries`
        being how many primary processes the edge had heard of when it asked (an answer from
        before a process it has heard of since is not kept)."""
        if credential is None or refused_error(answer.status, answer.body) is None:
            return
        if not self._current(primaries):
            return
        # No cookie: a primary may renew a session's cookie in the very answer that refuses
        # the request (its user is gone); the edge keeps no secret.
        headers = [(n, v) for n, v in answer.headers if n.lower() != b"set-cookie"]
        self._kept[credential] = (
            self._clock(),
            ResponseEnvelope(answer.status, headers, answer.body),
        )
        self._kept.move_to_end(credential)
        while len(self._kept) > MAX_KEPT:
            self._kept.popitem(last=False)

    def note_response(self, credential: str | None, response: Response, primaries: int) -> None:
        """`note` for a response the edge made of a primary's answer."""
        if credential is not None and response.status_code == 401:
            body = bytes(response.body)
            answer = ResponseEnvelope(response.status_code, list(response.raw_headers), body)
            self.note(credential, answer, primaries)

    def _current(self, primaries: int) -> bool:
        """Whether `primaries` is the newest count; a newer one forgets every refusal."""
        if primaries > self._primaries:
            self._kept.clear()
            self._primaries = primaries
        return primaries == self._primaries

    def _forget_lapsed(self) -> None:
        # The oldest come first: each refusal noted again moves to the end.
        deadline = self._clock() - KEEP_S
        while self._kept and next(iter(self._kept.values()))[0] < deadline:
            self._kept.popitem(last=False)
