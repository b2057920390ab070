"""A test app that announces `speech` events on a thread feed, as the voice route will.

The browser page's voice tests use it to make a spoken reply arrive without a speech provider;
the audio files themselves are served to the browser by the test.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from voicestack import MutationCtx, mutation
from voicestack.agent.records import emit


class SpeechArgs(BaseModel):
    """One spoken sentence of a reply."""

    model_config = ConfigDict(populate_by_name=True)

    thread_id: str = Field(alias="threadId")
    message_id: str = Field(alias="messageId")
    seq: int
    file_id: str = Field(alias="fileId")
    text: str


@mutation("web_test.speech")
def announce_speech(ctx: MutationCtx, args: SpeechArgs) -> dict[str, int]:
    """Append a `speech` event `{messageId, seq, fileId, text}` to the thread's feed."""
    data = {
        "messageId": args.message_id,
        "seq": args.seq,
        "fileId": args.file_id,
        "text": args.text,
    }
    return {"eventId": emit(ctx.db, args.thread_id, "speech", args.message_id, data)}
