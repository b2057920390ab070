"""The server profile of a `bench/stream.py` run: py-spy samples by thread and by subsystem."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

# Innermost voicestack frame of a sample -> the part of the server it belongs to.
_SUBSYSTEMS = [
    ("agent/llm.py", "provider stream: llm.py + openai/httpx/pydantic below it"),
    ("agent/stream.py", "delta coalescer"),
    ("agent/reply.py", "reply loop"),
    ("agent/reply_state.py", "writes: reply_state (deltas, claim, finish)"),
    ("agent/records.py", "writes: records (emit, load_message)"),
    ("agent/runner.py", "reply runner (collect/deliver/claim)"),
    ("agent/feed.py", "thread feed (collect/encode/deliver)"),
    ("agent/context.py", "reply context (build_context)"),
    ("store/writer.py", "writer (transaction, savepoints, futures)"),
    ("store/changes.py", "change log (_changes, recorder)"),
    ("store/", "store (db wrappers, readers)"),
    ("reactive/hub.py", "hub batch"),
    ("reactive/channel.py", "outbox (append/take)"),
    ("http/sse.py", "SSE send loop"),
    ("http/", "HTTP handlers"),
    ("functions/", "function registry"),
]
# No voicestack frame: the innermost library frame says where the time went.
_LIBRARIES = [
    ("uvicorn/", "uvicorn (HTTP server)"),
    ("starlette/", "starlette"),
    ("httpx/", "httpx (outside llm.py)"),
    ("httpcore/", "httpcore (outside llm.py)"),
    ("anyio/", "anyio"),
    ("asyncio/", "asyncio machinery"),
    ("concurrent/futures", "concurrent.futures"),
    ("threading.py", "threading"),
    ("queue.py", "queue"),
]


_LOOP_ITSELF = ("runners.py", "base_events.py", "voicestack/__main__.py", "cli/main.py")


def _subsystem(frames: Sequence[str]) -> str:
    if frames and any(needle in frames[-1] for needle in _LOOP_ITSELF):
        # No Python frame below the loop's run call: uvloop's own C code (epoll, socket reads
        # and writes, timers, handles) or a C extension called straight from it.
        return "event loop itself (uvloop C code)"
    for frame in reversed(frames):
        if "voicestack/" in frame and "voicestack/__main__.py" not in frame:
            for needle, name in _SUBSYSTEMS:
                if needle in frame:
                    return name
            return "voicestack: " + frame.split("voicestack/", 1)[1][:60]
    for frame in reversed(frames):
        for needle, name in _LIBRARIES:
            if needle in frame:
                return name
    return "other: " + (frames[-1][:70] if frames else "?")


def _package(frame: str) -> str:
    """The library a frame belongs to: `site-packages/<pkg>/` or the stdlib module."""
    location = frame.rpartition("(")[2].rstrip(")")
    if "site-packages/" in location:
        return location.split("site-packages/", 1)[1].split("/", 1)[0]
    if "voicestack/" in location:
        return "voicestack/" + location.split("voicestack/", 1)[1].split(":", 1)[0]
    return location.split(":", 1)[0].rsplit("/", 1)[-1] or frame[:40]


def summarize_pyspy(
    path: Path, seconds: float, rate: int, thread_names: dict[int, str], top: int = 14
) -> str:
    """Busy time per server thread, then per subsystem and per innermost library."""
    per_thread: Counter[str] = Counter()
    subsystems: dict[str, Counter[str]] = defaultdict(Counter)
    packages: dict[str, Counter[str]] = defaultdict(Counter)
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        head = frames[0]
        thread = head
        if head.startswith("thread ("):
            tid_text = head[len("thread (") :].split(")", 1)[0]
            name = head.split(": ", 1)[1] if ": " in head else "?"
            with_tid = thread_names.get(int(tid_text), name) if tid_text.isdigit() else name
            thread = with_tid
            frames = frames[1:]
        if frames and frames[0].startswith("process "):
            frames = frames[1:]
        if any("epoll" in f or "_queue_SimpleQueue_get" in f for f in frames[-2:]):
            continue
        per_thread[thread] += count
        subsystems[thread][_subsystem(frames)] += count
        packages[thread][_package(frames[-1]) if frames else "?"] += count
    possible = seconds * rate
    lines = [f"py-spy: {rate} samples/s over {seconds:.1f} s (busy % of one core per thread)"]
    for thread, count in per_thread.most_common():
        lines.append(f"  {100 * count / possible:5.1f}%  thread {thread}")
    for thread, count in per_thread.most_common(3):
        lines.append(f"\n  thread {thread}: by innermost voicestack frame (% of its busy samples)")
        for name, n in subsystems[thread].most_common(top):
            lines.append(f"    {100 * n / count:5.1f}%  {name}")
        lines.append(f"  thread {thread}: by innermost frame's library")
        for name, n in packages[thread].most_common(top):
            lines.append(f"    {100 * n / count:5.1f}%  {name}")
    return "\n".join(lines)


def parse_thread_names(dump: str) -> dict[int, str]:
    """Thread id -> Python thread name from `py-spy dump` output."""
    names: dict[int, str] = {}
    for line in dump.splitlines():
        if line.startswith("Thread ") and '"' in line:
            tid_text = line.split()[1]
            name = line.split('"')[1]
            if tid_text.isdigit():
                names[int(tid_text)] = name
            elif tid_text.startswith("0x"):
                names[int(tid_text, 16)] = name
    return names
