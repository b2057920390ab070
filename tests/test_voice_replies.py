"""Voice end to end: real speech posted to `POST /voice` becomes the user's message, a streamed
reply, and the reply's sentences spoken in order while it streams, all watched on the feed.

The server is shared with the other reply tests; each test works in threads of its own and
matches its chat plans on a marker that its scripted transcript carries.
"""

from __future__ import annotations

import io
import wave

import httpx
import pytest

from tests.support.agent import (
    Threads,
    drain,
    ended,
    feed,
    marker,
    read_until,
    snapshot,
    streamed,
)
from tests.support.server import ServerProcess
from tests.support.voice import (
    CONVERSIONS,
    STORED_TYPE,
    Recordings,
    events_outline,
    post_form,
    post_json,
    posted,
    requires_espeak,
    sha256,
    speech_events,
    stored_files,
    wav_seconds,
)
from voicestack.testing.fake_openai import FakeOpenAI

pytestmark = [pytest.mark.anyio, requires_espeak, pytest.mark.agent_server()]

SENTENCES = ["It is sunny in Paris.", "The wind is calm!", "Enjoy your day."]
ANSWER = " ".join(SENTENCES)
NO_USAGE = {
    "promptTokens": 0,
    "completionTokens": 0,
    "toolCalls": 0,
    "wallMs": 0,
    "audioInSeconds": 0.0,
    "speechChars": 0,
    "speechSeconds": 0.0,
    "unreportedSteps": 0,
    "costUsd": None,
}


async def test_a_spoken_question_gets_a_reply_spoken_sentence_by_sentence(
    fake: FakeOpenAI,
    client: httpx.AsyncClient,
    threads: Threads,
    server: ServerProcess,
    recordings: Recordings,
) -> None:
    audio = recordings.audio("wav")
    mark = marker()
    transcript = f"What is the weather like in Paris today {mark}?"
    fake.script(
        {"kind": "transcription", "transcript": transcript, "expect_sha256": sha256(audio)},
        # Slow enough that the first sentence is spoken long before the text is finished.
        {"match": mark, "text": ANSWER, "tokens_per_second": 12},
    )
    thread_id = await threads.create()

    async with feed(client, thread_id) as stream:
        await snapshot(stream)
        voice = posted(
            await post_form(
                client,
                thread_id,
                audio,
                filename="question.txt",
                content_type="text/plain",
                speak="true",
            )
        )
        events = await read_until(stream, ended(voice.reply_id), timeout=15)

    assert voice.transcript == transcript
    shape = events_outline(events)
    assert shape[:3] == [
        ("message", voice.message_id, "complete"),
        ("message", voice.reply_id, "pending"),
        ("message", voice.reply_id, "streaming"),
    ]
    assert shape[-1] == ("message", voice.reply_id, "complete")
    assert {kind for kind, _, _ in shape[3:-1]} == {"delta", "speech"}
    assert streamed(events, voice.reply_id) == ANSWER

    spoken = speech_events(events)
    assert [(s["messageId"], s["seq"], s["text"]) for s in spoken] == [
        (voice.reply_id, n, sentence) for n, sentence in enumerate(SENTENCES, start=1)
    ]
    # Each sentence is announced only after the deltas that complete it, and the first one
    # while the reply is still streaming.
    for speech in spoken:
        at = events.index(next(e for e in events if e.event == "speech" and e.json == speech))
        assert speech["text"] in streamed(events[:at], voice.reply_id)
    first_speech = shape.index(("speech", voice.reply_id, SENTENCES[0]))
    last_delta = max(i for i, (kind, _, _) in enumerate(shape) if kind == "delta")
    assert first_speech < last_delta

    # The transcription got exactly the bytes posted, named by their real format.
    [heard] = fake.requests("transcription")
    assert heard["body"]["model"] == "gpt-4o-mini-transcribe"
    assert heard["body"]["response_format"] == "json"
    assert heard["body"]["file"] == {
        "filename": "recording.wav",
        "content_type": "audio/wav",
        "bytes": len(audio),
        "sha256": sha256(audio),
    }
    said = fake.requests("speech")
    assert [
        (r["body"]["input"], r["body"]["model"], r["body"]["voice"], r["body"]["response_format"])
        for r in said
    ] == [(sentence, "gpt-4o-mini-tts", "alloy", "mp3") for sentence in SENTENCES]

    # Every spoken sentence is a file of real audio, served whole or in ranges.
    clips = []
    for speech in spoken:
        response = await client.get(f"/api/files/{speech['fileId']}")
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "audio/wav"  # what the fake really returns
        assert response.headers["accept-ranges"] == "bytes"
        with wave.open(io.BytesIO(response.content)) as clip:
            assert (clip.getnchannels(), clip.getframerate()) == (1, 24_000)
        clips.append(response.content)
    first = clips[0]
    ranged = await client.get(f"/api/files/{spoken[0]['fileId']}", headers={"Range": "bytes=0-43"})
    assert ranged.status_code == 206
    assert ranged.headers["content-range"] == f"bytes 0-43/{len(first)}"
    assert ranged.headers["content-length"] == "44"
    assert ranged.content == first[:44]
    tail = await client.get(f"/api/files/{spoken[0]['fileId']}", headers={"Range": "bytes=-100"})
    assert tail.status_code == 206
    assert (
        tail.headers["content-range"] == f"bytes {len(first) - 100}-{len(first) - 1}/{len(first)}"
    )
    assert tail.content == first[-100:]

    # The upload is kept byte for byte, with the type its bytes say.
    upload = await client.get(f"/api/files/{voice.file_id}")
    assert (upload.status_code, upload.headers["content-type"]) == (200, "audio/wav")
    assert upload.content == audio

    # Usage: seconds heard on the question, characters and seconds spoken on the answer.
    thread = await threads.get(thread_id)
    question, answer = thread["messages"]
    heard_seconds = wav_seconds(audio)
    assert question == {
        "id": voice.message_id,
        "threadId": thread_id,
        "role": "user",
        "text": transcript,
        "status": "complete",
        "error": None,
        "createdAt": question["createdAt"],
        "updatedAt": question["createdAt"],
        "order": 1,
        "author": server.user_id(),
        "authorName": "admin",
        "agent": None,
        "replyTo": None,
        "audioFileId": voice.file_id,
        "usage": {**NO_USAGE, "audioInSeconds": heard_seconds},
        "voice": None,
    }
    assert question == events[0].json
    spoken_seconds = round(sum(wav_seconds(clip) for clip in clips), 3)
    assert answer["audioFileId"] is None
    assert answer["usage"] == {
        **answer["usage"],
        "speechChars": len("".join(SENTENCES)),
        "speechSeconds": spoken_seconds,
        "audioInSeconds": 0.0,
    }
    assert answer["voice"] is None  # a `/voice` reply is not a live turn
    assert answer == events[-1].json
    assert thread["usage"]["audioInSeconds"] == heard_seconds
    assert thread["usage"]["speechChars"] == len("".join(SENTENCES))
    assert thread["usage"]["speechSeconds"] == spoken_seconds

    files = stored_files(server.db_path, thread_id)
    assert [(f["kind"], f["message_id"]) for f in files] == [
        ("upload", voice.message_id),
        *[("speech", voice.reply_id)] * 3,
    ]
    assert files[0]["sha256"] == sha256(audio)
    assert files[0]["duration_s"] == heard_seconds


