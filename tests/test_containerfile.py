"""The Containerfile and its entrypoint, checked without a container engine: the instructions an
image needs, COPY sources that exist, and deploy/entrypoint.sh run for real in both modes."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sysconfig
import time
from pathlib import Path

import apsw
import httpx
import pytest

from tests.support.server import REPO, free_port, server_env
from tests.test_litestream import LITESTREAM, needs_litestream

CONTAINERFILE = REPO / "Containerfile"
ENTRYPOINT = REPO / "deploy" / "entrypoint.sh"
LITESTREAM_CONFIG = REPO / "deploy" / "litestream.yml"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of every Containerfile line, continuation lines joined."""
    text = re.sub(r"\\\n", " ", CONTAINERFILE.read_text())
    lines = (line.strip() for line in text.splitlines())
    found = []
    for line in lines:
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), " ".join(rest.split())))
    return found


def args_of(name: str) -> list[str]:
    return [rest for word, rest in instructions() if word == name]


def runtime_stage() -> list[tuple[str, str]]:
    """The instructions of the last stage, the image that runs."""
    steps = instructions()
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def healthcheck_command() -> list[str]:
    (check,) = args_of("HEALTHCHECK")
    return json.loads(check.split(" CMD ", 1)[1])


def test_a_multi_stage_build_runs_as_a_non_root_user():
    froms = args_of("FROM")
    assert len(froms) == 2, froms
    assert re.fullmatch(r"python:3\.11-slim AS builder", froms[0], re.IGNORECASE), froms
    assert froms[1].startswith("python:3.11-slim"), froms
    runtime = runtime_stage()
    users = [rest for word, rest in runtime if word == "USER"]
    assert users, "the runtime stage never leaves root"
    assert users[-1] not in ("root", "0"), users
    assert any(word == "RUN" and "pip wheel" in rest for word, rest in instructions())
    assert any(word == "COPY" and "--from=builder" in rest for word, rest in runtime)


def test_the_image_serves_its_data_volume_on_port_8000():
    runtime = dict(runtime_stage()[1:])
    env = " ".join(rest for word, rest in runtime_stage() if word == "ENV")
    assert "VOICESTACK_DB=/data/voicestack.db" in env
    assert "VOICESTACK_HOST=0.0.0.0" in env
    assert runtime["VOLUME"] == "/data"
    assert runtime["EXPOSE"] == "8000"
    assert json.loads(runtime["ENTRYPOINT"]) == ["/usr/local/bin/voicestack-entrypoint"]
    assert healthcheck_command()[:2] == ["python", "-c"]
    assert "/healthz" in healthcheck_command()[2]


def test_every_copy_source_exists_in_the_repository():
    copies = [shlex.split(rest) for word, rest in instructions() if word == "COPY"]
    local = [args for args in copies if not args[0].startswith("--from=")]
    assert local
    for args in local:
        for source in args[:-1]:
            assert (REPO / source).exists(), f"COPY source {source} is not in the repository"
    stages = {rest.split()[-1] for rest in args_of("FROM") if " AS " in rest.upper()}
    for args in copies:
        if args[0].startswith("--from="):
            assert args[0].removeprefix("--from=") in stages, args


def entrypoint_env(tmp_path: Path, port: int, **extra: str) -> dict[str, str]:
    """The test's environment for the entrypoint, with this Python's scripts first on PATH."""
    env = server_env()
    scripts = sysconfig.get_path("scripts")
    env["PATH"] = os.pathsep.join([scripts, env.get("PATH", "")])
    env.update(VOICESTACK_DB=str(tmp_path / "data" / "voicestack.db"), VOICESTACK_PORT=str(port))
    env.update(extra)
    return env


def dry_run(tmp_path: Path, *args: str, **extra: str) -> list[list[str]]:
    """The commands the entrypoint would run, in order, each as its argument list."""
    env = entrypoint_env(tmp_path, 8000, VOICESTACK_DRY_RUN="1", **extra)
    done = subprocess.run(
        ["sh", str(ENTRYPOINT), *args], env=env, capture_output=True, text=True, check=True
    )
    commands: list[list[str]] = [[]]
    for word in done.stdout.splitlines():
        if word == "--":
            commands.append([])
        else:
            commands[-1].append(word)
    assert commands[-1] == [], done.stdout
    return commands[:-1]


def test_the_entrypoint_is_valid_sh():
    subprocess.run(["sh", "-n", str(ENTRYPOINT)], check=True)
    assert os.access(ENTRYPOINT, os.X_OK)


def test_without_a_replica_the_entrypoint_serves_plainly(tmp_path):
    assert dry_run(tmp_path, "--log-level", "info") == [
        ["voicestack", "serve", "--log-level", "info"]
    ]


def test_with_a_replica_url_litestream_runs_the_server(tmp_path):
    commands = dry_run(tmp_path, "--drain-s", "5", LITESTREAM_REPLICA_URL="s3://bucket/vs")
    db = str(tmp_path / "data" / "voicestack.db")
    config = ["-config", "/etc/litestream.yml"]
    restore, create, replicate = commands
    assert restore == [
        "litestream",
        "restore",
        *config,
        "-if-db-not-exists",
        "-if-replica-exists",
        db,
    ]
    assert create[:2] == ["python3", "-c"]
    assert create[-1] == db
    assert replicate == [
        "litestream",
        "replicate",
        *config,
        "-exec",
        "voicestack serve --no-autocheckpoint --drain-s 5",
    ]


