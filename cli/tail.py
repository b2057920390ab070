"""Rendering a live thread feed for `voicestack thread tail`: live on a terminal, plain in a pipe,
or one JSON object per event.

On a terminal the settled part of the thread is printed once, above a rich Live region that
holds what still changes: the streaming reply growing in place and its tool calls with a spinner
until their result arrives. In a pipe the same events become plain text that only ever appends.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from types import TracebackType
from typing import Any, Protocol, Self

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.live import Live
from rich.padding import Padding
from rich.segment import Segment
from rich.spinner import Spinner
from rich.text import Text

from cli.feed import FeedEvent, FeedFollower
from cli.thread_state import ThreadState, is_final
from cli.transcript import (
    error_line,
    message_block,
    message_heading,
    tool_call_line,
    tool_call_text,
)


class FeedRenderer(Protocol):
    """Something that shows feed events as they arrive (a context manager)."""

    def __enter__(self) -> FeedRenderer: ...

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    def handle(self, event: FeedEvent) -> None:
        """Show one event."""

    def status(self, text: str | None) -> None:
        """Show the connection's trouble (None: all is well again)."""


def write_out(text: str) -> None:
    """Write to stdout at once (a pipe must see every piece as it streams)."""
    sys.stdout.write(text)
    sys.stdout.flush()


def note_err(text: str | None) -> None:
    """A connection note on stderr, for the plain and JSON renderers."""
    if text:
        sys.stderr.write(f"voicestack: {text}\n")
        sys.stderr.flush()


class _Renderer:
    """Context-manager plumbing shared by the renderers."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def status(self, text: str | None) -> None:
        """Report connection trouble on stderr."""
        note_err(text)


class JsonTail(_Renderer):
    """`--json`: one `{"event", "id", "data"}` object per line, snapshot events with id null."""

    def __init__(self, write: Callable[[str], None] = write_out) -> None:
        self.write = write

    def handle(self, event: FeedEvent) -> None:
        """Print the event as one line of JSON."""
        line = json.dumps(event.as_json(), ensure_ascii=False, separators=(",", ":"))
        self.write(line + "\n")


class PlainTail(_Renderer):
    """Plain text that only appends: `role: text` lines, a reply's text as it streams."""

    def __init__(self, write: Callable[[str], None] = write_out) -> None:
        self.write = write
        self.state = ThreadState()
        self.shown: dict[str, str] = {}  # message id → the text already written
        self.open: str | None = None  # the message whose line is not finished
        self.ended: set[str] = set()
        self.call_phase: dict[str, str] = {}

    def handle(self, event: FeedEvent) -> None:
        """Write what the event adds to the thread."""
        message_id = self.state.apply(event)
        if event.event == "delta" and message_id is not None:
            self._append(message_id, event.data["text"])
        elif event.event == "message" and message_id is not None:
            self._message(self.state.messages[message_id])
        elif event.event == "tool_call":
            self._tool_call(event.data)

    def _message(self, message: dict[str, Any]) -> None:
        message_id, text = message["id"], message.get("text") or ""
        if message_id in self.ended:
            if self.shown.get(message_id) != text or not is_final(message):
                self._revise(message)  # a finished message changed: say so
                self._close_line()
            return
        if message["status"] == "pending" and not text:
            return  # nothing to say until it streams
        shown = self.shown.get(message_id, "")
        if text.startswith(shown):
            self._append(message_id, text[len(shown) :], heading=is_final(message))
        else:
            self._revise(message)
        if is_final(message):
            self._end(message)

    def _append(self, message_id: str, text: str, *, heading: bool = False) -> None:
        if not text and not heading:
            return
        if self.open != message_id:
            self._close_line()
            role = self.state.messages[message_id].get("role", "assistant")
            again = " (continued)" if message_id in self.shown else ""
            self.write(f"{role}{again}: ")
            self.open = message_id
        self.write(text)
        self.shown[message_id] = self.shown.get(message_id, "") + text

    def _revise(self, message: dict[str, Any]) -> None:
        self._close_line()
        self.write(f"{message.get('role', 'assistant')} ({message['status']}): ")
        self.open = message["id"]
        self.write(message.get("text") or "")
        self.shown[message["id"]] = message.get("text") or ""

    def _end(self, message: dict[str, Any]) -> None:
        self._close_line()
        self.ended.add(message["id"])
        error = error_line(message)
        if error:
            self.write(f"  {error}\n")

    def _close_line(self) -> None:
        if self.open is not None:
            self.write("\n")
            self.open = None

    def _tool_call(self, call: dict[str, Any]) -> None:
        phase = "running" if call["status"] in ("pending", "running") else call["status"]
        if self.call_phase.get(call["id"]) == phase:
            return  # progress only: a pipe gets the start and the end of a call
        self.call_phase[call["id"]] = phase
        self._close_line()
        self.write(f"  tool {tool_call_line(call)}\n")


