"""The two children of the voice benchmarks: the fake OpenAI-compatible provider, and a
`voicestack serve` wired to it, on loopback ports, always stopped afterwards."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.server_access import NO_LIMITS_ENV, server_token

REPO = Path(__file__).resolve().parents[1]
WAIT_S = 30.0


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def child_env() -> dict[str, str]:
    """The environment for both children: no provider or voicestack settings from outside."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VOICESTACK_", "OPENAI_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["VOICESTACK_LOAD_APPS"] = ""
    env["VOICESTACK_LOAD_TOOLS"] = ""
    return env


@dataclass(frozen=True)
class Children:
    """The running pair: the fake provider's URL, the server's URL, its admin token, its process."""

    fake_url: str
    url: str
    token: str
    server: subprocess.Popen[bytes]


@contextlib.contextmanager
def voice_children(
    workdir: Path,
    server_args: Sequence[str],
    script: list[dict[str, Any]] | None = None,
    fake_module: str = "voicestack.testing.fake_openai",
) -> Iterator[Children]:
    """Start the fake provider (with `script` as its standing plans, if given) and `voicestack
    serve SERVER_ARGS` on a fresh database in `workdir`; stop both afterwards. `fake_module` is
    the provider's module (a bench's instrumented variant of the fake takes the same flags)."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        fake = subprocess.Popen(
            [sys.executable, "-m", fake_module, "--port", "0"],
            cwd=REPO,
            env=child_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        procs.append(fake)
        assert fake.stdout is not None
        line = fake.stdout.readline().decode()
        fake_url = line.rsplit(" ", 1)[-1].strip()
        if not fake_url.startswith("http://"):
            raise RuntimeError(f"the fake provider did not start: {line!r}")
        if script is not None:
            httpx.post(f"{fake_url}/_control/script", json=script).raise_for_status()
        port, db, config = free_port(), workdir / "bench.db", workdir / "voicestack.toml"
        config.write_text("")
        log = workdir / "server.log"
        server = subprocess.Popen(
            [
                *(sys.executable, "-m", "voicestack", "serve", "--port", str(port)),
                *("--db", str(db), "--config", str(config)),
                *("--openai-base-url", f"{fake_url}/v1", "--provider-retries", "0"),
                *("--no-access-log", "--log-level", "warning", *server_args),
                "--embedding-model=",  # semantic memory off: the voice path alone
            ],
            cwd=REPO,
            env={**child_env(), **NO_LIMITS_ENV},
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        procs.append(server)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + WAIT_S
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(log.read_text())
            time.sleep(0.05)
        yield Children(fake_url, url, server_token(db) or "", server)
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
