"""No token and no API key ever reaches the server's log or a response body.

One server with the access log on, `--quiet-token` and an OpenAI API key in its environment
serves a session that carries secrets every way it can: tokens in headers and in `?token=` (on a
stream, and where it is refused), unknown and malformed tokens, a revoked token, and a reply the
provider fails, so that errors get logged. Then the whole log and every byte answered are
searched for each secret.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import httpx
import pytest

from tests.support.agent import StartAgentServer, marker
from tests.support.server import REPO, ServerProcess, server_env
from voicestack.http.redact import redact
from voicestack.testing.fake_openai import FakeOpenAI

pytestmark = pytest.mark.anyio

API_KEY = "sk-test-" + secrets.token_urlsafe(24)


class Recorder:
    """Every body the server answered, as bytes."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def request(
        self, server: ServerProcess, method: str, path: str, **kwargs: object
    ) -> httpx.Response:
        """One request without default credentials; its body is recorded."""
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            response = await client.request(method, path, **kwargs)  # type: ignore[arg-type]
        self.bodies.append(response.content)
        return response

    @asynccontextmanager
    async def stream(self, server: ServerProcess, url: str) -> AsyncIterator[httpx.Response]:
        """An event stream whose URL carries the token, as EventSource does."""
        async with (
            httpx.AsyncClient(base_url=server.url, timeout=10) as client,
            client.stream("GET", url) as response,
        ):
            yield response

    async def read_until(
        self, chunks: AsyncIterator[bytes], text: str, timeout: float = 15
    ) -> None:
        """Record a stream's bytes until `text` has gone by."""
        seen = b""
        with anyio.fail_after(timeout):
            async for chunk in chunks:
                seen += chunk
                if text.encode() in seen:
                    break
        self.bodies.append(seen)


def revoke(server: ServerProcess, token: str) -> None:
    """`voicestack token revoke TOKEN` on the server's database."""
    command = [sys.executable, "-m", "voicestack", "token", "revoke", token]
    command += ["--db", str(server.db_path)]
    subprocess.run(command, cwd=REPO, env=server_env(), capture_output=True, check=True)


async def test_no_secret_in_the_log_or_any_answer(
    fake: FakeOpenAI, start_agent_server: StartAgentServer
) -> None:
    server = start_agent_server(
        fake.api_base, "--quiet-token", "--access-log", env={"OPENAI_API_KEY": API_KEY}
    )
    alice = server.create_token("alice")
    bob = server.create_token("bob")
    unknown = "vs_" + secrets.token_urlsafe(32)
    malformed = "not-a-token-" + secrets.token_hex(8)
    record = Recorder()

    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    admin = server.token or ""
    assert (await record.request(server, "GET", "/api/threads", headers=bearer(admin))).is_success
    created = await record.request(server, "POST", "/api/threads", headers=bearer(alice), json={})
    thread_id = created.json()["id"]

    # A reply the provider refuses, followed on a stream authenticated by ?token=.
    mark = marker()
    # The provider's refusal quotes the key, as a careless provider might.
    refusal = {"status": 401, "message": f"Incorrect API key provided: {API_KEY}."}
    fake.script({"match": mark, "error": refusal})
    events = f"/api/threads/{thread_id}/events"
    async with record.stream(server, f"{events}?token={alice}") as stream:
        assert stream.status_code == 200
        chunks = stream.aiter_bytes()
        await record.read_until(chunks, "event: ready")
        sent = await record.request(
            server,
            "POST",
            f"/api/threads/{thread_id}/messages",
            headers=bearer(alice),
            json={"text": f"{mark} hello"},
        )
        assert sent.status_code == 201, sent.text
        await record.read_until(chunks, '"status":"failed"')

    assert b"Incorrect API key provided: [redacted]" in b"".join(record.bodies)

    # The parameter's name and the token percent-encoded: the server decodes both.
    encoded = "".join(f"%{ord(c):02X}" if c in "_-" else c for c in alice)
    async with record.stream(server, f"{events}?%74oken={encoded}") as stream:
        assert stream.status_code == 200
        await record.read_until(stream.aiter_bytes(), "event: ready")

    # Tokens that must not work, each way a token can come.
    refused = [
        await record.request(server, "GET", "/api/threads", headers=bearer(unknown)),
        await record.request(server, "GET", "/api/threads", headers=bearer(malformed)),
        await record.request(
            server, "GET", "/api/threads", headers={"Authorization": f"Basic {malformed}"}
        ),
        await record.request(server, "GET", "/api/threads", params={"token": alice}),
        await record.request(server, "GET", "/api/watch/threads.list", params={"token": unknown}),
        await record.request(
            server, "GET", f"/api/threads/{thread_id}/events", params={"token": malformed}
        ),
    ]
    assert [r.status_code for r in refused] == [401] * 6

    # A token that worked, then was revoked.
    assert (await record.request(server, "GET", "/api/threads", headers=bearer(bob))).is_success
    revoke(server, bob)
    deadline = time.monotonic() + 10
    while (await record.request(server, "GET", "/api/tools", headers=bearer(bob))).is_success:
        assert time.monotonic() < deadline, "the revoked token still works"
        await anyio.sleep(0.1)
    revoked = await record.request(
        server, "GET", f"/api/threads/{thread_id}/events", params={"token": bob}
    )
    assert revoked.status_code == 401

    log = server.log()
    assert f'"GET /api/threads/{thread_id}/events?token=[redacted] HTTP/1.1" 200' in log, log
    assert '/v1/chat/completions "HTTP/1.1 401 Unauthorized"' in log, log  # the failure
    secrets_sent = {"api key": API_KEY, "admin": admin, "alice": alice, "bob": bob}
    secrets_sent |= {"unknown": unknown, "malformed": malformed}
    found = {
        name: (log.count(value), sum(body.count(value.encode()) for body in record.bodies))
        for name, value in secrets_sent.items()
    }
    assert found == dict.fromkeys(secrets_sent, (0, 0)), log


TOKEN = "vs_" + "A" * 40 + "b-_"


@pytest.mark.parametrize(
    ("line", "logged"),
    [
        (
            f"GET /api/watch?q=[]&token={TOKEN} HTTP/1.1",
            "GET /api/watch?q=[]&token=[redacted] HTTP/1.1",
        ),
        (f"GET /e?%74oken=vs%5F{TOKEN[3:]}", "GET /e?%74oken=[redacted]"),
        (f"GET /e?TOKEN={TOKEN}&since=3", "GET /e?TOKEN=[redacted]&since=3"),
        (f"GET /e?args=vs%5F{TOKEN[3:]}", "GET /e?args=[redacted]"),
        (f"Authorization: Bearer {TOKEN}", "Authorization: Bearer [redacted]"),
        (f"rejected {TOKEN}.", "rejected [redacted]."),
        (f"key {API_KEY} refused", "key [redacted] refused"),
        ("GET /api/threads?limit=5&before=thr_1", "GET /api/threads?limit=5&before=thr_1"),
    ],
    # Fixed ids: API_KEY is random, and parallel runners must collect the same names.
    ids=[
        "watch",
        "encoded-name",
        "upper-name",
        "encoded-value",
        "bearer",
        "prose",
        "api-key",
        "none",
    ],
)
def test_redact(line: str, logged: str) -> None:
    assert redact(line) == logged
