"""Events of the fake Realtime provider as its tests read them: the one of a type, PCM sizes."""

from __future__ import annotations

from typing import Any

from tests.support.fake_realtime import outline

PCM_BYTES_PER_MS = 48  # 24 kHz 16-bit mono


def one_event(events: list[dict[str, Any]], type_: str) -> dict[str, Any]:
    """The one event of `type_` in `events`; fails if there is none or more."""
    found = [e for e in events if e["type"] == type_]
    assert len(found) == 1, (type_, outline(events))
    return found[0]
