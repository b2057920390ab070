"""The one-file executable (`bash deploy/build-binary.sh` → dist/voicestack) serves on its own.

Runs the binary named by VOICESTACK_BINARY, else dist/voicestack; skips when neither exists. The
binary runs from an empty folder, with no PYTHONPATH and its own TMPDIR, so nothing can come
from this checkout: the page, the fast path, apsw and the plugins must all be inside it.
"""

from __future__ import annotations

import importlib.metadata
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.server import free_port

REPO = Path(__file__).resolve().parents[1]
# A one-file binary unpacks itself before Python starts: slower than `python -m voicestack`,
# much slower on a busy machine.
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0


def binary_path() -> Path:
    named = os.environ.get("VOICESTACK_BINARY")
    if named:
        path = Path(named).resolve()
        if not path.is_file():
            pytest.fail(f"VOICESTACK_BINARY={named} is not a file")
        return path
    path = REPO / "dist" / "voicestack"
    if not path.is_file():
        pytest.skip(
            "no binary built: run `pip install -e '.[binary]' && bash deploy/build-binary.sh`"
            " (or set VOICESTACK_BINARY)"
        )
    return path


class Binary:
    """`voicestack serve` started from the binary, in an empty folder."""

    def __init__(self, binary: Path, workdir: Path) -> None:
        self.workdir = workdir
        self.unpack_dir = workdir / "tmp"  # where the one-file binary unpacks itself
        self.unpack_dir.mkdir()
        self.log_path = workdir / "server.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (workdir / "voicestack.toml").write_text("")
        self.command = [
            str(binary),
            "serve",
            "--port",
            str(self.port),
            "--db",
            "tmp.db",
            "--config",
            "voicestack.toml",
            "--no-access-log",
            # An embedding provider, so that memory says whether sqlite-vec's library loaded;
            # nothing listens there, and nothing here calls it.
            "--openai-base-url",
            "http://127.0.0.1:9/v1",
            "--embedding-model",
            "text-embedding-3-small",
        ]
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("VOICESTACK_", "PYTHON", "OPENAI_"))
        }
        env["TMPDIR"] = str(self.unpack_dir)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def token(self) -> str:
        """The first admin token, which `serve` made on the empty database and kept beside it."""
        return (self.workdir / "tmp.db.token").read_text().strip()

    def wait_healthy(self) -> dict:
        deadline = time.monotonic() + START_TIMEOUT_S
        with httpx.Client(timeout=2.0) as client:
            while True:
                code = self.process.poll()
                if code is not None:
                    pytest.fail(f"the binary exited with {code} while starting:\n{self.log()}")
                try:
                    response = client.get(f"{self.url}/healthz")
                    if response.status_code == 200:
                        return response.json()
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"the binary did not answer /healthz in time:\n{self.log()}")
                time.sleep(0.05)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"the binary did not exit within {STOP_TIMEOUT_S} s of SIGTERM")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def require_tokens(binary: Path) -> None:
    """Skip when `binary` was built before `serve` made tokens (it would fail every request)."""
    wide = {**os.environ, "COLUMNS": "250"}  # option names are never cut short
    help_text = subprocess.run(
        [str(binary), "serve", "--help"], env=wide, capture_output=True, timeout=60, check=False
    ).stdout.decode()
    if "--quiet-token" not in help_text:
        pytest.skip(f"{binary} predates tokens: rebuild it (bash deploy/build-binary.sh)")


@pytest.fixture
def binary(tmp_path: Path) -> Iterator[Binary]:
    path = binary_path()
    require_tokens(path)
    server = Binary(path, tmp_path)
    try:
        yield server
    finally:
        server.kill()
        print(f"--- {' '.join(server.command)}\n{server.log()}")


def installed(distribution: str) -> bool:
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def test_the_binary_serves_the_api_and_the_page_and_stops_cleanly(binary: Binary) -> None:
    health = binary.wait_healthy()
    assert health["ok"] is True
    assert health["version"]

    assert f"open {binary.url}/?token={binary.token}\n" in binary.log()
    headers = {"Authorization": f"Bearer {binary.token}"}
    with httpx.Client(base_url=binary.url, timeout=10.0, headers=headers) as client:
        page = client.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "<title>voicestack</title>" in page.text

        script = client.get("/web/voicestack.js")
        assert script.status_code == 200
        assert script.headers["content-type"].startswith("text/javascript")
        assert script.content

        # sqlite-vec's library ships in the binary and loads: memory searches by vector too.
        memory = client.get("/healthz?details=1").json()["details"]["memory"]
        assert memory["mode"] == "hybrid", memory

        refused = client.get("/api/tools", headers={"Authorization": "Bearer nonsense"})
        assert refused.status_code == 401, refused.text
        created = client.post("/api/mutation/threads.create", json={"args": {"title": "bin"}})
        assert created.status_code == 200, created.text
        thread_id = created.json()["value"]["id"]
        listed = client.post("/api/query/threads.list", json={"args": {}})
        assert listed.status_code == 200, listed.text
        assert [(t["id"], t["title"]) for t in listed.json()["value"]] == [(thread_id, "bin")]

        # Plugins found through entry points inside the binary must load there too.
        tools = client.get("/api/tools")
        assert tools.status_code == 200, tools.text
        failed = [t for t in tools.json() if t["status"] != "loaded"]
        assert not failed, failed
        names = {t["name"] for t in tools.json()}
        if installed("voicestack-clock") and "VOICESTACK_BINARY" not in os.environ:
            assert "current_time" in names, "voicestack-clock is installed but not in the binary"

    assert binary.stop() == 0, binary.log()
    assert (binary.workdir / "tmp.db").is_file()
    # The one-file binary removes what it unpacked when it exits.
    assert list(binary.unpack_dir.iterdir()) == []
