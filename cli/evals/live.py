"""`--voice realtime`: a spoken turn over the thread's audio socket, `GET /api/threads/{id}/audio`
(DESIGN §9), as a live conversation has it.

The recording is sent as 16 kHz PCM frames, faster than real time (the server's turn-taking
counts audio, not wall time), between silences long enough for its VAD to find the turn. A
thread reads the socket: the turn's transcript, the reply's id, and the reply's audio, which is
thrown away. The socket stays open until the reply has stopped, because closing it during a
reply would interrupt the reply.
"""

from __future__ import annotations

import contextlib
import io
import json
import queue
import threading
import time
import wave
from typing import Any

import numpy as np
import soxr
from websockets.exceptions import WebSocketException
from websockets.sync.client import ClientConnection, connect

from cli.errors import CliError

RATE = 16_000
FRAME_BYTES = 640  # 20 ms of 16-bit mono at 16 kHz
BURST = 25  # frames sent between two short pauses
LEAD_SILENCE_MS = 300
TAIL_SILENCE_MS = 1500  # beyond the server's --vad-silence-ms (550 by default)
WAIT_S = 60.0


def pcm16_16k(wav: bytes) -> bytes:
    """A WAV recording as 16-bit mono PCM at 16 kHz (the first channel of a stereo one)."""
    try:
        with wave.open(io.BytesIO(wav), "rb") as reader:
            channels, width, rate = (
                reader.getnchannels(),
                reader.getsampwidth(),
                reader.getframerate(),
            )
            frames = reader.readframes(reader.getnframes())
    except (wave.Error, EOFError) as exc:
        raise CliError(f"The speech for a `say:` turn is not a WAV recording ({exc}).") from None
    if width != 2:
        raise CliError(f"The speech for a `say:` turn has {8 * width}-bit samples, not 16-bit.")
    samples = np.frombuffer(frames[: len(frames) - len(frames) % (2 * channels)], dtype="<i2")
    mono = samples.reshape(-1, channels)[:, 0]
    if rate != RATE:
        mono = soxr.resample(mono, rate, RATE)
    return np.ascontiguousarray(mono, dtype="<i2").tobytes()


def _silence(ms: int) -> bytes:
    return bytes(RATE * ms // 1000 * 2)


class LiveTurn:
    """One spoken turn on its own audio socket."""

    def __init__(self, url: str, authorization: str | None) -> None:
        headers = {"Authorization": authorization} if authorization else None
        self.opened = contextlib.ExitStack()
        try:
            self.socket: ClientConnection = self.opened.enter_context(
                connect(url, additional_headers=headers)
            )
        except (OSError, WebSocketException) as exc:
            raise CliError(f"Cannot open the audio socket {url}: {exc}") from None
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.reader = threading.Thread(target=self._read, name="eval-audio", daemon=True)
        self.speech_stopped: float | None = None

    def _read(self) -> None:
        try:
            for message in self.socket:
                if isinstance(message, bytes):
                    continue  # the reply's audio
                event = json.loads(message)
                if event.get("type") == "user_speech_stopped" and self.speech_stopped is None:
                    self.speech_stopped = time.monotonic()
                self.events.put(event)
        except (OSError, WebSocketException, ValueError):
            pass
        self.events.put({"type": "closed"})

    def _next(self, *kinds: str) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT_S
        while True:
            left = deadline - time.monotonic()
            try:
                event = self.events.get(timeout=max(left, 0.01))
            except queue.Empty:
                raise CliError(
                    f"The audio socket sent no {' or '.join(kinds)} within {WAIT_S:g} s."
                ) from None
            if event["type"] in kinds:
                return event
            if event["type"] in ("error", "closed"):
                what = f"{event.get('code')}: {event.get('message')}" if "code" in event else ""
                raise CliError(f"The audio socket {'failed' if what else 'closed'} {what}".strip())

    def say(self, pcm: bytes) -> tuple[str, str, float]:
        """Send the turn; (its transcript, the reply's id, when the server heard it end)."""
        try:
            self._send(pcm)
        except (OSError, WebSocketException) as exc:
            if self.reader.ident is not None:
                self._next("turn")  # raises with the server's error event, if it sent one
            raise CliError(f"The audio socket closed while the turn was sent ({exc}).") from None
        transcript = str(self._next("transcript")["text"])
        reply_id = str(self._next("reply_started")["messageId"])
        return transcript, reply_id, self.speech_stopped or time.monotonic()

    def _send(self, pcm: bytes) -> None:
        self.socket.send(json.dumps({"type": "start", "sampleRate": RATE, "format": "pcm16"}))
        self.reader.start()
        self._next("ready")
        audio = _silence(LEAD_SILENCE_MS) + pcm + _silence(TAIL_SILENCE_MS)
        for n, start in enumerate(range(0, len(audio), FRAME_BYTES)):
            self.socket.send(audio[start : start + FRAME_BYTES])
            if n % BURST == BURST - 1:
                time.sleep(0.005)

    def finish(self) -> None:
        """Wait until the reply has stopped (its audio sent), then end the session."""
        try:
            self._next("reply_stopped")
        finally:
            self.close()

    def close(self) -> None:
        """Stop the session and close the socket."""
        with contextlib.suppress(OSError, WebSocketException):
            self.socket.send(json.dumps({"type": "stop"}))
        self.opened.close()
        if self.reader.is_alive():
            self.reader.join(WAIT_S)
