"""A voicestack server for the browser page's tests: replies from a FakeOpenAI, the test tools.

Kept apart from tests/support/agent.py on purpose: it needs only `running_server`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.server import ServerProcess, running_server

TEST_APP = "tests.apps.inventory"
# The app that lets a test announce `speech` events (the voice tests need no real voice route).
SPEECH_APP = "tests.apps.web_speech"

# Only the test tools, and never a provider from the developer's own environment.
WEB_ENV: dict[str, str | None] = {
    "VOICESTACK_LOAD_TOOLS": "testtools",
    "OPENAI_API_KEY": None,
    "OPENAI_BASE_URL": None,
}


@contextmanager
def web_server(workdir: Path, api_base: str | None, *extra_args: str) -> Iterator[ServerProcess]:
    """A running server whose replies come from `api_base` (None: no provider)."""
    workdir.mkdir(parents=True, exist_ok=True)
    provider = ["--openai-base-url", api_base] if api_base else []
    args = [*provider, "--flush-ms", "20", "--app", SPEECH_APP, *extra_args]
    with running_server(workdir, TEST_APP, args, WEB_ENV) as server:
        yield server


def call_plan(mark: str, name: str, arguments: Any, call_id: str) -> dict[str, Any]:
    """A fake-model plan: call one tool."""
    return {"match": mark, "tool_calls": [{"name": name, "arguments": arguments, "id": call_id}]}


def words(count: int, prefix: str = "w") -> str:
    """`count` distinct words: `w0 w1 w2 ...`."""
    return " ".join(f"{prefix}{i}" for i in range(count))
