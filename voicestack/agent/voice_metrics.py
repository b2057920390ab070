"""The `voice` metrics of a reply spoken in a live conversation (DESIGN §9), saved on its row.

The voice layer measures a turn (end of speech, transcript, first token, first audio) and hands
the finished metrics here; they are announced with the row, so every watcher sees them.
"""

from __future__ import annotations

from typing import Any

from voicestack import jsoncodec
from voicestack.agent.records import emit_message
from voicestack.store.db import WriteDB

VOICE_KEYS = (
    "endOfSpeechToTranscriptMs",
    "transcriptToFirstTokenMs",
    "firstTokenToFirstAudioMs",
    "voiceToVoiceMs",
    "audioInSeconds",
    "audioOutSeconds",
    "interrupted",
)


def save_voice_metrics(db: WriteDB, message_id: str, voice: dict[str, Any]) -> bool:
    """Set the reply's `voice` and announce its row; False when the message is gone."""
    missing = set(VOICE_KEYS) ^ set(voice)
    assert not missing, f"voice metrics must have exactly the keys of DESIGN §9: {missing}"
    changed = db.execute(
        "UPDATE messages SET voice = ? WHERE id = ? AND role = 'assistant'",
        (jsoncodec.dumps(voice).decode(), message_id),
    ).changes
    if not changed:
        return False
    emit_message(db, message_id)
    return True
