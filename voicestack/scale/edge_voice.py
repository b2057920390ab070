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

The calls carry only the client's own credentials (its token or sign-in cookie, with the CSRF
header the cookie needs: a cookie's socket must come from the page's own origin, as on one
server) and the header that marks them as the edge's own. A reply's end is saved in the
background, in order, so that a slow primary never holds up the conversation's audio. While no
primary answers, the socket stays open: each turn gets an `error` event (`primary_unavailable`),
and the thread's stream resyncs once one is back.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Coroutine
from typing import Any

from starlette.types import Scope
from starlette.websockets import WebSocket

from voicestack import jsoncodec
from voicestack.agent.llm import ProviderError
from voicestack.auth.sessions import CSRF_COOKIE, CSRF_HEADER, SESSION_COOKIE
from voicestack.functions.errors import FunctionError
from voicestack.http.audio import SocketClient, live_socket
from voicestack.http.signin_auth import request_cookies, same_origin
from voicestack.http.state import EDGE_CALL_HEADER
from voicestack.reactive.streams import Stream
from voicestack.scale.edge import Edge
from voicestack.scale.edge_relay import PrimaryRelayRecords, relay_plan, relay_session
from voicestack.scale.edge_sockets import CLOSE_TRY_AGAIN, SocketRelay, socket_request
from voicestack.scale.edge_streams import BadToken, credential_key, join_feed, with_query_token
from voicestack.scale.envelope import Headers, RequestEnvelope, ResponseEnvelope
from voicestack.scale.link import OPEN_TIMEOUT_S, PrimaryUnavailable
from voicestack.scale.primary_calls import call_as, refusal_of
from voicestack.scale.refused_credentials import credential_of, refused_error
from voicestack.voice.live_sessions import LiveSession
from voicestack.voice.realtime import codec
from voicestack.voice.realtime.metrics import TurnClock
from voicestack.voice.realtime.records import HUNG_UP, ReplyEnd, SavedTurn, pcm_seconds
from voicestack.voice.realtime.session import SessionSettings, VoiceSession
from voicestack.voice.realtime.wire import CLOSE_BAD_TOKEN, CLOSE_NOT_FOUND, ProtocolError, Start

log = logging.getLogger(__name__)

# Tries of a reply's end when the primary is away for a moment (its metrics and cut text).
_REPLY_END_TRIES = 5
_REPLY_END_WAIT_S = 1.0
# How long a quick call waits for the primary (a turn's waits for its transcription).
_QUICK_S = OPEN_TIMEOUT_S
# What of the client's handshake its calls carry: who it is and where it comes from.
_CREDENTIAL_HEADERS = frozenset({b"authorization", b"cookie", b"origin", b"host", b"user-agent"})
EDGE_CALL = (EDGE_CALL_HEADER.encode(), b"1")


