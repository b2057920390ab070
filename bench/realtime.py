"""Live conversation: voicestack's own share of voice-to-voice latency, and CPU per listening
session, over real WebSockets to a real `python -m voicestack serve`.

Two child processes on loopback ports: the fake OpenAI provider
(`python -m voicestack.testing.fake_openai`, every latency zero, a short scripted answer) and the
server pointed at it with a fresh database and `--speech-format pcm`. All clients are
`websockets` connections in this process, sending 20 ms frames of 16 kHz PCM paced to real time.

- Latency: one session says an espeak-ng sentence `--turns` times, streaming silence after it
  until the reply has been spoken. Own latency = (first reply audio frame received − last speech
  frame sent) − `--vad-silence-ms`. It includes how far past the window the turn detector ends
  the turn (measured alone on the same audio), the server's own parts as it saved them, and the
  fake provider's own work (its round trips measured alone, bench/realtime_provider.py).
- CPU: `--sessions` sessions on their own threads, `--speaking` of them saying the sentence in a
  loop (with `--gap-ms` of silence between), the others sending noise at `--noise-dbfs`. The
  server's CPU (psutil) over `--seconds`, after a warm-up, per session, as % of one core; once per
  `--floors` value (the server's `--vad-energy-floor-dbfs`; -120 turns the energy gate off).
- Where the time goes: the turn detector alone in this process on the same audio, with the gate
  off and on: CPU per 32 ms chunk and how often the model ran.

    python -m bench.realtime
    python -m bench.realtime --turns 10 --sessions 20 --speaking 4 --floors -50

`--mode relay` and `--mode twilio-relay` (or `relay-both`) measure relay mode instead
(`--voice-mode realtime`, the audio socket or a Twilio call bridged to a Realtime-compatible
provider): voicestack's added latency per audio frame each way and its CPU per relayed call,
for `--calls` concurrent calls (bench/realtime_relay.py says how).

    python -m bench.realtime --mode relay-both --calls 1,50 --repeat 3

Only 127.0.0.1 is contacted; every wait is bounded and both children are always stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import psutil
from websockets.asyncio.client import ClientConnection, connect

from bench.realtime_audio import (
    FRAME_S,
    frames,
    noise_pcm,
    silence,
    speech_pcm,
    vad_alone,
    vad_tail_ms,
)
from bench.realtime_provider import provider_round_trips
from bench.realtime_relay import bench as relay_bench
from bench.server_access import auth_headers
from bench.voice_procs import voice_children

SENTENCE = "What is the weather like today?"
WAIT_S = 30.0
SCRIPT = [
    {"kind": "transcription", "transcript": "Weather?", "times": None},
    {"kind": "chat", "text": "Sunny.", "times": None},
]


VOICE_PARTS = (
    "endOfSpeechToTranscriptMs",
    "transcriptToFirstTokenMs",
    "firstTokenToFirstAudioMs",
    "voiceToVoiceMs",
)


class Session:
    """One audio socket: sends paced frames, reads events; notes the first reply audio frame."""

    def __init__(self, socket: ClientConnection) -> None:
        self.socket = socket
        self.first_audio: float | None = None
        self.replies = 0
        self.turns = 0
        self.reply_done = asyncio.Event()

    async def read(self) -> None:
        """Read until the socket closes."""
        with contextlib.suppress(Exception):
            async for message in self.socket:
                if isinstance(message, bytes):
                    self.first_audio = self.first_audio or time.perf_counter()
                    continue
                event = json.loads(message)
                self.heard(event)
                kind = event["type"]
                self.turns += kind == "user_speech_stopped"
                if kind == "reply_stopped":
                    self.replies += 1
                    self.reply_done.set()

    def heard(self, event: dict[str, Any]) -> None:
        """Every event the server sent (a subclass counts what it needs)."""

    async def send_paced(self, chunks: Sequence[bytes], start: float) -> float:
        """Send `chunks` at one 20 ms frame per 20 ms from `start` (loop time); returns the
        perf_counter time the last one was handed to the socket."""
        loop = asyncio.get_running_loop()
        for n, frame in enumerate(chunks):
            await asyncio.sleep(max(0.0, start + n * FRAME_S - loop.time()))
            await self.socket.send(frame)
        return time.perf_counter()


async def opened(
    http: httpx.AsyncClient, url: str, token: str
) -> tuple[Session, asyncio.Task[None], str]:
    """A new thread's audio socket, started at 16 kHz pcm16, with its reader task and the
    thread's id."""
    thread_id = (await http.post("/api/threads", json={})).raise_for_status().json()["id"]
    base = url.replace("http://", "ws://", 1)
    socket = await connect(
        f"{base}/api/threads/{thread_id}/audio?token={token}", max_size=None, compression=None
    )
    await socket.send(json.dumps({"type": "start", "sampleRate": 16000, "format": "pcm16"}))
    json.loads(await socket.recv())  # ready
    session = Session(socket)
    return session, asyncio.create_task(session.read()), thread_id


