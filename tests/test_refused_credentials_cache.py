"""What an edge keeps of the credentials a primary refused (voicestack/scale/refused_credentials):
only refusals of the credential itself, each for KEEP_S, at most MAX_KEPT, and none once a
primary process the edge did not know speaks."""

from __future__ import annotations

import json

from voicestack.scale import refused_credentials
from voicestack.scale.envelope import ResponseEnvelope
from voicestack.scale.errors import error_envelope
from voicestack.scale.refused_credentials import (
    KEEP_S,
    RefusedCredentials,
    credential_of,
    fingerprint,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _refusal(code: str = "invalid_token") -> ResponseEnvelope:
    return error_envelope(401, code, "no")


def test_only_refusals_of_the_credential_itself_are_kept() -> None:
    kept = RefusedCredentials()
    kept.note("a", _refusal("unauthorized"), 1)  # no credential, or a malformed one
    kept.note("b", error_envelope(403, "csrf_failed", "no"), 1)
    kept.note("c", ResponseEnvelope(401, [], b"not json"), 1)
    kept.note(None, _refusal(), 1)
    assert len(kept) == 0
    kept.note("d", _refusal("session_ended"), 1)
    kept.note("e", _refusal(), 1)
    assert len(kept) == 2
    refusal = kept.refusal("e", 1)
    assert refusal is not None
    assert json.loads(refusal.body)["error"]["code"] == "invalid_token"
    assert kept.refusal("a", 1) is None
    assert kept.answered == 1


def test_a_refusal_is_forgotten_after_a_while_or_when_a_new_primary_speaks() -> None:
    clock = Clock()
    kept = RefusedCredentials(clock)
    kept.note("old", _refusal(), 1)
    clock.now += KEEP_S / 2
    kept.note("new", _refusal(), 1)
    clock.now += KEEP_S / 2 + 1
    assert kept.refusal("old", 1) is None
    assert kept.refusal("new", 1) is not None
    assert kept.refusal("new", 2) is None  # a primary process it had not heard of
    assert len(kept) == 0
    kept.note("late", _refusal(), 1)  # asked before the edge heard of that process
    assert len(kept) == 0
    kept.note("lapses", _refusal(), 2)
    assert len(kept) == 1
    clock.now += KEEP_S + 1
    assert len(kept) == 0  # lapsed ones are not counted


def test_a_refusal_is_kept_without_its_cookies() -> None:
    kept = RefusedCredentials()
    answer = _refusal()
    answer.headers.append((b"set-cookie", b"vs_session=s3cret; Path=/"))
    answer.headers.append((b"www-authenticate", b'Bearer realm="voicestack"'))
    kept.note("a", answer, 1)
    refusal = kept.refusal("a", 1)
    assert refusal is not None
    assert [n for n, _ in refusal.headers] == [b"content-type", b"www-authenticate"]


def test_the_oldest_refusals_go_first_beyond_the_bound() -> None:
    kept = RefusedCredentials()
    bound = refused_credentials.MAX_KEPT
    for n in range(bound + 2):
        kept.note(str(n), _refusal(), 1)
    assert len(kept) == bound
    assert kept.refusal("0", 1) is None
    assert kept.refusal("1", 1) is None
    assert kept.refusal(str(bound + 1), 1) is not None


def test_a_credential_is_read_as_a_primary_reads_it() -> None:
    def scope(
        headers: list[tuple[bytes, bytes]], path: str = "/api/threads", query: bytes = b""
    ) -> dict[str, object]:
        return {
            "type": "http",
            "method": "GET",
            "path": path,
            "headers": headers,
            "query_string": query,
        }

    bearer = fingerprint("bearer\0vs_abc")
    assert credential_of(scope([(b"authorization", b"Bearer vs_abc")])) == bearer
    assert credential_of(scope([(b"authorization", b"bearer  vs_abc ")])) == bearer
    stream = "/api/threads/t1/events"
    assert credential_of(scope([], stream, b"token=vs_abc")) == bearer
    # ?token= where none is taken, a scheme that is not Bearer, and nothing: not kept.
    assert credential_of(scope([], query=b"token=vs_abc")) is None
    assert credential_of(scope([(b"authorization", b"Basic eA==")])) is None
    assert credential_of(scope([])) is None
    cookie = scope([(b"cookie", b"vs_session=s3cret; other=1")])
    assert credential_of(cookie) == fingerprint("session\0s3cret")
    # Routes that take no credential: the primary judges none there.
    for public in ("/", "/healthz", "/auth/providers", "/web/app.js", "/openapi.json"):
        assert credential_of(scope([(b"authorization", b"Bearer vs_abc")], public)) is None
    call = {**scope([], "/twilio/stream", b"token=vs_abc"), "type": "websocket"}
    assert credential_of(call) is None
    audio = {**scope([], "/api/threads/t1/audio", b"token=vs_abc"), "type": "websocket"}
    assert credential_of(audio) == bearer
