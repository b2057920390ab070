"""Cost per conversation (DESIGN §8): a price table turns each reply's usage into `costUsd` on
messages and threads, `usage.summary` groups it, and `voicestack usage` prints it.

The module shares one server with a price table (test prices, not anyone's real ones) and an
agent whose model has no price. Each test works as users of its own, whose summaries hold only
their own threads, so the exact totals do not depend on the other tests.
"""

from __future__ import annotations

import calendar
import re
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import apsw
import httpx
import pytest
from pydantic import ValidationError

from tests.support.agent import (
    AGENT_ENV,
    Threads,
    agent_args,
    ended,
    feed,
    marker,
    read_until,
    snapshot,
)
from tests.support.api import Api, error_of
from tests.support.cli import TerminalCliProcess, cli_env, invoke
from tests.support.server import REPO, TEST_APP, ServerProcess, running_server
from tests.support.voice import Recordings, post_form, posted, requires_espeak
from voicestack.config import ModelPrice, load_settings
from voicestack.testing.fake_openai import FakeOpenAI

pytestmark = pytest.mark.anyio

PRICES = """
[prices."gpt-4o-mini"]
input_per_mtok = 2.0
output_per_mtok = 8.0

[prices."gpt-4o-mini-transcribe"]
audio_in_per_min = 0.5

[prices."gpt-4o-mini-tts"]
speech_per_mchar = 30.0

[agents.mystery]
instructions = "You are a model nobody has priced."
model = "mystery-model"
"""
# 1000 prompt and 500 completion tokens of gpt-4o-mini at the prices above.
PRICED = {"prompt_tokens": 1000, "completion_tokens": 500}
PRICED_COST = 0.006
UNPRICED = {"prompt_tokens": 100, "completion_tokens": 50}


