"""Bad recordings and failed transcriptions get the one JSON error shape and leave nothing behind.

The server takes at most 1 MiB of audio (`--max-audio-mb 1`), so the size limit is cheap to
cross. "Nothing behind" is checked in the database file itself: no message, no `files` row.
"""

from __future__ import annotations

import asyncio
import base64
import time

import httpx
import pytest

from tests.support.agent import Threads
from tests.support.api import error_of
from tests.support.server import ServerProcess
from tests.support.voice import (
    FORM_HEADERS,
    Recordings,
    multipart_body,
    multipart_head,
    post_form,
    post_json,
    raw_upload,
    requires_espeak,
    stored_files,
)
from voicestack.testing.fake_openai import FakeOpenAI

pytestmark = [pytest.mark.anyio, requires_espeak, pytest.mark.agent_server("--max-audio-mb", "1")]

MiB = 1_048_576
MISSING = "thr_0000000000000000missing"
TOO_LARGE = {
    "code": "audio_too_large",
    "message": "The audio is over the 1 MiB limit (--max-audio-mb); send a shorter recording.",
}
EMPTY = {
    "code": "empty_audio",
    "message": "No audio was sent: post the recording as the multipart 'audio' file, "
    "or base64 in the JSON key 'audioB64'.",
}


async def assert_untouched(
    threads: Threads, server: ServerProcess, fake: FakeOpenAI, thread_id: str
) -> None:
    """The thread has no message and no file, and no reply was asked of the model."""
    assert (await threads.get(thread_id))["messages"] == []
    assert stored_files(server.db_path, thread_id) == []
    assert fake.requests("chat") == []


@pytest.mark.parametrize("form", ["no-part", "zero-bytes", "json-without-audio", "json-empty"])
async def test_no_audio_is_refused(
    fake: FakeOpenAI, client: httpx.AsyncClient, threads: Threads, server: ServerProcess, form: str
) -> None:
    thread_id = await threads.create()
    if form == "no-part":
        response = await post_form(client, thread_id, None)
    elif form == "zero-bytes":
        response = await post_form(client, thread_id, b"")
    elif form == "json-without-audio":
        response = await client.post("/voice", json={"threadId": thread_id})
    else:
        response = await client.post("/voice", json={"threadId": thread_id, "audioB64": ""})

    assert error_of(response, 400, "empty_audio") == EMPTY
    assert fake.requests("transcription") == []
    await assert_untouched(threads, server, fake, thread_id)


@pytest.mark.parametrize(
    "data",
    [b"This is a text file, not a recording.\n", b"\x89PNG\r\n\x1a\n" + b"\x00" * 100],
    ids=["text", "png"],
)
async def test_bytes_that_are_not_audio_are_refused(
    fake: FakeOpenAI,
    client: httpx.AsyncClient,
    threads: Threads,
    server: ServerProcess,
    data: bytes,
) -> None:
    thread_id = await threads.create()

    # Named and typed as WAV; the bytes say otherwise.
    response = await post_form(
        client, thread_id, data, filename="speech.wav", content_type="audio/wav"
    )

    assert error_of(response, 415, "unsupported_audio") == {
        "code": "unsupported_audio",
        "message": "The upload is not audio in a format voicestack takes: "
        "WAV, WebM, Ogg, MP3, M4A/MP4 or FLAC.",
    }
    assert fake.requests("transcription") == []
    await assert_untouched(threads, server, fake, thread_id)


async def test_an_unknown_thread_is_not_found(
    fake: FakeOpenAI, client: httpx.AsyncClient, recordings: Recordings
) -> None:
    for response in (
        await post_form(client, MISSING, recordings.audio("wav")),
        await post_json(client, MISSING, recordings.audio("wav")),
    ):
        assert error_of(response, 404, "thread_not_found") == {
            "code": "thread_not_found",
            "message": f"No thread has id {MISSING!r}.",
        }
    assert fake.requests("transcription") == []


async def test_audio_over_the_limit_is_refused_while_it_is_read(
    fake: FakeOpenAI, threads: Threads, server: ServerProcess
) -> None:
    """The upload is chunked and never finished: only a server that counts the audio part
    while it reads can answer it, since the body has not ended when the answer comes."""
    thread_id = await threads.create()
    head = multipart_head({"threadId": thread_id})

    answer = await raw_upload(server, head, send_bytes=MiB + 256 * 1024)

    assert (answer.status, answer.json) == (413, {"error": TOO_LARGE})
    # Answered while the body was still unfinished: the closing chunk was never sent.
    assert answer.sent <= MiB + 256 * 1024
    assert fake.requests("transcription") == []
    await assert_untouched(threads, server, fake, thread_id)


