"""Driving the fake OpenAI server: its request log, its control API over HTTP, the model list,
and its command line."""

from __future__ import annotations

import subprocess
import sys

import httpx
import openai
import pytest

from tests.support.openai_chat import USER, collect
from tests.support.server import REPO
from voicestack.testing.fake_openai import FakeOpenAI

pytestmark = pytest.mark.anyio


async def test_request_log_records_bodies_in_order(
    openai_client: openai.AsyncOpenAI, fake: FakeOpenAI
) -> None:
    await collect(openai_client, messages=[{"role": "user", "content": "first"}])
    await openai_client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "second"}]
    )

    log = fake.requests("chat")
    assert [r["body"]["messages"][0]["content"] for r in log] == ["first", "second"]
    assert {r["path"] for r in log} == {"/v1/chat/completions"}
    assert log[0]["timestamp"] <= log[1]["timestamp"]
    assert log[0]["body"]["stream"] is True
    assert log[0]["headers"]["authorization"] == "Bearer test"
    fake.clear_requests()
    assert fake.requests() == []


async def test_control_api_over_http(fake: FakeOpenAI) -> None:
    async with httpx.AsyncClient(base_url=fake.base_url) as http:
        queued = await http.post("/_control/script", json=[{"text": "a"}, {"kind": "speech"}])
        assert queued.json()["queued"] == 2
        pending = (await http.get("/_control/script")).json()
        assert [p["kind"] for p in pending] == ["chat", "speech"]
        bad = await http.post("/_control/script", json={"txt": "typo"})
        assert bad.status_code == 422
        assert "txt" in bad.json()["error"]["message"]

        chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        answer = await http.post("/v1/chat/completions", json=chat)
        assert answer.json()["choices"][0]["message"]["content"] == "a"
        logged = (await http.get("/_control/requests")).json()
        assert [(r["kind"], r["body"]) for r in logged] == [("chat", chat)]

        assert (await http.delete("/_control/requests")).status_code == 200
        assert (await http.get("/_control/requests")).json() == []
        assert (await http.post("/_control/reset")).status_code == 200
        assert (await http.get("/_control/script")).json() == []


async def test_models_lists_the_default_model(openai_client: openai.AsyncOpenAI) -> None:
    models = [m.id async for m in openai_client.models.list()]

    assert "gpt-4o-mini" in models


def test_cli_serves_on_the_port_it_prints() -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "voicestack.testing.fake_openai", "--port", "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            url = line.strip().rsplit(" ", 1)[-1]
            assert url.startswith("http://127.0.0.1:")
            with openai.OpenAI(base_url=f"{url}/v1", api_key="test", max_retries=0) as sync:
                answer = sync.chat.completions.create(model="gpt-4o-mini", messages=USER)
            assert answer.choices[0].message.content == "You said: hello there friend"
        finally:
            proc.terminate()
            proc.wait(timeout=10)
