"""`voicestack serve --workers N`: N processes on one port and one database file.

The parent binds the port and supervises; every worker serves with its own Runtime, and a commit
made through one worker reaches the watchers of every other through the database (DESIGN §2).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import anyio
import httpx
import psutil
import pytest

from tests.support.api import Api
from tests.support.server import REPO, ServerProcess, free_port, server_env
from tests.support.sse import Watch, watch
from voicestack.config.server import usable_cores

pytestmark = pytest.mark.anyio

APP = "tests.apps.pids"
WORKERS = 2
# Connections are spread by whichever idle worker accepts first, so reaching every worker may
# take a few tries.
ATTEMPTS = 40
SERVING = re.compile(r"voicestack\.workers: worker \d+ \(pid \d+\) serving")


def worker_pids(server: ServerProcess, count: int = WORKERS, timeout: float = 15.0) -> set[int]:
    """The server's worker processes, once there are `count` of them."""
    assert server.process is not None
    parent = psutil.Process(server.process.pid)
    deadline = time.monotonic() + timeout
    while True:
        children = {child.pid for child in parent.children() if child.is_running()}
        if len(children) == count:
            return children
        assert time.monotonic() < deadline, f"{len(children)} workers, not {count}"
        time.sleep(0.05)


def gone(pids: set[int], timeout: float = 10.0) -> bool:
    """True when none of `pids` is alive (zombies count as gone) within `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = set()
        for pid in pids:
            with contextlib.suppress(psutil.NoSuchProcess):
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.add(pid)
        if not alive:
            return True
        time.sleep(0.05)
    return False


async def answering_pids(server: ServerProcess, connections: int = 6) -> list[int]:
    """`pids.pid` through `connections` new connections at once: who answered each."""
    answers: list[int] = []

    async def ask() -> None:
        async with server.client() as http:
            answers.append((await Api(http).query("pids.pid")).value)

    async with anyio.create_task_group() as tg:
        for _ in range(connections):
            tg.start_soon(ask)
    return answers


@contextlib.asynccontextmanager
async def watcher_on_each_worker(
    server: ServerProcess, pids: set[int]
) -> AsyncIterator[dict[int, Watch]]:
    """One open `marks.seen` stream served by each worker, keyed by the worker's pid."""
    async with contextlib.AsyncExitStack() as stack:
        streams: dict[int, Watch] = {}
        for _ in range(ATTEMPTS):
            http = await stack.enter_async_context(server.client())
            stream = await stack.enter_async_context(watch(http, "/api/watch/marks.seen"))
            initial = await stream.next()
            streams.setdefault(initial.json["value"]["pid"], stream)
            if set(streams) == pids:
                break
        assert set(streams) == pids, f"no stream reached workers {pids - set(streams)}"
        yield streams


@pytest.fixture
def workers_server(start_server) -> ServerProcess:
    """A server of the pids app with two workers, on a fresh database, once both serve.

    The first worker answers /healthz before the second has started.
    """
    server = start_server(APP, "--workers", str(WORKERS))
    deadline = time.monotonic() + 30.0
    while len(SERVING.findall(server.log())) < WORKERS:
        assert time.monotonic() < deadline, f"the workers did not start:\n{server.log()}"
        time.sleep(0.05)
    return server


@contextlib.asynccontextmanager
async def clients_by_worker(
    server: ServerProcess, pids: set[int], per_worker: int = 1
) -> AsyncIterator[dict[int, list[httpx.AsyncClient]]]:
    """`per_worker` clients whose (kept-alive) connection each worker serves, by worker pid."""
    async with contextlib.AsyncExitStack() as stack:
        clients: dict[int, list[httpx.AsyncClient]] = {pid: [] for pid in pids}
        for _ in range(ATTEMPTS * per_worker):
            if all(len(held) == per_worker for held in clients.values()):
                break
            http = await stack.enter_async_context(server.client())
            pid = (await Api(http).query("pids.pid")).value
            if len(clients[pid]) < per_worker:
                clients[pid].append(http)
        assert all(len(held) == per_worker for held in clients.values()), clients
        yield clients


