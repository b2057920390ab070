"""create_app(settings): the Starlette application serving the whole public HTTP contract."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from voicestack import __version__
from voicestack.config import Settings
from voicestack.http import (
    audio,
    functions,
    openapi,
    relay_records,
    signin,
    signin_email,
    signin_session,
    threads,
    twilio,
    twilio_edge,
    voice,
    voice_records,
    watch,
    web,
)
from voicestack.http.auth import Authenticate
from voicestack.http.cors import cors_middleware
from voicestack.http.errors import EXCEPTION_HANDLERS, CatchAll
from voicestack.http.fast_lane import FastLane
from voicestack.http.functions import json_response
from voicestack.http.headers import SecurityHeaders
from voicestack.http.limits import RequestLimits, RequestRates
from voicestack.http.read_timeouts import BodyTimeout
from voicestack.http.redact import install_log_redaction
from voicestack.runtime import Runtime

log = logging.getLogger(__name__)

# Something that runs beside the application while it serves (the primary's link to edges):
# entered once the Runtime has started, left before it closes.
AppService = Callable[[Starlette, Runtime], AbstractAsyncContextManager[object]]


async def healthz(request: Request) -> Response:
    """GET /healthz: liveness, with the server's version; no authentication.

    `?details=1` adds `details`: the state of memory (hybrid or full-text only, and why), and
    the thread streams edges share on this process with their members."""
    if request.query_params.get("details") in ("1", "true"):
        details = await request.app.state.runtime.health_details()
        return json_response({"ok": True, "version": __version__, "details": details})
    return json_response({"ok": True, "version": __version__})


def create_app(
    settings: Settings, runtime: Runtime | None = None, services: Sequence[AppService] = ()
) -> Starlette:
    """The ASGI app for `settings`; the Runtime opens on startup and closes on shutdown, and
    `services` run between the two."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        rt = runtime or Runtime(settings)
        app.state.runtime = rt
        install_log_redaction(settings.secret_values())
        await rt.start()
        app.state.signin_providers = signin.make_providers(rt)
        log.info("serving %s (%d functions)", settings.db, len(rt.registry.functions))
        try:
            async with contextlib.AsyncExitStack() as running:
                for service in services:
                    await running.enter_async_context(service(app, rt))
                yield
        finally:
            await rt.close()

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        *functions.routes,
        *watch.routes,
        *threads.routes,
        *voice.routes,
        *audio.routes,
        # Only a primary has edges, whose live conversations keep their records here.
        *(voice_records.routes if settings.role == "primary" else []),
        *(relay_records.routes if settings.role == "primary" else []),
        *twilio.routes,
        *(twilio_edge.routes if settings.role == "primary" else []),
        *web.routes,
        *openapi.routes,
        *signin.routes,
        *signin_email.routes,
        *signin_session.routes,
    ]
    rates = RequestRates(settings)
    # The fast lane answers the hottest calls before the rest (voicestack/http/fast_lane.py);
    # with CORS on, every request goes through the CORS middleware instead.
    lane = [] if settings.cors_origins else [Middleware(FastLane, rates)]
    return Starlette(
        routes=routes,
        exception_handlers=EXCEPTION_HANDLERS,
        # Outermost first. Security and CORS headers go outside CatchAll so that its 500s carry
        # them too; CORS answers preflights before Authenticate, which carry no token; the
        # limits need the identity Authenticate found.
        middleware=[
            *lane,
            Middleware(SecurityHeaders),
            *cors_middleware(settings.cors_origins),
            Middleware(CatchAll),
            Middleware(BodyTimeout, settings.body_timeout_s),
            Middleware(Authenticate),
            Middleware(RequestLimits, settings, rates),
        ],
        lifespan=lifespan,
    )
