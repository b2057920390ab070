"""Scripted-answer plans for the fake OpenAI server, validated with pydantic.

Every field is optional. Common to all kinds ("chat", "transcription", "speech"):
  kind, match (substring of the request's match text: the last user message, the uploaded
  file name or transcription prompt, or the speech input), times (uses before the plan is
  spent; null = never spent), hang_s, error {status, message, type, code, param, retry_after}.
Chat: text, chunk_chars, tool_calls [{name, arguments, id}], tokens_per_second,
  first_token_delay_s, cut_after_chunks, end_after_chunks (the body ends cleanly there, with
  neither the finish_reason chunk nor [DONE], as a proxy that gives up mid-reply ends it),
  malformed_after_chunks, usage, finish_reason,
  stall_after_chunks + stall_s (the stream idles that long there), keepalive_s + keepalive
  ("comment": `: keepalive` lines, or "empty_delta": chunks with content "") sent while it
  idles, whole_completion (answer a stream request with one chat.completion JSON body, as
  some compatible servers do).
  Without text and tool_calls the reply is the default echo of the last user message.
Transcription: transcript, expect_sha256.
Embedding (match text: the inputs, one per line): vector_dimensions (answer vectors of this size
  whatever was asked, as a misconfigured provider does), encodings (the `encoding_format`s it
  answers; others get a 400 naming the parameter, as servers that know only "float" do).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Kind = Literal["chat", "transcription", "speech", "embedding"]
KINDS: tuple[Kind, ...] = ("chat", "transcription", "speech", "embedding")
FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "function_call"]

_CHAT_ONLY = (
    "text",
    "chunk_chars",
    "tool_calls",
    "tokens_per_second",
    "first_token_delay_s",
    "cut_after_chunks",
    "end_after_chunks",
    "malformed_after_chunks",
    "usage",
    "finish_reason",
    "stall_after_chunks",
    "stall_s",
    "keepalive_s",
    "keepalive",
    "whole_completion",
)
_TRANSCRIPTION_ONLY = ("transcript", "expect_sha256")
_EMBEDDING_ONLY = ("vector_dimensions", "encodings")


class ToolCallPlan(BaseModel):
    """One tool call the fake model will emit; arguments may be a JSON string or an object."""

    model_config = ConfigDict(extra="forbid")

    name: str
    arguments: str | dict[str, Any] | list[Any] = "{}"
    id: str | None = None

    def arguments_json(self) -> str:
        """Return the arguments exactly as they go on the wire (a JSON string)."""
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(self.arguments, separators=(",", ":"))


class ErrorPlan(BaseModel):
    """An HTTP error answered instead of a normal response."""

    model_config = ConfigDict(extra="forbid")

    status: int = Field(ge=400, le=599)
    message: str | None = None
    type: str | None = None
    code: str | None = None
    param: str | None = None
    retry_after: float | None = Field(default=None, ge=0)


class UsagePlan(BaseModel):
    """Token counts that override the fake's own word counting."""

    model_config = ConfigDict(extra="forbid")

    prompt_tokens: int | None = Field(default=None, ge=0)
    completion_tokens: int | None = Field(default=None, ge=0)


class Plan(BaseModel):
    """How the fake server answers one (or `times`) matching request(s) of one kind."""

    model_config = ConfigDict(extra="forbid")

    kind: Kind = "chat"
    match: str | None = None
    # None means the plan is never used up.
    times: int | None = Field(default=1, ge=1)
    hang_s: float = Field(default=0.0, ge=0)
    error: ErrorPlan | None = None

    text: str | None = None
    chunk_chars: int | None = Field(default=None, ge=1)
    tool_calls: list[ToolCallPlan] = Field(default_factory=list)
    tokens_per_second: float | None = Field(default=None, ge=0)
    first_token_delay_s: float = Field(default=0.0, ge=0)
    cut_after_chunks: int | None = Field(default=None, ge=0)
    end_after_chunks: int | None = Field(default=None, ge=0)
    malformed_after_chunks: int | None = Field(default=None, ge=0)
    usage: UsagePlan | None = None
    finish_reason: FinishReason | None = None
    stall_after_chunks: int | None = Field(default=None, ge=0)
    stall_s: float = Field(default=3600.0, ge=0)
    keepalive_s: float | None = Field(default=None, gt=0)
    keepalive: Literal["comment", "empty_delta"] = "comment"
    whole_completion: bool = False

    transcript: str | None = None
    expect_sha256: str | None = None

    vector_dimensions: int | None = Field(default=None, ge=1, le=65536)
    encodings: list[Literal["float", "base64"]] | None = None

    @model_validator(mode="before")
    @classmethod
    def _infer_kind(cls, data: Any) -> Any:
        # A plan that only talks about transcripts is obviously a transcription plan.
        if (
            isinstance(data, Mapping)
            and "kind" not in data
            and any(key in data for key in _TRANSCRIPTION_ONLY)
        ):
            return {**data, "kind": "transcription"}
        return data

    @model_validator(mode="after")
    def _fields_fit_kind(self) -> Plan:
        allowed = {
            "chat": _CHAT_ONLY,
            "transcription": _TRANSCRIPTION_ONLY,
            "speech": (),
            "embedding": _EMBEDDING_ONLY,
        }
        misplaced = [
            name
            for name in (*_CHAT_ONLY, *_TRANSCRIPTION_ONLY, *_EMBEDDING_ONLY)
            if name in self.model_fields_set and name not in allowed[self.kind]
        ]
        if misplaced:
            raise ValueError(f"fields {misplaced} do not apply to a {self.kind!r} plan")
        return self


PlanInput = Plan | Mapping[str, Any]


def parse_plans(items: Iterable[PlanInput | Iterable[PlanInput]]) -> list[Plan]:
    """Validate plans given as Plan objects, dicts, or (nested once) lists of them."""
    plans: list[Plan] = []
    for item in items:
        if isinstance(item, Plan | Mapping):
            plans.append(_one(item))
        else:
            plans.extend(_one(inner) for inner in item)
    return plans


def _one(item: PlanInput) -> Plan:
    return item if isinstance(item, Plan) else Plan.model_validate(item)