class PrimaryRecords:
    """TurnRecords (voicestack/voice/realtime/records.py) kept by the primary, asked with the
    conversation's client's credentials."""

    def __init__(self, edge: Edge, credentials: RequestEnvelope, thread_id: str) -> None:
        self._edge = edge
        self.credentials = credentials
        self._base = f"/api/threads/{thread_id}/audio"
        self._ends: asyncio.Queue[tuple[str, ReplyEnd, TurnClock]] = asyncio.Queue()
        self._saving: asyncio.Task[None] | None = None
        # Turns the conversation stopped waiting for (it ended) while the primary saved them.
        self._abandoned: set[asyncio.Task[None]] = set()

    async def _call(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: Headers | None = None,
        timeout: float | None = _QUICK_S,
    ) -> ResponseEnvelope:
        edge_headers = [*(headers or []), EDGE_CALL]
        return await call_as(
            self._edge, self.credentials, method, path, body, edge_headers, timeout
        )

    async def _call_json(self, path: str, value: dict[str, Any]) -> ResponseEnvelope:
        content_type = (b"content-type", b"application/json")
        return await self._call("POST", path, jsoncodec.dumps(value), [content_type])

    @staticmethod
    def _turn(answer: ResponseEnvelope) -> SavedTurn | None:
        if answer.status not in (200, 201):
            raise refusal_of(answer)
        saved = json.loads(answer.body)
        if not saved.get("messageId"):
            return None
        return SavedTurn(str(saved["messageId"]), str(saved["replyId"]), str(saved["text"]))

    async def spoken_turn(self, pcm: bytes, clock: TurnClock) -> SavedTurn | None:
        """As TurnRecords.spoken_turn: the turn's WAV is transcribed and saved by the primary."""
        wav = codec.wav_of(pcm)
        seconds = pcm_seconds(pcm)
        content_type = (b"content-type", b"audio/wav")
        saving = self._call("POST", f"{self._base}/turns", wav, [content_type], None)
        answer = await self._unabandoned(saving, clock)
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
        saving = self._call_json(f"{self._base}/typed", {"text": text})
        saved = self._turn(await self._unabandoned(saving, TurnClock.ended_now()))
        assert saved is not None
        return saved

    async def _unabandoned(
        self, saving: Coroutine[object, object, ResponseEnvelope], clock: TurnClock
    ) -> ResponseEnvelope:
        """The primary's answer to a turn's save. If the conversation ends meanwhile (this
        task is cancelled), the primary still saves the turn and starts its reply: that reply
        is then stopped, as hung up, once the save is answered, as when the conversation ends
        during a reply (a single server saves nothing of a turn cancelled before its save)."""
        call = asyncio.ensure_future(saving)
        try:
            return await asyncio.shield(call)
        except asyncio.CancelledError:
            task = self._edge.voice_work(self._hang_up_after(call, dataclasses.replace(clock)))
            self._abandoned.add(task)
            task.add_done_callback(self._abandoned.discard)
            raise

    async def _hang_up_after(
        self, call: asyncio.Future[ResponseEnvelope], clock: TurnClock
    ) -> None:
        try:
            saved = self._turn(await call)
        except (FunctionError, ValueError, KeyError):
            return  # nothing was saved
        if saved is not None:
            await self.reply_ended(saved.reply_id, ReplyEnd(HUNG_UP), clock)

    async def reply_ended(self, message_id: str, end: ReplyEnd, clock: TurnClock) -> None:
        """As TurnRecords.reply_ended, but saved in the background, in order (the edge waits
        for what is left at shutdown)."""
        self._ends.put_nowait((message_id, end, dataclasses.replace(clock)))
        if self._saving is None or self._saving.done():
            self._saving = self._edge.voice_work(self._save_ends())

    async def saved(self) -> None:
        """Wait until every reply's end handed over so far is saved (or given up on), those of
        turns saved after the conversation ended included."""
        while True:
            pending = {task for task in self._abandoned if not task.done()}
            if self._saving is not None and not self._saving.done():
                pending.add(self._saving)
            if not pending:
                return
            await asyncio.wait(pending)

    async def _save_ends(self) -> None:
        while not self._ends.empty():
            message_id, end, clock = self._ends.get_nowait()
            await self._save_end(message_id, end, clock)

    async def _save_end(self, message_id: str, end: ReplyEnd, clock: TurnClock) -> None:
        path = f"{self._base}/replies/{message_id}"
        for attempt in range(_REPLY_END_TRIES):
            try:
                answer: ResponseEnvelope | None = await self._call_json(path, end.encode(clock))
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
        """As TurnRecords.sentence: the file, from the primary (None, the sentence skipped,
        when it cannot be had)."""
        try:
            answer = await self._call("GET", f"/api/files/{file_id}")
        except FunctionError as exc:
            log.warning("sentence %s not fetched: %s", file_id, exc.message)
            return None
        if answer.status != 200:
            return None
        content_type = answer.header(b"content-type") or b"application/octet-stream"
        return answer.body, content_type.decode("latin-1")


def with_edge_call(credentials: RequestEnvelope) -> RequestEnvelope:
    """The client's credentials, marked as the edge's own call (the header every call to the
    primary's conversation routes carries)."""
    return dataclasses.replace(credentials, headers=[*credentials.headers, EDGE_CALL])


def _credentials(websocket: WebSocket) -> RequestEnvelope | None:
    """The client's credentials for the conversation's calls, read as a single server reads
    them; None when the edge leaves the socket to the primary: a `?token=` that is no token,
    or a sign-in cookie from another origin (the primary refuses both, as one server does)."""
    envelope = socket_request(websocket)
    envelope.headers = [(n, v) for n, v in envelope.headers if n.lower() in _CREDENTIAL_HEADERS]
    try:
        with_query_token(envelope, websocket.url.query)
    except BadToken:
        return None
    if any(name.lower() == b"authorization" for name, _ in envelope.headers):
        return envelope
    cookies = request_cookies(websocket.scope)
    if SESSION_COOKIE in cookies:
        if not same_origin(websocket.scope):
            return None
        csrf = cookies.get(CSRF_COOKIE, "")
        envelope.headers.append((CSRF_HEADER.lower().encode(), csrf.encode("latin-1", "replace")))
    return envelope