@pytest.fixture(scope="module")
def priced(
    fake_openai: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A server with PRICES as its config file, replies from the fake OpenAI."""
    workdir = tmp_path_factory.mktemp("priced")
    config = workdir / "prices.toml"
    config.write_text(PRICES)
    args = agent_args(fake_openai.api_base, "--config", str(config))
    with running_server(workdir, TEST_APP, args, AGENT_ENV) as server:
        yield server


@pytest.fixture
def server(priced: ServerProcess) -> ServerProcess:
    """`client`, `api` and `threads` talk to the priced server (as its admin)."""
    return priced


@pytest.fixture
def person_name() -> str:
    """The name of a user of this test's own."""
    return f"u{secrets.token_hex(4)}"


@pytest.fixture
async def person(priced: ServerProcess, person_name: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client of `person_name`, a new user (not an admin)."""
    async with priced.client(token=priced.create_token(person_name)) as http:
        yield http


async def turn(
    fake: FakeOpenAI, client: httpx.AsyncClient, usage: dict[str, int], agent: str | None = None
) -> tuple[str, dict[str, Any]]:
    """A new thread (answered by `agent`) with one question and its reply's final row."""
    mark = marker()
    fake.script({"match": mark, "text": "Answered.", "usage": usage})
    response = await client.post("/api/threads", json={"agent": agent} if agent else {})
    assert response.status_code == 201, response.text
    thread_id = response.json()["id"]
    async with feed(client, thread_id) as stream:
        await snapshot(stream)
        _, reply_id = await Threads(client).send(thread_id, f"{mark} question")
        events = await read_until(stream, ended(reply_id))
    return thread_id, events[-1].json


async def summary(client: httpx.AsyncClient, **args: Any) -> dict[str, Any]:
    """The value of `usage.summary` with `args`, as `client`'s user."""
    return (await Api(client).query("usage.summary", args)).value


def usage_row(key: str | None, replies: int, usage: dict[str, int], cost: float | None) -> dict:
    """A summary row of `replies` text turns that used `usage` in all and cost `cost`."""
    return {
        **({"key": key} if key is not None else {}),
        "replies": replies,
        "promptTokens": usage["prompt_tokens"],
        "completionTokens": usage["completion_tokens"],
        "toolCalls": 0,
        "audioInSeconds": 0.0,
        "speechChars": 0,
        "speechSeconds": 0.0,
        "costUsd": cost,
        "unpricedReplies": 0 if cost is not None else replies,
        "unreportedSteps": 0,
    }


def both(first: dict[str, int], second: dict[str, int]) -> dict[str, int]:
    """Two usages added."""
    return {name: first[name] + second[name] for name in first}


async def test_a_replys_cost_is_its_tokens_priced_and_a_thread_sums_its_turns(
    fake: FakeOpenAI, person: httpx.AsyncClient
) -> None:
    thread_id, reply = await turn(fake, person, PRICED)
    mark = marker()
    fake.script({"match": mark, "text": "Again.", "usage": {"prompt_tokens": 3000}})
    async with feed(person, thread_id) as stream:
        await snapshot(stream)
        _, second_id = await Threads(person).send(thread_id, f"{mark} again")
        second = (await read_until(stream, ended(second_id)))[-1].json

    assert reply["usage"]["costUsd"] == PRICED_COST
    # 3000 prompt tokens at 2.0 per million, and the completion the fake counted (1 word).
    assert second["usage"]["completionTokens"] == 1
    assert second["usage"]["costUsd"] == 0.006008
    thread = await Threads(person).get(thread_id)
    assert [m["usage"]["costUsd"] for m in thread["messages"]] == [None, 0.006, None, 0.006008]
    assert thread["usage"]["costUsd"] == 0.012008


async def test_a_model_without_a_price_shows_its_tokens_with_a_null_cost(
    fake: FakeOpenAI, person: httpx.AsyncClient
) -> None:
    thread_id, reply = await turn(fake, person, UNPRICED, agent="mystery")

    assert (reply["status"], reply["usage"]["promptTokens"], reply["usage"]["costUsd"]) == (
        "complete",
        100,
        None,
    )
    assert (await Threads(person).get(thread_id))["usage"]["costUsd"] is None
    assert (await summary(person, by="model"))["rows"] == [
        usage_row("mystery-model", 1, UNPRICED, None)
    ]


async def test_a_step_whose_provider_reported_no_tokens_is_counted_not_priced(
    fake: FakeOpenAI, person: httpx.AsyncClient
) -> None:
    thread_id, reply = await turn(fake, person, {"prompt_tokens": 0, "completion_tokens": 0})

    assert reply["text"] == "Answered."
    assert (reply["usage"]["unreportedSteps"], reply["usage"]["costUsd"]) == (1, 0.0)
    usage = (await Threads(person).get(thread_id))["usage"]
    assert (usage["unreportedSteps"], usage["costUsd"]) == (1, 0.0)


async def test_the_summary_groups_turns_by_agent_model_day_and_user(
    fake: FakeOpenAI, person: httpx.AsyncClient, person_name: str
) -> None:
    await turn(fake, person, PRICED)
    await turn(fake, person, UNPRICED, agent="mystery")
    today = time.strftime("%Y-%m-%d", time.gmtime())
    everything = both(PRICED, UNPRICED)

    by_agent = await summary(person, by="agent")
    by_model = await summary(person, by="model")
    by_day = await summary(person, by="day")
    by_user = await summary(person, by="user")

    total = {**usage_row(None, 2, everything, None), "unpricedReplies": 1}
    assert by_agent == {
        "by": "agent",
        "since": None,
        "until": None,
        "rows": [
            usage_row("assistant", 1, PRICED, PRICED_COST),
            usage_row("mystery", 1, UNPRICED, None),
        ],
        "total": total,
    }
    assert by_model["rows"] == [
        usage_row("gpt-4o-mini", 1, PRICED, PRICED_COST),
        usage_row("mystery-model", 1, UNPRICED, None),
    ]
    assert by_day["rows"] == [{**total, "key": today}]
    assert by_user["rows"] == [{**total, "key": person_name}]
    assert by_model["total"] == by_day["total"] == by_user["total"] == total


async def test_an_admin_sees_every_users_usage_and_a_user_only_their_own(
    fake: FakeOpenAI, api: Api, server: ServerProcess
) -> None:
    start = time.time()
    names = [f"u{secrets.token_hex(4)}" for _ in range(2)]
    for name in names:
        async with server.client(token=server.create_token(name)) as http:
            await turn(fake, http, PRICED)
            mine = await summary(http, by="user")
            assert mine["rows"] == [usage_row(name, 1, PRICED, PRICED_COST)]

    everyone = (await api.query("usage.summary", {"by": "user", "since": start})).value
    before = (await api.query("usage.summary", {"by": "user", "until": start})).value

    assert everyone["rows"] == sorted(
        [usage_row(name, 1, PRICED, PRICED_COST) for name in names], key=lambda r: r["key"]
    )
    assert everyone["total"] == usage_row(None, 2, both(PRICED, PRICED), 0.012)
    assert [row["key"] for row in before["rows"] if row["key"] in names] == []


async def test_the_period_takes_unix_seconds_or_iso_dates(
    fake: FakeOpenAI, client: httpx.AsyncClient, person: httpx.AsyncClient
) -> None:
    await turn(fake, person, PRICED)
    tomorrow = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 86400))

    later = await summary(person, by="day", since=tomorrow)
    earlier = await summary(person, by="day", until=tomorrow)
    refused = await client.post(
        "/api/query/usage.summary", json={"args": {"by": "day", "since": "last week"}}
    )

    assert later["rows"] == []
    assert later["total"] == usage_row(None, 0, {"prompt_tokens": 0, "completion_tokens": 0}, 0.0)
    assert later["since"] == calendar.timegm(time.strptime(tomorrow, "%Y-%m-%d"))
    assert earlier["total"] == usage_row(None, 1, PRICED, PRICED_COST)
    error_of(refused, 422, "invalid_args")


