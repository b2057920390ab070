"""`voicestack thread send`: post a message and print the reply as it streams.

The feed is opened first and read up to its `ready` event, so the resume point is known before
the message exists; only then is the message posted. Everything the reply streams after that
point is in the feed, in order, even if the server restarts in between (the follower resumes
with Last-Event-ID).
"""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.status import Status

from cli.client import ApiClient
from cli.errors import CliError
from cli.feed import FeedEvent, FeedFollower
from cli.tail import note_err, write_out
from cli.transcript import error_line, tool_call_text


def post_message(api: ApiClient, thread_id: str, text: str) -> dict[str, str]:
    """POST the message; the server's `{"messageId", "replyId"}`."""
    ids: dict[str, str] = api.post(f"/api/threads/{thread_id}/messages", {"text": text})
    return ids


class ReplyPrinter:
    """Writes one reply's text to stdout as it streams; tool calls and waiting go to stderr."""

    def __init__(self, reply_id: str, err: Console) -> None:
        self.reply_id = reply_id
        self.err = err
        self.printed = ""
        self.waiting: Status | None = None
        self.call_status: dict[str, str] = {}
        if err.is_terminal:
            self.waiting = Status("thinking", console=err, spinner="dots")
            self.waiting.start()

    def handle(self, event: FeedEvent) -> dict[str, Any] | None:
        """Show the event if it is the reply's; the reply's row once it has a final status."""
        data: dict[str, Any] = event.data
        if event.event == "delta" and data["messageId"] == self.reply_id:
            self._write(data["text"])
        elif event.event == "tool_call" and data["messageId"] == self.reply_id:
            self._tool_call(data)
        elif event.event == "message" and data["id"] == self.reply_id:
            text = data.get("text") or ""
            if text.startswith(self.printed):
                self._write(text[len(self.printed) :])
            if data["status"] in ("complete", "failed", "interrupted"):
                self.stop()
                if self.printed:
                    write_out("\n")
                return data
        return None

    def _write(self, text: str) -> None:
        if text:
            self.stop()
            write_out(text)
            self.printed += text

    def _tool_call(self, call: dict[str, Any]) -> None:
        if not self.err.is_terminal or self.call_status.get(call["id"]) == call["status"]:
            return
        self.call_status[call["id"]] = call["status"]
        if call["status"] in ("done", "failed", "awaiting_approval"):
            if self.printed and not self.printed.endswith("\n"):
                write_out("\n")
                self.printed += "\n"
            self.err.print(tool_call_text(call))

    def stop(self) -> None:
        """Stop the waiting spinner (if any)."""
        if self.waiting is not None:
            self.waiting.stop()
            self.waiting = None


def send_and_stream(api: ApiClient, thread_id: str, text: str, err: Console) -> dict[str, Any]:
    """Send `text` to the thread and stream its reply to stdout; the reply's final row.

    A reply that ends `failed` or `interrupted` is a CliError with the reply's error.
    """
    follower = FeedFollower(api, thread_id, on_status=note_err)
    events = follower.events()
    reply: dict[str, Any] | None = None
    try:
        for event in events:
            if event.event == "ready":
                break
        ids = post_message(api, thread_id, text)
        printer = ReplyPrinter(ids["replyId"], err)
        try:
            for event in events:
                reply = printer.handle(event)
                if reply is not None:
                    break
        finally:
            printer.stop()
    finally:
        events.close()
    sys.stdout.flush()
    assert reply is not None, "the feed only ends when the reply does"
    if reply["status"] != "complete":
        was = "was " if reply["status"] == "interrupted" else ""
        raise CliError(f"The reply {was}{error_line(reply)}")
    return reply
