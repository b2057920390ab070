"""Wire bytes per reply byte for `bench/peers.py`: one browser-like watcher of a thread's feed.

The watcher asks for the encodings a browser's EventSource accepts, and counts the raw bytes of
the response body as they came off the socket (after any content-encoding, chunk framing
included) while the fake provider streams a long reply at a model's pace. The figure is those
bytes divided by the UTF-8 bytes of the final reply text.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import zlib
from typing import Any, cast

from bench.peers_report import WireRow
from bench.peers_servers import Fake, Voicestack
from bench.sse_client import HOST, dechunk, http_call

BROWSER_ENCODINGS = "gzip, deflate, br"
REPLY_TIMEOUT_S = 120.0
_VOCABULARY = (
    "the a of to and in that it is was for on with as at by from this we our you can will "
    "model reply stream token voice thread server client message window river morning light "
    "quiet small garden stone bridge letter answer question simple careful useful evening "
    "north table paper music often never always slowly quickly together between around"
)
_WORDS = _VOCABULARY.split()


def reply_text(words: int, seed: int = 7) -> str:
    """A deterministic English-like reply of `words` words, in sentences."""
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < words:
        sentence = [rng.choice(_WORDS) for _ in range(rng.randint(7, 15))]
        sentence[0] = sentence[0].capitalize()
        sentence[-1] += "."
        out += sentence
    text = " ".join(out[:words])
    return text if text.endswith(".") else text + "."


def _decode(encoding: str, payload: bytes) -> bytes:
    if encoding in ("", "identity"):
        return payload
    if encoding == "gzip":
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(payload)
    if encoding == "deflate":
        try:
            return zlib.decompressobj().decompress(payload)
        except zlib.error:
            return zlib.decompressobj(-zlib.MAX_WBITS).decompress(payload)
    if encoding == "br":
        import brotli  # type: ignore[import-not-found,unused-ignore]  # only if a server sends br

        return bytes(brotli.Decompressor().process(payload))
    raise ValueError(f"unknown content-encoding {encoding!r}")


async def _read_stream(port: int, request: bytes, into: list[bytes], stop: asyncio.Event) -> None:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(request)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                data = await asyncio.wait_for(reader.read(65536), 0.2)
                if not data:
                    return
                into.append(data)
    finally:
        writer.close()


async def measure_wire(vs: Voicestack, fake: Fake, words: int, tokens_per_s: float) -> WireRow:
    """Watch one thread's feed as a browser would while a `words`-word reply streams."""
    result = WireRow(encoding="identity", words=words, tokens_per_s=tokens_per_s)
    text = reply_text(words)
    prompt = "wire-test: tell me a long story"
    plan = {"kind": "chat", "match": "wire-test", "text": text, "tokens_per_second": tokens_per_s}
    await fake.script(plan)
    thread_id = await vs.create_thread("wire bytes")
    request = (
        f"GET /api/threads/{thread_id}/events HTTP/1.1\r\nHost: {HOST}:{vs.port}\r\n"
        f"Authorization: Bearer {vs.token}\r\nAccept: text/event-stream\r\n"
        f"Accept-Encoding: {BROWSER_ENCODINGS}\r\nCache-Control: no-cache\r\n\r\n"
    ).encode()
    chunks: list[bytes] = []
    stop = asyncio.Event()
    reading = asyncio.create_task(_read_stream(vs.port, request, chunks, stop))
    try:
        await asyncio.sleep(0.5)  # the head and the (empty) snapshot
        started = time.monotonic()
        body = json.dumps({"text": prompt}).encode()
        path = f"/api/threads/{thread_id}/messages"
        status, answer = await http_call(vs.port, "POST", path, body, vs.token)
        if not 200 <= status < 300:
            raise RuntimeError(f"posting the message answered {status}: {answer[:200]!r}")
        final = ""
        while time.monotonic() - started < REPLY_TIMEOUT_S:
            messages = cast(list[dict[str, Any]], (await vs.thread(thread_id))["messages"])
            assistant = [m for m in messages if m.get("role") == "assistant"]
            if assistant and assistant[-1].get("status") not in ("pending", "streaming"):
                final = str(assistant[-1].get("text") or "")
                break
            await asyncio.sleep(0.2)
        result.seconds = time.monotonic() - started
        await asyncio.sleep(0.5)  # the last events after the commit we polled
    finally:
        stop.set()
        with contextlib.suppress(OSError, asyncio.CancelledError):
            await asyncio.wait_for(reading, 5)
    raw = b"".join(chunks)
    head_end = raw.find(b"\r\n\r\n")
    if head_end < 0 or not final:
        result.error = "no response head" if head_end < 0 else "the reply did not finish"
        return result
    head = raw[:head_end].decode("latin-1").lower()
    for line in head.split("\r\n"):
        if line.startswith("content-encoding:"):
            result.encoding = line.split(":", 1)[1].strip()
    payload = raw[head_end + 4 :]
    result.wire_bytes = len(payload)
    if "transfer-encoding: chunked" in head:
        payload = b"".join(dechunk(payload, 0, len(payload))[0])
    try:
        result.decoded_bytes = len(_decode(result.encoding, payload))
    except (ValueError, zlib.error, ImportError) as exc:
        result.error = f"cannot decode {result.encoding}: {exc}"
    result.reply_bytes = len(final.encode())
    if final != text:
        result.error = "the final reply differs from the scripted text"
    result.ratio = result.wire_bytes / result.reply_bytes if result.reply_bytes else 0.0
    return result