@requires_espeak
async def test_a_spoken_turn_prices_its_transcription_and_speech_too(
    fake: FakeOpenAI, person: httpx.AsyncClient, server: ServerProcess, recordings: Recordings
) -> None:
    mark = marker()
    sentences = ["It is sunny.", "Enjoy it."]
    answer = " ".join(sentences)
    spoken = sum(len(sentence) for sentence in sentences)  # each sentence, not the spaces
    fake.script(
        {"kind": "transcription", "transcript": f"{mark} how is the weather?"},
        {"match": mark, "text": answer, "usage": PRICED},
    )
    thread_id = (await person.post("/api/threads", json={})).json()["id"]
    async with feed(person, thread_id) as stream:
        await snapshot(stream)
        voice = posted(await post_form(person, thread_id, recordings.audio("wav"), speak="true"))
        reply = (await read_until(stream, ended(voice.reply_id), timeout=15))[-1].json

    [(heard,)] = rows(
        server.db_path, "SELECT audio_in_seconds FROM messages WHERE id = ?", voice.message_id
    )
    assert heard > 0
    assert reply["usage"]["speechChars"] == spoken
    expected = PRICED_COST + heard / 60 * 0.5 + spoken / 1e6 * 30.0
    assert reply["usage"]["costUsd"] == round(expected, 10)
    thread = await Threads(person).get(thread_id)
    assert thread["usage"]["costUsd"] == reply["usage"]["costUsd"]


