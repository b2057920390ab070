"""Properties, checked on generated inputs (hypothesis):

- any JSON as a built-in function's arguments gets its value or a 4xx in the error shape, never
  a 500 (against a running server);
- any sequence of valid and invalid ledger mutations, many in one group commit, leaves the
  database consistent: committed batches whole, refused ones without a trace, the balances
  never below zero, `PRAGMA integrity_check` ok and `_changes` versions strictly increasing
  (on the real Store in this process, and a smaller run over HTTP).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sqlite3
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tests.apps import ledger
from tests.support.server import ServerProcess, running_server
from voicestack.functions.apps import app_from_module
from voicestack.functions.context import MutationCtx
from voicestack.functions.errors import FunctionError
from voicestack.store.store import Store

JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers()  # unbounded: SQLite's 64 bits are the server's to enforce
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)

# A few batch ids and accounts, so that ids repeat and accounts run dry.
BATCHES = st.sampled_from(["a", "b", "c", "d", "e", "f"])
ACCOUNTS = st.sampled_from(["x", "y", "z"])
LINES = st.fixed_dictionaries({"account": ACCOUNTS, "amount": st.integers(-60, 60)})
VALID_POST = st.fixed_dictionaries(
    {"batch": BATCHES, "lines": st.lists(LINES, min_size=1, max_size=5)}
)
INVALID_POST = st.one_of(
    st.fixed_dictionaries({"batch": BATCHES, "lines": st.just([])}),
    st.fixed_dictionaries(
        {
            "batch": BATCHES,
            "lines": st.lists(st.just({"account": "NOT OK", "amount": 1}), min_size=1, max_size=2),
        }
    ),
    st.fixed_dictionaries({"batch": st.just(""), "lines": st.lists(LINES, min_size=1, max_size=2)}),
)
POSTS = st.lists(st.one_of(VALID_POST, VALID_POST, INVALID_POST), min_size=1, max_size=25)


def _calls(server: ServerProcess) -> list[tuple[str, str, list[str]]]:
    with server.sync_client() as client:
        listed = client.get("/api/functions").json()
    return [
        (f["kind"], f["name"], sorted(f["args"].get("properties", {})))
        for f in listed
        if f["app"] == "voicestack" and f["kind"] != "action"
    ]


def assert_value_or_refusal(response: httpx.Response) -> None:
    """200 with `{"value", "version"}`, or a 4xx with `{"error": {"code", "message", ...}}`."""
    body = response.json()
    if response.status_code == 200:
        assert sorted(body) == ["value", "version"], body
        return
    assert 400 <= response.status_code < 500, (response.status_code, body)
    assert list(body) == ["error"], body
    assert isinstance(body["error"]["code"], str), body
    assert isinstance(body["error"]["message"], str), body


def test_any_json_as_arguments_is_a_value_or_a_4xx(shared_server: ServerProcess) -> None:
    calls = _calls(shared_server)
    assert {name for _, name, _ in calls} >= {"threads.get", "messages.send", "threads.invite"}

    @st.composite
    def requests(draw: st.DrawFn) -> tuple[str, str, Any]:
        kind, name, fields = draw(st.sampled_from(calls))
        keys = st.sampled_from([*fields, "extra"]) if fields else st.just("extra")
        args = draw(JSON_VALUES | st.dictionaries(keys, JSON_VALUES, max_size=len(fields) + 1))
        return kind, name, args

    with shared_server.sync_client() as client:

        @settings(max_examples=200, deadline=None, database=None)
        @given(requests())
        def call(request: tuple[str, str, Any]) -> None:
            kind, name, args = request
            response = client.post(f"/api/{kind}/{name}", content=json.dumps({"args": args}))
            assert_value_or_refusal(response)

        call()


class Ledger:
    """The expected state: batches committed in order, and each account's balance."""

    def __init__(self) -> None:
        self.batches: dict[str, list[tuple[str, int]]] = {}
        self.balances: defaultdict[str, int] = defaultdict(int)

    def post(self, raw: dict[str, Any]) -> bool:
        """Apply a post as the server must; True when it commits."""
        try:
            args = ledger.PostArgs.model_validate(raw)
        except ValidationError:
            return False
        if args.batch in self.batches:
            return False
        balances = dict(self.balances)
        for line in args.lines:
            balances[line.account] = balances.get(line.account, 0) + line.amount
            if balances[line.account] < 0:
                return False
        self.batches[args.batch] = [(line.account, line.amount) for line in args.lines]
        self.balances.update(balances)
        return True

    def entries(self) -> list[tuple[str, str, int]]:
        """Every line, in commit order."""
        return [(b, a, n) for b, lines in self.batches.items() for a, n in lines]


