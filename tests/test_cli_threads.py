"""`voicestack thread new|list|show|export|send`, `tools list` and `functions list` against a real
server whose replies come from the fake OpenAI, run in-process with CliRunner (stdout is not a
terminal there, so the output is the plain one)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.support.agent import StartAgentServer, marker
from tests.support.cli import invoke, server_vars
from tests.support.server import ServerProcess
from voicestack.testing.fake_openai import FakeOpenAI

pytestmark = pytest.mark.agent_server()


def cli(server: ServerProcess, *args: str) -> str:
    """Run `voicestack ARGS` against `server`; asserts success and an empty stderr; its stdout."""
    result = invoke(args, env=server_vars(server))
    assert (result.exit_code, result.stderr) == (0, ""), result.output
    return result.stdout


def get(server: ServerProcess, path: str) -> Any:
    with server.sync_client() as http:
        response = http.get(path)
    assert response.status_code == 200, response.text
    return response.json()


def iso(timestamp: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_thread_new_prints_the_id_alone(server: ServerProcess) -> None:
    out = cli(server, "thread", "new", "--title", "support")
    assert re.fullmatch(r"thr_[0-9a-f]{20}\n", out), out
    assert get(server, f"/api/threads/{out.strip()}")["title"] == "support"
    untitled = cli(server, "thread", "new").strip()
    assert get(server, f"/api/threads/{untitled}")["title"] is None


def test_thread_list_prints_one_tab_separated_line_per_thread(server: ServerProcess) -> None:
    older = cli(server, "thread", "new", "--title", "older").strip()
    newer = cli(server, "thread", "new", "--title", "newer").strip()
    threads = get(server, "/api/threads?limit=2")
    assert [t["id"] for t in threads] == [newer, older]
    assert cli(server, "thread", "list", "--limit", "2") == "".join(
        f"{t['id']}\t{t['title']}\t{iso(t['updatedAt'])}\t{t['agent']}\n" for t in threads
    )
    assert json.loads(cli(server, "thread", "list", "--limit", "2", "--json")) == threads


def test_send_prints_the_reply_and_show_and_export_write_the_thread(
    server: ServerProcess, fake: FakeOpenAI, tmp_path: Path
) -> None:
    mark = marker()
    count = {"name": "slow_count", "arguments": {"n": 1, "delay_s": 0}}
    fake.script(
        {"match": mark, "tool_calls": [count]},
        {"match": mark, "text": "Counted to one."},
    )
    thread_id = cli(server, "thread", "new", "--title", "counting").strip()
    assert cli(server, "thread", "send", thread_id, f"{mark} count") == "Counted to one.\n"

    thread = get(server, f"/api/threads/{thread_id}")
    user, reply = thread["messages"]
    (call,) = thread["toolCalls"]
    usage = reply["usage"]
    tokens = f"{usage['promptTokens']} prompt + {usage['completionTokens']} completion tokens"
    seconds = f"{usage['wallMs'] / 1000:.1f} s"
    tool = 'slow_count {"n":1,"delay_s":0}: done → {"counted":1}'
    assert (call["messageId"], reply["status"]) == (reply["id"], "complete")

    assert cli(server, "thread", "show", thread_id) == (
        f"counting ({thread_id}, created {iso(thread['createdAt'])}, agent assistant)\n"
        f"usage: {tokens}, 1 tool call, {seconds}\n"
        "\n"
        f"user (complete) {user['id']}\n"
        f"{mark} count\n"
        "\n"
        f"assistant (complete) {reply['id']}: {tokens}, 1 tool call, {seconds}\n"
        "Counted to one.\n"
        f"  tool {tool}\n"
    )
    markdown = (
        "# counting\n\n"
        f"- thread: `{thread_id}`\n"
        f"- created: {iso(thread['createdAt'])}\n"
        "- agent: assistant\n"
        f"- usage: {tokens}, 1 tool call, {seconds}\n"
        "\n## user\n\n"
        f"{mark} count\n"
        "\n## assistant\n\n"
        "Counted to one.\n\n"
        f"> tool: {tool}\n"
    )
    assert cli(server, "thread", "export", thread_id) == markdown
    assert json.loads(cli(server, "thread", "export", thread_id, "--format", "json")) == thread
    assert json.loads(cli(server, "thread", "show", thread_id, "--json")) == thread

    target = tmp_path / "counting.md"
    result = invoke(["thread", "export", thread_id, "-o", str(target)], env=server_vars(server))
    assert (result.exit_code, result.stdout) == (0, "")
    assert result.stderr == f"exported counting ({thread_id}) to {target}\n"
    assert target.read_text() == markdown


def test_send_no_wait_prints_the_message_and_reply_ids(
    server: ServerProcess, fake: FakeOpenAI
) -> None:
    mark = marker()
    fake.script({"match": mark, "text": "Later."})
    thread_id = cli(server, "thread", "new").strip()
    out = cli(server, "thread", "send", thread_id, f"{mark} hi", "--no-wait")
    message_id, reply_id = out.split()
    assert out == f"{message_id} {reply_id}\n"
    ids = [m["id"] for m in get(server, f"/api/threads/{thread_id}")["messages"]]
    assert ids == [message_id, reply_id]


def test_send_exits_1_with_the_reply_s_error_when_it_fails(
    server: ServerProcess, fake: FakeOpenAI
) -> None:
    mark = marker()
    fake.script({"match": mark, "error": {"status": 401}})
    thread_id = cli(server, "thread", "new").strip()
    result = invoke(["thread", "send", thread_id, f"{mark} hi"], env=server_vars(server))
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == (
        "error: The reply failed: The model provider rejected the API key (HTTP 401: Incorrect"
        " API key provided. You can find your API key at https://platform.openai.com). Check"
        " OPENAI_API_KEY. (provider_auth_failed)\n"
    )


def test_tools_list_shows_plugin_name_status_and_error(server: ServerProcess) -> None:
    tools = get(server, "/api/tools")
    assert {t["name"] for t in tools} >= {"slow_count", "guarded_echo", "explode", "sleepy"}
    assert cli(server, "tools", "list") == "".join(
        f"voicestack-testtools\t{t['name']}\tloaded\t\n" for t in tools
    )
    assert json.loads(cli(server, "tools", "list", "--json")) == tools


def test_tools_list_says_why_it_is_empty_on_stderr_even_when_piped(
    start_agent_server: StartAgentServer,
) -> None:
    server = start_agent_server(None, env={"VOICESTACK_LOAD_TOOLS": ""})
    result = invoke(["tools", "list"], env=server_vars(server))
    assert (result.exit_code, result.stdout) == (0, "")
    assert result.stderr == (
        "No tools are loaded (install a tool plugin, or check VOICESTACK_LOAD_TOOLS).\n"
    )


def test_functions_list_shows_every_function(server: ServerProcess) -> None:
    functions = get(server, "/api/functions")
    lines = cli(server, "functions", "list").splitlines()
    assert [line.split("\t")[:3] for line in lines] == [
        [f["name"], f["kind"], f["app"]] for f in functions
    ]
    assert "threads.create\tmutation\tvoicestack\t" in "\n".join(lines)
    assert json.loads(cli(server, "functions", "list", "--json")) == functions