async def _voice_mode(
    edge: Edge, credentials: RequestEnvelope, scope: Scope, thread_id: str
) -> str | None:
    """How the thread's agent talks (`pipeline`, `realtime`), as the primary says to this
    client (the socket of `scope`); None when the primary refuses the client or cannot
    answer."""
    ask = dataclasses.replace(
        credentials,
        method="GET",
        path=f"/api/threads/{thread_id}/audio/mode",
        query_string=b"",
        headers=[*credentials.headers, EDGE_CALL],
    )
    heard = edge.link.primaries.heard
    try:
        answer = await edge.link.call(ask, timeout=_QUICK_S)
    except PrimaryUnavailable:
        return None
    if answer.status != 200:
        if answer.status == 401:
            edge.refused.note(credential_of(scope), answer, heard)
        return None
    mode = json.loads(answer.body).get("mode")
    return mode if isinstance(mode, str) else None


async def thread_audio(websocket: WebSocket) -> None:
    """GET /api/threads/{id}/audio on an edge: a conversation runs here, the pipeline's or
    relayed from here to a speech-to-speech model; one the primary must hold is relayed to the
    primary (see the module's docstring)."""
    edge: Edge = websocket.app.state.edge
    thread_id = websocket.path_params["thread_id"]
    if edge.refused:
        refusal = edge.refused.refusal(credential_of(websocket.scope), edge.link.primaries.heard)
        error = None if refusal is None else refused_error(refusal.status, refusal.body)
        if error is not None:
            await _refuse(websocket, *error, CLOSE_BAD_TOKEN)
            return
    credentials = _credentials(websocket)
    scope = websocket.scope
    mode = None if credentials is None else await _voice_mode(edge, credentials, scope, thread_id)
    if credentials is None or mode not in ("pipeline", "realtime"):
        await SocketRelay(edge.link, websocket).run(socket_request(websocket))
        return
    credential = credential_key(credentials)
    if not edge.take_stream(credential):
        await _too_many_streams(websocket, edge.settings.max_streams_per_token)
        return
    relay_records = PrimaryRelayRecords(edge, with_edge_call(credentials), thread_id)
    plan = await relay_plan(relay_records) if mode == "realtime" else None
    if mode == "realtime" and plan is None:  # the primary holds the provider's connection
        edge.give_back_stream(credential)
        await SocketRelay(edge.link, websocket).run(socket_request(websocket))
        return
    feed_opening = dataclasses.replace(
        credentials, path=f"/api/threads/{thread_id}/events", query_string=b""
    )

    async def open_feed() -> Stream:
        return await thread_feed(edge, feed_opening, credential)

    async def open_session(feed: Stream, start: Start, client: SocketClient) -> LiveSession:
        session: LiveSession
        if plan is not None:
            forget = edge.voice.discard
            session = relay_session(plan, relay_records, thread_id, feed, start, client, forget)
        else:
            session = VoiceSession(
                thread_id=thread_id,
                records=PrimaryRecords(edge, credentials, thread_id),
                feed=feed,
                settings=SessionSettings.of(edge.settings),
                start=start,
                client=client,
                forget=edge.voice.discard,
            )
        edge.voice.add(session)
        return session

    try:
        await live_socket(websocket, open_feed, open_session)
    finally:
        edge.give_back_stream(credential)


async def _too_many_streams(websocket: WebSocket, limit: int) -> None:
    """Refused as a single server refuses a socket over the stream limit."""
    message = (
        f"This token already has {limit} event streams open, the most it may: close one first."
    )
    await _refuse(websocket, "too_many_streams", message, 4429)


async def _refuse(websocket: WebSocket, code: str, message: str, close_code: int) -> None:
    """Accept the socket, send it an `error` event, and close it with `close_code`."""
    await websocket.accept()
    error = {"type": "error", "code": code, "message": message}
    await websocket.send_text(jsoncodec.dumps(error).decode())
    await websocket.close(close_code, code)


async def thread_feed(edge: Edge, opening: RequestEnvelope, credential: str) -> Stream:
    """The conversation's thread feed: a client of this edge's shared stream of the thread,
    from its newest event on (a conversation speaks only replies it starts)."""
    joined = await join_feed(edge, opening, credential, None, live=True)
    if not isinstance(joined, tuple):
        try:
            error = json.loads(bytes(joined.body))["error"]
            code, message = str(error["code"]), str(error["message"])
        except (ValueError, KeyError, TypeError):
            code, message = "primary_unavailable", "The thread's stream could not be opened."
        closes = {404: CLOSE_NOT_FOUND, 401: CLOSE_BAD_TOKEN}
        raise ProtocolError(code, message, closes.get(joined.status_code, CLOSE_TRY_AGAIN))
    upstream, (member, outbox), _ = joined
    return Stream(outbox, lambda: upstream.leave(member, outbox))