def rows(path: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Rows read straight from the server's database file."""
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    conn.set_busy_timeout(5000)
    try:
        return list(conn.execute(sql, params))
    finally:
        conn.close()


async def test_the_usage_command_prints_each_agent_and_the_totals(
    fake: FakeOpenAI, server: ServerProcess
) -> None:
    name = f"u{secrets.token_hex(4)}"
    token = server.create_token(name)
    async with server.client(token=token) as http:
        await turn(fake, http, PRICED)
        await turn(fake, http, UNPRICED, agent="mystery")
    env = cli_env(server, VOICESTACK_TOKEN=token)

    plain = invoke(["usage", "--by", "agent", "--since", "7d"], env=env)
    wide = 140  # every column on one line, headers unwrapped
    with TerminalCliProcess(["usage", "--by", "agent", "--since", "7d"], env, wide) as terminal:
        assert terminal.wait() == 0
        shown = re.sub(r"\x1b\[[0-9;]*m", "", terminal.output.decode())

    assert (plain.exit_code, plain.stderr) == (0, "")
    assert plain.stdout == (
        "assistant\t1\t1000\t500\t0\t0\t0\t0\t0.006\n"
        "mystery\t1\t100\t50\t0\t0\t0\t0\t\n"
        "total\t2\t1100\t550\t0\t0\t0\t0\t\n"
    )
    table = [line.split() for line in shown.splitlines() if line.strip()]
    assert table == [
        [
            "agent",
            "replies",
            "input",
            "tokens",
            "output",
            "tokens",
            "tool",
            "calls",
            "audio",
            "in",
            "s",
            "speech",
            "chars",
            "speech",
            "s",
            "cost",
        ],
        ["─" * len(cell) for cell in table[1]],
        ["assistant", "1", "1000", "500", "0", "0", "0", "0", "$0.0060"],
        ["mystery", "1", "100", "50", "0", "0", "0", "0", "no", "price"],
        ["─" * len(cell) for cell in table[4]],
        ["total", "2", "1100", "550", "0", "0", "0", "0", "no", "price"],
    ]


async def test_thread_show_prints_the_cost_beside_the_usage(
    fake: FakeOpenAI, server: ServerProcess
) -> None:
    token = server.create_token(f"u{secrets.token_hex(4)}")
    async with server.client(token=token) as http:
        thread_id, reply = await turn(fake, http, PRICED)

    shown = invoke(["thread", "show", thread_id], env=cli_env(server, VOICESTACK_TOKEN=token))

    seconds = f"{reply['usage']['wallMs'] / 1000:.1f} s"
    line = f"1000 prompt + 500 completion tokens, {seconds}, $0.0060"
    assert shown.exit_code == 0, shown.stderr
    assert [text for text in shown.stdout.splitlines() if "tokens" in text] == [
        f"usage: {line}",
        f"assistant (complete) {reply['id']}: {line}",
    ]


def test_the_usage_command_refuses_a_period_it_cannot_read() -> None:
    result = invoke(["usage", "--since", "last week"])

    assert result.exit_code == 2
    assert result.stderr == (
        "error: --since takes a time ago such as 7d, 24h or 30m, or a date such as 2026-12-01,"
        " not 'last week'.\n"
    )


def test_the_example_price_file_is_a_valid_price_table() -> None:
    settings = load_settings(REPO / "deploy" / "prices.toml")

    assert settings.prices["gpt-4o-mini"] == ModelPrice(input_per_mtok=0.15, output_per_mtok=0.6)
    for model, price in settings.prices.items():
        tokens = (price.input_per_mtok, price.output_per_mtok)
        assert tokens == (None, None) or None not in tokens, model


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            '[prices."gpt-4o-mini"]\n',
            'Value error, The price table of "gpt-4o-mini" names no price: give input_per_mtok,'
            " output_per_mtok, audio_in_per_min or speech_per_mchar.",
        ),
        (
            '[prices."gpt-4o-mini"]\ninput_per_mtok = -1\n',
            "Input should be greater than or equal to 0",
        ),
        ('[prices."gpt-4o-mini"]\ninput_per_token = 1\n', "Extra inputs are not permitted"),
    ],
)
def test_a_price_table_the_server_cannot_use_is_refused(
    tmp_path: Path, table: str, message: str
) -> None:
    config = tmp_path / "voicestack.toml"
    config.write_text(table)

    with pytest.raises(ValidationError) as refused:
        load_settings(config)

    assert [error["msg"] for error in refused.value.errors()] == [message]
