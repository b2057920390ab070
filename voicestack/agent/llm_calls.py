"""Tool calls as they stream: fragments joined into whole calls, within a reply's limits."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ToolCallRequest:
    """A request by the model to call a tool; `arguments` is its JSON text, not yet validated."""

    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class StreamLimits:
    """How much one streamed step may carry (None: no limit)."""

    max_chars: int | None = None  # text and tool-call names and arguments together
    max_tool_calls: int | None = None


class StreamLimitReached(Exception):
    """A stream went past one of its StreamLimits: `what` is "chars" or "tool_calls".

    The text up to the limit has been yielded; the calls of the step are dropped unrun.
    """

    def __init__(self, what: str) -> None:
        super().__init__(f"the stream went past its {what} limit")
        self.what = what


@dataclass
class _PartialCall:
    order: tuple[int, int]
    call_id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class ToolCallAssembler:
    """Joins tool-call fragments that arrive split across chunks, keyed by their `index`.

    Holds at most `max_calls` calls (None: no limit): one more raises StreamLimitReached at once,
    so a stream of endless calls never piles up in memory.
    """

    def __init__(self, max_calls: int | None = None) -> None:
        self._calls: list[_PartialCall] = []
        self._by_index: dict[int, _PartialCall] = {}
        self._max_calls = max_calls
        self.total = 0

    def add(self, delta: dict[str, Any]) -> int:
        """Append one fragment (a `tool_calls` item of a chunk) to its call, or start a call;
        returns how many characters of name and arguments it added."""
        index = delta.get("index") or 0
        call_id = delta.get("id")
        current = self._by_index.get(index)
        # Some servers send every call whole at one index (or none); a new id is a new call.
        if current is None or (call_id and current.call_id and call_id != current.call_id):
            if self._max_calls is not None and self.total >= self._max_calls:
                raise StreamLimitReached("tool_calls")
            current = self._by_index[index] = _PartialCall(order=(index, self.total))
            self._calls.append(current)
            self.total += 1
        current.call_id = current.call_id or call_id or ""
        function = delta.get("function")
        if function is None:
            return 0
        name = current.name or function.get("name") or ""
        added = len(name) - len(current.name)
        current.name = name
        arguments = function.get("arguments") or ""
        current.arguments.append(arguments)
        return added + len(arguments)

    def drain(self) -> list[ToolCallRequest]:
        """Return the complete calls in index order and forget them."""
        calls, self._calls, self._by_index = self._calls, [], {}
        return [
            ToolCallRequest(
                call.call_id or f"call_{secrets.token_hex(12)}", call.name, "".join(call.arguments)
            )
            for call in sorted(calls, key=lambda call: call.order)
        ]
