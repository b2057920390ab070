"""Who is signed in, signing out, and what the sign-in screen offers: `GET /api/me`,
`POST /auth/logout` and `GET /auth/providers`."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from voicestack.auth.sessions import end_session
from voicestack.auth.signin_users import user_info
from voicestack.http.errors import ApiError
from voicestack.http.functions import json_response
from voicestack.http.signin import providers_of
from voicestack.http.signin_auth import csrf_ok, is_secure, session_cookie, session_cookie_headers
from voicestack.http.state import caller, runtime


async def me(request: Request) -> Response:
    """GET /api/me: `{"id", "name", "email", "role"}` of the caller (cookie or bearer token)."""
    who = caller(request)
    assert who is not None  # not a public route
    info = await runtime(request).store.read(lambda snapshot: user_info(snapshot.db(), who.id))
    if info is None:
        raise ApiError(401, "invalid_token", "The caller's user no longer exists.")
    return json_response({"id": info.id, "name": info.name, "email": info.email, "role": info.role})


async def logout(request: Request) -> Response:
    """POST /auth/logout: end the cookie's session (X-CSRF-Token required) and clear the
    cookies; `{"ok": true}` also when there was no session to end."""
    secret = session_cookie(request.scope)
    if secret is not None:
        if not csrf_ok(request.scope, secret):
            raise ApiError(
                403,
                "csrf_failed",
                "Signing out needs the vs_csrf cookie's value as the X-CSRF-Token header.",
            )
        await runtime(request).store.write(lambda db: end_session(db, secret))
    response = json_response({"ok": True})
    secure = is_secure(request.scope, runtime(request).settings.public_url)
    response.raw_headers.extend(session_cookie_headers(None, 0, secure))
    return response


async def providers(request: Request) -> Response:
    """GET /auth/providers: `{"providers": [{"name", "title", "url"}], "email": bool}`, what the
    page's sign-in screen offers."""
    found = providers_of(request)
    email = runtime(request).settings.smtp_url is not None
    return json_response(
        {"providers": [p.as_json() for p in found.providers.values()], "email": email}
    )


routes = [
    Route("/api/me", me, methods=["GET"]),
    Route("/auth/logout", logout, methods=["POST"]),
    Route("/auth/providers", providers, methods=["GET"]),
]
