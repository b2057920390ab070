"""Phone calls on an edge (DESIGN §12): a call's audio stays near Twilio.

`WS /twilio/stream` on an edge reads the stream's `start`, then asks a primary how the call
talks (`POST /twilio/stream/start`, voicestack/http/twilio_edge.py):
- a pipeline call runs here, as the live conversation a single server runs for it (turn
  detection, μ-law and resampling, paced audio, marks and barge-in). The primary spent the
  stream's token and created the call's thread; what the session saves, and the thread's feed,
  go through the primary with the sign-in session it gave for the call, exactly as for a
  conversation of a signed-in page (voicestack/scale/edge_voice.py). The edge ends that session
  when the call ends;
- so does a call whose agent talks through a speech-to-speech model: the edge holds the
  provider's connection, on a short-lived key the primary minted, and the conversation's
  records go to the primary with the call's session (voicestack/scale/edge_relay.py). Only when
  the primary can mint no such key is the call relayed, whole, to the primary, which then holds
  the provider's connection: the frames read so far are replayed there first.

The edge holds at most --max-calls call sockets, as a single server does. Without a primary the
socket is closed with 1013 `primary_unavailable`, and Twilio's caller hears the call end.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass

from starlette.websockets import WebSocket

from voicestack.auth.sessions import CSRF_COOKIE, CSRF_HEADER, SESSION_COOKIE, csrf_value
from voicestack.http.audio import SocketClient
from voicestack.http.twilio import converse, read_start
from voicestack.http.twilio_edge import START_PATH
from voicestack.jsoncodec import dumps
from voicestack.scale.edge import Edge
from voicestack.scale.edge_relay import PrimaryRelayRecords, RelayPlan, relay_session
from voicestack.scale.edge_sockets import SocketRelay, socket_request
from voicestack.scale.edge_streams import credential_key
from voicestack.scale.edge_voice import EDGE_CALL, PrimaryRecords, thread_feed, with_edge_call
from voicestack.scale.envelope import RequestEnvelope, ResponseEnvelope
from voicestack.scale.link import OPEN_TIMEOUT_S, PrimaryUnavailable
from voicestack.voice.live_sessions import LiveSession
from voicestack.voice.realtime.codec import load_audio_libraries
from voicestack.voice.realtime.session import SessionSettings, VoiceSession
from voicestack.voice.realtime.wire import (
    CLOSE_BAD_TOKEN,
    CLOSE_GOING_AWAY,
    CLOSE_POLICY,
    CLOSE_TRY_AGAIN_LATER,
    ProtocolError,
)
from voicestack.voice.telephony.media import CALL_AUDIO, CallClient, StreamStart

log = logging.getLogger(__name__)

# How a primary's refusal of a call's start closes Twilio's socket.
_REFUSALS = {
    401: (CLOSE_BAD_TOKEN, "invalid_token"),
    404: (CLOSE_POLICY, "twilio_not_configured"),
    503: (CLOSE_GOING_AWAY, "server_shutting_down"),
}


async def call_stream(websocket: WebSocket) -> None:
    """Twilio's media stream on an edge: the call runs here, or on the primary when its agent
    talks through a speech-to-speech model and the primary can mint no short-lived key for it
    (see the module's docstring)."""
    edge: Edge = websocket.app.state.edge
    await websocket.accept()
    socket = SocketClient(websocket)
    if not edge.call_slots.take():
        await socket.close(CLOSE_TRY_AGAIN_LATER, "too_many_calls")
        return
    try:
        await _call(websocket, socket, edge)
    except ProtocolError as exc:
        await socket.close(exc.close or CLOSE_POLICY, exc.code)
    finally:
        edge.call_slots.give_back()


async def _call(websocket: WebSocket, socket: SocketClient, edge: Edge) -> None:
    start, frames = await read_start(websocket)
    if start is None:
        return
    edge.voice.refuse_when_shutting_down()  # before the token is spent
    answer = await _start(edge, start)
    if answer is None:
        await socket.close(CLOSE_TRY_AGAIN_LATER, "primary_unavailable")
        return
    if answer.status not in (200, 201):
        close, reason = _REFUSALS.get(answer.status, (CLOSE_TRY_AGAIN_LATER, "primary_error"))
        await socket.close(close, reason)
        return
    started = _started(answer)
    if started is None:
        log.warning("a call's start got an answer that is not one: %.200r", answer.body)
        await socket.close(CLOSE_TRY_AGAIN_LATER, "primary_error")
        return
    if started.thread_id is None:  # relay the call to the primary, whole
        await SocketRelay(edge.link, websocket).run(socket_request(websocket), frames)
        return
    credentials = _session_credentials(started.session)
    records = PrimaryRecords(edge, credentials, started.thread_id)
    relay_records = PrimaryRelayRecords(edge, with_edge_call(credentials), started.thread_id)
    try:
        await load_audio_libraries()
        await _converse(websocket, socket, edge, start, records, relay_records, started)
    finally:
        edge.voice_work(_end_session(edge, (records, relay_records), credentials))


async def _start(edge: Edge, start: StreamStart) -> ResponseEnvelope | None:
    """The primary's answer to the call's start; None when no primary answers."""
    request = RequestEnvelope(
        method="POST",
        path=START_PATH,
        query_string=b"",
        headers=[(b"content-type", b"application/json"), EDGE_CALL],
        body=dumps({"token": start.token, "callSid": start.call_sid, "relayHere": True}),
    )
    try:
        return await edge.link.call(request, timeout=OPEN_TIMEOUT_S)
    except PrimaryUnavailable:
        return None


@dataclass(frozen=True, slots=True)
class _Started:
    """A started call: its thread and session, and the plan of a speech-to-speech call (None
    for a pipeline call), when it runs here; no thread when it is relayed to the primary."""

    thread_id: str | None = None
    session: str = ""
    plan: RelayPlan | None = None


def _started(answer: ResponseEnvelope) -> _Started | None:
    """The primary's start of a call; None for an answer that is not one."""
    try:
        started = json.loads(answer.body)
        mode = started["mode"]
        if mode == "realtime" and "threadId" not in started:
            return _Started()
        thread_id, secret = started["threadId"], started["session"]
        plan = RelayPlan.decode(started["plan"]) if mode == "realtime" else None
    except (ValueError, KeyError, TypeError):
        return None
    if mode not in ("pipeline", "realtime") or not isinstance(thread_id, str):
        return None
    return _Started(thread_id, secret, plan) if isinstance(secret, str) else None


def _session_credentials(secret: str) -> RequestEnvelope:
    """The call's sign-in session, as the credentials its calls to the primary carry."""
    csrf = csrf_value(secret)
    cookie = f"{SESSION_COOKIE}={secret}; {CSRF_COOKIE}={csrf}"
    return RequestEnvelope(
        method="GET",
        path="/",
        query_string=b"",
        headers=[(b"cookie", cookie.encode()), (CSRF_HEADER.encode(), csrf.encode())],
    )


async def _converse(
    websocket: WebSocket,
    socket: SocketClient,
    edge: Edge,
    start: StreamStart,
    records: PrimaryRecords,
    relay_records: PrimaryRelayRecords,
    started: _Started,
) -> None:
    """The call's conversation, here, on its thread: the pipeline's, or relayed from here to
    the speech-to-speech provider."""
    credentials, thread_id = records.credentials, started.thread_id
    assert thread_id is not None
    opening = dataclasses.replace(credentials, path=f"/api/threads/{thread_id}/events")
    feed = await thread_feed(edge, opening, credential_key(credentials))
    client = CallClient(start.stream_sid, socket.send_event, socket.close)
    session: LiveSession
    if started.plan is not None:
        forget = edge.voice.discard
        session = relay_session(
            started.plan, relay_records, thread_id, feed, CALL_AUDIO, client, forget
        )
    else:
        session = VoiceSession(
            thread_id=thread_id,
            records=records,
            feed=feed,
            settings=SessionSettings.of(edge.settings),
            start=CALL_AUDIO,
            client=client,
            forget=edge.voice.discard,
        )
    try:
        edge.voice.add(session)  # refused once the edge winds down
    except ProtocolError:
        feed.close()
        raise
    client.report = session.control
    try:
        await converse(websocket, socket, session)
    finally:
        await session.close()


async def _end_session(
    edge: Edge,
    records: tuple[PrimaryRecords, PrimaryRelayRecords],
    credentials: RequestEnvelope,
) -> None:
    """End the call's session on the primary once the call's records are saved (it expires
    by itself if no primary answers)."""
    for kept in records:
        await kept.saved()
    request = dataclasses.replace(credentials, method="POST", path="/auth/logout")
    try:
        answer = await edge.link.call(request, timeout=OPEN_TIMEOUT_S)
    except PrimaryUnavailable:
        log.warning("a call's session was left to expire: no primary answered")
        return
    if answer.status != 200:
        log.warning("a call's session was not ended: the primary answered %d", answer.status)
