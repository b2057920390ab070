"""The relay's cost of sending one audio frame to the provider, with and without permessage-deflate,
and with the append event written by json.dumps or directly. `python -m bench.realtime_relay_send`.

One process: a websockets server on loopback that reads and drops every message, and a client
that sends N 20 ms appends of 24 kHz PCM speech-like noise (or 8 kHz μ-law) the way
voicestack.voice.relay.provider.ProviderLink does. CPU time (user + system of this process, both
ends included, so the server's inflate counts too) per frame, which a loaded machine changes far
less than it changes latency.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import time
from typing import Any

import numpy as np
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from voicestack.voice.realtime import codec
from voicestack.voice.relay.events import append_audio_text


async def _drain(socket: ServerConnection) -> None:
    async for _ in socket:
        pass


def frames(count: int, mulaw: bool) -> list[bytes]:
    """`count` frames of 20 ms noise shaped like speech (low-passed, so deflate has a chance)."""
    rng = np.random.default_rng(1)
    size = 160 if mulaw else 480
    noise = np.convolve(rng.normal(0, 3000, size * count), np.ones(8) / 8, "same")
    pcm = noise.astype("<i2").tobytes()
    if mulaw:
        pcm = codec.pcm16_to_mulaw(pcm)
        return [pcm[i * size : (i + 1) * size] for i in range(count)]
    return [pcm[i * size * 2 : (i + 1) * size * 2] for i in range(count)]


async def run(compression: str | None, direct: bool, audio: list[bytes]) -> float:
    """µs of CPU per frame sent."""
    async with serve(_drain, "127.0.0.1", 0, compression=compression) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}", compression=compression) as socket:
            started = time.process_time()
            for frame in audio:
                if direct:
                    text = append_audio_text(frame)
                else:
                    event: dict[str, Any] = {
                        "type": "input_audio_buffer.append",
                        "audio": base64.b64encode(frame).decode(),
                    }
                    text = json.dumps(event)
                await socket.send(text)
            await socket.ping()
            return (time.process_time() - started) / len(audio) * 1e6


async def main(args: argparse.Namespace) -> None:
    """Print µs per frame for each way of sending, median of `--repeat` runs."""
    for mulaw in (False, True):
        audio = frames(args.frames, mulaw)
        label = "8 kHz μ-law" if mulaw else "24 kHz PCM"
        for compression, direct in (("deflate", False), (None, False), (None, True)):
            runs = sorted([await run(compression, direct, audio) for _ in range(args.repeat)])
            how = f"{compression or 'no compression'}, {'direct text' if direct else 'json.dumps'}"
            print(f"  {label:<12} {how:<32} {runs[len(runs) // 2]:7.1f} µs CPU per frame")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    asyncio.run(main(parser.parse_args()))
