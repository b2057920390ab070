"""Relay mode (`--voice-mode realtime`): what voicestack adds to each audio frame each way, and
its CPU per relayed call. `python -m bench.realtime --mode relay|twilio-relay`.

Two child processes on loopback ports: the fake Realtime provider with a stopwatch
(bench/realtime_relay_fake.py) and `voicestack serve --voice-mode realtime` pointed at it. The
calls (bench/realtime_relay_calls.py) are in this process: `relay` uses the audio socket (16 kHz
PCM), `twilio-relay` the Twilio webhook and Media Streams socket (8 kHz μ-law). Each call sends
20 ms frames paced to real time: 300 ms of silence, an espeak-ng sentence, `--gap-ms` of
silence, over and over (the calls start at different points of it). The provider hears each
turn with its server VAD and answers with `--reply-ms` of audio in 20 ms deltas at real-time
pace, its transcript saved in the thread as the relay does for any reply.

- Inbound: a frame handed to the client's socket → the provider reading the
  `input_audio_buffer.append` that carries its audio.
- Outbound: the provider writing a `response.output_audio.delta` → the client reading the
  frame that carries its audio.
Frames are matched by counting audio (bench/realtime_relay_match.py); stamps are CLOCK_MONOTONIC,
one clock for all three processes. Both include the loopback hops and the WebSocket framing at
both ends: what a call sees in the relay that it would not see talking to the provider itself.
The server's CPU (psutil) is over the same `--seconds`, after `--warmup-s`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.realtime_audio import silence, speech_pcm
from bench.realtime_relay_calls import (
    FRAME_S,
    PUBLIC_URL,
    TWILIO_TOKEN,
    AudioCall,
    Call,
    TwilioCall,
)
from bench.realtime_relay_match import (
    delays_ms,
    percentile,
    provider_counts,
    resampler_delays_ms,
)
from bench.realtime_relay_report import line, notes, report
from bench.server_access import auth_headers
from bench.voice_procs import Children, voice_children
from voicestack.voice.realtime import codec
from voicestack.voice.realtime.wire import Start
from voicestack.voice.relay.session_config import provider_audio

WAIT_S = 30.0
SENTENCE = "What is the weather like today?"
FAKE = "bench.realtime_relay_fake"


def server_args(mode: str) -> list[str]:
    """The relay server's flags for `mode`."""
    args = ["--voice-mode", "realtime"]
    if mode == "twilio-relay":
        args += ["--public-url", PUBLIC_URL, "--twilio-auth-token", TWILIO_TOKEN]
    return args


def call_audio(mode: str, speech: bytes, gap_ms: int, rate: int) -> list[bytes]:
    """One cycle of a call's audio in 20 ms frames: PCM at `rate`, or 8 kHz μ-law for a phone."""
    pcm = silence(300) + speech + silence(gap_ms)  # 16 kHz
    if mode == "relay":
        pcm = codec.Resampler(16000, rate)(pcm, last=True)
        step = rate * 2 // 50
        return [pcm[at : at + step] for at in range(0, len(pcm), step)]
    mulaw = codec.pcm16_to_mulaw(codec.Resampler(16000, 8000)(pcm, last=True))
    return [mulaw[at : at + 160] for at in range(0, len(mulaw), 160)]


async def provider_count(fake: httpx.AsyncClient) -> int:
    """How many connections the provider has had."""
    count: int = (await fake.get("/_bench/stamps", params={"count": 1})).json()["count"]
    return count


async def open_calls(kids: Children, mode: str, count: int, rate: int) -> list[Call]:
    """`count` calls, opened one after another, each once the provider has its connection (so
    that the provider's connections are in the calls' order)."""
    calls: list[Call] = []
    async with (
        httpx.AsyncClient(
            base_url=kids.url, headers=auth_headers(kids.token), timeout=WAIT_S
        ) as http,
        httpx.AsyncClient(base_url=kids.fake_url, timeout=WAIT_S) as fake,
    ):
        for n in range(count):
            if mode == "relay":
                calls.append(await AudioCall.open(http, kids.url, kids.token, rate))
            else:
                calls.append(await TwilioCall.open(kids.url, n))
            deadline = time.monotonic() + WAIT_S
            while await provider_count(fake) < n + 1:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"call {n} never reached the provider")
                await asyncio.sleep(0.02)
    return calls


def machine_busy() -> float:
    """CPU seconds the whole machine has spent busy (every core, every process)."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


async def quiet(most_pct: float, wait_s: float) -> None:
    """Wait (at most `wait_s`) until the machine is busy less than `most_pct` of one core."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        before, started = machine_busy(), time.perf_counter()
        await asyncio.sleep(1)
        if (machine_busy() - before) / (time.perf_counter() - started) * 100 < most_pct:
            return


def cpu_seconds(process: psutil.Process) -> float:
    """User + system CPU seconds of `process` so far."""
    times = process.cpu_times()
    return float(times.user + times.system)