async def test_the_json_form_takes_base64_and_the_reply_sees_the_conversation(
    fake: FakeOpenAI, client: httpx.AsyncClient, threads: Threads, recordings: Recordings
) -> None:
    audio = recordings.audio("ogg")
    mark = marker()
    fake.script(
        {"kind": "transcription", "transcript": f"first {mark}"},
        {"kind": "transcription", "transcript": f"second {mark}", "expect_sha256": sha256(audio)},
        {"match": f"first {mark}", "text": "One."},
        {"match": f"second {mark}", "text": "Two."},
    )
    thread_id = await threads.create()

    async with feed(client, thread_id) as stream:
        await snapshot(stream)
        first = posted(await post_json(client, thread_id, audio))
        await read_until(stream, ended(first.reply_id))
        second = posted(await post_json(client, thread_id, audio, language="en"))
        events = await read_until(stream, ended(second.reply_id))

    assert (first.transcript, second.transcript) == (f"first {mark}", f"second {mark}")
    assert speech_events(events) == []  # not asked to speak
    assert fake.requests("speech") == []
    heard = fake.requests("transcription")
    assert [r["body"].get("language") for r in heard] == [None, "en"]
    assert heard[1]["body"]["file"]["filename"] == "recording.ogg"
    [_, last_chat] = [r["body"]["messages"] for r in fake.requests("chat")]
    assert last_chat[1:] == [
        {"role": "user", "content": f"first {mark}"},
        {"role": "assistant", "content": "One."},
        {"role": "user", "content": f"second {mark}"},
    ]
    thread = await threads.get(thread_id)
    assert [m["audioFileId"] for m in thread["messages"]] == [
        first.file_id,
        None,
        second.file_id,
        None,
    ]
    upload = await client.get(f"/api/files/{second.file_id}")
    assert (upload.headers["content-type"], upload.content) == ("audio/ogg", audio)


