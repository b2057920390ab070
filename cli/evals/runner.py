"""Playing scenarios against a server through its public API.

Each run is a fresh thread titled `eval: NAME`, answered by the scenario's agent (else
`--agent`, else the server's default). The thread's feed is opened first and read up to `ready`,
so no event of a reply is missed; then each turn is sent (a typed turn as a message, a spoken
one as a recording to `POST /voice`) and the feed is followed until its reply ends. The time to
the reply's first streamed text is the first-token latency, measured from sending the turn (for
a spoken turn that includes the upload and the transcription). The reply's row and tool calls are
then read from `GET /api/threads/{id}`. Judges run after the last turn, so the conversation is
never held up by them.

A reply that does not end within `--turn-timeout` (a tool call awaiting approval, a stuck model)
ends its run with an error. The feed is read on a thread of its own so that a turn can stop
waiting at its deadline, or at once after Ctrl-C (the shared `cancel` event), while a read
blocks.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

import httpx

from cli.client import ApiClient
from cli.errors import CliError
from cli.evals.expectations import check_turn
from cli.evals.feedqueue import FeedQueue
from cli.evals.judge import Judge
from cli.evals.live import LiveTurn, pcm16_16k
from cli.evals.results import RunResult, TurnOutcome
from cli.evals.scenario import Scenario, Turn
from cli.evals.speech import Speaker
from cli.feed import FINAL_STATUSES

# A JSON call may wait behind replies on a busy server: more than the CLI's usual 10 s.
TIMEOUT_S = 60.0
RATE_LIMIT_TRIES = 20
RATE_LIMIT_MAX_WAIT_S = 60.0
TURN_TIMEOUT_S = 120.0
INTERRUPTED = "interrupted"


@dataclass(frozen=True)
class Target:
    """Where and how scenarios run: the server, the token, the default agent, the voice path,
    how long a reply may take, and the event that stops every run (Ctrl-C)."""

    server: str
    token: str | None
    agent: str | None = None
    voice: str = "http"
    turn_timeout_s: float = TURN_TIMEOUT_S
    cancel: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True)
class Helpers:
    """What turns may need besides the server: speech for `say:` turns, a judge for `judge`."""

    speaker: Speaker | None
    judge: Judge | None


class Interrupted(Exception):
    """Ctrl-C stopped the runs; `runs` are those that had ended, in scenario order."""

    def __init__(self, runs: list[RunResult]) -> None:
        super().__init__(INTERRUPTED)
        self.runs = runs


class _Conversation:
    """One run's thread and its followed feed."""

    def __init__(self, api: ApiClient, thread_id: str, target: Target) -> None:
        self.api = api
        self.thread_id = thread_id
        self.voice = target.voice
        self.timeout_s = target.turn_timeout_s
        self.cancel = target.cancel
        self.feed = FeedQueue(api, thread_id)
        deadline = time.monotonic() + max(self.timeout_s, TIMEOUT_S)
        while (event := self.feed.next(deadline, self.cancel)) is not None:
            if event.event == "ready":
                return
        self.close()
        if self.cancel.is_set():
            raise CliError(INTERRUPTED)
        raise CliError("The thread's feed sent no `ready` event.")

    def close(self) -> None:
        self.feed.close()

    def post(self, path: str, **kwargs: Any) -> dict[str, Any]:
        """POST, waiting out `429 rate_limited` (a long suite may spend a minute's replies)."""
        for attempt in range(1, RATE_LIMIT_TRIES + 1):
            try:
                response = self.api.http.post(path, **kwargs)
            except httpx.TransportError as exc:
                self.api.transport_failed(exc)
            if response.status_code == 429 and attempt < RATE_LIMIT_TRIES:
                wait = float(response.headers.get("retry-after") or 1)
                if self.cancel.wait(min(max(wait, 0.1), RATE_LIMIT_MAX_WAIT_S)):
                    raise CliError(INTERRUPTED)
                continue
            self.api.check(response)
            body: dict[str, Any] = response.json()
            return body
        raise AssertionError("unreachable: the last attempt returns or raises")

    def send(self, turn: Turn, speaker: Speaker | None) -> tuple[dict[str, Any], float]:
        """Send the turn; the server's answer and the monotonic time it was sent."""
        if turn.kind == "user":
            started = time.monotonic()
            path = f"/api/threads/{self.thread_id}/messages"
            return self.post(path, json={"text": turn.text}), started
        assert speaker is not None, "a `say:` turn runs with a speaker"
        audio = speaker.speak(turn.text)
        started = time.monotonic()
        files = {"audio": ("turn.wav", audio, "audio/wav")}
        return self.post("/voice", data={"threadId": self.thread_id}, files=files), started

    def say_live(self, turn: Turn, speaker: Speaker) -> tuple[dict[str, Any], float, LiveTurn]:
        """Say the turn on the thread's audio socket; the transcript and reply id, when the
        server heard the turn end, and the open socket (to be finished)."""
        pcm = pcm16_16k(speaker.speak(turn.text))
        url = f"{self.api.url.replace('http', 'ws', 1)}/api/threads/{self.thread_id}/audio"
        live = LiveTurn(url, self.api.http.headers.get("Authorization"))
        try:
            transcript, reply_id, heard = live.say(pcm)
        except BaseException:
            live.close()
            raise
        return {"transcript": transcript, "replyId": reply_id}, heard, live

    def follow(self, reply_id: str, started: float) -> tuple[dict[str, Any], float | None]:
        """Read the feed until the reply ends; its last row, and the ms from `started` to its
        first text."""
        first_ms = None
        awaiting: dict[str, str] = {}  # the reply's tool calls awaiting approval: id -> name
        deadline = started + self.timeout_s
        while (event := self.feed.next(deadline, self.cancel)) is not None:
            data = event.data
            if event.event == "tool_call" and data.get("messageId") == reply_id:
                if data.get("status") == "awaiting_approval":
                    awaiting[str(data.get("id"))] = str(data.get("name"))
                else:
                    awaiting.pop(str(data.get("id")), None)
            elif event.event == "delta" and data.get("messageId") == reply_id and data.get("text"):
                first_ms = first_ms or (time.monotonic() - started) * 1000
            elif event.event == "message" and data.get("id") == reply_id:
                if data.get("text") and first_ms is None:
                    first_ms = (time.monotonic() - started) * 1000
                if data.get("status") in FINAL_STATUSES:
                    return data, first_ms
        if self.cancel.is_set():
            raise CliError(INTERRUPTED)
        message = f"no final reply within {self.timeout_s:g}s"
        if awaiting:
            names = ", ".join(sorted(set(awaiting.values())))
            calls = "the tool call" if len(awaiting) == 1 else "the tool calls"
            verb = "awaits" if len(awaiting) == 1 else "await"
            message += f" ({calls} {names} {verb} approval)"
        raise CliError(message)

    def play(self, index: int, turn: Turn, speaker: Speaker | None) -> TurnOutcome:
        """Send one turn and read its reply, tool calls and usage."""
        live = None
        if turn.kind == "say" and self.voice == "realtime":
            assert speaker is not None, "a `say:` turn runs with a speaker"
            answer, started, live = self.say_live(turn, speaker)
        else:
            answer, started = self.send(turn, speaker)
        reply_id = str(answer["replyId"])
        try:
            last, first_ms = self.follow(reply_id, started)
        except BaseException:
            if live is not None:
                live.close()
            raise
        if live is not None:
            live.finish()
        thread = self.api.get(f"/api/threads/{self.thread_id}")
        row = next((m for m in thread["messages"] if m["id"] == reply_id), last)
        usage = row.get("usage") or {}
        calls = [
            {k: call.get(k) for k in ("name", "args", "status", "result", "error")}
            for call in thread.get("toolCalls") or []
            if call.get("messageId") == reply_id
        ]
        outcome = TurnOutcome(
            index=index,
            kind=turn.kind,
            text=turn.text,
            transcript=answer.get("transcript") if turn.kind == "say" else None,
            reply_id=reply_id,
            status=row.get("status"),
            reply=row.get("text") or "",
            error=row.get("error"),
            tool_calls=calls,
            first_token_ms=round(first_ms, 1) if first_ms is not None else None,
            prompt_tokens=int(usage.get("promptTokens") or 0),
            completion_tokens=int(usage.get("completionTokens") or 0),
            voice=row.get("voice"),
        )
        outcome.checks = check_turn(turn.expect, outcome)
        return outcome


