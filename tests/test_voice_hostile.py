"""Hostile uploads cost the server little: WebMs shaped like the attack (millions of empty
blocks) are taken while a chat reply streams on, and counted at the provider's figure, and a
WAV whose header lies about its byte rate is counted by its samples.

A server whose transcriber is a whisper model, so the FakeOpenAI reports what it heard.
"""

from __future__ import annotations

import struct
from pathlib import Path

import anyio
import httpx
import pytest

from tests.support.agent import Threads, ask, marker
from tests.support.voice import Recordings, post_form, posted, requires_espeak, wav_seconds
from voicestack.testing.fake_openai import FakeOpenAI

pytestmark = [pytest.mark.anyio, pytest.mark.agent_server("--transcribe-model", "whisper-1")]

EMPTY_BLOCKS = 6_000_000  # 12 MB: a minute and a half of CPU for the three, walked in full


def hostile_webm(blocks: int) -> bytes:
    """A WebM with no Duration: a Segment and one Cluster of unknown size, then `blocks` empty
    SimpleBlocks of 2 bytes each."""
    unknown = b"\x01\xff\xff\xff\xff\xff\xff\xff"
    header = b"\x1a\x45\xdf\xa3\x87\x42\x82\x84webm"  # EBML with DocType "webm"
    cluster = b"\x1f\x43\xb6\x75" + unknown + b"\xe7\x81\x00" + b"\xa3\x80" * blocks
    return header + b"\x18\x53\x80\x67" + unknown + cluster


async def audio_seconds(client: httpx.AsyncClient, thread_id: str) -> list[float]:
    """The audioInSeconds of every message of the thread."""
    thread = await Threads(client).get(thread_id)
    return [message["usage"]["audioInSeconds"] for message in thread["messages"]]


async def test_attack_shaped_webms_are_counted_sanely_while_replies_go_on(
    fake: FakeOpenAI, client: httpx.AsyncClient
) -> None:
    audio = hostile_webm(EMPTY_BLOCKS)
    threads = Threads(client)
    thread_ids = [await threads.create() for _ in range(3)]
    mark = marker()
    fake.script(
        {"kind": "transcription", "transcript": f"hello {mark}", "times": 3},
        {"match": mark, "text": "Still here.", "times": 4},
    )
    uploads: dict[str, httpx.Response] = {}

    async def upload(thread_id: str) -> None:
        uploads[thread_id] = await post_form(client, thread_id, audio)

    with anyio.fail_after(60):
        async with anyio.create_task_group() as group:
            for thread_id in thread_ids:
                group.start_soon(upload, thread_id)
            _, _, reply_id, events = await ask(client, threads, mark, timeout=30.0)

    row = events[-1].json
    assert (row["id"], row["status"], row["text"]) == (reply_id, "complete", "Still here.")
    assert [posted(uploads[t]).transcript for t in thread_ids] == [f"hello {mark}"] * 3
    # The fake whisper hears a non-WAV upload as 16 kHz 16-bit mono: its size / 32,000 bytes.
    heard = round(len(audio) / 32_000, 3)
    for thread_id in thread_ids:
        assert (await audio_seconds(client, thread_id))[0] == heard


@requires_espeak
async def test_a_wav_that_lies_about_its_byte_rate_is_counted_by_its_samples(
    fake: FakeOpenAI, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    real = Recordings(tmp_path).audio("wav")
    audio = bytearray(real)
    struct.pack_into("<I", audio, audio.find(b"fmt ") + 16, 1)  # byte_rate = 1
    thread_id = await Threads(client).create()
    fake.script({"kind": "transcription", "transcript": f"hello {marker()}"})

    posted(await post_form(client, thread_id, bytes(audio)))

    assert (await audio_seconds(client, thread_id))[0] == wav_seconds(real)