async def latency(
    url: str, token: str, speech: bytes, args: argparse.Namespace
) -> tuple[list[float], dict[str, list[float]]]:
    """Own latency of each turn, in ms (the first turn is a warm-up, not counted), and the parts
    of each counted turn as the server saved them on the reply (`voice`, DESIGN §9)."""
    async with httpx.AsyncClient(base_url=url, headers=auth_headers(token), timeout=WAIT_S) as http:
        session, reader, thread_id = await opened(http, url, token)
        try:
            results = await turn_latencies(session, speech, args.turns, args.vad_silence_ms)
        finally:
            await session.socket.close()
            reader.cancel()
        thread = (await http.get(f"/api/threads/{thread_id}")).raise_for_status().json()
    saved = [m["voice"] for m in thread["messages"] if m.get("voice")][1:]
    parts = {name: [float(v[name]) for v in saved if v[name] is not None] for name in VOICE_PARTS}
    return results, parts


async def turn_latencies(
    session: Session, speech: bytes, turns: int, vad_silence_ms: int
) -> list[float]:
    """Say `speech` on `session` `turns` + 1 times, streaming silence after it until the reply
    has been spoken: the own latency of each turn in ms (the first, a warm-up, dropped)."""
    loop = asyncio.get_running_loop()
    said = frames(silence(300) + speech)
    quiet = frames(silence(200))
    results: list[float] = []
    for _ in range(turns + 1):
        session.first_audio = None
        session.reply_done.clear()
        start = loop.time()
        spoken = await session.send_paced(said, start)
        deadline, n = time.monotonic() + WAIT_S, len(said)
        while not session.reply_done.is_set() and time.monotonic() < deadline:
            await session.send_paced(quiet, start + n * FRAME_S)
            n += len(quiet)
        if session.first_audio is None:
            raise RuntimeError("a turn got no reply audio")
        results.append((session.first_audio - spoken) * 1000 - vad_silence_ms)
    return results[1:]


