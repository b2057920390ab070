"""What a scenario run saw and how each expectation came out, as the reports show it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from cli.evals.scenario import Scenario


def shown(value: Any, limit: int = 200) -> str:
    """`value` in one short line: texts quoted, anything else as compact JSON."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


@dataclass(frozen=True)
class Check:
    """One expectation's result: what was expected, whether it held, and what was seen
    (`reason`: the judge's explanation, for `judge`)."""

    kind: str
    expected: Any
    passed: bool
    actual: str
    reason: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The check as the JSON report writes it."""
        body = {
            "kind": self.kind,
            "expected": self.expected,
            "passed": self.passed,
            "actual": self.actual,
        }
        return body if self.reason is None else {**body, "reason": self.reason}

    def summary(self) -> str:
        """`kind expected …: saw …`, in one line."""
        return f"{self.kind} {shown(self.expected, 80)}: saw {self.actual}"


@dataclass
class TurnOutcome:
    """One turn as it happened: what was sent, the reply and its tool calls, and the checks."""

    index: int
    kind: str
    text: str
    transcript: str | None = None
    reply_id: str | None = None
    status: str | None = None
    reply: str = ""
    error: dict[str, Any] | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    first_token_ms: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    voice: dict[str, Any] | None = None  # a live turn's metrics (DESIGN §9)
    checks: list[Check] = field(default_factory=list)

    @property
    def said(self) -> str:
        """What the agent heard: the transcript of a spoken turn, else the typed text."""
        return self.transcript if self.transcript is not None else self.text

    def as_json(self) -> dict[str, Any]:
        """The turn as the JSON report writes it."""
        return {
            "turn": self.index,
            "kind": self.kind,
            "text": self.text,
            "transcript": self.transcript,
            "replyId": self.reply_id,
            "status": self.status,
            "reply": self.reply,
            "error": self.error,
            "toolCalls": self.tool_calls,
            "firstTokenMs": self.first_token_ms,
            "promptTokens": self.prompt_tokens,
            "completionTokens": self.completion_tokens,
            "voice": self.voice,
            "expectations": [check.as_json() for check in self.checks],
        }


@dataclass
class RunResult:
    """One run of a scenario in its own thread; `error` is what stopped it early, if anything."""

    scenario: Scenario
    run: int
    thread_id: str | None = None
    turns: list[TurnOutcome] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        """True when the run ended normally and every expectation of every turn held."""
        return self.error is None and all(c.passed for t in self.turns for c in t.checks)

    def first_failure(self) -> str | None:
        """The first failing expectation with what was seen, or the error that stopped the
        run; None for a run that passed."""
        for turn in self.turns:
            for check in turn.checks:
                if not check.passed:
                    return f"turn {turn.index}: {check.summary()}"
        return self.error

    @property
    def tokens(self) -> int:
        """Prompt and completion tokens of every reply of the run."""
        return sum(t.prompt_tokens + t.completion_tokens for t in self.turns)

    def first_token_ms(self) -> list[float]:
        """The first-token latencies of the run's replies that streamed text."""
        return [t.first_token_ms for t in self.turns if t.first_token_ms is not None]

    def as_json(self) -> dict[str, Any]:
        """The run as the JSON report writes it."""
        return {
            "run": self.run,
            "threadId": self.thread_id,
            "passed": self.passed,
            "error": self.error,
            "seconds": round(self.seconds, 3),
            "tokens": self.tokens,
            "turns": [turn.as_json() for turn in self.turns],
        }