async def test_a_declared_length_over_the_limit_is_refused_before_the_body(
    fake: FakeOpenAI, threads: Threads, server: ServerProcess
) -> None:
    thread_id = await threads.create()
    head = multipart_head({"threadId": thread_id})

    started = time.monotonic()
    answer = await raw_upload(server, head, send_bytes=0, declared_length=50 * MiB)

    assert (answer.status, answer.json) == (413, {"error": TOO_LARGE})
    assert answer.sent == 0
    assert time.monotonic() - started < 5
    await assert_untouched(threads, server, fake, thread_id)


async def test_a_large_body_within_its_declared_length_is_cut_at_the_audio_limit(
    fake: FakeOpenAI, threads: Threads, server: ServerProcess
) -> None:
    """Content-Length passes the quick check (base64 room), the audio part itself does not."""
    thread_id = await threads.create()
    head = multipart_head({"threadId": thread_id})

    answer = await raw_upload(
        server, head, send_bytes=MiB + 128 * 1024, declared_length=len(head) + MiB + 300_000
    )

    assert (answer.status, answer.json) == (413, {"error": TOO_LARGE})


async def test_an_ordinary_client_reads_the_413_and_keeps_its_connection(
    fake: FakeOpenAI, client: httpx.AsyncClient, threads: Threads, server: ServerProcess
) -> None:
    """httpx sends the whole body before it reads: the server answers 413 and discards the rest
    of the body unread (never buffered), so the same connection serves the next request."""
    thread_id = await threads.create()
    body = multipart_body({"threadId": thread_id}, b"RIFF" + b"\x00" * (MiB + 10))

    response = await client.post("/voice", content=body, headers=FORM_HEADERS)
    assert error_of(response, 413, "audio_too_large") == TOO_LARGE
    json_form = {"threadId": thread_id, "audioB64": base64.b64encode(b"\x00" * (MiB + 1)).decode()}
    response = await client.post("/voice", json=json_form)
    assert error_of(response, 413, "audio_too_large") == TOO_LARGE

    assert (await client.get("/healthz")).status_code == 200
    await assert_untouched(threads, server, fake, thread_id)


@pytest.mark.parametrize(
    ("status", "reason"),
    [(400, "provider_bad_request"), (401, "provider_auth_failed")],
)
async def test_a_failed_transcription_saves_nothing(
    fake: FakeOpenAI,
    client: httpx.AsyncClient,
    threads: Threads,
    server: ServerProcess,
    recordings: Recordings,
    status: int,
    reason: str,
) -> None:
    fake.script({"kind": "transcription", "error": {"status": status, "message": "cannot hear"}})
    thread_id = await threads.create()

    response = await post_form(client, thread_id, recordings.audio("wav"), speak="true")

    error = error_of(response, 502, "transcription_failed")
    assert error["reason"] == reason
    assert error["message"].startswith(
        f"Transcription failed: The transcription provider at {fake.api_base} "
    )
    assert "cannot hear" in error["message"]
    assert len(fake.requests("transcription")) == 1
    await assert_untouched(threads, server, fake, thread_id)


async def test_an_unreachable_transcriber_saves_nothing(
    start_agent_server, threads: Threads, recordings: Recordings, fake: FakeOpenAI
) -> None:
    own = start_agent_server("http://127.0.0.1:9/v1", "--provider-retries", "0")
    async with own.client() as client:
        thread_id = await Threads(client).create()
        response = await post_form(client, thread_id, recordings.audio("wav"))

        error = error_of(response, 502, "transcription_failed")
        assert error["reason"] == "provider_unreachable"
        assert (await Threads(client).get(thread_id))["messages"] == []
    assert stored_files(own.db_path, thread_id) == []