def play_run(target: Target, helpers: Helpers, scenario: Scenario, run: int) -> RunResult:
    """Play the scenario once in a new thread; a failure of the server or the network stops
    the run and is its `error`, never an exception."""
    result = RunResult(scenario, run)
    started = time.monotonic()
    try:
        with ApiClient(target.server, target.token, timeout=TIMEOUT_S) as api:
            agent = scenario.agent or target.agent
            body = {"title": f"eval: {scenario.name}", **({"agent": agent} if agent else {})}
            result.thread_id = str(api.post("/api/threads", body)["id"])
            conversation = _Conversation(api, result.thread_id, target)
            try:
                for index, turn in enumerate(scenario.turns, start=1):
                    if target.cancel.is_set():
                        result.error = f"turn {index}: {INTERRUPTED}"
                        break
                    try:
                        result.turns.append(conversation.play(index, turn, helpers.speaker))
                    except CliError as exc:
                        result.error = f"turn {index}: {exc.message}"
                        break
            finally:
                conversation.close()
    except CliError as exc:
        result.error = result.error or exc.message
    if not target.cancel.is_set():
        _judge(result, helpers.judge)
    result.seconds = time.monotonic() - started
    return result


def _judge(result: RunResult, judge: Judge | None) -> None:
    conversation: list[tuple[str, str]] = []
    for outcome, turn in zip(result.turns, result.scenario.turns, strict=False):
        conversation += [("user", outcome.said), ("assistant", outcome.reply)]
        if turn.expect.judge is not None:
            assert judge is not None, "scenarios with `judge` run with a judge"
            outcome.checks.append(judge.check(turn.expect.judge, list(conversation)))


def run_all(
    target: Target,
    helpers: Helpers,
    scenarios: list[Scenario],
    repeat: int,
    concurrency: int,
    on_done: Callable[[RunResult], None],
) -> list[RunResult]:
    """Every scenario `repeat` times, `concurrency` runs at a time; the results in scenario
    order, each scenario's runs in order. `on_done` is called (in one thread at a time) as each
    run ends. On Ctrl-C (KeyboardInterrupt) `target.cancel` is set, so that no run starts and
    running ones stop at once, and Interrupted is raised with the runs that had ended."""
    jobs = [(scenario, run) for scenario in scenarios for run in range(1, repeat + 1)]
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="eval")
    futures = [pool.submit(play_run, target, helpers, s, run) for s, run in jobs]
    try:
        for future in as_completed(futures):
            on_done(future.result())
    except KeyboardInterrupt:
        target.cancel.set()
        pool.shutdown(wait=False, cancel_futures=True)
        ended = [
            f.result() for f in futures if f.done() and not f.cancelled() and not f.exception()
        ]
        raise Interrupted(ended) from None
    except BaseException:
        target.cancel.set()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return [future.result() for future in futures]