async def run(
    kids: Children,
    mode: str,
    rate: int,
    count: int,
    audio: list[bytes],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """One measured run of `count` concurrent calls on a fresh pair of children."""
    script = {
        "times": None,
        "responses": [
            {
                "text": "It is sunny all day.",
                "audio_ms": args.reply_ms,
                "chunk_ms": 20,
                "speed": 1.0,
            }
        ]
        * 1000,
    }
    httpx.post(f"{kids.fake_url}/_control/realtime", json=script).raise_for_status()
    server, fake = psutil.Process(kids.server.pid), fake_process()
    calls = await open_calls(kids, mode, count, rate)
    loop = asyncio.get_running_loop()
    base = loop.time() + 0.3
    length = int((0.3 + args.warmup_s + args.seconds + 5) / FRAME_S)
    senders = []
    for n, call in enumerate(calls):
        phase = n * len(audio) // count
        chunks = list(itertools.islice(itertools.cycle(audio[phase:] + audio[:phase]), length))
        start = base + n * FRAME_S / count  # spread the sends over a frame
        senders.append(asyncio.create_task(call.send_paced(chunks, start)))
    try:
        await asyncio.sleep(0.3 + args.warmup_s)
        before = (cpu_seconds(server), cpu_seconds(fake), time.process_time(), machine_busy())
        t0, wall = time.monotonic_ns(), time.perf_counter()
        await asyncio.sleep(args.seconds)
        after = (cpu_seconds(server), cpu_seconds(fake), time.process_time(), machine_busy())
        t1, wall = time.monotonic_ns(), time.perf_counter() - wall
        await asyncio.sleep(1.0)  # the last frames of the window reach the far side
    finally:
        for task in senders:
            task.cancel()
        for call in calls:
            await call.close()
    async with httpx.AsyncClient(base_url=kids.fake_url, timeout=WAIT_S) as client:
        stamps = (await client.get("/_bench/stamps")).json()["sessions"]
        records = (await client.get("/_control/realtime")).json()["sessions"]
    inbound: list[float] = []
    outbound: list[float] = []
    bytes_per_ms = provider_audio(client_start(mode, rate)).bytes_per_ms
    for call, provider in zip(calls, stamps, strict=False):
        received = provider_counts(provider["in"], bytes_per_ms)
        inbound += delays_ms(call.stamps.sent, received, (t0, t1))
        # A reply cut by barge-in drops audio the provider sent: the counts of the rest of the
        # call no longer line up, so its outbound frames count up to the first cut only.
        until = min(t1, call.stamps.first_cut or t1)
        sent = provider_counts(provider["out"], bytes_per_ms)
        outbound += delays_ms(sent, call.stamps.received, (t0, until))
    events: Counter[str] = Counter()
    for call in calls:
        events.update(call.stamps.events)
    responses = Counter(r["status"] for record in records for r in record["responses"])
    server_pct = (after[0] - before[0]) / wall * 100
    return {
        "calls": count,
        "in": inbound,
        "out": outbound,
        "in_p50": percentile(inbound, 50),
        "in_p95": percentile(inbound, 95),
        "in_p99": percentile(inbound, 99),
        "in_max": max(inbound, default=float("nan")),
        "out_p50": percentile(outbound, 50),
        "out_p95": percentile(outbound, 95),
        "out_p99": percentile(outbound, 99),
        "out_max": max(outbound, default=float("nan")),
        "server": server_pct,
        "per_call": server_pct / count,
        "fake": (after[1] - before[1]) / wall * 100,
        "client": (after[2] - before[2]) / wall * 100,
        "responses": dict(responses),
        "events": dict(events),
        "connections": len(stamps),
        "others": ((after[3] - before[3]) - sum(after[:3]) + sum(before[:3])) / wall * 100,
    }


def fake_process() -> psutil.Process:
    """The fake provider's process (this process's child running FAKE)."""
    for child in psutil.Process().children():
        with contextlib.suppress(psutil.Error):
            if FAKE in child.cmdline():
                return child
    raise RuntimeError("the fake provider's process was not found")


async def bench(args: argparse.Namespace) -> str:
    """Every mode and call count, `--repeat` times each on fresh children; the report."""
    with tempfile.TemporaryDirectory(prefix="voicestack-relay-bench-") as tmp:
        return await _bench(args, Path(tmp))


async def _bench(args: argparse.Namespace, workdir: Path) -> str:
    speech = speech_pcm(workdir, SENTENCE)
    counts = [int(c) for c in args.calls.split(",")]
    modes = ["relay", "twilio-relay"] if args.mode == "relay-both" else [args.mode]
    rates = [int(r) for r in args.relay_rate.split(",")]
    variants = [(m, r) for m in modes for r in (rates if m == "relay" else [8000])]
    rows: list[dict[str, Any]] = []
    for mode, rate in variants:
        label = f"relay {rate // 1000}k" if mode == "relay" else "twilio 8k"
        audio = call_audio(mode, speech, args.relay_gap_ms, rate)
        for count in counts:
            for repeat in range(args.repeat):
                run_dir = workdir / f"{mode}-{rate}-{count}-{repeat}"
                run_dir.mkdir()
                await quiet(args.quiet_pct, 30)
                with voice_children(run_dir, server_args(mode), fake_module=FAKE) as kids:
                    result = await run(kids, mode, rate, count, audio, args)
                rows.append({"mode": label, **result})
                print(line(rows[-1], label, count) + notes(rows[-1]), flush=True)
    alone = {
        (f"relay {rate // 1000}k" if mode == "relay" else "twilio 8k"): resampler_alone(
            mode, rate, args
        )
        for mode, rate in variants
    }
    return report(rows, args, len(speech) / 32, alone)


def client_start(mode: str, rate: int) -> Start:
    """What the calls of `mode` speak: PCM at `rate` on the audio socket, μ-law on the phone."""
    return Start(rate, "pcm16") if mode == "relay" else Start(8000, "mulaw")


def resampler_alone(
    mode: str, rate: int, args: argparse.Namespace
) -> tuple[list[float], list[float]]:
    """What the relay's conversion alone holds each frame back, inbound and outbound, for a
    call of `mode` at `rate` (the bench's replies' length)."""
    frames = int(args.seconds / FRAME_S)
    start = client_start(mode, rate)
    inbound = resampler_delays_ms(start, frames, inbound=True)
    outbound = resampler_delays_ms(start, frames, inbound=False, flush_every=args.reply_ms // 20)
    return inbound, outbound
