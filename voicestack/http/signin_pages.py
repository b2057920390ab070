"""The sign-in's own cookies and answers: the refusal page a browser lands on when a sign-in
fails, and the session cookies set when one succeeds."""

from __future__ import annotations

import html

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from voicestack.http.signin_auth import DAY_S, is_secure, session_cookie_headers
from voicestack.http.state import runtime

_PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · voicestack</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 36rem; margin: 4rem auto;
 padding: 0 1rem">
<h1>{title}</h1>
<p id="reason" data-code="{code}">{message}</p>
<p><a href="/">Back to the sign-in page</a></p>
</body>
</html>
"""


def refusal_page(status: int, code: str, title: str, message: str) -> Response:
    """An HTML page saying why a sign-in was refused, with a link back to the page."""
    body = _PAGE.format(
        title=html.escape(title), code=html.escape(code), message=html.escape(message)
    )
    # An inline style: the page's own policy (http/web.py) is for /, not for this page.
    policy = (
        "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none';"
        " frame-ancestors 'none'"
    )
    return HTMLResponse(
        body,
        status_code=status,
        headers={"content-security-policy": policy, "cache-control": "no-store"},
    )


def signed_in(request: Request, secret: str) -> Response:
    """Back to the page, with the new session's cookies."""
    settings = runtime(request).settings
    response = RedirectResponse("/", status_code=303)
    secure = is_secure(request.scope, settings.public_url)
    for name, value in session_cookie_headers(secret, settings.session_days * DAY_S, secure):
        response.raw_headers.append((name, value))
    return response


def base_url(request: Request) -> str:
    """Where browsers reach this server: --public-url, else the request's own scheme and host."""
    public = runtime(request).settings.public_url
    return public if public is not None else str(request.base_url).rstrip("/")
