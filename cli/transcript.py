"""A thread written out for people: on a terminal (rich), as plain text, and as Markdown.

Rows are the API's (DESIGN §4): messages `{id, role, text, status, error, usage, voice, ...}`
and tool calls `{id, messageId, name, args, status, progress, result, error}`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.text import Text

from cli.output import one_line

ROLE_STYLES = {"user": "bold cyan", "assistant": "bold magenta", "tool": "bold yellow"}
TOOL_MARKS = {
    "done": ("✓", "green"),
    "failed": ("✗", "red"),
    "awaiting_approval": ("?", "yellow"),
    "running": ("…", "blue"),
    "pending": ("…", "blue"),
}
RESULT_CHARS = 200


def compact_json(value: Any) -> str:
    """`value` as one line of JSON (strings as they are)."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def progress_text(progress: Any) -> str:
    """A tool's progress: a fraction as a percentage, anything else as it is."""
    if isinstance(progress, int | float) and not isinstance(progress, bool) and 0 <= progress <= 1:
        return f"{progress:.0%}"
    return one_line(compact_json(progress), 40) if progress is not None else ""


def tool_call_line(call: dict[str, Any]) -> str:
    """One line for a tool call: `name {args}: status → result` (or its error)."""
    head = f"{call['name']} {one_line(compact_json(call.get('args')), 80)}"
    status = call["status"]
    if status == "done":
        return f"{head}: done → {one_line(compact_json(call.get('result')), RESULT_CHARS)}"
    if status == "failed":
        return f"{head}: failed: {one_line(call.get('error') or 'no reason given')}"
    if status == "awaiting_approval":
        return f"{head}: awaiting approval"
    progress = progress_text(call.get("progress"))
    return f"{head}: {status}" + (f" {progress}" if progress else "")


def tool_call_text(call: dict[str, Any]) -> Text:
    """A tool call as a styled line (a mark for its status, then `tool_call_line`)."""
    mark, style = TOOL_MARKS.get(call["status"], ("·", "dim"))
    return Text.assemble((f"{mark} ", style), ("tool ", "dim"), tool_call_line(call))


def error_line(message: dict[str, Any]) -> str:
    """`status: message (code)` for a message that did not complete, else ''."""
    if message["status"] in ("complete", "pending", "streaming"):
        return ""
    error = message.get("error") or {}
    reason = error.get("message") or "no reason given"
    code = f" ({error['code']})" if error.get("code") else ""
    return f"{message['status']}: {one_line(reason)}{code}"


def usage_line(usage: dict[str, Any] | None) -> str:
    """Tokens, tool calls, wall time and cost in words ('' when there is nothing to say)."""
    if not usage or not any(usage.values()):
        return ""
    parts = [
        f"{usage.get('promptTokens', 0)} prompt + {usage.get('completionTokens', 0)}"
        " completion tokens"
    ]
    calls = usage.get("toolCalls", 0)
    if calls:
        parts.append(f"{calls} tool call{'s' if calls != 1 else ''}")
    if usage.get("wallMs"):
        parts.append(f"{usage['wallMs'] / 1000:.1f} s")
    heard, spoken = usage.get("audioInSeconds", 0), usage.get("audioOutSeconds", 0)
    if heard or spoken:
        parts.append(f"audio {heard:.1f} s in, {spoken:.1f} s out")
    if usage.get("costUsd") is not None:
        parts.append(f"${usage['costUsd']:.4f}")
    return ", ".join(parts)


def _ms(value: Any) -> str:
    return f"{value} ms" if value is not None else "–"


def voice_line(voice: dict[str, Any] | None) -> str:
    """A live turn's `voice` metrics in words ('' for a reply that was not a live turn):
    the wait from the end of speech to the first audio, then its parts and the audio seconds."""
    if not voice:
        return ""
    parts = (
        f"transcript {_ms(voice.get('endOfSpeechToTranscriptMs'))}"
        f" + first token {_ms(voice.get('transcriptToFirstTokenMs'))}"
        f" + first audio {_ms(voice.get('firstTokenToFirstAudioMs'))}"
    )
    line = (
        f"voice {_ms(voice.get('voiceToVoiceMs'))} ({parts}),"
        f" {voice.get('audioInSeconds', 0):.1f} s in, {voice.get('audioOutSeconds', 0):.1f} s out"
    )
    return line + (", interrupted" if voice.get("interrupted") else "")


def calls_by_message(calls: Iterable[dict[str, Any]]) -> dict[str | None, list[dict[str, Any]]]:
    """Tool calls grouped by the message that made them, in the order given."""
    grouped: dict[str | None, list[dict[str, Any]]] = {}
    for call in calls:
        grouped.setdefault(call.get("messageId"), []).append(call)
    return grouped


