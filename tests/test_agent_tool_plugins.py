"""Tool plugins as a server loads them: the tools list, and a plugin that fails to load.

The tools come from `tests/plugins/voicestack-testtools` (installed with pip, loaded with
VOICESTACK_LOAD_TOOLS=testtools).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import pytest
import voicestack_testtools

from tests.support.agent import StartAgentServer, Threads, ask, marker
from tests.support.server import server_env
from tests.support.tool_calls import TOOL_SERVER_ARGS, call_plan, changes
from voicestack.testing.fake_openai import FakeOpenAI

pytestmark = [pytest.mark.anyio, pytest.mark.agent_server(*TOOL_SERVER_ARGS)]


def listed(tool: Any) -> dict[str, Any]:
    """A test tool as GET /api/tools lists it."""
    return {
        "name": tool.name,
        "description": tool.description,
        "schema": tool.args_model.model_json_schema(),
        "plugin": "voicestack-testtools",
        "status": "loaded",
        "error": None,
    }


TEST_TOOLS = [
    voicestack_testtools.slow_count,
    voicestack_testtools.guarded_echo,
    voicestack_testtools.explode,
    voicestack_testtools.sleepy,
]


async def test_the_tools_list_shows_the_plugin_tools(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/tools")

    assert response.status_code == 200
    assert response.json() == [listed(tool) for tool in TEST_TOOLS]
    assert [(t["name"], t["description"]) for t in response.json()] == [
        (
            "slow_count",
            "Count from 1 to n, one step every delay_s seconds, reporting progress after each"
            " step.",
        ),
        ("guarded_echo", "Send the text back, once a person has approved the call."),
        ("explode", "Always fail."),
        ("sleepy", "Sleep for the given number of seconds, then say how long it slept."),
    ]


def broken_plugin(site: Path) -> None:
    """Install (on `site`, a path entry) a plugin distribution whose module cannot import."""
    site.mkdir()
    (site / "voicestack_broken_tools.py").write_text(
        "import voicestack_missing_dependency  # not installed anywhere\n"
    )
    dist_info = site / "voicestack_broken_tools-0.1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: voicestack-broken-tools\nVersion: 0.1.0\n"
    )
    (dist_info / "entry_points.txt").write_text(
        "[voicestack.tools]\nbroken = voicestack_broken_tools\n"
    )


async def test_a_plugin_that_fails_to_load_is_listed_and_the_server_still_serves(
    fake: FakeOpenAI, start_agent_server: StartAgentServer, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    broken_plugin(site)
    env = {
        "VOICESTACK_LOAD_TOOLS": "testtools,broken,not_installed",
        "PYTHONPATH": os.pathsep.join([str(site), server_env()["PYTHONPATH"]]),
    }
    mark = marker()
    fake.script(
        call_plan(mark, "slow_count", {"n": 1, "delay_s": 0}, "call_one"),
        {"match": mark, "text": "Counted."},
    )
    server = start_agent_server(fake.api_base, env=env)
    async with server.client() as client:
        tools = (await client.get("/api/tools")).json()
        health = await client.get("/healthz")
        _, _, _, events = await ask(client, Threads(client), f"{mark} count to one")

    assert tools == [
        *[listed(tool) for tool in TEST_TOOLS],
        {
            "name": "broken",
            "description": "",
            "schema": None,
            "plugin": "voicestack-broken-tools",
            "status": "failed",
            "error": "ModuleNotFoundError: No module named 'voicestack_missing_dependency'",
        },
        {
            "name": "not_installed",
            "description": "",
            "schema": None,
            "plugin": "",
            "status": "failed",
            "error": "LookupError: no installed plugin has the entry point 'not_installed' in"
            " group 'voicestack.tools'",
        },
    ]
    assert health.status_code == 200
    assert changes(events, "call_one")[-1] == ("done", 1.0, {"counted": 1}, None)
    assert (events[-1].json["status"], events[-1].json["text"]) == ("complete", "Counted.")
