"""Twilio's routes (DESIGN §10): `POST /twilio/voice`, the signed webhook of a phone number,
answered with TwiML, and `WS /twilio/stream`, the call's Media Streams socket.

Neither takes a bearer token: the webhook is checked by its `X-Twilio-Signature` over the
public URL (`--public-url`: behind a TLS proxy the server cannot see the URL Twilio signed),
and the stream by the one-time token the TwiML gave it. The conversation itself is the live
conversation session, through voicestack.voice.telephony.media's adapter.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketState

from voicestack.http.body import read_limited
from voicestack.http.errors import ApiError
from voicestack.http.state import runtime
from voicestack.runtime import Runtime
from voicestack.voice.realtime.session import VoiceSession
from voicestack.voice.realtime.wire import (
    CLOSE_BAD_TOKEN,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    ProtocolError,
)
from voicestack.voice.telephony.calls import (
    CallDetails,
    InvalidStreamToken,
    connect_twiml,
    issue_stream_token,
    start_call_thread,
    stream_url,
)
from voicestack.voice.telephony.media import (
    CALL_AUDIO,
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


def _configured(rt: Runtime) -> tuple[str, str]:
    """(auth token, public URL), or 503 when phone calls are not set up."""
    token, public_url = rt.settings.twilio_auth_token, rt.settings.public_url
    if token is None or public_url is None:
        raise ApiError(
            503,
            "twilio_not_configured",
            "Phone calls are off: start the server with --twilio-auth-token and --public-url.",
        )
    return token.get_secret_value(), public_url


async def twilio_voice(request: Request) -> Response:
    """Twilio's webhook for an incoming call: TwiML connecting it to the media stream."""
    rt = runtime(request)
    auth_token, public_url = _configured(rt)
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

    async def send(text: str) -> None:
        if websocket.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):  # Twilio hung up mid-send
                await websocket.send_text(text)

    async def close(code: int, reason: str) -> None:
        if websocket.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await websocket.close(code, reason)

    session: VoiceSession | None = None
    try:
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                start = await _stream_start(websocket)
        except TimeoutError:
            raise ProtocolError("start_expected", "no start", CLOSE_POLICY) from None
        if start is None:
            return
        try:
            call = await rt.store.write(
                lambda db: start_call_thread(
                    db, start.token, start.call_sid, rt.settings.twilio_user
                )
            )
        except InvalidStreamToken:
            await close(CLOSE_BAD_TOKEN, "invalid_token")
            return
        client = CallClient(start.stream_sid, send, close)
        thread = call.value
        feed = await rt.open_thread_feed(thread.thread_id, None, None)
        try:
            session = rt.open_voice_session(
                thread.thread_id, thread.owner, feed, CALL_AUDIO, client
            )
        except ProtocolError:
            feed.close()
            raise
        client.report = session.control
        await session.begin()
        while (text := await _text(websocket)) is not None:
            found = parse_inbound(text)
            if isinstance(found, Audio):
                await session.audio(found.mulaw)
            elif isinstance(found, Ended):
                break
            elif found is not None:
                await session.control(found)
        await close(CLOSE_NORMAL, "call_ended")
    except ProtocolError as exc:
        await close(exc.close or CLOSE_POLICY, exc.code)
    finally:
        if session is not None:
            await session.close()


async def _stream_start(websocket: WebSocket) -> StreamStart | None:
    """The stream's `start` (after `connected`); None when Twilio went away first."""
    while (text := await _text(websocket)) is not None:
        start = parse_start(text)
        if start is not None:
            return start
    return None


async def _text(websocket: WebSocket) -> str | None:
    """The next text frame; None once the socket is gone. Twilio sends no binary frames."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return None
        text = message.get("text")
        if text is not None:
            return str(text)


routes = [
    Route("/twilio/voice", twilio_voice, methods=["POST"]),
    WebSocketRoute("/twilio/stream", twilio_stream),
]
