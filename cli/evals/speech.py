"""Audio for spoken (`say:`) turns: espeak-ng when it is installed, else an OpenAI-compatible
speech API (`--provider-base-url`, the judge's provider), asked for WAV."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import openai

from cli.errors import CliError
from cli.evals.judge import Provider

ESPEAK_TIMEOUT_S = 30.0
VOICE = "alloy"


class Speaker:
    """Turns text into a WAV recording; safe to share between threads."""

    def __init__(self, provider: Provider, model: str) -> None:
        self.espeak = shutil.which("espeak-ng")
        self.provider = provider
        self.model = model
        # Made here, not on first use: runs speak from several threads at once.
        self._client = provider.client() if self.espeak is None else None

    @property
    def source(self) -> str:
        """Where the audio comes from, for the person running the evals."""
        return "espeak-ng" if self.espeak else f"the speech model {self.model}"

    def speak(self, text: str) -> bytes:
        """`text` spoken, as WAV bytes; a CliError when it cannot be made."""
        if self.espeak is not None:
            return self._espeak(self.espeak, text)
        assert self._client is not None, "without espeak-ng the client is made up front"
        try:
            speech = self._client.audio.speech.create(
                model=self.model, voice=VOICE, input=text, response_format="wav"
            )
        except openai.OpenAIError as exc:
            raise CliError(
                f"Speech for a `say:` turn failed: {' '.join(str(exc).split())}"
            ) from None
        return speech.content

    def _espeak(self, espeak: str, text: str) -> bytes:
        with tempfile.TemporaryDirectory(prefix="voicestack-eval-") as directory:
            wav = Path(directory) / "turn.wav"
            try:
                subprocess.run(
                    [espeak, "-w", str(wav), "--", text],
                    check=True,
                    capture_output=True,
                    timeout=ESPEAK_TIMEOUT_S,
                )
            except (OSError, subprocess.SubprocessError) as exc:
                raise CliError(f"espeak-ng could not speak a `say:` turn: {exc}") from None
            return wav.read_bytes()

    def close(self) -> None:
        """Close the speech API's connections, if any were opened."""
        if self._client is not None:
            self._client.close()
