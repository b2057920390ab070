"""Live conversations on an edge (DESIGN §12): the audio stays near the client.

A pipeline conversation (`GET /api/threads/{id}/audio`) runs here, as a VoiceSession: turn
detection, resampling and the reply's paced audio happen on the edge, and the thread is followed
through this edge's shared stream of it, like any other client of the thread. What the session
saves, and the sentence audio it reads, go to the primary with the client's credentials
(PrimaryRecords, answered by voicestack/http/voice_records.py): each turn's recording once, its
text and reply, and how each reply ended. A conversation relayed to a speech-to-speech model
(the thread's agent's `voice_mode` is `realtime`) holds the provider's connection, so it runs on
the primary, and the edge relays its socket there (edge_sockets.py); so is any socket the
primary refuses, so that it is refused exactly as a single server refuses it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from typing import Any

from starlette.websockets import WebSocket

from voicestack import jsoncodec
from voicestack.agent.llm import ProviderError
from voicestack.functions.errors import FunctionError
from voicestack.http.audio import SocketClient, live_socket
from voicestack.reactive.streams import Stream
from voicestack.scale.edge import Edge
from voicestack.scale.edge_sockets import CLOSE_TRY_AGAIN, SocketRelay, socket_request
from voicestack.scale.edge_streams import BadToken, credential_key, join_feed, with_query_token
from voicestack.scale.envelope import Headers, RequestEnvelope, ResponseEnvelope
from voicestack.scale.link import PrimaryUnavailable
from voicestack.voice.realtime import codec
from voicestack.voice.realtime.metrics import TurnClock
from voicestack.voice.realtime.records import ReplyEnd, SavedTurn, pcm_seconds
from voicestack.voice.realtime.session import SessionSettings, VoiceSession
from voicestack.voice.realtime.turns import TurnSettings
from voicestack.voice.realtime.wire import CLOSE_NOT_FOUND, ProtocolError, Start

log = logging.getLogger(__name__)

AUDIO_SECONDS_HEADER = b"voicestack-audio-seconds"
# Tries of a reply's end when the primary is away for a moment (its metrics and cut text).
_REPLY_END_TRIES = 5
_REPLY_END_WAIT_S = 1.0


def _error(answer: ResponseEnvelope) -> FunctionError:
    """A primary's refusal as the FunctionError a session reports to its client."""
    try:
        error = json.loads(answer.body)["error"]
        return FunctionError(str(error["code"]), str(error["message"]), answer.status)
    except (ValueError, KeyError, TypeError):
        return FunctionError("primary_error", f"The primary answered {answer.status}.", 502)


class PrimaryRecords:
    """TurnRecords (voicestack/voice/realtime/records.py) kept by the primary, asked with the
    conversation's client's credentials."""

    def __init__(self, edge: Edge, credentials: RequestEnvelope, thread_id: str) -> None:
        self._edge = edge
        self._credentials = credentials
        self._base = f"/api/threads/{thread_id}/audio"

    async def _call(
        self, method: str, path: str, body: bytes = b"", headers: Headers | None = None
    ) -> ResponseEnvelope:
        request = dataclasses.replace(
            self._credentials,
            method=method,
            path=path,
            query_string=b"",
            headers=[*self._credentials.headers, *(headers or [])],
            body=body,
        )
        try:
            return await self._edge.link.call(request)
        except PrimaryUnavailable as exc:
            raise FunctionError(
                "primary_unavailable", f"The primary is not reachable now: {exc}.", 503
            ) from None

    async def _call_json(self, path: str, value: dict[str, Any]) -> ResponseEnvelope:
        content_type = (b"content-type", b"application/json")
        return await self._call("POST", path, jsoncodec.dumps(value), [content_type])

    @staticmethod
    def _turn(answer: ResponseEnvelope) -> SavedTurn | None:
        if answer.status not in (200, 201):
            raise _error(answer)
        saved = json.loads(answer.body)
        if not saved.get("messageId"):
            return None
        return SavedTurn(str(saved["messageId"]), str(saved["replyId"]), str(saved["text"]))

    async def spoken_turn(self, pcm: bytes, clock: TurnClock) -> SavedTurn | None:
        """As TurnRecords.spoken_turn: the turn's WAV is transcribed and saved by the primary."""
        wav = codec.wav_of(pcm)
        seconds = pcm_seconds(pcm)
        if len(wav) > self._edge.link.max_payload() - 64 * 1024:
            raise FunctionError(
                "turn_too_long",
                f"A turn of {seconds:.0f} s does not fit one NATS message to the primary.",
                413,
            )
        header = (AUDIO_SECONDS_HEADER, f"{seconds:.3f}".encode())
        answer = await self._call("POST", f"{self._base}/turns", wav, [header])
        clock.transcribed(seconds)
        if answer.status == 502:
            error = json.loads(answer.body).get("error", {})
            if error.get("code") == "transcription_failed":
                raise ProviderError(
                    str(error.get("reason") or "provider_error"),
                    str(error.get("providerMessage") or error.get("message")),
                )
        return self._turn(answer)

    async def typed_turn(self, text: str) -> SavedTurn:
        """As TurnRecords.typed_turn."""
        saved = self._turn(await self._call_json(f"{self._base}/typed", {"text": text}))
        assert saved is not None
        return saved

    async def reply_ended(self, message_id: str, end: ReplyEnd, clock: TurnClock) -> None:
        """As TurnRecords.reply_ended; tried again while the primary is away for a moment."""
        path = f"{self._base}/replies/{message_id}"
        for attempt in range(_REPLY_END_TRIES):
            try:
                answer = await self._call_json(path, end.encode(clock))
            except FunctionError:
                answer = None
            if answer is not None and answer.status != 503:
                if answer.status != 204:
                    log.warning("reply %s: its end was refused: %s", message_id, answer.body[:200])
                return
            if attempt + 1 < _REPLY_END_TRIES:
                await asyncio.sleep(_REPLY_END_WAIT_S)
        log.warning("reply %s: its end could not be saved: no primary answered", message_id)

    async def sentence(self, file_id: str) -> tuple[bytes, str] | None:
        """As TurnRecords.sentence: the file, from the primary."""
        answer = await self._call("GET", f"/api/files/{file_id}")
        if answer.status != 200:
            return None
        content_type = answer.header(b"content-type") or b"application/octet-stream"
        return answer.body, content_type.decode("latin-1")


