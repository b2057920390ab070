"""Speaks a streaming reply sentence by sentence, in order, without slowing its text down.

The Reply hands the Speaker every piece of text it has saved; complete sentences go into a queue
that one background task per reply works through: synthesize, then store the audio as a `files`
row and announce it with a `speech` event in the same transaction. The text stream never waits
on speech; the reply waits for the queue to drain before it is marked complete, so every
`speech` event of a reply comes before its final `message` event.
"""

from __future__ import annotations

import asyncio
import logging

from voicestack.agent.agents import Agents
from voicestack.agent.llm import ProviderError
from voicestack.agent.records import emit
from voicestack.agent.reply_parts import add_speech
from voicestack.agent.reply_state import Claim, still_streaming
from voicestack.store.db import WriteDB
from voicestack.store.store import Store
from voicestack.voice.duration import audio_duration
from voicestack.voice.files import Audio, insert_file
from voicestack.voice.formats import detect_audio, format_named
from voicestack.voice.provider import Synthesizer
from voicestack.voice.sentences import SentenceSplitter, speakable

log = logging.getLogger(__name__)

_OCTET_STREAM = "application/octet-stream"


def save_speech(db: WriteDB, claim: Claim, seq: int, text: str, chars: int, audio: Audio) -> bool:
    """Store one spoken sentence, add it to the reply's usage and announce it on the feed.

    False (and nothing saved) when the reply was stopped meanwhile: then speaking stops too.
    """
    if not still_streaming(db, claim.message_id):
        return False
    file_id = insert_file(db, claim.thread_id, claim.message_id, "speech", audio)
    add_speech(db, claim.message_id, chars, audio.duration_s or 0.0)
    data = {"messageId": claim.message_id, "seq": seq, "fileId": file_id, "text": text}
    emit(db, claim.thread_id, "speech", claim.message_id, data)
    return True


class Speaker:
    """Speaks one reply: `feed` it saved text, `drain` at the end, `discard` if it stops."""

    def __init__(
        self, claim: Claim, store: Store, synthesizer: Synthesizer, voice: str | None = None
    ) -> None:
        self.claim = claim
        self._store = store
        self._synthesizer = synthesizer
        self._voice = voice
        self._splitter = SentenceSplitter()
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._seq = 0
        self._task = asyncio.create_task(self._work(), name=f"voicestack-speech-{claim.message_id}")

    def feed(self, text: str) -> None:
        """Queue the sentences `text` completes; returns at once."""
        for sentence in self._splitter.add(text):
            self._queue.put_nowait(sentence)

    async def drain(self) -> None:
        """Speak what is left, including an unterminated last sentence; wait until all is saved."""
        rest = self._splitter.flush()
        if rest:
            self._queue.put_nowait(rest)
        self._queue.put_nowait(None)
        try:
            await asyncio.shield(self._task)
        except asyncio.CancelledError:
            self.discard()
            raise

    def discard(self) -> None:
        """Stop speaking at once (the reply was stopped or failed); nothing more is saved."""
        self._task.cancel()

    async def _work(self) -> None:
        while (sentence := await self._queue.get()) is not None:
            try:
                if not await self._speak(sentence):
                    return
            except Exception:
                # A speech failure never fails the reply: that sentence is not spoken.
                log.exception("could not save speech of reply %s", self.claim.message_id)

    async def _speak(self, sentence: str) -> bool:
        """Synthesize and save one sentence; False once the reply was stopped."""
        spoken = speakable(sentence)
        if not spoken:
            return True
        try:
            data = await self._synthesizer.synthesize(spoken, self._voice)
        except ProviderError as exc:
            log.warning(
                "could not speak a sentence of reply %s (%s): %s",
                self.claim.message_id,
                exc.code,
                exc.message,
            )
            return True
        audio = await asyncio.to_thread(self._audio, data)
        seq = self._seq + 1
        saved = await self._store.write(
            lambda db: save_speech(db, self.claim, seq, sentence, len(spoken), audio)
        )
        if saved.value:
            self._seq = seq
        return bool(saved.value)

    def _audio(self, data: bytes) -> Audio:
        fmt = detect_audio(data) or format_named(self._synthesizer.audio_format)
        duration = audio_duration(data, fmt) if fmt else None
        return Audio.of(data, fmt.content_type if fmt else _OCTET_STREAM, duration)


class SpeakerFactory:
    """Makes the Speaker of each reply that was asked to speak (the runner's hook)."""

    def __init__(
        self, store: Store, synthesizer: Synthesizer, agents: Agents | None = None
    ) -> None:
        self._store = store
        self._synthesizer = synthesizer
        self._agents = agents

    def __call__(self, claim: Claim) -> Speaker | None:
        """A Speaker for `claim` in its agent's voice, or None when the reply is not to be
        spoken."""
        if not claim.speak:
            return None
        agent = self._agents.get(claim.agent) if self._agents is not None else None
        voice = agent.voice if agent is not None else None
        return Speaker(claim, self._store, self._synthesizer, voice)