async def test_workers_share_one_port_and_each_takes_requests(workers_server):
    pids = worker_pids(workers_server)
    async with workers_server.client() as http:
        health = await http.get("/healthz")
    assert (health.status_code, health.json()["ok"]) == (200, True)

    seen: set[int] = set()
    for _ in range(ATTEMPTS):
        seen.update(await answering_pids(workers_server))
        if seen == pids:
            break
    assert seen == pids
    assert workers_server.process is not None
    assert workers_server.process.pid not in seen  # the parent only supervises


def test_workers_auto_serves_one_worker_per_usable_core(start_server):
    cores = usable_cores()
    server = start_server(APP, "--workers", "auto")
    if cores == 1:  # one process serves, as with --workers 1
        assert server.process is not None
        assert psutil.Process(server.process.pid).children() == []
        return
    deadline = time.monotonic() + 30.0
    while len(SERVING.findall(server.log())) < cores:
        assert time.monotonic() < deadline, f"{cores} workers did not start:\n{server.log()}"
        time.sleep(0.05)
    assert len(worker_pids(server, count=cores)) == cores


async def test_a_mutation_through_one_worker_reaches_watchers_of_every_worker(workers_server):
    pids = worker_pids(workers_server)
    async with watcher_on_each_worker(workers_server, pids) as streams:
        async with workers_server.client() as http:
            added = await Api(http).mutation("marks.add", {"note": "hello"})
        events = {pid: await stream.next(timeout=3.0) for pid, stream in streams.items()}

    mark = {"id": 1, "note": "hello", "pid": added.value["pid"]}
    assert added.value["pid"] in pids
    assert {pid: (e.id, e.json) for pid, e in events.items()} == {
        pid: (
            str(added.version),
            {"value": {"pid": pid, "marks": [mark]}, "version": added.version},
        )
        for pid in pids
    }


async def test_concurrent_writes_through_both_workers_all_commit(workers_server):
    pids = worker_pids(workers_server)
    each = 25
    results: list[tuple[int, int]] = []  # (version, writing pid)

    async def write(http: httpx.AsyncClient, n: int) -> None:
        api = Api(http)
        for k in range(each):
            added = await api.mutation("marks.add", {"note": f"{n}.{k}"})
            results.append((added.version, added.value["pid"]))

    async with clients_by_worker(workers_server, pids, per_worker=4) as clients:
        writers = [http for held in clients.values() for http in held]
        async with anyio.create_task_group() as tg:
            for n, http in enumerate(writers):
                tg.start_soon(write, http, n)
        seen = await Api(writers[0]).query("marks.seen")

    # Mutations arriving together in one process share a commit (group commit); a commit, and
    # so a version, never holds mutations of two processes.
    writers_of: dict[int, set[int]] = {}
    for version, pid in results:
        writers_of.setdefault(version, set()).add(pid)
    assert len(results) == len(writers) * each
    assert all(len(by) == 1 for by in writers_of.values()), writers_of
    assert {pid for _, pid in results} == pids
    assert len(seen.value["marks"]) == len(writers) * each


async def test_sigterm_stops_every_worker_and_exits_0(workers_server):
    pids = worker_pids(workers_server)
    async with watcher_on_each_worker(workers_server, pids) as streams:
        assert workers_server.stop(signal.SIGTERM) == 0, workers_server.log()
        for stream in streams.values():
            await stream.ended()
    assert gone(pids), "a worker outlived its supervisor"


async def test_sigint_stops_every_worker_and_exits_0(workers_server):
    pids = worker_pids(workers_server)
    assert workers_server.stop(signal.SIGINT) == 0, workers_server.log()
    assert gone(pids), "a worker outlived its supervisor"