def check_database(path: Path) -> list[tuple[str, str, int]]:
    """Integrity, strictly increasing `_changes` versions, no negative balance; the lines."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        versions = [v for (v,) in conn.execute("SELECT version FROM _changes ORDER BY rowid")]
        assert all(a < b for a, b in itertools.pairwise(versions)), versions
        negative = conn.execute(
            "SELECT account FROM ledger_entries GROUP BY account HAVING sum(amount) < 0"
        ).fetchall()
        assert negative == []
        orphans = conn.execute(
            "SELECT count(*) FROM ledger_batches b WHERE lines !="
            " (SELECT count(*) FROM ledger_entries e WHERE e.batch = b.id)"
        ).fetchone()
        assert orphans == (0,)
        rows = conn.execute("SELECT batch, account, amount FROM ledger_entries ORDER BY id")
        return [tuple(row) for row in rows]


def _submit(store: Store, raw: dict[str, Any]) -> Future[Any] | None:
    try:
        args = ledger.post.parse_args(raw)
    except ValidationError:
        return None
    return store.writer.submit(lambda db: ledger.post.invoke(MutationCtx(db, None), args))


@settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(posts=POSTS)
def test_store_keeps_committed_mutations_whole_and_failed_ones_out(
    tmp_path: Path, posts: list[dict[str, Any]]
) -> None:
    app = app_from_module(ledger)
    path = Path(tempfile.mkdtemp(dir=tmp_path)) / "ledger.db"  # hypothesis may repeat `posts`
    store = Store(path, readers=1)
    store.migrate_app(app.name, app.migrations)
    store.start()
    try:
        # All submitted at once: the writer runs them in order, many in one group commit.
        futures = [_submit(store, raw) for raw in posts]
        outcomes: list[bool] = []
        versions: list[int] = []
        for future in futures:
            if future is None:
                outcomes.append(False)
                continue
            try:
                versions.append(future.result(timeout=10).version)
                outcomes.append(True)
            except FunctionError:
                outcomes.append(False)
    finally:
        store.close()
    expected = Ledger()
    assert outcomes == [expected.post(raw) for raw in posts]
    assert versions == sorted(versions)
    assert check_database(path) == expected.entries()


async def _post_all(client: httpx.AsyncClient, posts: list[dict[str, Any]]) -> list[httpx.Response]:
    return await asyncio.gather(
        *(client.post("/api/mutation/ledger.post", json={"args": raw}) for raw in posts)
    )


@pytest.fixture(scope="module")
def ledger_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server of the ledger app, without the mutation rate limit."""
    workdir = tmp_path_factory.mktemp("ledger")
    with running_server(workdir, "tests.apps.ledger", ["--rate-mutations-per-min", "0"]) as server:
        yield server


def test_http_mutations_in_parallel_leave_the_database_consistent(
    ledger_server: ServerProcess,
) -> None:
    seen = 0

    @settings(max_examples=15, deadline=None, database=None)
    @given(posts=POSTS)
    def run(posts: list[dict[str, Any]]) -> None:
        nonlocal seen
        # Batch ids of their own per example: the server's database outlives each one.
        prefix = f"r{seen}-"
        seen += 1
        posts = [{**raw, "batch": prefix + raw["batch"] if raw["batch"] else ""} for raw in posts]

        async def go() -> list[httpx.Response]:
            async with ledger_server.client() as client:
                return await _post_all(client, posts)

        responses = asyncio.run(go())
        for response in responses:
            assert_value_or_refusal(response)
            if response.status_code != 200:
                assert response.status_code in (409, 422), response.text
        lines = check_database(ledger_server.db_path)
        committed = {
            raw["batch"]: [(line["account"], line["amount"]) for line in raw["lines"]]
            for raw, response in zip(posts, responses, strict=True)
            if response.status_code == 200
        }
        mine = defaultdict(list)
        for batch, account, amount in lines:
            if batch.startswith(prefix):
                mine[batch].append((account, amount))
        assert dict(mine) == committed

    run()
