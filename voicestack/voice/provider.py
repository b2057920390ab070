"""Speech-to-text and text-to-speech calls to OpenAI-compatible providers.

Both go through `ChatProvider.request`: the same kind of client, timeout, retries and error
messages as the chat. Each has a provider of its own (voice/capabilities.py), which by default
is the chat's server, so a voice server needs no configuration of its own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from voicestack.agent.llm import ChatProvider, ProviderError
from voicestack.agent.llm_errors import answered_instead, shortened
from voicestack.agent.llm_wire import media_type
from voicestack.voice.formats import AudioFormat
from voicestack.voice.pcm import NotPcm, Pcm

if TYPE_CHECKING:
    import openai

# Only whisper models answer verbose_json (with the audio's duration); the gpt-4o transcribe
# models answer json, whose usage carries the duration when the provider bills by it.
_VERBOSE_PREFIX = "whisper"


@dataclass(frozen=True, slots=True)
class Transcript:
    """What the provider heard, and how many seconds of audio it says it heard, if it says."""

    text: str
    duration_s: float | None


def _is_json(kind: str) -> bool:
    """JSON as the SDK reads it: application/json, text/json, application/problem+json..."""
    return kind.endswith("json")


def _wrong_answer(provider: ChatProvider, answered: str, wanted: str) -> ProviderError:
    message = answered_instead(provider.settings.role, provider.where, answered, wanted)
    return ProviderError("provider_bad_response", message)


def _json_object(text: str) -> dict[str, Any] | None:
    if not text.lstrip().startswith("{"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _field(result: Any, name: str) -> Any:
    return result.get(name) if isinstance(result, dict) else getattr(result, name, None)


def _reported_duration(result: Any) -> float | None:
    duration = _field(result, "duration")
    if duration is None:
        usage = _field(result, "usage")
        if _field(usage, "type") == "duration":
            duration = _field(usage, "seconds")
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
            answer = await client.audio.transcriptions.with_raw_response.create(
                model=self.model,
                file=(f"{name}.{fmt.extension}", audio, fmt.content_type),
                **options,
            )
            kind = media_type(answer.headers)
            if _is_json(kind):
                return answer.parse()
            if kind == "text/plain":  # the transcript alone (or JSON labelled so)
                text = answer.text.strip()
                return _json_object(text) or text
            raise _wrong_answer(self.provider, kind, "a transcription")

        result = await self.provider.request(self.model, send)
        if isinstance(result, str):
            return Transcript(result, None)
        text = _field(result, "text")
        if not isinstance(text, str):
            raise self._without_text(result)
        return Transcript(text, _reported_duration(result))

    def _without_text(self, result: Any) -> ProviderError:
        # Some servers (whisper.cpp's) answer a failure as 200 with {"error": "..."}.
        error = _field(result, "error")
        said = _field(error, "message") if not isinstance(error, str) else error
        if not isinstance(said, str) or not said.strip():
            return _wrong_answer(self.provider, "JSON with no text", "a transcription")
        role, where = self.provider.settings.role.name, self.provider.where
        failed = f"The {role} provider at {where} failed: {shortened(said)}."
        return ProviderError("provider_error", failed)


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
            answer = await client.audio.speech.with_raw_response.create(
                model=self.model,
                voice=voice or self.voice,
                input=text,
                response_format=response_format,  # type: ignore[arg-type]
            )
            kind = media_type(answer.headers)
            if kind.startswith("text/") or _is_json(kind):
                raise _wrong_answer(self.provider, kind, "audio")
            audio: bytes = answer.content
            if not audio:
                raise _wrong_answer(self.provider, "an empty body", "audio")
            return audio

        return await self.provider.request(self.model, send)