def test_under_litestream_the_entrypoint_refuses_arguments_it_cannot_quote(tmp_path):
    env = entrypoint_env(tmp_path, 8000, VOICESTACK_DRY_RUN="1", LITESTREAM_REPLICA_URL="s3://b")
    done = subprocess.run(
        ["sh", str(ENTRYPOINT), "--app", "a b"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "cannot pass this argument" in done.stderr


def run_entrypoint(tmp_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start the entrypoint and wait until /healthz answers."""
    log = tmp_path / "entrypoint.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [str(ENTRYPOINT)], cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{env['VOICESTACK_PORT']}/healthz"
    # Generous: under a loaded CI machine, a restore plus Litestream plus the server take a while.
    deadline = time.monotonic() + 45.0
    while True:
        assert process.poll() is None, log.read_text()
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            process.wait()
            pytest.fail(f"the entrypoint's server never answered /healthz:\n{log.read_text()}")
        time.sleep(0.1)


def admin_headers(env: dict[str, str]) -> dict[str, str]:
    """`Authorization` with the first admin token, which `serve` keeps beside the database."""
    token = Path(env["VOICESTACK_DB"] + ".token").read_text().strip()
    return {"Authorization": f"Bearer {token}"}


def stop(process: subprocess.Popen[bytes], tmp_path: Path) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        assert process.wait(30) == 0, (tmp_path / "entrypoint.log").read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def healthcheck(env: dict[str, str]) -> int:
    """The image's HEALTHCHECK command, run here: its exit code."""
    return subprocess.run(
        healthcheck_command(), env=env, capture_output=True, timeout=10, check=False
    ).returncode


def test_the_entrypoint_serves_and_passes_the_healthcheck(tmp_path):
    (tmp_path / "data").mkdir()
    env = entrypoint_env(tmp_path, free_port())
    process = run_entrypoint(tmp_path, env)
    try:
        assert healthcheck(env) == 0
    finally:
        stop(process, tmp_path)
    assert healthcheck(env) != 0  # nothing answers any more


@needs_litestream
def test_with_a_replica_url_every_commit_reaches_the_replica(tmp_path):
    replica, restored = tmp_path / "replica", tmp_path / "restored.db"
    env = entrypoint_env(
        tmp_path,
        free_port(),
        LITESTREAM_REPLICA_URL=f"file://{replica}",
        LITESTREAM_CONFIG=str(LITESTREAM_CONFIG),
    )
    process = run_entrypoint(tmp_path, env)
    try:
        created = httpx.post(
            f"http://127.0.0.1:{env['VOICESTACK_PORT']}/api/threads",
            json={"title": "kept"},
            headers=admin_headers(env),
        )
        assert created.status_code == 201, created.text
        # Litestream replicates every second; right after a database appears, a stop within that
        # second may leave the newest commit unreplicated, so the test waits for one sync.
        wait_until_replicated(replica, tmp_path / "probe.db", created.json()["id"])
    finally:
        stop(process, tmp_path)
    done = subprocess.run(
        [LITESTREAM, "restore", "-o", str(restored), f"file://{replica}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    log = (tmp_path / "entrypoint.log").read_text()
    assert done.returncode == 0, f"{done.stdout}{done.stderr}\n--- entrypoint log\n{log}"
    conn = apsw.Connection(str(restored))
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        titles = conn.execute("SELECT id, title FROM threads").fetchall()
    finally:
        conn.close()
    assert titles == [(created.json()["id"], "kept")]


def wait_until_replicated(replica: Path, probe: Path, thread_id: str) -> None:
    """Wait until a restore of `replica` holds the thread (replication runs every second)."""
    deadline = time.monotonic() + 20.0
    while time.monotonic() < deadline:
        probe.unlink(missing_ok=True)
        done = subprocess.run(
            [LITESTREAM, "restore", "-o", str(probe), f"file://{replica}"],
            capture_output=True,
            timeout=60,
            check=False,
        )
        if done.returncode == 0:
            conn = apsw.Connection(str(probe))
            try:
                ids = [row[0] for row in conn.execute("SELECT id FROM threads")]
            except apsw.SQLError:  # restored from before the schema was replicated
                ids = []
            finally:
                conn.close()
            if thread_id in ids:
                return
        time.sleep(0.5)
    pytest.fail("the commit never reached the replica")


@needs_litestream
def test_with_a_replica_url_an_empty_volume_is_restored_on_start(tmp_path):
    replica = tmp_path / "replica"
    env = entrypoint_env(
        tmp_path,
        free_port(),
        LITESTREAM_REPLICA_URL=f"file://{replica}",
        LITESTREAM_CONFIG=str(LITESTREAM_CONFIG),
    )
    url = f"http://127.0.0.1:{env['VOICESTACK_PORT']}/api/threads"
    process = run_entrypoint(tmp_path, env)
    try:
        headers = admin_headers(env)
        created = httpx.post(url, json={"title": "kept"}, headers=headers)
        assert created.status_code == 201, created.text
        wait_until_replicated(replica, tmp_path / "probe.db", created.json()["id"])
    finally:
        stop(process, tmp_path)

    shutil.rmtree(tmp_path / "data")  # a new machine: only the replica is left
    process = run_entrypoint(tmp_path, env)
    try:
        # The restored database keeps its tokens: the one from before still works.
        listing = httpx.get(url, headers=headers)
        assert listing.status_code == 200, listing.text
        assert [t["id"] for t in listing.json()] == [created.json()["id"]]
        again = httpx.post(url, json={"title": "after the restore"}, headers=headers)
        assert again.status_code == 201, again.text
        assert httpx.get(url).status_code == 401
    finally:
        stop(process, tmp_path)