async def test_a_killed_worker_is_replaced(workers_server):
    pids = worker_pids(workers_server)
    victim = min(pids)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 15.0
    while True:
        now = worker_pids(workers_server)
        if victim not in now:
            break
        assert time.monotonic() < deadline, "the killed worker was not replaced"
        time.sleep(0.05)
    replacement = (now - pids).pop()

    seen: set[int] = set()
    for _ in range(ATTEMPTS):
        seen.update(await answering_pids(workers_server))
        if seen == now:
            break
    assert seen == now  # the replacement serves too
    assert "exited with code -9; starting a new one" in workers_server.log()
    assert f"(pid {replacement}) serving" in workers_server.log()


async def test_workers_stop_when_their_supervisor_is_killed(workers_server):
    pids = worker_pids(workers_server)
    workers_server.kill()  # SIGKILL: the supervisor cannot forward anything
    assert gone(pids), "workers went on serving without their supervisor"


def test_a_worker_that_cannot_start_stops_the_server_with_exit_1(tmp_path):
    (tmp_path / "voicestack.toml").write_text("")
    command = [sys.executable, "-m", "voicestack", "serve", "--workers", str(WORKERS)]
    command += ["--port", str(free_port()), "--db", str(tmp_path / "test.db")]
    command += ["--config", str(tmp_path / "voicestack.toml"), "--app", "tests.apps.no_such_app"]
    done = subprocess.run(
        command, cwd=REPO, env=server_env(), capture_output=True, timeout=60, check=False
    )
    stderr = done.stderr.decode()
    assert done.returncode == 1, stderr
    assert "No module named 'tests.apps.no_such_app'" in stderr
    assert "worker 0 exited with code 1 before it could serve" in stderr
    assert "worker 1" not in stderr  # the others never started


def test_a_port_in_use_is_one_error_line(tmp_path):
    (tmp_path / "voicestack.toml").write_text("")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = [sys.executable, "-m", "voicestack", "serve", "--workers", str(WORKERS)]
        command += ["--port", str(port), "--db", str(tmp_path / "test.db")]
        command += ["--config", str(tmp_path / "voicestack.toml")]
        done = subprocess.run(
            command, cwd=REPO, env=server_env(), capture_output=True, timeout=60, check=False
        )
    assert done.returncode == 1, done.stderr.decode()
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr.decode()


def test_the_one_file_binary_runs_workers_and_stops_them(tmp_path):
    from tests.test_binary import binary_path

    binary = binary_path()
    help_text = subprocess.run(
        [str(binary), "serve", "--help"], capture_output=True, timeout=60, check=False
    ).stdout.decode()
    if "--workers" not in help_text:
        pytest.skip(f"{binary} predates --workers: rebuild it (bash deploy/build-binary.sh)")
    unpack_dir = tmp_path / "tmp"
    unpack_dir.mkdir()
    (tmp_path / "voicestack.toml").write_text("")
    port = free_port()
    command = [str(binary), "serve", "--port", str(port), "--db", "t.db", "--workers", "2"]
    command += ["--config", "voicestack.toml", "--no-access-log"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VOICESTACK_", "PYTHON"))}
    env["TMPDIR"] = str(unpack_dir)
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        launcher = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 90.0  # each worker imports the server from the binary
        # The launcher says it serves just after its workers have: wait for that line too.
        banner = f"(database t.db, {WORKERS} workers)"
        while (
            len(SERVING.findall(text := log_path.read_text(errors="replace"))) < WORKERS
            or banner not in text
        ):
            assert launcher.poll() is None, log_path.read_text(errors="replace")
            assert time.monotonic() < deadline, log_path.read_text(errors="replace")
            time.sleep(0.1)
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        processes = psutil.Process(launcher.pid).children(recursive=True)
        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(30) == 0, log_path.read_text(errors="replace")
        assert gone({p.pid for p in processes}), "a worker outlived the binary"
        assert list(unpack_dir.iterdir()) == []
    finally:
        if launcher.poll() is None:  # the test failed: kill the server the launcher runs too
            for process in psutil.Process(launcher.pid).children(recursive=True):
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.kill()
            launcher.kill()
            launcher.wait()
        print(log_path.read_text(errors="replace"))