def message_heading(message: dict[str, Any]) -> Text:
    """`role` in its colour, then the status when it is not `complete`."""
    role = message.get("role", "assistant")
    heading = Text(role, style=ROLE_STYLES.get(role, "bold"))
    if message.get("status") not in (None, "complete"):
        style = "red" if message["status"] in ("failed", "interrupted") else "dim"
        heading.append(f" · {message['status']}", style=style)
    return heading


def message_block(
    message: dict[str, Any], calls: Iterable[dict[str, Any]], *, with_usage: bool = True
) -> RenderableType:
    """A message for the terminal: heading, text, its tool calls, its error and usage."""
    heading = message_heading(message)
    usage = usage_line(message.get("usage")) if with_usage else ""
    if usage:
        heading.append(f"  {usage}", style="dim")
    parts: list[RenderableType] = [heading]
    voice = voice_line(message.get("voice"))
    if voice:
        parts.append(Padding(Text(voice, style="dim"), (0, 0, 0, 2)))
    if message.get("text"):
        parts.append(Padding(Text(message["text"]), (0, 0, 0, 2)))
    parts += [Padding(tool_call_text(call), (0, 0, 0, 2)) for call in calls]
    error = error_line(message)
    if error:
        parts.append(Padding(Text(error, style="red"), (0, 0, 0, 2)))
    return Group(*parts)


def thread_title(thread: dict[str, Any]) -> str:
    """The thread's title, or '(untitled)'."""
    return thread.get("title") or "(untitled)"


def rich_thread(thread: dict[str, Any], when: str) -> RenderableType:
    """`thread show` on a terminal; `when` is its creation time, already formatted."""
    calls = calls_by_message(thread.get("toolCalls", []))
    header = Text.assemble(
        (thread_title(thread), "bold"), ("  ", ""), (thread["id"], "dim"), (f"  {when}", "dim")
    )
    if thread.get("agent"):
        header.append(f"  agent {thread['agent']}", style="dim")
    parts: list[RenderableType] = [header]
    usage = usage_line(thread.get("usage"))
    if usage:
        parts.append(Text(f"usage: {usage}", style="dim"))
    for message in thread.get("messages", []):
        parts += [Text(""), message_block(message, calls.pop(message["id"], []))]
    for orphans in calls.values():
        parts += [tool_call_text(call) for call in orphans]
    return Group(*parts)


def plain_thread(thread: dict[str, Any], when: str) -> str:
    """`thread show` as plain text: a heading line per message, its text, its tool calls."""
    calls = calls_by_message(thread.get("toolCalls", []))
    agent = f", agent {thread['agent']}" if thread.get("agent") else ""
    lines = [f"{thread_title(thread)} ({thread['id']}, created {when}{agent})"]
    usage = usage_line(thread.get("usage"))
    if usage:
        lines.append(f"usage: {usage}")
    for message in thread.get("messages", []):
        heading = f"{message['role']} ({message['status']}) {message['id']}"
        message_usage = usage_line(message.get("usage"))
        lines += ["", heading + (f": {message_usage}" if message_usage else "")]
        if voice_line(message.get("voice")):
            lines.append(f"  {voice_line(message.get('voice'))}")
        if message.get("text"):
            lines.append(message["text"])
        lines += [f"  tool {tool_call_line(call)}" for call in calls.pop(message["id"], [])]
        if error_line(message):
            lines.append(f"  {error_line(message)}")
    for orphans in calls.values():
        lines += [f"tool {tool_call_line(call)}" for call in orphans]
    return "\n".join(lines)


def markdown_thread(thread: dict[str, Any], when: str) -> str:
    """`thread export --format md`: a Markdown document of the whole thread."""
    calls = calls_by_message(thread.get("toolCalls", []))
    lines = [f"# {thread_title(thread)}", "", f"- thread: `{thread['id']}`", f"- created: {when}"]
    if thread.get("agent"):
        lines.append(f"- agent: {thread['agent']}")
    usage = usage_line(thread.get("usage"))
    if usage:
        lines.append(f"- usage: {usage}")
    for message in thread.get("messages", []):
        status = "" if message["status"] == "complete" else f" ({message['status']})"
        lines += ["", f"## {message['role']}{status}", ""]
        if message.get("text"):
            lines.append(message["text"])
        for call in calls.pop(message["id"], []):
            lines += ["", f"> tool: {tool_call_line(call)}"]
        if error_line(message):
            lines += ["", f"> *{error_line(message)}*"]
    for orphans in calls.values():
        lines += ["", *(f"> tool: {tool_call_line(call)}" for call in orphans)]
    return "\n".join(lines) + "\n"
