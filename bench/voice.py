"""Voice latency: from the end of a `POST /voice` upload to the first reply delta and to the first
`speech` event, with the fake provider's own latencies fixed, and what voicestack adds to them.

Two child processes on loopback ports: the fake OpenAI provider
(`python -m voicestack.testing.fake_openai`) and `python -m voicestack serve` pointed at it with a
fresh database. Every run scripts the fake with fixed latencies: the transcription answers after
`--transcribe-ms`, the chat's first token comes after `--first-token-ms` and the rest at
`--tokens-per-s`, each sentence's speech answers after `--speech-ms`.

Per run, first the provider floor is measured by calling the fake directly with the openai client
(same plans, one after the other, as voicestack calls them): transcription, chat to its first
token and to its first complete sentence, speech of that sentence. Then a thread's feed is opened,
the recording is posted as multipart (`speak=true`), and the feed is timed from the moment the
last byte of the upload was handed to the socket:

- first delta floor  = transcription + chat first token
- first speech floor = transcription + chat first sentence + speech

"voicestack adds" is the measured time minus the floor of the same run: request parsing, format
detection, the database write of the turn, the reply runner's start, the delta coalescer's cut
(a first piece without a sentence end waits up to `--flush-ms`) and the commits and feed fan-out.

    python -m bench.voice --runs 20
    python -m bench.voice --runs 10 --flush-ms 20 --speech-ms 300

Only 127.0.0.1 is contacted; every wait is bounded and both children are always stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import math
import re
import shutil
import statistics
import subprocess
import tempfile
import time
import wave
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
from httpx_sse import aconnect_sse

from bench.server_access import auth_headers
from bench.voice_procs import WAIT_S, voice_children

ANSWER = (
    "Sure, here is the forecast for today. It will be sunny in the morning, with a light "
    "breeze from the west. Clouds gather after lunch. Take an umbrella if you go out tonight."
)
SENTENCE_END = re.compile(r"""[.!?…]+["'”’)\]]*\s""")
BOUNDARY = "voicestack-bench"


def recording(text: str, workdir: Path) -> tuple[bytes, str]:
    """Real speech from espeak-ng when it is installed, else two seconds of a synthetic tone."""
    espeak = shutil.which("espeak-ng")
    if espeak:
        path = workdir / "question.wav"
        subprocess.run([espeak, "-w", str(path), text], check=True)
        return path.read_bytes(), "espeak-ng"
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16_000)
        frames = bytearray()
        for i in range(32_000):
            frames += int(8000 * math.sin(2 * math.pi * 220 * i / 16_000)).to_bytes(
                2, "little", signed=True
            )
        wav.writeframes(bytes(frames))
    return buffer.getvalue(), "synthetic tone"


@dataclass
class Run:
    """One run's timings in milliseconds (None: never seen)."""

    floor_transcribe: float
    floor_first_token: float
    floor_first_sentence: float
    floor_speech: float
    answered: float
    first_delta: float | None
    first_speech: float | None

    @property
    def floor_delta(self) -> float:
        """What the provider alone needs before a first delta can exist."""
        return self.floor_transcribe + self.floor_first_token

    @property
    def floor_spoken(self) -> float:
        """What the provider alone needs before a first sentence can be spoken."""
        return self.floor_transcribe + self.floor_first_sentence + self.floor_speech