async def cpu(
    url: str, token: str, server: Any, speech: bytes, args: argparse.Namespace
) -> dict[str, float]:
    """Server CPU with `--sessions` sessions streaming, `--speaking` of them talking."""
    process = psutil.Process(server.pid)
    noise = frames(noise_pcm(1000, args.noise_dbfs))
    talk = frames(speech + silence(args.gap_ms))
    async with httpx.AsyncClient(base_url=url, headers=auth_headers(token), timeout=WAIT_S) as http:
        idle_before = process.cpu_times()
        await asyncio.sleep(2)
        idle = process.cpu_times()
        idle_pct = (sum(idle[:2]) - sum(idle_before[:2])) / 2 * 100
        sessions = [(await opened(http, url, token))[:2] for _ in range(args.sessions)]
        loop = asyncio.get_running_loop()
        base = loop.time() + 0.5

        async def stream(n: int, session: Session) -> None:
            source = talk if n < args.speaking else noise
            start = base + n * FRAME_S / args.sessions  # spread the sends over a frame
            chunks = list(itertools.islice(itertools.cycle(source), int(WAIT_S * 4 / FRAME_S)))
            with contextlib.suppress(Exception):
                await session.send_paced(chunks, start)

        senders = [asyncio.create_task(stream(n, s)) for n, (s, _) in enumerate(sessions)]
        try:
            await asyncio.sleep(0.5 + args.warmup_s)
            before, client_before, wall = (
                process.cpu_times(),
                time.process_time(),
                time.perf_counter(),
            )
            await asyncio.sleep(args.seconds)
            after, client_after = process.cpu_times(), time.process_time()
            wall = time.perf_counter() - wall
        finally:
            await close_sessions(senders, sessions)
    server_pct = (sum(after[:2]) - sum(before[:2])) / wall * 100
    return {
        "idle": idle_pct,
        "server": server_pct,
        "per_session": server_pct / args.sessions,
        "client": (client_after - client_before) / wall * 100,
        "turns": sum(s.turns for s, _ in sessions),
        "replies": sum(s.replies for s, _ in sessions),
    }


async def close_sessions(
    senders: Sequence[asyncio.Task[None]], sessions: Sequence[tuple[Session, asyncio.Task[None]]]
) -> None:
    """Stop the senders, close every session's socket and stop its reader."""
    for task in senders:
        task.cancel()
    for session, reader in sessions:
        with contextlib.suppress(Exception):
            await session.socket.close()
        reader.cancel()


