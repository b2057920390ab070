"""Twilio's routes (DESIGN §10): `POST /twilio/voice`, the signed webhook of a phone number,
answered with TwiML, and `WS /twilio/stream`, the call's Media Streams socket.

Neither takes a bearer token: the webhook is checked by its `X-Twilio-Signature` over the
public URL (`--public-url`: behind a TLS proxy the server cannot see the URL Twilio signed),
and the stream by the one-time token the TwiML gave it. The conversation itself is the live
conversation session, through voicestack.voice.telephony.media's adapter.
"""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from voicestack.http.audio import SocketClient, received_frame
from voicestack.http.body import read_limited
from voicestack.http.errors import ApiError
from voicestack.http.state import runtime
from voicestack.runtime import Runtime
from voicestack.voice.live_sessions import LiveSession
from voicestack.voice.realtime.codec import load_audio_libraries
from voicestack.voice.realtime.wire import (
    CLOSE_BAD_TOKEN,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_TRY_AGAIN_LATER,
    ProtocolError,
)
from voicestack.voice.telephony.calls import (
    CallDetails,
    connect_twiml,
    issue_stream_token,
    stream_url,
)
from voicestack.voice.telephony.media import (
    Audio,
    CallClient,
    Ended,
    StreamStart,
    parse_inbound,
    parse_start,
)
from voicestack.voice.telephony.signature import signature_matches

TWIML = "text/xml"
# Twilio sends `connected` and `start` as soon as the socket opens; a socket that does not
# start within this is not Twilio's and is closed (the route takes no bearer token).
START_TIMEOUT_S = 10.0
# Twilio sends `connected`, then `start`: a few small frames. More before the start, or larger,
# are not Twilio's (the route takes no bearer token, so nothing unbounded is kept for them).
START_FRAMES = 4
START_BYTES = 64 * 1024


def configured(rt: Runtime) -> tuple[str, str]:
    """(auth token, public URL), or 404 when phone calls are not set up (the route is off)."""
    token, public_url = rt.settings.twilio_auth_token, rt.settings.public_url
    if token is None or public_url is None:
        raise ApiError(
            404,
            "twilio_not_configured",
            "Phone calls are off: start the server with --twilio-auth-token and --public-url.",
        )
    return token.get_secret_value(), public_url


async def twilio_voice(request: Request) -> Response:
    """Twilio's webhook for an incoming call: TwiML connecting it to the media stream."""
    rt = runtime(request)
    auth_token, public_url = configured(rt)
    body = await read_limited(request, rt.settings.max_body_bytes)
    params = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    url = public_url + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    if not signature_matches(auth_token, url, params, request.headers.get("x-twilio-signature")):
        raise ApiError(
            403,
            "invalid_signature",
            "X-Twilio-Signature is missing or does not match this request; check"
            " --twilio-auth-token and that --public-url is the URL Twilio calls.",
        )
    fields = dict(params)
    call_sid = fields.get("CallSid", "")
    if not call_sid:
        raise ApiError(422, "invalid_args", "The webhook has no CallSid.")
    call = CallDetails(call_sid, fields.get("From") or None, fields.get("To") or None)
    issued = await rt.store.write(lambda db: issue_stream_token(db, call))
    twiml = connect_twiml(stream_url(public_url), issued.value)
    return Response(twiml, media_type=TWIML, headers={"Cache-Control": "no-store"})


async def twilio_stream(websocket: WebSocket) -> None:
    """Twilio's Media Streams socket: the call becomes a live conversation on a new thread."""
    rt = runtime(websocket)
    await websocket.accept()
    socket = SocketClient(websocket)
    settings = rt.settings
    if settings.twilio_auth_token is None or settings.public_url is None:
        await socket.close(CLOSE_POLICY, "twilio_not_configured")
        return
    if not rt.call_slots.take():
        await socket.close(CLOSE_TRY_AGAIN_LATER, "too_many_calls")
        return
    try:
        await _stream(websocket, socket, rt)
    finally:
        rt.call_slots.give_back()


async def _stream(websocket: WebSocket, socket: SocketClient, rt: Runtime) -> None:
    session: LiveSession | None = None
    try:
        start, _ = await read_start(websocket)
        if start is None:
            return
        client = CallClient(start.stream_sid, socket.send_event, socket.close)
        await load_audio_libraries()
        session = await rt.live.open_call(start, client)
        if session is None:
            await socket.close(CLOSE_BAD_TOKEN, "invalid_token")
            return
        await converse(websocket, socket, session)
    except ProtocolError as exc:
        await socket.close(exc.close or CLOSE_POLICY, exc.code)
    finally:
        if session is not None:
            await session.close()


async def read_start(websocket: WebSocket) -> tuple[StreamStart | None, list[str]]:
    """The stream's `start` (after `connected`), and the text frames read up to it (an edge
    that relays the call replays them); None when Twilio went away first. ProtocolError when
    no start comes within START_TIMEOUT_S, within START_FRAMES frames and START_BYTES, or
    something else does."""
    frames: list[str] = []
    try:
        async with asyncio.timeout(START_TIMEOUT_S):
            while (text := await _text(websocket)) is not None:
                frames.append(text)
                if len(frames) > START_FRAMES or sum(map(len, frames)) > START_BYTES:
                    raise ProtocolError("start_expected", "no start", CLOSE_POLICY)
                start = parse_start(text)
                if start is not None:
                    return start, frames
    except TimeoutError:
        raise ProtocolError("start_expected", "no start", CLOSE_POLICY) from None
    return None, frames


async def converse(websocket: WebSocket, socket: SocketClient, session: LiveSession) -> None:
    """Begin the call's `session`, then hand it Twilio's messages until the call ends (the
    socket is then closed with 1000 `call_ended`); the caller closes the session."""
    await session.begin()
    while (text := await _text(websocket)) is not None:
        found = parse_inbound(text)
        if isinstance(found, Audio):
            await session.audio(found.mulaw)
        elif isinstance(found, Ended):
            break
        elif found is not None:
            await session.control(found)
    await socket.close(CLOSE_NORMAL, "call_ended")


async def _text(websocket: WebSocket) -> str | None:
    """The next text frame; None once the socket is gone. Twilio sends no binary frames."""
    while (frame := received_frame(await websocket.receive())) is not None:
        if isinstance(frame, str):
            return frame
    return None


routes = [
    Route("/twilio/voice", twilio_voice, methods=["POST"]),
    WebSocketRoute("/twilio/stream", twilio_stream),
]