def plans(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The fake's script for one run: fixed latencies for every kind of call."""
    return [
        {"kind": "transcription", "hang_s": args.transcribe_ms / 1000, "transcript": "Weather?"},
        {
            "kind": "chat",
            "text": ANSWER,
            "first_token_delay_s": args.first_token_ms / 1000,
            "tokens_per_second": args.tokens_per_s,
        },
        {"kind": "speech", "hang_s": args.speech_ms / 1000, "times": None},
    ]


async def script(control: httpx.AsyncClient, fake_url: str, items: list[dict[str, Any]]) -> None:
    """Reset the fake and queue `items`."""
    (await control.post(f"{fake_url}/_control/reset")).raise_for_status()
    (await control.post(f"{fake_url}/_control/script", json=items)).raise_for_status()


async def provider_floor(
    fake: openai.AsyncOpenAI, audio: bytes
) -> tuple[float, float, float, float]:
    """The fake's own latencies, called directly: (transcribe, first token, first sentence,
    speech of that sentence), in ms."""
    start = time.perf_counter()
    await fake.audio.transcriptions.create(
        model="gpt-4o-mini-transcribe", file=("recording.wav", audio, "audio/wav")
    )
    transcribe = time.perf_counter() - start
    start = time.perf_counter()
    stream = await fake.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Weather?"}], stream=True
    )
    first_token = first_sentence = None
    text = ""
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
            now = time.perf_counter() - start
            first_token = first_token if first_token is not None else now
            if first_sentence is None and SENTENCE_END.search(text):
                first_sentence = now
    sentence = text[: SENTENCE_END.search(text).end()].strip()  # type: ignore[union-attr]
    start = time.perf_counter()
    await fake.audio.speech.create(model="gpt-4o-mini-tts", voice="alloy", input=sentence)
    speech = time.perf_counter() - start
    assert first_token is not None
    assert first_sentence is not None
    return transcribe * 1000, first_token * 1000, first_sentence * 1000, speech * 1000


def _reply_ended(data: str) -> bool:
    final = '"status":"complete"' in data or '"status":"failed"' in data
    return final and '"role":"assistant"' in data


def form(thread_id: str, audio: bytes) -> bytes:
    """The multipart body of `POST /voice` with `speak=true`."""
    fields = "".join(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
        for k, v in (("threadId", thread_id), ("speak", "true"))
    )
    head = (
        f'{fields}--{BOUNDARY}\r\nContent-Disposition: form-data; name="audio";'
        ' filename="q.wav"\r\nContent-Type: audio/wav\r\n\r\n'
    )
    return head.encode() + audio + f"\r\n--{BOUNDARY}--\r\n".encode()


async def timed_body(body: bytes, ended: list[float]) -> AsyncIterator[bytes]:
    """Yield the body in 64 KiB pieces; note when the last one has been taken by the client."""
    for start in range(0, len(body), 65_536):
        yield body[start : start + 65_536]
    ended.append(time.perf_counter())


async def one_run(
    http: httpx.AsyncClient,
    control: httpx.AsyncClient,
    fake: openai.AsyncOpenAI,
    fake_url: str,
    audio: bytes,
    args: argparse.Namespace,
) -> Run:
    """Measure the provider floor, then one voice turn through voicestack (`http`, which carries
    the server's token; `control` scripts the fake)."""
    await script(control, fake_url, plans(args))
    floor = await provider_floor(fake, audio)
    await script(control, fake_url, plans(args))
    thread_id = (await http.post("/api/threads", json={})).json()["id"]
    seen: dict[str, float] = {}
    ready = asyncio.Event()
    finished = asyncio.Event()

    async def watch() -> None:
        async with aconnect_sse(http, "GET", f"/api/threads/{thread_id}/events") as source:
            async for event in source.aiter_sse():
                now = time.perf_counter()
                if event.event == "ready":
                    ready.set()
                elif event.event in ("delta", "speech"):
                    seen.setdefault(event.event, now)
                elif event.event == "message" and _reply_ended(event.data):
                    finished.set()
                    return

    watcher = asyncio.create_task(watch())
    try:
        await asyncio.wait_for(ready.wait(), WAIT_S)
        ended: list[float] = []
        response = await http.post(
            "/voice",
            content=timed_body(form(thread_id, audio), ended),
            headers={"content-type": f"multipart/form-data; boundary={BOUNDARY}"},
        )
        answered = time.perf_counter()
        if response.status_code != 201:
            raise RuntimeError(f"POST /voice answered {response.status_code}: {response.text}")
        await asyncio.wait_for(finished.wait(), WAIT_S)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
            await watcher
    upload_end = ended[0]

    def since(key: str) -> float | None:
        return (seen[key] - upload_end) * 1000 if key in seen else None

    return Run(*floor, (answered - upload_end) * 1000, since("delta"), since("speech"))


