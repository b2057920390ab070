"""What the model is sent: instructions, then the thread's last messages in API form.

The window counts thread messages, and an assistant message carries its own tool calls and their
results, so however the window falls, a tool call is never separated from its result.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from voicestack.store.db import ReadDB

_UNFINISHED_CALL = "Not run: the reply was interrupted before this call finished."


def _tool_result_text(call: dict[str, Any]) -> str:
    if call["status"] == "done":
        return call["result"] if call["result"] is not None else "null"
    if call["status"] == "failed":
        return f"Error: {call['error'] or 'the call failed'}"
    return _UNFINISHED_CALL


def _assistant_entries(text: str, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    by_step: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for call in calls:
        by_step[call["step"]].append(call)
    for step in sorted(by_step):
        step_calls = by_step[step]
        entries.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call["call_id"],
                        "type": "function",
                        "function": {"name": call["name"], "arguments": call["args"]},
                    }
                    for call in step_calls
                ],
            }
        )
        entries += [
            {"role": "tool", "tool_call_id": call["call_id"], "content": _tool_result_text(call)}
            for call in step_calls
        ]
    if text:
        entries.append({"role": "assistant", "content": text})
    return entries


def build_context(
    db: ReadDB, thread_id: str, before_position: int, instructions: str, window: int
) -> list[dict[str, Any]]:
    """Chat-completion messages for a reply at `before_position`: the last `window` messages."""
    rows = db.all(
        "SELECT id, role, text, status FROM messages WHERE thread_id = ? AND position < ?"
        " AND status NOT IN ('pending', 'streaming') ORDER BY position DESC LIMIT ?",
        (thread_id, before_position, window),
    )
    rows.reverse()
    calls: dict[str, list[dict[str, Any]]] = defaultdict(list)
    if rows:
        for call in db.all(
            "SELECT message_id, call_id, step, name, args, status, result, error FROM tool_calls"
            " WHERE thread_id = ? ORDER BY step, created_at, id",
            (thread_id,),
        ):
            calls[call["message_id"]].append(call)
    messages: list[dict[str, Any]] = []
    if instructions:
        messages.append({"role": "system", "content": instructions})
    for row in rows:
        if row["role"] == "assistant":
            messages += _assistant_entries(row["text"], calls.get(row["id"], []))
        elif row["role"] in ("user", "system") and row["text"]:
            messages.append({"role": row["role"], "content": row["text"]})
    return messages
