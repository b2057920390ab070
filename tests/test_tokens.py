"""Tokens: the first admin token `serve` makes, `voicestack token create|list|revoke` on the file,
and what the HTTP layer answers to missing, malformed, unknown and revoked tokens."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import time

import httpx
import pytest

from cli.output import iso_time
from tests.support.api import error_of
from tests.support.cli import invoke
from tests.support.server import REPO, TEST_APP, ServerProcess, server_env
from tests.support.sse import watch

pytestmark = pytest.mark.anyio

REVOCATION_WAIT_S = 3.0


def token_file(server: ServerProcess):
    return server.db_path.with_name(server.db_path.name + ".token")


async def status_with(server: ServerProcess, token: str) -> int:
    async with server.client(token=token) as http:
        return (await http.get("/api/threads")).status_code


async def until_refused(server: ServerProcess, token: str) -> float:
    """Seconds until requests with `token` get 401 (the revocation reached the server)."""
    started = time.monotonic()
    while time.monotonic() - started < REVOCATION_WAIT_S:
        if await status_with(server, token) == 401:
            return time.monotonic() - started
        await asyncio.sleep(0.02)
    pytest.fail(f"{token[:6]}… still accepted {REVOCATION_WAIT_S} s after its revocation")


async def test_serve_makes_the_first_admin_token_once_and_prints_its_url(start_server):
    server = start_server()
    path = token_file(server)
    token = path.read_text().strip()

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert token.startswith("vs_")
    assert len(token) == 46
    assert f"open {server.url}/?token={token}" in server.log()
    server.restart()
    assert path.read_text().strip() == token  # not replaced
    assert server.log().count(f"/?token={token}") == 2  # the same URL on every start
    assert server.log().count("created the first admin token") == 1
    async with server.client() as http:
        me = await http.post("/api/query/threads.list", json={"args": {}})
    assert me.status_code == 200


async def test_quiet_token_prints_no_url(start_server):
    server = start_server(TEST_APP, "--quiet-token")
    assert server.token
    assert server.token not in server.log()
    assert "?token=" not in server.log()


async def test_token_commands_create_list_and_revoke_on_the_file(start_server):
    server = start_server()
    db = ["--db", str(server.db_path)]

    created = invoke(["token", "create", "--user", "ana", *db])
    assert created.exit_code == 0, created.stderr
    ana = created.stdout.strip()
    assert created.stdout == ana + "\n"  # the token alone, for $(...)
    assert await status_with(server, ana) == 200

    listed = invoke(["token", "list", "--json", *db])
    rows = {row["user"]: row for row in json.loads(listed.stdout)}
    assert set(rows) == {"admin", "ana"}
    assert rows["ana"]["role"] == "user"
    assert rows["admin"]["role"] == "admin"
    assert ana not in listed.stdout
    assert server.token not in listed.stdout

    revoked = invoke(["token", "revoke", rows["ana"]["id"], *db])
    assert revoked.exit_code == 0, revoked.stderr
    await until_refused(server, ana)
    async with server.client(token=ana) as http:
        error_of(await http.get("/api/threads"), 401, "invalid_token")

    twice = invoke(["token", "revoke", rows["ana"]["id"], *db])
    revoked_at = json.loads(invoke(["token", "list", "--json", *db]).stdout)[1]["revokedAt"]
    assert (twice.exit_code, twice.stdout) == (1, "")
    assert twice.stderr == (
        f"error: Token {rows['ana']['id']} of ana was already revoked at {iso_time(revoked_at)};"
        " nothing changed.\n"
    )

    again = invoke(["token", "revoke", "tok_000000000000", *db])
    assert again.exit_code == 1
    assert "No such token" in again.stderr


async def test_revoking_a_token_by_its_value_ends_its_open_stream(start_server):
    server = start_server()
    bea = server.create_token("bea")
    async with server.client(token=bea) as http, watch(http, "/api/watch/items.list") as stream:
        await stream.next()
        done = invoke(["token", "revoke", bea, "--db", str(server.db_path)])
        assert done.exit_code == 0, done.stderr
        await stream.ended(timeout=REVOCATION_WAIT_S)


async def test_requests_without_a_valid_token_get_401_with_the_error_shape(start_server):
    server = start_server()
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as anonymous:
        assert (await anonymous.get("/healthz")).status_code == 200
        assert (await anonymous.get("/")).status_code == 200
        missing = await anonymous.get("/api/threads")
        assert missing.headers["www-authenticate"].startswith("Bearer")
        error_of(missing, 401, "unauthorized")
        basic = await anonymous.get("/api/threads", headers={"Authorization": "Basic eDp5"})
        error_of(basic, 401, "unauthorized")
        for bad in ("nonsense", "vs_" + "A" * 43, server.token + "x"):
            answer = await anonymous.get("/api/threads", headers={"Authorization": f"Bearer {bad}"})
            error_of(answer, 401, "invalid_token")
        on_a_route = await anonymous.get(f"/api/threads?token={server.token}")
        error_of(on_a_route, 401, "unauthorized")
        async with watch(
            anonymous, "/api/watch/items.list", params={"token": server.token}
        ) as stream:
            assert (await stream.next()).json["value"] == []


def test_serve_refuses_a_public_address_while_no_token_is_valid(start_server):
    server = start_server()
    server.stop()
    assert invoke(["token", "revoke", server.token, "--db", str(server.db_path)]).exit_code == 0
    command = [sys.executable, "-m", "voicestack", "serve", "--db", str(server.db_path)]
    command += ["--host", "0.0.0.0", "--port", "0", "--config", str(server.config_path)]
    refused = subprocess.run(
        command, cwd=REPO, env=server_env(), capture_output=True, timeout=30, check=False
    )
    assert refused.returncode == 2
    assert b"refusing to listen on 0.0.0.0" in refused.stderr
    assert b"voicestack token create" in refused.stderr
    assert os.path.exists(server.db_path)