class _LastLines:
    """Renders its content but only the last lines that fit the terminal (the growing end)."""

    def __init__(self, content: RenderableType, reserve: int = 1) -> None:
        self.content = content
        self.reserve = reserve

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        lines = console.render_lines(self.content, options, pad=False)
        room = max(3, console.size.height - self.reserve)
        if len(lines) > room:
            lines = [[Segment("…", console.get_style("dim"))], *lines[-(room - 1) :]]
        for index, line in enumerate(lines):
            yield from line
            if index < len(lines) - 1:
                yield Segment.line()


class LiveTail(_Renderer):
    """The terminal view: settled messages printed once, the changing rest in a Live region."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.state = ThreadState()
        self.printed: dict[str, Any] = {}  # message id → (row, calls) as printed
        self.trouble: str | None = None
        self.spinners: dict[str, Spinner] = {}
        self.synced = False
        self.live = Live(Text(""), console=console, refresh_per_second=12, redirect_stderr=False)

    def __enter__(self) -> LiveTail:
        return self  # the Live region starts with the first event: errors before stay one line

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.live.is_started:
            self.live.stop()

    def status(self, text: str | None) -> None:
        """Show connection trouble under the live region."""
        self.trouble = text
        self._redraw([])

    def handle(self, event: FeedEvent) -> None:
        """Apply the event, print what settled, redraw the rest."""
        message_id = self.state.apply(event)
        if event.id is not None:
            self.synced = True  # a snapshot is whole once its `ready` (the first id) arrives
        if not self.synced:
            return
        settled: list[RenderableType] = []
        if message_id is not None and message_id in self.printed:
            settled += self._changed(message_id)
        elif event.event == "tool_call" and message_id is None:
            settled.append(tool_call_text(event.data))
        settled += self._settle()
        self._redraw(settled)

    def _changed(self, message_id: str) -> list[RenderableType]:
        seen = (self.state.messages[message_id], self.state.calls_of(message_id))
        if self.printed[message_id] == seen:
            return []
        self.printed[message_id] = _copy(seen)
        return [self._block(message_id)]

    def _settle(self) -> list[RenderableType]:
        settled = []
        for message in self.state.ordered():
            if message["id"] in self.printed:
                continue
            if not self.state.settled(message["id"]):
                break  # keep thread order: nothing after an unsettled message is printed
            settled.append(self._block(message["id"]))
            self.printed[message["id"]] = _copy((message, self.state.calls_of(message["id"])))
        return settled

    def _block(self, message_id: str) -> RenderableType:
        message = self.state.messages[message_id]
        return Group(message_block(message, self.state.calls_of(message_id)), Text(""))

    def _call_line(self, call: dict[str, Any]) -> RenderableType:
        if call["status"] in ("pending", "running"):
            spinner = self.spinners.setdefault(call["id"], Spinner("dots", style="blue"))
            spinner.update(text=Text.assemble(("tool ", "dim"), tool_call_line(call)))
            return spinner
        self.spinners.pop(call["id"], None)
        return tool_call_text(call)

    def _active_block(self, message: dict[str, Any]) -> RenderableType:
        parts: list[RenderableType] = [message_heading(message)]
        if message.get("text"):
            parts.append(Padding(Text(message["text"]), (0, 0, 0, 2)))
        elif message["status"] == "pending":
            thinking = self.spinners.setdefault(
                message["id"], Spinner("dots", text=Text("thinking", style="dim"))
            )
            parts.append(Padding(thinking, (0, 0, 0, 2)))
        parts += [
            Padding(self._call_line(call), (0, 0, 0, 2))
            for call in self.state.calls_of(message["id"])
        ]
        if is_final(message) and error_line(message):
            parts.append(Padding(Text(error_line(message), style="red"), (0, 0, 0, 2)))
        return Group(*parts)

    def _redraw(self, settled: list[RenderableType]) -> None:
        """Show the unsettled rest in the Live region, and print `settled` above it once."""
        active = [
            self._active_block(m) for m in self.state.ordered() if m["id"] not in self.printed
        ]
        if self.trouble:
            active.append(Text(self.trouble, style="yellow"))
        if not self.live.is_started:
            self.live.start()
        # The region changes before the prints, so a settled message is never drawn twice.
        self.live.update(_LastLines(Group(*active)), refresh=True)
        for renderable in settled:
            self.console.print(renderable)


def _copy(seen: tuple[dict[str, Any], list[dict[str, Any]]]) -> Any:
    message, calls = seen
    return (dict(message), [dict(c) for c in calls])


def follow(follower: FeedFollower, renderer: FeedRenderer) -> None:
    """Show every event of the feed until interrupted (Ctrl-C propagates to the caller)."""
    follower.on_status = renderer.status
    with renderer:
        for event in follower.events():
            renderer.handle(event)


__all__ = ["JsonTail", "LiveTail", "PlainTail", "follow"]
