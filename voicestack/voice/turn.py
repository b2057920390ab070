"""A transcribed recording saved as a turn: its audio, the user's message and the pending reply."""

from __future__ import annotations

from dataclasses import dataclass

from voicestack.agent.membership import require_thread
from voicestack.agent.threads import start_user_turn
from voicestack.identity import Caller
from voicestack.store.db import WriteDB
from voicestack.voice.files import Audio, insert_file, link_file


@dataclass(frozen=True, slots=True)
class VoiceTurn:
    """Everything `POST /voice` learned, ready to be saved in one transaction."""

    thread_id: str
    user: Caller | None
    transcript: str
    audio: Audio
    speak: bool


def save_voice_turn(db: WriteDB, turn: VoiceTurn) -> dict[str, str]:
    """Store the upload, the message transcribed from it and its reply, all or nothing.

    The message is saved exactly as `messages.send` saves a typed one, linked to its audio and
    carrying the seconds heard; the reply is `pending`, so the reply runner starts it on commit.
    """
    thread = require_thread(db, turn.thread_id, turn.user)
    file_id = insert_file(db, turn.thread_id, None, "upload", turn.audio)
    ids = start_user_turn(
        db,
        thread,
        turn.transcript,
        turn.user,
        audio_file_id=file_id,
        audio_in_seconds=turn.audio.duration_s or 0.0,
        speak=turn.speak,
    )
    link_file(db, file_id, ids["messageId"])
    return {**ids, "fileId": file_id}