@pytest.mark.parametrize("fmt", sorted(CONVERSIONS))
async def test_every_recording_format_is_taken_by_its_bytes(
    fake: FakeOpenAI, client: httpx.AsyncClient, threads: Threads, recordings: Recordings, fmt: str
) -> None:
    audio = recordings.audio(fmt)
    fake.script({"kind": "transcription", "transcript": "hello", "expect_sha256": sha256(audio)})
    thread_id = await threads.create()

    async with feed(client, thread_id) as stream:
        await snapshot(stream)
        # The file name and type lie; the bytes do not.
        voice = posted(
            await post_form(
                client, thread_id, audio, filename="notes.txt", content_type="text/plain"
            )
        )
        await read_until(stream, ended(voice.reply_id))

    extension = CONVERSIONS[fmt][1].rsplit(".", 1)[1]
    extension = {"opus": "ogg"}.get(extension, extension)
    [heard] = fake.requests("transcription")
    assert heard["body"]["file"]["filename"] == f"recording.{extension}"
    assert heard["body"]["file"]["content_type"] == STORED_TYPE[fmt]
    upload = await client.get(f"/api/files/{voice.file_id}")
    assert (upload.headers["content-type"], upload.content) == (STORED_TYPE[fmt], audio)
    seconds = (await threads.get(thread_id))["messages"][0]["usage"]["audioInSeconds"]
    assert seconds == pytest.approx(wav_seconds(recordings.audio("wav")), abs=0.1)


async def test_a_sentence_that_cannot_be_spoken_is_skipped_and_the_reply_completes(
    fake: FakeOpenAI,
    client: httpx.AsyncClient,
    threads: Threads,
    server: ServerProcess,
    recordings: Recordings,
) -> None:
    mark = marker()
    fake.script(
        {"kind": "transcription", "transcript": f"tell me {mark}"},
        {"match": mark, "text": ANSWER},
        {"kind": "speech", "match": SENTENCES[1], "error": {"status": 400, "message": "nope"}},
    )
    thread_id = await threads.create()
    log_start = server.log_size()

    async with feed(client, thread_id) as stream:
        await snapshot(stream)
        voice = posted(await post_form(client, thread_id, recordings.audio("wav"), speak="true"))
        events = await read_until(stream, ended(voice.reply_id))

    assert [(s["seq"], s["text"]) for s in speech_events(events)] == [
        (1, SENTENCES[0]),
        (2, SENTENCES[2]),
    ]
    final = events[-1].json
    assert (final["status"], final["text"], final["error"]) == ("complete", ANSWER, None)
    assert final["usage"]["speechChars"] == len(SENTENCES[0]) + len(SENTENCES[2])
    assert "could not speak a sentence of reply" in server.log(log_start)


async def test_speech_stops_with_a_cancelled_reply(
    fake: FakeOpenAI,
    client: httpx.AsyncClient,
    threads: Threads,
    server: ServerProcess,
    recordings: Recordings,
) -> None:
    mark = marker()
    fake.script(
        {"kind": "transcription", "transcript": f"talk {mark}"},
        {"match": mark, "text": ANSWER + " More words follow here.", "tokens_per_second": 4},
        # The first sentence's speech is still being made when the reply is cancelled.
        {"kind": "speech", "match": SENTENCES[0], "hang_s": 1.0},
    )
    thread_id = await threads.create()

    async with feed(client, thread_id) as stream:
        await snapshot(stream)
        voice = posted(await post_form(client, thread_id, recordings.audio("wav"), speak="true"))
        await read_until(stream, lambda e: e.event == "delta" and "." in e.json["text"])
        await threads.cancel(thread_id)
        events = await read_until(stream, ended(voice.reply_id))
        later = await drain(stream, 1.5)  # past the moment the hanging speech would answer

    assert events[-1].json["status"] == "interrupted"
    assert speech_events(events + later) == []
    assert [f["kind"] for f in stored_files(server.db_path, thread_id)] == ["upload"]


async def test_a_server_stopped_while_speaking_exits_cleanly(
    fake: FakeOpenAI, start_agent_server, recordings: Recordings
) -> None:
    own = start_agent_server(fake.api_base)
    mark = marker()
    fake.script(
        {"kind": "transcription", "transcript": f"long {mark}"},
        {"match": mark, "text": ANSWER},
        {"kind": "speech", "hang_s": 30, "times": None},  # every sentence: still being spoken
    )
    async with own.client() as client:
        thread_id = await Threads(client).create()
        async with feed(client, thread_id) as stream:
            await snapshot(stream)
            voice = posted(
                await post_form(client, thread_id, recordings.audio("wav"), speak="true")
            )
            # The whole text has streamed; its speech hangs, so the reply is not complete.
            await read_until(stream, lambda e: streamed([e], voice.reply_id).endswith("day."))

    assert own.stop() == 0
    own.start()
    async with own.client() as client:
        reply = (await Threads(client).get(thread_id))["messages"][1]
    assert (reply["status"], reply["text"], reply["usage"]["speechChars"]) == (
        "interrupted",
        ANSWER,
        0,
    )
    assert [f["kind"] for f in stored_files(own.db_path, thread_id)] == ["upload"]
