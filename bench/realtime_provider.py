"""The fake provider's own share of a live turn: its three round trips, measured alone.

`bench/realtime.py` times a turn end to end, so its figure includes the fake provider's own work
(a Python process on the same two cores: parsing the upload, routing, building the stream) even
with every configured latency at zero. This measures those round trips from a plain HTTP client,
one after another with a pause between, as a turn makes them: the transcription of the turn's
WAV, a chat completion to its first content chunk, and the speech of the reply as raw PCM.
"""

from __future__ import annotations

import asyncio
import io
import statistics
import time
import wave

import httpx

PAUSE_S = 0.3  # as between the calls of real turns: no back-to-back warm connection effects


def _wav(pcm: bytes) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(pcm)
    return out.getvalue()


async def _first_chunk_ms(client: httpx.AsyncClient) -> float:
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Weather?"}],
        "stream": True,
    }
    started = time.perf_counter()
    async with client.stream("POST", "/chat/completions", json=body) as response:
        async for line in response.aiter_lines():
            if '"content"' in line:
                return (time.perf_counter() - started) * 1000
    raise RuntimeError("the chat stream carried no content")


async def provider_round_trips(fake_url: str, speech: bytes, rounds: int = 10) -> dict[str, float]:
    """Median milliseconds of each round trip a turn makes to the fake provider at `fake_url`
    (scripted to answer as the bench's turns are), and their sum."""
    wav = _wav(speech)
    times: dict[str, list[float]] = {"transcription": [], "chat, first chunk": [], "speech": []}
    async with httpx.AsyncClient(base_url=f"{fake_url}/v1", timeout=30) as client:
        for _ in range(rounds + 1):  # the first round warms the connection, and is dropped
            await asyncio.sleep(PAUSE_S)
            started = time.perf_counter()
            files = {"file": ("turn.wav", wav, "audio/wav")}
            data = {"model": "whisper-1"}
            (await client.post("/audio/transcriptions", files=files, data=data)).raise_for_status()
            times["transcription"].append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(PAUSE_S)
            times["chat, first chunk"].append(await _first_chunk_ms(client))
            await asyncio.sleep(PAUSE_S)
            started = time.perf_counter()
            body = {"model": "tts-1", "voice": "alloy", "input": "Sunny.", "response_format": "pcm"}
            (await client.post("/audio/speech", json=body)).raise_for_status()
            times["speech"].append((time.perf_counter() - started) * 1000)
    medians = {name: statistics.median(values[1:]) for name, values in times.items()}
    medians["sum"] = sum(medians.values())
    return medians
