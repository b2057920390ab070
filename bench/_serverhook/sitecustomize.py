"""Measurement hooks for the server process that `bench/fanout.py` starts.

This directory is put first on the server's PYTHONPATH only when the bench is asked to profile
(`--profile cprofile`) or to count garbage collections (`--gc-stats`), so Python imports this
module at start-up. Nothing else in the server changes. The bench sends SIGUSR1 when the measured
window begins and SIGUSR2 when it ends; at SIGUSR2 the results are written:

- VOICESTACK_BENCH_CPROFILE=FILE: cProfile of the main thread (the event loop) into FILE (pstats).
- VOICESTACK_BENCH_GCSTATS=FILE: every collection in the window as JSON
  `[[generation, milliseconds, collected], ...]` (gc.callbacks, any thread).
"""

from __future__ import annotations

import cProfile
import gc
import json
import os
import signal
import time
from types import FrameType
from typing import Any

_CPROFILE = os.environ.get("VOICESTACK_BENCH_CPROFILE")
_GCSTATS = os.environ.get("VOICESTACK_BENCH_GCSTATS")
_profiler: cProfile.Profile | None = None
_gc_log: list[list[float]] | None = None
_gc_started = 0.0


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    global _gc_started
    if _gc_log is None:
        return
    if phase == "start":
        _gc_started = time.perf_counter()
    else:
        elapsed = (time.perf_counter() - _gc_started) * 1000
        _gc_log.append([info["generation"], round(elapsed, 3), info["collected"]])


def _start(_sig: int, _frame: FrameType | None) -> None:
    global _profiler, _gc_log
    if _GCSTATS:
        _gc_log = []
    if _CPROFILE and _profiler is None:
        _profiler = cProfile.Profile()
        _profiler.enable()


def _stop(_sig: int, _frame: FrameType | None) -> None:
    global _profiler, _gc_log
    if _profiler is not None and _CPROFILE:
        _profiler.disable()
        _profiler.dump_stats(_CPROFILE)
        _profiler = None
    if _gc_log is not None and _GCSTATS:
        log, _gc_log = _gc_log, None
        with open(_GCSTATS, "w") as out:
            json.dump({"collections": log, "tracked_objects": len(gc.get_objects())}, out)


if _CPROFILE or _GCSTATS:
    signal.signal(signal.SIGUSR1, _start)
    signal.signal(signal.SIGUSR2, _stop)
    if _GCSTATS:
        gc.callbacks.append(_on_gc)