def percentile(values: Sequence[float], p: float) -> float:
    """The nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1)]


async def bench(args: argparse.Namespace) -> str:
    """Run the whole benchmark; returns the report."""
    floors = [float(f) for f in args.floors.split(",")]
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="voicestack-realtime-bench-") as tmp:
        workdir = Path(tmp)
        speech = speech_pcm(workdir, SENTENCE)
        tail_audio = silence(300) + speech + silence(args.vad_silence_ms + 500)
        tail = vad_tail_ms(tail_audio, len(silence(300) + speech), args.vad_silence_ms, floors[0])
        loads: dict[float, dict[str, float]] = {}
        for index, floor in enumerate(floors):
            run_dir = workdir / f"floor{floor:g}"
            run_dir.mkdir()
            server_args = [
                *("--speech-format", "pcm", "--vad-silence-ms", str(args.vad_silence_ms)),
                *("--vad-energy-floor-dbfs", str(floor)),
            ]
            with voice_children(run_dir, server_args, SCRIPT) as kids:
                if index == 0:
                    own, parts = await latency(kids.url, kids.token, speech, args)
                    provider = await provider_round_trips(kids.fake_url, speech)
                loads[floor] = await cpu(kids.url, kids.token, kids.server, speech, args)
        alone = {
            f: vad_alone(noise_pcm(5000, args.noise_dbfs), speech + silence(args.gap_ms), f)
            for f in floors
        }
    lines.append(
        f"realtime bench: {SENTENCE!r} ({len(speech) / 32:.0f} ms of espeak-ng speech), fake"
        f" provider at zero latency, --speech-format pcm, --vad-silence-ms {args.vad_silence_ms}"
    )
    lines.append("")
    lines.append(
        f"own latency over {len(own)} turns (floor {floors[0]:g} dBFS): last speech frame"
        " sent → first reply audio frame, minus the silence window"
    )
    lines.append(
        f"  p50 {percentile(own, 50):6.1f} ms   p95 {percentile(own, 95):6.1f} ms"
        f"   max {max(own):6.1f} ms   (target ≤ 60)"
    )
    lines.append(f"  of which the turn detector's end past the window (audio time): {tail:.0f} ms")
    lines.append(
        "  the fake provider's own round trips, measured alone (median ms): "
        + ", ".join(f"{name} {ms:.1f}" for name, ms in provider.items())
    )
    lines.append(
        f"  own latency without them: p50 {percentile(own, 50) - provider['sum']:6.1f} ms"
        f"   p95 {percentile(own, 95) - provider['sum']:6.1f} ms"
    )
    lines.append("  the parts the server saved on each reply (from the end of the silence window):")
    for name, values in parts.items():
        if values:
            lines.append(
                f"    {name:<28} p50 {percentile(values, 50):6.1f} ms"
                f"   p95 {percentile(values, 95):6.1f} ms"
            )
    lines.append("")
    lines.append(
        f"CPU: {args.sessions} sessions, {args.speaking} speaking, the rest sending noise"
        f" at {args.noise_dbfs:g} dBFS, {args.seconds:g} s measured"
    )
    lines.append(
        f"  {'floor dBFS':>10} {'server %core':>13} {'per session':>12} {'idle %':>7}"
        f" {'turns':>6} {'replies':>8} {'client %core':>13}"
    )
    for floor, load in loads.items():
        lines.append(
            f"  {floor:>10g} {load['server']:>13.1f} {load['per_session']:>11.2f}%"
            f" {load['idle']:>7.1f} {load['turns']:>6.0f} {load['replies']:>8.0f}"
            f" {load['client']:>12.1f}%   (target ≤ 2% per session)"
        )
    lines.append("")
    lines.append("where the time goes: the turn detector alone on the same audio, in this process")
    lines.append(
        f"  {'floor dBFS':>10} {'audio':>10} {'ms/chunk off':>13} {'ms/chunk on':>12}"
        f" {'model ran':>10} {'%core on':>9}"
    )
    for floor, costs in alone.items():
        for name, (off, on) in costs.items():
            lines.append(
                f"  {floor:>10g} {name:>10} {off.cpu_ms_per_chunk:>13.3f}"
                f" {on.cpu_ms_per_chunk:>12.3f} {on.model_runs:>5}/{on.chunks:<4}"
                f" {on.core_percent:>8.2f}%"
            )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.realtime", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--mode",
        choices=["pipeline", "relay", "twilio-relay", "relay-both"],
        default="pipeline",
        help="pipeline (the server's own turn-taking), or relay mode through the audio socket,"
        " a Twilio call, or both",
    )
    parser.add_argument("--calls", default="1,50", help="relay modes: concurrent calls per run")
    parser.add_argument("--repeat", type=int, default=1, help="relay modes: runs of each row")
    parser.add_argument(
        "--relay-gap-ms", type=int, default=3000, help="relay modes: silence after each sentence"
    )
    parser.add_argument("--reply-ms", type=int, default=1500, help="relay modes: reply audio")
    parser.add_argument(
        "--quiet-pct",
        type=float,
        default=30,
        help="relay modes: before each run, wait (30 s at most) for the machine to be busy"
        " less than this %% of one core",
    )
    parser.add_argument(
        "--relay-rate",
        default="24000",
        help="--mode relay: the audio socket's PCM rates, 24000 and/or 16000 (the browser"
        " page's Talk sends 24000)",
    )
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--speaking", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=20, help="CPU measuring window")
    parser.add_argument("--warmup-s", type=float, default=3)
    parser.add_argument("--gap-ms", type=int, default=1500, help="silence between spoken lines")
    parser.add_argument("--noise-dbfs", type=float, default=-65, help="listening sessions' noise")
    parser.add_argument("--vad-silence-ms", type=int, default=550)
    parser.add_argument(
        "--floors", default="-50,-120", help="--vad-energy-floor-dbfs values for the CPU part"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run and print the report."""
    args = parse_args(argv)
    loop_factory = None
    with contextlib.suppress(ImportError):  # a lean client: the calls share the server's cores
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        print(runner.run(bench(args) if args.mode == "pipeline" else relay_bench(args)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
