"""A large schemathesis run against a fresh server: tests/test_fuzz_api.py, with more cases.

Starts `voicestack serve --app tests.apps.ledger` without rate limits on a temporary database,
fuzzes every operation of its `/openapi.json` with the admin token, then (a tenth of the cases)
with a user's token, and prints the figures: cases, 5xx answers, schema violations, errors.

    python -m bench.fuzz --cases 20000
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tests.support.server import running_server
from tests.test_fuzz_api import FUZZ_APP, NO_RATE_LIMITS, FuzzRun, fuzz, unhandled_errors


def per_operation(cases: int, operations: int) -> int:
    """schemathesis's `max-examples`: `cases` spread over `operations`. Operations with few
    distinct inputs run fewer, so the run reports its own count."""
    return max(1, -(-cases // max(operations, 1)))


def main(argv: list[str] | None = None) -> int:
    """Run the fuzzing; exit 1 when anything failed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=20_000, help="about how many cases")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="voicestack-fuzz-") as tmp:
        workdir = Path(tmp)
        (workdir / "server").mkdir()
        with running_server(
            workdir / "server", FUZZ_APP, ["--quiet-token", *NO_RATE_LIMITS]
        ) as server:
            operations = len(httpx.get(f"{server.url}/openapi.json").json()["paths"])
            token = server.token or ""
            started = time.monotonic()
            runs: list[tuple[str, FuzzRun]] = []
            admin_n = per_operation(args.cases * 9 // 10, operations)
            runs.append(
                ("admin", fuzz(server.url, token, workdir / "admin", admin_n, 4, timeout=None))
            )
            user_token = server.create_token("fuzzer")
            user_n = per_operation(args.cases // 10, operations)
            runs.append(
                ("user", fuzz(server.url, user_token, workdir / "user", user_n, 2, "fuzzing", None))
            )
            logged = unhandled_errors(server.log())
            elapsed = time.monotonic() - started
    for label, run in runs:
        print(run.summary(label))
        for failure in run.failures:
            print("  failure:", json.dumps(failure))
        for error in run.errors:
            print("  error:", json.dumps(error)[:400])
    total = sum(run.cases for _, run in runs)
    print(f"total: {total} cases in {elapsed:.0f} s; server log: {logged} unhandled errors")
    failed = logged or any(run.failures or run.errors for _, run in runs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