def stats(values: Sequence[float | None]) -> str:
    """median, p90 and max of the values seen, in ms."""
    real = sorted(v for v in values if v is not None)
    if not real:
        return "never seen"
    p90 = real[min(len(real) - 1, math.ceil(0.9 * len(real)) - 1)]
    missing = f"  ({len(values) - len(real)} missing)" if len(real) < len(values) else ""
    return f"{statistics.median(real):8.1f} {p90:8.1f} {real[-1]:8.1f}{missing}"


def report(runs: list[Run], args: argparse.Namespace, audio: bytes, source: str) -> str:
    """The figures as a small table."""
    rows = [
        ("upload end → POST /voice answered", [r.answered for r in runs]),
        ("upload end → first reply delta", [r.first_delta for r in runs]),
        ("upload end → first speech event", [r.first_speech for r in runs]),
        ("provider floor: transcription", [r.floor_transcribe for r in runs]),
        ("provider floor: chat first token", [r.floor_first_token for r in runs]),
        ("provider floor: chat first sentence", [r.floor_first_sentence for r in runs]),
        ("provider floor: speech of a sentence", [r.floor_speech for r in runs]),
        (
            "voicestack adds to the first delta",
            [r.first_delta - r.floor_delta if r.first_delta else None for r in runs],
        ),
        (
            "voicestack adds to the first speech",
            [r.first_speech - r.floor_spoken if r.first_speech else None for r in runs],
        ),
    ]
    lines = [
        f"voice bench: {len(runs)} runs; recording {len(audio)} bytes of WAV ({source}); fake"
        f" provider: transcription {args.transcribe_ms:g} ms, first token {args.first_token_ms:g}"
        f" ms then {args.tokens_per_s:g} tokens/s, speech {args.speech_ms:g} ms per sentence;"
        f" server --flush-ms {args.flush_ms:g}",
        f"{'':40s}{'median':>8s} {'p90':>8s} {'max':>8s}   (ms)",
    ]
    lines += [f"{name:40s}{stats(values)}" for name, values in rows]
    return "\n".join(lines)


async def bench(args: argparse.Namespace) -> str:
    """Run the whole benchmark; returns the report."""
    with tempfile.TemporaryDirectory(prefix="voicestack-voice-bench-") as tmp:
        workdir = Path(tmp)
        audio, source = recording("What will the weather be like today?", workdir)
        with voice_children(workdir, ["--flush-ms", str(args.flush_ms)]) as kids:
            fake_url, url, token = kids.fake_url, kids.url, kids.token
            async with (
                httpx.AsyncClient(
                    base_url=url, timeout=WAIT_S, headers=auth_headers(token)
                ) as http,
                httpx.AsyncClient(timeout=WAIT_S) as control,
                openai.AsyncOpenAI(
                    base_url=f"{fake_url}/v1", api_key="bench", max_retries=0
                ) as fake,
            ):
                turn = (http, control, fake, fake_url, audio, args)
                await one_run(*turn)  # warm-up, not counted
                runs = [await one_run(*turn) for _ in range(args.runs)]
        return report(runs, args, audio, source)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.voice", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--transcribe-ms", type=float, default=300)
    parser.add_argument("--first-token-ms", type=float, default=200)
    parser.add_argument("--tokens-per-s", type=float, default=50)
    parser.add_argument("--speech-ms", type=float, default=150)
    parser.add_argument("--flush-ms", type=float, default=50, help="the server's --flush-ms")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run and print the report."""
    print(asyncio.run(bench(parse_args(argv))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
