"""Speech-to-text and text-to-speech calls to OpenAI-compatible providers.

Both go through `ChatProvider.request`: the same kind of client, timeout, retries and error
messages as the chat. Each has a provider of its own (voice/capabilities.py), which by default
is the chat's server, so a voice server needs no configuration of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import openai

from voicestack.agent.llm import ChatProvider, ProviderError
from voicestack.voice.formats import AudioFormat
from voicestack.voice.pcm import NotPcm, Pcm

# Only whisper models answer verbose_json (with the audio's duration); the gpt-4o transcribe
# models answer json, whose usage carries the duration when the provider bills by it.
_VERBOSE_PREFIX = "whisper"


@dataclass(frozen=True, slots=True)
class Transcript:
    """What the provider heard, and how many seconds of audio it says it heard, if it says."""

    text: str
    duration_s: float | None


def _reported_duration(result: Any) -> float | None:
    duration = getattr(result, "duration", None)
    if duration is None:
        usage = getattr(result, "usage", None)
        if getattr(usage, "type", None) == "duration":
            duration = getattr(usage, "seconds", None)
    return float(duration) if isinstance(duration, int | float) else None


class Transcriber:
    """Turns recorded audio into text with `audio.transcriptions.create`."""

    def __init__(self, provider: ChatProvider, model: str) -> None:
        self.provider = provider
        self.model = model

    async def transcribe(
        self, audio: bytes, fmt: AudioFormat, name: str, language: str | None = None
    ) -> Transcript:
        """The transcript of `audio`; raises ProviderError when the provider fails."""
        verbose = self.model.startswith(_VERBOSE_PREFIX)
        options: dict[str, Any] = {"response_format": "verbose_json" if verbose else "json"}
        if language:
            options["language"] = language

        async def send(client: openai.AsyncOpenAI) -> Any:
            return await client.audio.transcriptions.create(
                model=self.model,
                file=(f"{name}.{fmt.extension}", audio, fmt.content_type),
                **options,
            )

        result = await self.provider.request(self.model, send)
        text = result if isinstance(result, str) else getattr(result, "text", "")
        return Transcript(text or "", _reported_duration(result))


class Synthesizer:
    """Turns text into speech with `audio.speech.create`: as the file to store, in
    `audio_format` (`pcm` is stored as WAV), or as raw samples for a live call."""

    def __init__(self, provider: ChatProvider, model: str, voice: str, audio_format: str) -> None:
        self.provider = provider
        self.model = model
        self.voice = voice
        self.audio_format = audio_format

    async def synthesize(self, text: str, voice: str | None = None) -> bytes:
        """The audio of `text` spoken (in `voice`, default the server's), as stored; raises
        ProviderError when the provider fails."""
        if self.audio_format == "pcm":
            return (await self.synthesize_pcm(text, voice)).wav()
        return await self._speech(text, self.audio_format, voice)

    async def synthesize_pcm(self, text: str, voice: str | None = None) -> Pcm:
        """The samples of `text` spoken, asked for as `pcm` so nothing needs decoding (a
        provider that answers a 16-bit mono WAV anyway is read by its header); raises
        ProviderError when the provider fails or answers other audio."""
        answer = await self._speech(text, "pcm", voice)
        try:
            return Pcm.answered(answer)
        except NotPcm as exc:
            raise ProviderError(
                "provider_bad_response",
                f"The speech provider at {self.provider.where} answered {exc} instead of 16-bit"
                " mono PCM; use a server that speaks response_format=pcm.",
            ) from None

    async def _speech(self, text: str, response_format: str, voice: str | None = None) -> bytes:
        async def send(client: openai.AsyncOpenAI) -> bytes:
            response = await client.audio.speech.create(
                model=self.model,
                voice=voice or self.voice,
                input=text,
                response_format=response_format,  # type: ignore[arg-type]
            )
            return response.content

        return await self.provider.request(self.model, send)
