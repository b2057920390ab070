"""What a client following a thread feed knows of the thread: messages in order, tool calls.

Applying the feed's events in order gives the thread as the server has it: a `message` event
replaces the row (its text too), a `delta` appends text to a streaming reply, a `tool_call`
event replaces the call's row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cli.feed import FINAL_STATUSES, FeedEvent

TOOL_FINAL = frozenset({"done", "failed"})


@dataclass
class ThreadState:
    """Messages by id and tool calls by id, as the feed so far says they are."""

    messages: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: dict[str, dict[str, Any]] = field(default_factory=dict)

    def apply(self, event: FeedEvent) -> str | None:
        """Apply one event; returns the id of the message it concerns (None for others)."""
        data = event.data
        if event.event == "message" and isinstance(data, dict):
            message_id: str = data["id"]
            self.messages[message_id] = dict(data)
            return message_id
        if event.event == "delta" and isinstance(data, dict):
            message_id = data["messageId"]
            message = self.messages.get(message_id)
            if message is None:
                # Joined mid-reply with --since: the reply's row was announced before.
                message = placeholder(message_id, len(self.messages))
                self.messages[message_id] = message
            message["text"] = message.get("text", "") + data["text"]
            if message.get("status") == "pending":
                message["status"] = "streaming"
            return message_id
        if event.event == "tool_call" and isinstance(data, dict):
            self.calls[data["id"]] = dict(data)
            call_message_id: str | None = data.get("messageId")
            return call_message_id
        return None

    def ordered(self) -> list[dict[str, Any]]:
        """The messages in thread order."""
        return sorted(self.messages.values(), key=lambda m: m.get("order", 0))

    def calls_of(self, message_id: str) -> list[dict[str, Any]]:
        """The tool calls a message made, oldest first."""
        return [c for c in self.calls.values() if c.get("messageId") == message_id]

    def settled(self, message_id: str) -> bool:
        """True when the message and all its tool calls have a final status."""
        message = self.messages[message_id]
        return is_final(message) and all(
            call["status"] in TOOL_FINAL for call in self.calls_of(message_id)
        )


def is_final(message: dict[str, Any]) -> bool:
    """True for a message whose status no longer changes."""
    return message.get("status") in FINAL_STATUSES


def placeholder(message_id: str, order: int) -> dict[str, Any]:
    """A reply whose row the client never saw, known only from its deltas."""
    return {
        "id": message_id,
        "role": "assistant",
        "text": "",
        "status": "streaming",
        "error": None,
        "order": 2**62 + order,  # after every message whose row was seen
        "usage": None,
    }
