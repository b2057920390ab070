"""schemathesis against a running server's own `GET /openapi.json`: no 5xx, every answer as
documented (status code, content type, body schema, each event of a stream).

The server loads tests/apps/ledger.py, an app without deliberate bugs (the inventory app has
functions that fail on purpose), and runs without rate limits so that the fuzzer reaches the
handlers instead of the 429 in front of them. Streams are read up to their first event.
`python -m bench.fuzz --cases 20000` runs the same fuzzing, bigger.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Figures, StartServer
from tests.support.server import ServerProcess

FUZZ_APP = "tests.apps.ledger"
NO_RATE_LIMITS = (
    "--rate-mutations-per-min",
    "0",
    "--rate-replies-per-min",
    "0",
    "--rate-voice-per-min",
    "0",
)
CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_schema_conformance"
)
STREAM_PATHS = r"/events$|^/api/watch"
RUN_TIMEOUT_S = 300  # one schemathesis run


@dataclass(frozen=True)
class FuzzRun:
    """What one schemathesis run reported."""

    cases: int
    operations: int
    server_errors: int  # 5xx answers schemathesis saw (ST101 failures)
    violations: int  # answers not as documented (failures other than ST101)
    errors: list[dict[str, Any]]
    failures: list[dict[str, Any]]
    seconds: float
    seed: int
    output: str

    def summary(self, label: str) -> str:
        """One line of figures."""
        return (
            f"fuzz {label}: {self.cases} cases over {self.operations} operations in "
            f"{self.seconds:.0f} s, {self.server_errors} 5xx, {self.violations} schema "
            f"violations, {len(self.errors)} errors (seed {self.seed})"
        )


def config_toml(max_examples: int, stream_examples: int) -> str:
    """schemathesis.toml for a run: `max_examples` per operation, fewer on event streams."""
    return f"""
workers = 1
request-timeout = 5
max-stream-events = 1

[generation]
max-examples = {max_examples}

[[operations]]
include-path-regex = "{STREAM_PATHS}"
request-timeout = 2
max-stream-events = 1

[operations.generation]
max-examples = {stream_examples}
"""


def fuzz(
    url: str,
    token: str,
    workdir: Path,
    max_examples: int,
    stream_examples: int,
    phases: str = "examples,coverage,fuzzing",
    timeout: float | None = RUN_TIMEOUT_S,
) -> FuzzRun:
    """Run `st run` against `url`/openapi.json with `token` and return its JSON report."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "schemathesis.toml"
    config.write_text(config_toml(max_examples, stream_examples))
    report = workdir / "report.json"
    command = [
        sys.executable,
        "-c",
        "from schemathesis.cli import schemathesis; schemathesis()",
        "--config-file",
        str(config),
        "--no-color",
        "run",
        f"{url}/openapi.json",
        "--header",
        f"Authorization: Bearer {token}",
        "--checks",
        CHECKS,
        "--phases",
        phases,
        "--generation-database",
        "none",
        "--report",
        "json",
        "--report-json-path",
        str(report),
    ]
    done = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=timeout)
    output = done.stdout + done.stderr
    assert report.exists(), output
    data = json.loads(report.read_text())
    failures = data["failures"]
    server = sum(f["count"] for f in failures if f["code"] == "ST101")
    return FuzzRun(
        cases=data["test_cases"]["generated"],
        operations=data["operations"]["tested"],
        server_errors=server,
        violations=sum(f["count"] for f in failures if f["code"] != "ST101"),
        errors=data["errors"],
        failures=failures,
        seconds=data["running_time"],
        seed=data["seed"],
        output=output,
    )


def unhandled_errors(log: str) -> int:
    """How many requests the server answered with its 500 (each is logged once)."""
    return log.count("ERROR voicestack.http.errors: unhandled error")


@pytest.mark.timeout(2 * RUN_TIMEOUT_S + 60)
def test_fuzz_as_admin_and_as_user(
    start_server: StartServer, tmp_path: Path, figures: Figures
) -> None:
    server = start_server(FUZZ_APP, "--quiet-token", *NO_RATE_LIMITS)
    user_token = server.create_token("fuzzer")

    admin = fuzz(server.url, server.token or "", tmp_path / "admin", 25, 4)
    # The user's run skips the coverage phase (the same edge cases the admin's run sent).
    user = fuzz(server.url, user_token, tmp_path / "user", 15, 2, phases="fuzzing")
    logged = unhandled_errors(server.log())
    figures(admin.summary("admin"))
    figures(user.summary("user"))
    figures(f"schemathesis: the server logged {logged} unhandled errors (500s)")

    for run in (admin, user):
        assert (run.failures, run.errors) == ([], []), run.output
        assert run.operations >= 30, run.output
    assert admin.cases >= 1500, admin.output
    assert logged == 0, server.log()


@pytest.mark.anyio
async def test_the_numbers_the_fuzzer_found_are_refused_or_ignored(
    shared_server: ServerProcess,
) -> None:
    """Numbers SQLite cannot bind were 500s: in a JSON body, in `?since=` and as a
    Last-Event-ID (as were digits like "²", which int() refuses)."""
    huge = 2**70
    async with shared_server.client() as client:
        thread_id = (await client.post("/api/threads", json={})).json()["id"]
        events = f"/api/threads/{thread_id}/events"
        body = {"args": {"threadId": thread_id, "before": huge}}
        response = await client.post("/api/query/messages.list", json=body)
        assert (response.status_code, response.json()["error"]["code"]) == (400, "invalid_json")
        response = await client.get(events, params={"since": str(huge)})
        assert response.status_code == 422
        assert response.json()["error"] == {
            "code": "invalid_args",
            "message": "since is outside the 64-bit range.",
        }
        resumes = [
            {"headers": {"Last-Event-ID": str(huge)}},
            {"params": {"lastEventId": str(huge)}},
            {"params": {"lastEventId": "²"}},
        ]
        for resume in resumes:
            async with client.stream("GET", events, **resume) as stream:
                assert stream.status_code == 200, resume  # the unusable id is ignored
