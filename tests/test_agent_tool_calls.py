"""Tool calls end to end: the fake model calls the test-tools plugin's tools through a real server.

The tools come from `tests/plugins/voicestack-testtools` (installed with pip, loaded with
VOICESTACK_LOAD_TOOLS=testtools). The tool-call modules share one server, with
`--tool-timeout-s 1 --max-steps 3`; every test works in threads of its own.
"""

from __future__ import annotations

import httpx
import pytest

from tests.support.agent import (
    INSTRUCTIONS,
    Threads,
    ask,
    chat_bodies,
    marker,
    outline,
    tool_call_rows,
)
from tests.support.tool_calls import (
    TOOL_SERVER_ARGS,
    assistant_calls,
    call_plan,
    changes,
    tool_result,
)
from voicestack.testing.fake_openai import FakeOpenAI

pytestmark = [pytest.mark.anyio, pytest.mark.agent_server(*TOOL_SERVER_ARGS)]

EXPECTED_COUNT = "n (integer, required), delay_s (number, required)"


async def test_a_tool_call_reports_progress_and_its_result_goes_back_to_the_model(
    fake: FakeOpenAI, client: httpx.AsyncClient, threads: Threads
) -> None:
    mark = marker()
    count = {"n": 3, "delay_s": 0.05}
    fake.script(
        {**call_plan(mark, "slow_count", count, "call_count"), "usage": {"prompt_tokens": 10}},
        {"match": mark, "text": "I counted to 3.", "usage": {"prompt_tokens": 20}},
    )
    question = f"{mark} count to three"
    thread_id, user_id, reply_id, events = await ask(client, threads, question)

    rows = tool_call_rows(events)
    row_id = rows[0]["id"]
    text_events = len(events) - 3 - len(rows) - 1
    assert outline(events) == [
        ("message", user_id, "complete"),
        ("message", reply_id, "pending"),
        ("message", reply_id, "streaming"),
        ("tool_call", row_id, "pending"),
        *[("tool_call", row_id, "running")] * 4,
        ("tool_call", row_id, "done"),
        *[("delta", reply_id, None)] * text_events,
        ("message", reply_id, "complete"),
    ]
    assert changes(events, "call_count") == [
        ("pending", None, None, None),
        ("running", None, None, None),
        ("running", 1 / 3, None, None),
        ("running", 2 / 3, None, None),
        ("running", 1.0, None, None),
        ("done", 1.0, {"counted": 3}, None),
    ]
    done = rows[-1]
    assert done == {
        "id": row_id,
        "threadId": thread_id,
        "messageId": reply_id,
        "callId": "call_count",
        "step": 1,
        "name": "slow_count",
        "args": count,
        "status": "done",
        "progress": 1.0,
        "result": {"counted": 3},
        "error": None,
        "createdAt": rows[0]["createdAt"],
        "updatedAt": done["updatedAt"],
    }
    final = events[-1].json
    assert (final["text"], final["usage"]["toolCalls"], final["usage"]["promptTokens"]) == (
        "I counted to 3.",
        1,
        30,
    )
    first, second = chat_bodies(fake, mark)
    assert [t["function"]["name"] for t in first["tools"]] == [
        "slow_count",
        "guarded_echo",
        "explode",
        "sleepy",
    ]
    assert second["messages"] == [
        {"role": "system", "content": INSTRUCTIONS},
        {"role": "user", "content": question},
        assistant_calls(("call_count", "slow_count", count)),
        tool_result("call_count", '{"counted":3}'),
    ]
    assert (await threads.get(thread_id))["toolCalls"] == [done]


async def test_invalid_arguments_get_one_corrective_retry(
    fake: FakeOpenAI, client: httpx.AsyncClient, threads: Threads
) -> None:
    mark = marker()
    bad, good = {"n": "three", "delay_s": 0}, {"n": 2, "delay_s": 0}
    fake.script(
        call_plan(mark, "slow_count", bad, "call_bad"),
        call_plan(mark, "slow_count", good, "call_good"),
        {"match": mark, "text": "Counted to 2."},
    )
    _, _, _, events = await ask(client, threads, f"{mark} count to two")

    error = (
        "Invalid arguments for tool 'slow_count':\n"
        '- n: Input should be a valid integer, unable to parse string as an integer (got "three")\n'
        f"Expected arguments: {EXPECTED_COUNT}. Call slow_count again with corrected arguments."
    )
    assert changes(events, "call_bad") == [("failed", None, None, error)]
    assert changes(events, "call_good") == [
        ("pending", None, None, None),
        ("running", None, None, None),
        ("running", 0.5, None, None),
        ("running", 1.0, None, None),
        ("done", 1.0, {"counted": 2}, None),
    ]
    assert (events[-1].json["status"], events[-1].json["text"]) == ("complete", "Counted to 2.")
    last = chat_bodies(fake, mark)[-1]["messages"]
    assert last[2:] == [
        assistant_calls(("call_bad", "slow_count", bad)),
        tool_result("call_bad", f"Error: {error}"),
        assistant_calls(("call_good", "slow_count", good)),
        tool_result("call_good", '{"counted":2}'),
    ]


