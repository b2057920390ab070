"""`voicestack thread tail` and `thread send` as real subprocesses against a real server whose
replies the fake OpenAI streams at a set pace; the tests read the output while it streams."""

from __future__ import annotations

import json
import re
import signal
import time
from typing import Any

import pytest

from tests.support.agent import StartAgentServer, marker, words
from tests.support.cli import CliProcess, TerminalCliProcess, cli_env, feed_rows
from tests.support.server import ServerProcess
from voicestack.testing.fake_openai import FakeOpenAI

pytestmark = pytest.mark.agent_server()

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def new_thread(server: ServerProcess) -> str:
    with server.sync_client() as http:
        response = http.post("/api/threads", json={})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def send(server: ServerProcess, thread_id: str, text: str) -> tuple[str, str]:
    with server.sync_client() as http:
        response = http.post(f"/api/threads/{thread_id}/messages", json={"text": text})
    assert response.status_code == 201, response.text
    body = response.json()
    return body["messageId"], body["replyId"]


def thread(server: ServerProcess, thread_id: str) -> dict[str, Any]:
    with server.sync_client() as http:
        response = http.get(f"/api/threads/{thread_id}")
    assert response.status_code == 200, response.text
    return response.json()


def post_as_assistant(server: ServerProcess, thread_id: str, text: str) -> None:
    with server.sync_client() as http:
        response = http.post(
            "/api/mutation/messages.post", json={"args": {"threadId": thread_id, "text": text}}
        )
    assert response.status_code == 200, response.text


def test_tail_prints_a_reply_while_it_streams(server: ServerProcess, fake: FakeOpenAI) -> None:
    mark = marker()
    answer = words(24)
    fake.script({"match": mark, "text": answer, "tokens_per_second": 30})
    thread_id = new_thread(server)
    post_as_assistant(server, thread_id, "Earlier answer.")

    with CliProcess(["thread", "tail", thread_id], cli_env(server)) as tail:
        tail.wait_for(lambda out: out == "assistant: Earlier answer.\n")  # the snapshot
        send(server, thread_id, f"{mark} talk")
        partial = tail.wait_for(lambda out: " w3 " in out)
        # Printed while the reply still streams, and only appended to afterwards.
        assert thread(server, thread_id)["messages"][-1]["status"] == "streaming"
        whole = tail.wait_for(lambda out: out.endswith(f"{answer}\n"))
        assert tail.interrupt() == 0
        assert tail.stderr == ""

    assert whole == f"assistant: Earlier answer.\nuser: {mark} talk\nassistant: {answer}\n"
    assert whole.startswith(partial)
    assert len(partial) < len(whole)


def test_tail_shows_a_tool_call_then_its_result(server: ServerProcess, fake: FakeOpenAI) -> None:
    mark = marker()
    args = {"n": 2, "delay_s": 0.2}
    fake.script(
        {"match": mark, "tool_calls": [{"name": "slow_count", "arguments": args}]},
        {"match": mark, "text": "Done counting."},
    )
    thread_id = new_thread(server)
    post_as_assistant(server, thread_id, "Ready.")
    tool = 'tool slow_count {"n":2,"delay_s":0.2}'
    with CliProcess(["thread", "tail", thread_id], cli_env(server)) as tail:
        tail.wait_for(lambda out: out == "assistant: Ready.\n")
        send(server, thread_id, f"{mark} count")
        running = tail.wait_for(lambda out: f"  {tool}: pending\n" in out)
        assert "done" not in running
        whole = tail.wait_for(lambda out: out.endswith("assistant: Done counting.\n"))
        assert tail.interrupt() == 0
    assert whole == (
        "assistant: Ready.\n"
        f"user: {mark} count\n"
        f"  {tool}: pending\n"
        f'  {tool}: done → {{"counted":2}}\n'
        "assistant: Done counting.\n"
    )


def test_tail_on_a_terminal_grows_the_reply_in_place_with_a_spinner_for_tools(
    server: ServerProcess, fake: FakeOpenAI
) -> None:
    mark = marker()
    fake.script(
        {
            "match": mark,
            "tool_calls": [{"name": "slow_count", "arguments": {"n": 3, "delay_s": 0.25}}],
        },
        {"match": mark, "text": words(12, "v"), "tokens_per_second": 20},
    )
    thread_id = new_thread(server)
    post_as_assistant(server, thread_id, "Ready.")
    with TerminalCliProcess(["thread", "tail", thread_id], cli_env(server)) as tail:
        tail.read_until(lambda out: "Ready." in out)
        send(server, thread_id, f"{mark} count")
        spinning = tail.read_until(lambda out: "⠋" in out and "slow_count" in out)
        shown = tail.read_until(lambda out: "✓ tool slow_count" in ANSI.sub("", out))
        settled = tail.read_until(lambda out: "completion tokens" in ANSI.sub("", out))
        assert tail.interrupt() == 0
    answer = words(12, "v")
    plain = ANSI.sub("", settled)
    assert "✓" not in ANSI.sub("", spinning)
    assert '✓ tool slow_count {"n":3,"delay_s":0.25}: done → {"counted":3}' in ANSI.sub("", shown)
    # Frames of the streaming reply show it growing: some of them only a beginning of it.
    frames = [f.strip() for f in re.findall(r"· streaming\r\n  ([^\r]*)\r", plain)]
    assert any(frame and answer.startswith(frame) and frame != answer for frame in frames), frames
    # Once complete, the reply is printed for good, with its usage.
    assert re.search(
        r"assistant  \d+ prompt \+ \d+ completion tokens, 1 tool call, [\d.]+ s\r\n"
        rf"  {answer} *\r\n",
        plain,
    ), plain
    assert "Traceback" not in plain


