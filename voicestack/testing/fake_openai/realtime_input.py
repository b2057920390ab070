"""Input audio of a fake Realtime connection: appends, the VAD's turns, commits and clears."""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any

from voicestack.testing.fake_openai import realtime_conversation as conversation
from voicestack.testing.fake_openai.realtime_audio import decode, rate_of
from voicestack.testing.fake_openai.realtime_events import (
    DEFAULT_SILENCE_MS,
    Refuse,
    event,
    invalid,
    user_audio_item,
)
from voicestack.testing.fake_openai.realtime_script import Turn
from voicestack.testing.fake_openai.wire import new_id

if TYPE_CHECKING:
    from voicestack.testing.fake_openai.realtime_connection import Connection

_MIN_COMMIT_MS = 100


async def append(conn: Connection, message: dict[str, Any]) -> None:
    """input_audio_buffer.append: decode the audio, feed the VAD, act on the turns it hears."""
    audio = message.get("audio")
    try:
        raw = base64.b64decode(audio if isinstance(audio, str) else "", validate=True)
    except (binascii.Error, ValueError):
        raw = None
    if raw is None or not isinstance(audio, str):
        raise Refuse(
            invalid(
                "Invalid 'audio'. Expected base64-encoded audio bytes.",
                "invalid_value",
                "audio",
            )
        )
    codec = conn.view.codec("input")
    samples = decode(raw, codec)
    rate = rate_of(codec)
    conn.buffer_ms += len(samples) * 1000 / rate
    conn.state.update(
        conn.record,
        lambda r: r.update(input_audio_ms=r["input_audio_ms"] + len(samples) * 1000 // rate),
    )
    detection = conn.view.turn_detection()
    silence = conn.script.vad.silence_ms or int(
        (detection or {}).get("silence_duration_ms") or DEFAULT_SILENCE_MS
    )
    conn.vad.prefix_padding_ms = int((detection or {}).get("prefix_padding_ms") or 0)
    for heard in conn.vad.feed(samples, rate, silence):
        if detection is None:
            continue
        if heard.kind == "started":
            await speech_started(conn, heard.ms, detection)
        elif conn.speech_item is not None:
            item_id = conn.speech_item
            await conn.send(
                event(
                    "input_audio_buffer.speech_stopped",
                    conn.naming,
                    audio_end_ms=heard.ms,
                    item_id=item_id,
                )
            )
            await commit(
                conn, item_id, auto_respond=detection.get("create_response", True) is not False
            )


async def speech_started(conn: Connection, ms: int, detection: dict[str, Any]) -> None:
    """Announce speech (a new user item id) and cut the active response if the session lets
    speech interrupt."""
    conn.speech_item = new_id("item_", 21)
    await conn.send(
        event(
            "input_audio_buffer.speech_started",
            conn.naming,
            audio_start_ms=ms,
            item_id=conn.speech_item,
        )
    )
    if conn.active is not None and detection.get("interrupt_response", True) is not False:
        await conversation.stop_active(conn, "turn_detected")


async def commit(conn: Connection, item_id: str, auto_respond: bool) -> None:
    """Commit the buffer as the next scripted user turn: item events, its transcription, and
    (when `auto_respond` and the turn allow) the automatic response."""
    turn = conn.turns.pop(0) if conn.turns else Turn()
    item_ms = int(conn.buffer_ms)
    conn.committed_audio_ms += item_ms
    conn.buffer_ms, conn.speech_item = 0.0, None
    conn.vad.reset_floor()
    previous = conn.add_item(item_id, "user")
    await conn.send(
        event(
            "input_audio_buffer.committed",
            conn.naming,
            previous_item_id=previous,
            item_id=item_id,
        )
    )
    await conversation.item_added(conn, previous, user_audio_item(item_id))
    conn.last_said = turn.transcript
    conn.input_text_tokens += len(turn.transcript.split())
    heard = transcription(conn, item_id, turn, item_ms)
    if turn.late and auto_respond and turn.respond:
        await conversation.respond(conn, None, heard)
        return
    for message in heard:
        await conn.send(message)
    if auto_respond and turn.respond:
        await conversation.respond(conn, None, [])


def transcription(conn: Connection, item_id: str, turn: Turn, item_ms: int) -> list[dict[str, Any]]:
    """The input-transcription events of one committed turn (none when not asked for)."""
    wanted = conn.script.transcribe
    if wanted == "never" or (wanted == "configured" and not conn.view.transcribes()):
        return []
    where = {"item_id": item_id, "content_index": 0}
    prefix = "conversation.item.input_audio_transcription"
    if turn.fail is not None:
        return [event(f"{prefix}.failed", conn.naming, **where, error=turn.fail.model_dump())]
    words = turn.transcript.split(" ")
    deltas = [w if i == 0 else " " + w for i, w in enumerate(words) if turn.transcript]
    usage = {"type": "duration", "seconds": round(item_ms / 1000, 3)}
    return [
        *(event(f"{prefix}.delta", conn.naming, **where, delta=d) for d in deltas),
        event(f"{prefix}.completed", conn.naming, **where, transcript=turn.transcript, usage=usage),
    ]


async def manual_commit(conn: Connection, message: dict[str, Any]) -> None:
    """input_audio_buffer.commit: commit at least 100 ms of buffered audio, with no response."""
    if conn.buffer_ms < _MIN_COMMIT_MS:
        text = (
            "Error committing input audio buffer: buffer too small. Expected at least "
            f"{_MIN_COMMIT_MS}ms of audio, but buffer only has {conn.buffer_ms:.2f}ms "
            "of audio."
        )
        raise Refuse(invalid(text, "input_audio_buffer_commit_empty"))
    await commit(conn, conn.speech_item or new_id("item_", 21), auto_respond=False)


async def clear(conn: Connection, message: dict[str, Any]) -> None:
    """input_audio_buffer.clear: forget the buffered audio."""
    conn.buffer_ms, conn.speech_item = 0.0, None
    conn.vad.reset_floor()
    await conn.send(event("input_audio_buffer.cleared", conn.naming))