async def test_arguments_invalid_twice_fail_and_the_reply_still_completes(
    fake: FakeOpenAI, client: httpx.AsyncClient, threads: Threads
) -> None:
    mark = marker()
    bad, worse = {"n": "three", "delay_s": 0}, {"delay_s": 0}
    fake.script(
        call_plan(mark, "slow_count", bad, "call_bad"),
        call_plan(mark, "slow_count", worse, "call_worse"),
        {"match": mark, "text": "I could not count."},
    )
    _, _, _, events = await ask(client, threads, f"{mark} count")

    again = (
        "Invalid arguments for tool 'slow_count':\n- n: Field required\n"
        f"Expected arguments: {EXPECTED_COUNT}. The arguments were invalid again; do not call"
        " slow_count again."
    )
    assert [row["status"] for row in tool_call_rows(events)] == ["failed", "failed"]
    assert changes(events, "call_worse") == [("failed", None, None, again)]
    assert (events[-1].json["status"], events[-1].json["text"]) == (
        "complete",
        "I could not count.",
    )
    assert chat_bodies(fake, mark)[-1]["messages"][-1] == tool_result(
        "call_worse", f"Error: {again}"
    )


async def test_a_failing_tool_becomes_an_error_result(
    fake: FakeOpenAI, client: httpx.AsyncClient, threads: Threads
) -> None:
    mark = marker()
    fake.script(
        call_plan(mark, "explode", {}, "call_boom"),
        call_plan(mark, "sleepy", {"seconds": 5}, "call_sleep"),
        {"match": mark, "text": "Both tools failed."},
    )
    _, _, _, events = await ask(client, threads, f"{mark} try the tools")

    boom = "RuntimeError: the explode tool always fails"
    assert changes(events, "call_boom") == [
        ("pending", None, None, None),
        ("running", None, None, None),
        ("failed", None, None, boom),
    ]
    # --tool-timeout-s 1 stops the five-second sleep.
    assert changes(events, "call_sleep") == [
        ("pending", None, None, None),
        ("running", None, None, None),
        ("failed", None, None, "timed out after 1 s"),
    ]
    final = events[-1].json
    assert (final["status"], final["text"]) == ("complete", "Both tools failed.")
    assert chat_bodies(fake, mark)[-1]["messages"][-4:] == [
        assistant_calls(("call_boom", "explode", {})),
        tool_result("call_boom", f"Error: {boom}"),
        assistant_calls(("call_sleep", "sleepy", {"seconds": 5})),
        tool_result("call_sleep", "Error: timed out after 1 s"),
    ]


async def test_the_last_step_offers_no_tools(
    fake: FakeOpenAI, client: httpx.AsyncClient, threads: Threads
) -> None:
    # The server runs with --max-steps 3 (TOOL_SERVER_ARGS).
    mark = marker()
    one = {"n": 1, "delay_s": 0}
    fake.script(
        call_plan(mark, "slow_count", one, "call_1"),
        call_plan(mark, "slow_count", one, "call_2"),
        {"match": mark, "text": "Done counting."},
    )
    _, _, _, events = await ask(client, threads, f"{mark} count twice")

    bodies = chat_bodies(fake, mark)
    assert [len(body.get("tools", [])) for body in bodies] == [4, 4, 0]
    assert (events[-1].json["status"], events[-1].json["text"]) == ("complete", "Done counting.")


async def test_a_tool_call_in_the_last_step_is_not_run(
    fake: FakeOpenAI, client: httpx.AsyncClient, threads: Threads
) -> None:
    # The last step offers no tools; a model that calls one anyway must not have it run,
    # since its result could never reach the model.
    mark = marker()
    one = {"n": 1, "delay_s": 0}
    fake.script(*[call_plan(mark, "slow_count", one, f"call_{n}") for n in (1, 2, 3)])
    _, _, _, events = await ask(client, threads, f"{mark} count for ever")

    assert len(chat_bodies(fake, mark)) == 3
    assert events[-1].json["status"] in ("complete", "failed"), events[-1].json
    assert [changes(events, f"call_{n}")[-1][0] for n in (1, 2, 3)] == ["done", "done", "failed"]