def test_send_prints_the_reply_while_it_streams(server: ServerProcess, fake: FakeOpenAI) -> None:
    mark = marker()
    answer = words(20)
    fake.script({"match": mark, "text": answer, "tokens_per_second": 30})
    thread_id = new_thread(server)
    with CliProcess(["thread", "send", thread_id, f"{mark} talk"], cli_env(server)) as cli:
        partial = cli.wait_for(lambda out: "w2 " in out)
        assert cli.process.poll() is None  # still streaming
        assert cli.wait() == 0
        assert (cli.stdout, cli.stderr) == (f"{answer}\n", "")
    assert answer.startswith(partial)
    assert len(partial) < len(answer)


def test_ctrl_c_stops_send_watching_but_not_the_reply(
    server: ServerProcess, fake: FakeOpenAI
) -> None:
    mark = marker()
    answer = words(20)
    fake.script({"match": mark, "text": answer, "tokens_per_second": 30})
    thread_id = new_thread(server)
    with CliProcess(["thread", "send", thread_id, f"{mark} talk"], cli_env(server)) as cli:
        cli.wait_for(lambda out: "w1 " in out)
        assert cli.interrupt() == 130
        assert cli.stderr == "stopped watching; the reply goes on on the server\n"
    deadline = time.monotonic() + 10
    while (reply := thread(server, thread_id)["messages"][-1])["status"] != "complete":
        assert time.monotonic() < deadline, reply
        time.sleep(0.05)
    assert reply["text"] == answer


def test_tail_json_survives_a_server_restart_with_no_event_twice_or_missing(
    fake: FakeOpenAI, start_agent_server: StartAgentServer
) -> None:
    server = start_agent_server(fake.api_base, "--drain-s", "0")  # SIGTERM interrupts at once
    mark = marker()
    answer = words(80)
    first, second = f"{mark} talk for long", f"{mark} and then"
    fake.script(
        {"match": first, "text": answer, "tokens_per_second": 30},
        {"match": second, "text": "Second answer."},
    )
    thread_id = new_thread(server)

    def lines(out: str) -> list[dict[str, Any]]:
        return [json.loads(line) for line in out.splitlines()]

    def has_final(message_id: str) -> Any:
        def check(out: str) -> bool:
            return any(
                e["event"] == "message"
                and e["data"]["id"] == message_id
                and e["data"]["status"] in ("complete", "failed", "interrupted")
                for e in lines(out)
            )

        return check

    with CliProcess(["thread", "tail", thread_id, "--json"], cli_env(server)) as tail:
        (ready,) = lines(tail.wait_for(lambda out: out.endswith("\n")))
        assert ready == {"event": "ready", "id": ready["id"], "data": {"cursor": ready["id"]}}
        _, reply_id = send(server, thread_id, first)
        tail.wait_for(lambda out: sum(e["event"] == "delta" for e in lines(out)) >= 5)
        assert server.stop(signal.SIGTERM) == 0  # mid-reply
        server.start()
        _, second_id = send(server, thread_id, second)
        out = tail.wait_for(has_final(second_id))
        assert tail.interrupt() == 0
        notes = tail.stderr.splitlines()

    events = lines(out)
    assert events[0] == ready
    stored = feed_rows(server.db_path, thread_id, ready["id"])
    assert [(e["event"], e["id"], e["data"]) for e in events[1:]] == [
        (kind, event_id, json.loads(data)) for kind, event_id, data in stored
    ]
    streamed = "".join(
        e["data"]["text"]
        for e in events
        if e["event"] == "delta" and e["data"]["messageId"] == reply_id
    )
    (stopped,) = [
        e["data"]
        for e in events
        if e["event"] == "message"
        and e["data"]["id"] == reply_id
        and e["data"]["status"] == "interrupted"
    ]
    assert stopped["text"] == streamed
    assert answer.startswith(streamed)
    assert len(streamed.split()) >= 5
    assert notes, "the tail never noticed the restart"
    for note in notes:
        assert re.fullmatch(r"voicestack: .*; reconnecting \(attempt \d+\) …", note), notes

    # --since starts after a given event: exactly the stored events after it.
    since = events[3]["id"]
    with CliProcess(
        ["thread", "tail", thread_id, "--json", "--since", str(since)], cli_env(server)
    ) as again:
        resumed = lines(again.wait_for(has_final(second_id)))
        assert again.interrupt() == 0
    assert [(e["event"], e["id"]) for e in resumed] == [
        (kind, event_id) for kind, event_id, _ in feed_rows(server.db_path, thread_id, since)
    ]
