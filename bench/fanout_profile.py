"""Profiling the fan-out server: py-spy and cProfile summaries, GC pause logs."""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.fanout_server import Server


class Profiler:
    """Profiles the server over the measured window: py-spy from outside, or the in-process
    hooks (cProfile, GC log) switched on and off by SIGUSR1/SIGUSR2."""

    def __init__(self, server: Server, args: argparse.Namespace, pyspy_out: Path | None) -> None:
        self.server = server
        self.args = args
        self.pyspy_out = pyspy_out
        self.proc: subprocess.Popen[bytes] | None = None
        self.log: Any = None

    def start(self) -> None:
        """Begin the measured window."""
        if self.server.hook_env:
            self.server.signal(signal.SIGUSR1)
            time.sleep(0.2)
        if self.pyspy_out is not None:
            exe = shutil.which("py-spy")
            if exe is None:
                raise RuntimeError("py-spy is not installed: pip install py-spy")
            cmd = [
                exe,
                "record",
                "--pid",
                str(self.server.pid),
                "--rate",
                str(self.args.profile_rate),
                # --native must pause the process to unwind C stacks; the default does not.
                *(["--native"] if self.args.profile_native else ["--nonblocking"]),
                "--threads",
                "--format",
                "raw",
                "--output",
                str(self.pyspy_out),
            ]
            self.log = self.pyspy_out.with_suffix(".log").open("wb")
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log
            )
            time.sleep(0.5)  # let it attach before the first commit

    def stop(self) -> None:
        """End the window; the output files are written when this returns."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.log.close()
            if self.pyspy_out is not None and not self.pyspy_out.exists():
                log = self.pyspy_out.with_suffix(".log").read_text(errors="replace")[-2000:]
                print(f"py-spy wrote no profile:\n{log}", file=sys.stderr)
        if self.server.hook_env:
            self.server.signal(signal.SIGUSR2)
            files = [Path(f) for f in self.server.hook_env.values()]
            deadline = time.monotonic() + 30
            while not all(f.exists() for f in files) and time.monotonic() < deadline:
                time.sleep(0.1)


def summarize_gc(path: Path) -> dict[str, Any]:
    """Count, total and longest pause per generation from the server hook's GC log."""
    data = json.loads(path.read_text())
    summary: dict[str, Any] = {"tracked_objects": data["tracked_objects"]}
    for generation in (0, 1, 2):
        pauses = [ms for gen, ms, _ in data["collections"] if gen == generation]
        summary[f"gen{generation}"] = {
            "count": len(pauses),
            "total_ms": round(sum(pauses), 1),
            "max_ms": round(max(pauses, default=0.0), 1),
        }
    return summary


# Stages of the event loop thread's time, checked in order against a sample's stack.
_WHOLE_STACK_STAGES = [
    ("garbage collector", ("gc_collect",)),
    ("socket write (send syscall)", ("write (libc", "uv_try_write", "UVStream__exec_write")),
    ("idle (epoll wait)", ("epoll_wait", "epoll_pwait")),
]


_INNERMOST_STAGES = [
    ("hub.py: _apply (fan-out loop)", ("reactive/hub.py",)),
    ("channel.py: push, next_chunk, render", ("reactive/channel.py",)),
    ("sse: ChannelResponse loop", ("http/sse.py",)),
    ("starlette: send wrappers", ("_exception_handler.py", "middleware/errors.py")),
    ("uvicorn: send (chunk framing)", ("httptools_impl.py:5", "httptools_impl.py:4")),
    ("uvicorn: other", ("httptools_impl.py", "h11_impl.py", "flow_control.py")),
    ("starlette: routing/request", ("starlette/",)),
    ("asyncio/uvloop: task steps, callbacks", ("asyncio", "uvloop", "loop.c", "Runner.run")),
]


def _stage(frames: Sequence[str]) -> str:
    for name, needles in _WHOLE_STACK_STAGES:
        if any(needle in frame for frame in frames for needle in needles):
            return name
    for frame in reversed(frames):
        if ".py:" not in frame and "loop.c" not in frame:
            continue  # native frames without a clue: attribute to the nearest Python frame
        for name, needles in _INNERMOST_STAGES:
            if any(needle in frame for needle in needles):
                return name
        return "other: " + frame[:90]
    return "other (native): " + frames[-1][:80]


def summarize_pyspy(path: Path, events: int, top: int = 20) -> str:
    """Break a py-spy raw profile down into fan-out stages of the event loop thread."""
    stages: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = frames[0].split(": ", 1)[-1] if frames[0].startswith("thread") else "?"
        if frames[0].startswith("thread") and thread != "MainThread":
            waiting = any("acquire_lock" in f or "_queue_SimpleQueue_get" in f for f in frames)
            threads[thread + (" (waiting)" if waiting else "")] += count
            continue
        threads["MainThread"] += count
        total += count
        stages[_stage(frames)] += count
        leaf[frames[-1]] += count
    busy = total - stages["idle (epoll wait)"]
    lines = [
        f"py-spy samples on the event loop thread: {total} ({busy} busy), "
        f"{events} events delivered",
        "stages (% of busy samples):",
    ]
    for name, count in stages.most_common():
        if name != "idle (epoll wait)":
            lines.append(f"  {100 * count / max(1, busy):5.1f}%  {name}")
    lines.append("leaf frames (% of busy samples):")
    for name, count in leaf.most_common(top):
        if "epoll" not in name:
            lines.append(f"  {100 * count / max(1, busy):5.1f}%  {name[:110]}")
    lines.append("samples per thread: " + ", ".join(f"{k} {v}" for k, v in threads.most_common()))
    return "\n".join(lines)


def summarize_cprofile(path: Path, events: int, top: int = 30) -> str:
    """The top functions of a cProfile dump by own time, with microseconds per delivered event."""
    import pstats

    stats = pstats.Stats(str(path))
    rows = []
    for (file, line, name), (_cc, calls, tottime, cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append((tottime, cumtime, calls, f"{Path(file).name}:{line}({name})"))
    rows.sort(reverse=True)
    total = sum(r[0] for r in rows)
    lines = [f"cProfile: {total:.3f} s on the event loop thread, {events} events"]
    lines.append("   own us/ev   cum us/ev      calls  function")
    for tottime, cumtime, calls, label in rows[:top]:
        lines.append(
            f"  {tottime * 1e6 / max(1, events):10.2f} {cumtime * 1e6 / max(1, events):11.2f}"
            f" {calls:10d}  {label}"
        )
    return "\n".join(lines)
