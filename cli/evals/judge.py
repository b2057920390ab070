"""The `judge` expectation: a model decides whether a reply meets a criterion in words.

The judge is any OpenAI-compatible chat model (`--judge-model`) at `--provider-base-url`
(default OPENAI_BASE_URL, else OpenAI's API) with `--provider-api-key` (default
OPENAI_API_KEY): the eval command talks to it directly, never through the server under test. It
sees the conversation up to the turn and the criterion, and must answer a JSON object
`{"pass": true|false, "reason": "..."}`; the reason is kept in the report either way.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

import openai

from cli.evals.results import Check, shown

INSTRUCTIONS = (
    "You grade one reply of an AI agent against a criterion. Read the conversation; the reply "
    "to grade is the last assistant message. Answer with one JSON object and nothing else: "
    '{"pass": true or false, "reason": "one short sentence"}.'
)
TIMEOUT_S = 60.0
_OBJECT = re.compile(r"\{.*\}", re.DOTALL)


@dataclass(frozen=True)
class Provider:
    """An OpenAI-compatible API: its base URL (None: OpenAI's) and key (None: none)."""

    base_url: str | None
    api_key: str | None

    def client(self) -> openai.OpenAI:
        """A blocking client that retries twice on its own."""
        # Local servers (Ollama, vLLM, the test provider) take any key, but the SDK needs one.
        key = self.api_key or "not-needed"
        return openai.OpenAI(base_url=self.base_url, api_key=key, max_retries=2, timeout=TIMEOUT_S)


def judge_prompt(criterion: str, conversation: Sequence[tuple[str, str]]) -> str:
    """The judge's user message: the criterion, then the conversation as `role: text` lines."""
    lines = "\n".join(f"{role}: {text}" for role, text in conversation)
    return f"Criterion: {criterion}\n\nConversation:\n{lines}\n\nDoes the last reply meet it?"


def parse_verdict(answer: str) -> tuple[bool, str] | None:
    """(passed, reason) from the judge's answer; None when it holds no verdict."""
    found = _OBJECT.search(answer)
    if found is None:
        return None
    try:
        verdict = json.loads(found.group(0))
    except ValueError:
        return None
    if not isinstance(verdict, dict) or not isinstance(verdict.get("pass"), bool):
        return None
    reason = verdict.get("reason")
    return verdict["pass"], reason if isinstance(reason, str) else ""


class Judge:
    """Asks `model` at `provider` for a verdict on a criterion; safe to share between threads."""

    def __init__(self, model: str, provider: Provider) -> None:
        self.model = model
        self.client = provider.client()

    def check(self, criterion: str, conversation: Sequence[tuple[str, str]]) -> Check:
        """The `judge` check of the last reply of `conversation` ((role, text) pairs). A judge
        that fails or answers no verdict fails the check, saying so."""
        try:
            completion = self.client.chat.completions.create(
                # No temperature: reasoning models refuse any but their own.
                model=self.model,
                messages=[
                    {"role": "system", "content": INSTRUCTIONS},
                    {"role": "user", "content": judge_prompt(criterion, conversation)},
                ],
            )
        except openai.OpenAIError as exc:
            reason = " ".join(str(exc).split())
            return Check("judge", criterion, False, f"the judge failed: {reason}")
        answer = (completion.choices[0].message.content or "") if completion.choices else ""
        verdict = parse_verdict(answer)
        if verdict is None:
            return Check("judge", criterion, False, f"no verdict in {shown(answer, 120)}")
        passed, reason = verdict
        return Check(
            "judge", criterion, passed, f"{'pass' if passed else 'fail'}: {reason}", reason
        )

    def close(self) -> None:
        """Close the connections."""
        self.client.close()