async def _voice_mode(edge: Edge, credentials: RequestEnvelope, thread_id: str) -> str | None:
    """How the thread's agent talks (`pipeline`, `realtime`), as the primary says to this
    client; None when the primary refuses the client or cannot answer."""
    ask = dataclasses.replace(
        credentials, method="GET", path=f"/api/threads/{thread_id}/audio/mode", query_string=b""
    )
    try:
        answer = await edge.link.call(ask)
    except PrimaryUnavailable:
        return None
    if answer.status != 200:
        return None
    mode = json.loads(answer.body).get("mode")
    return mode if isinstance(mode, str) else None


async def thread_audio(websocket: WebSocket) -> None:
    """GET /api/threads/{id}/audio on an edge: a pipeline conversation runs here; any other
    is relayed to the primary (see the module's docstring)."""
    edge: Edge = websocket.app.state.edge
    thread_id = websocket.path_params["thread_id"]
    credentials = socket_request(websocket)
    try:
        with_query_token(credentials, websocket.url.query)
        mode = await _voice_mode(edge, credentials, thread_id)
    except BadToken:
        mode = None
    if mode != "pipeline":
        await SocketRelay(edge.link, websocket).run(socket_request(websocket))
        return
    feed_opening = dataclasses.replace(
        credentials, path=f"/api/threads/{thread_id}/events", query_string=b""
    )

    async def open_feed() -> Stream:
        return await _thread_feed(edge, feed_opening)

    async def open_session(feed: Stream, start: Start, client: SocketClient) -> VoiceSession:
        settings = edge.settings
        turns = TurnSettings(
            settings.vad_threshold,
            settings.vad_silence_ms,
            settings.vad_min_speech_ms,
            settings.vad_energy_floor_dbfs,
        )
        session = VoiceSession(
            thread_id=thread_id,
            records=PrimaryRecords(edge, credentials, thread_id),
            feed=feed,
            settings=SessionSettings(turns, settings.min_interruption_ms),
            start=start,
            client=client,
            forget=edge.voice.discard,
        )
        edge.voice.add(session)
        return session

    await live_socket(websocket, open_feed, open_session)


async def _thread_feed(edge: Edge, opening: RequestEnvelope) -> Stream:
    """The conversation's thread feed: a client of this edge's shared stream of the thread."""
    joined = await join_feed(edge, opening, credential_key(opening), None)
    if not isinstance(joined, tuple):
        try:
            error = json.loads(bytes(joined.body))["error"]
            code, message = str(error["code"]), str(error["message"])
        except (ValueError, KeyError, TypeError):
            code, message = "primary_unavailable", "The thread's stream could not be opened."
        close = CLOSE_NOT_FOUND if joined.status_code == 404 else CLOSE_TRY_AGAIN
        raise ProtocolError(code, message, close)
    upstream, (member, outbox), _ = joined
    return Stream(outbox, lambda: upstream.leave(member, outbox))