async def test_without_a_provider_the_transcription_fails_clearly(
    shared_agent_server, recordings: Recordings
) -> None:
    async with shared_agent_server(None).client() as client:
        thread_id = await Threads(client).create()
        response = await post_json(client, thread_id, recordings.audio("wav"))

        assert error_of(response, 502, "transcription_failed") == {
            "code": "transcription_failed",
            "message": "Transcription failed: No transcription provider is configured: set"
            " --transcribe-base-url, or OPENAI_API_KEY or --openai-base-url, which it defaults"
            " to.",
            "reason": "provider_not_configured",
        }
        assert (await Threads(client).get(thread_id))["messages"] == []


@pytest.mark.parametrize("transcript", ["", "   \n\t "])
async def test_a_recording_with_no_speech_starts_no_reply(
    fake: FakeOpenAI,
    client: httpx.AsyncClient,
    threads: Threads,
    server: ServerProcess,
    recordings: Recordings,
    transcript: str,
) -> None:
    fake.script({"kind": "transcription", "transcript": transcript})
    thread_id = await threads.create()

    response = await post_form(client, thread_id, recordings.audio("wav"))

    assert error_of(response, 422, "no_speech") == {
        "code": "no_speech",
        "message": "No speech was heard in the recording; nothing was saved.",
    }
    await asyncio.sleep(0.2)  # a reply, had one been started, would have asked the model by now
    await assert_untouched(threads, server, fake, thread_id)


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"audioB64": "AAAA"}, [{"field": "threadId", "message": "Field required"}]),
        (
            {"threadId": "t", "audioB64": "AAAA", "speak": "loud"},
            [
                {
                    "field": "speak",
                    "message": "Input should be a valid boolean, unable to interpret input",
                }
            ],
        ),
        (
            {"threadId": "t", "audioB64": "not base64!"},
            [{"field": "audioB64", "message": "Invalid base64"}],
        ),
        (
            {"threadId": "t", "audioB64": "AAAA", "voice": "x"},
            [{"field": "voice", "message": "Extra inputs are not permitted"}],
        ),
    ],
    ids=["no-thread", "bad-speak", "bad-base64", "unknown-key"],
)
async def test_invalid_fields_are_named(
    client: httpx.AsyncClient, body: dict[str, str], fields: list[dict[str, str]]
) -> None:
    response = await client.post("/voice", json=body)

    assert error_of(response, 422, "invalid_args")["fields"] == fields


async def test_a_form_without_a_thread_is_invalid(
    client: httpx.AsyncClient, recordings: Recordings
) -> None:
    response = await post_form(client, None, recordings.audio("wav"))

    assert error_of(response, 422, "invalid_args")["fields"] == [
        {"field": "threadId", "message": "Field required"}
    ]


@pytest.mark.parametrize(
    ("content", "content_type", "status", "code"),
    [
        (b"--b\r\nbroken", "multipart/form-data; boundary=b", 400, "invalid_multipart"),
        (b"x", "multipart/form-data", 400, "invalid_multipart"),
        (b"RIFF....WAVE", "audio/wav", 415, "unsupported_media_type"),
        (b'{"threadId": ', "application/json", 400, "invalid_json"),
    ],
    ids=["unterminated-form", "no-boundary", "raw-audio", "broken-json"],
)
async def test_bodies_of_the_wrong_shape_are_refused(
    client: httpx.AsyncClient, content: bytes, content_type: str, status: int, code: str
) -> None:
    response = await client.post("/voice", content=content, headers={"content-type": content_type})

    error_of(response, status, code)


async def test_files_that_do_not_exist_or_ranges_past_the_end(
    fake: FakeOpenAI, client: httpx.AsyncClient, threads: Threads, recordings: Recordings
) -> None:
    assert error_of(await client.get("/api/files/file_nope"), 404, "file_not_found") == {
        "code": "file_not_found",
        "message": "No file has id 'file_nope'.",
    }
    audio = recordings.audio("wav")
    fake.script({"kind": "transcription", "transcript": "hi"})
    thread_id = await threads.create()
    response = await post_form(client, thread_id, audio)
    file_id = response.json()["fileId"]

    past = await client.get(f"/api/files/{file_id}", headers={"Range": f"bytes={len(audio)}-"})
    assert error_of(past, 416, "range_not_satisfiable")
    assert past.headers["content-range"] == f"bytes */{len(audio)}"
    several = await client.get(f"/api/files/{file_id}", headers={"Range": "bytes=0-1,4-5"})
    assert (several.status_code, several.content) == (200, audio)
