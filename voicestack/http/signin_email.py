"""Email sign-in (with --smtp-url): `POST /auth/email {"email"}` mails a one-time link, valid 15
minutes; `GET /auth/email/verify?token=` signs in with it, once.

The answer to `POST /auth/email` is the same whether or not a link was sent, so it tells no one
which addresses may sign in here; one address is sent at most five links in 15 minutes.
"""

from __future__ import annotations

import asyncio
import logging

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from voicestack.auth.signin_mail import (
    link_message,
    may_send_link,
    new_email_link,
    send_mail,
    use_email_link,
)
from voicestack.auth.signin_users import Profile, email_domain_allowed
from voicestack.http.body import parse_json, read_limited
from voicestack.http.errors import ApiError
from voicestack.http.functions import json_response
from voicestack.http.signin import finish_sign_in
from voicestack.http.signin_pages import refusal_page
from voicestack.http.signin_schemas import EmailLinkBody
from voicestack.http.state import runtime
from voicestack.store.db import WriteDB

log = logging.getLogger(__name__)
PROVIDER = "email"


def _known(db: WriteDB, email: str) -> bool:
    row = db.one(
        "SELECT 1 FROM auth_identities WHERE provider = ? AND subject = ?", (PROVIDER, email)
    )
    return row is not None


async def send_link(request: Request) -> Response:
    """POST /auth/email: mail a one-time sign-in link to `email` (202 `{"ok": true}`)."""
    rt = runtime(request)
    smtp_url = rt.settings.smtp_url
    if smtp_url is None:
        raise ApiError(404, "email_signin_off", "Email sign-in is off on this server.")
    raw = await read_limited(request, rt.settings.max_body_bytes)
    try:
        body = EmailLinkBody.model_validate(parse_json(raw, "The body"))
    except ValidationError:
        raise ApiError(422, "invalid_email", 'Give an email address: {"email": ...}.') from None
    email = body.email.strip().lower()
    domains = rt.settings.signin_allowed_domains

    def issue(db: WriteDB) -> str | None:
        if not email_domain_allowed(email, True, domains) and not _known(db, email):
            return None
        if not may_send_link(db, email):
            return None
        return new_email_link(db, email)

    token: str | None = (await rt.store.write(issue)).value
    if token is not None:
        # Only --public-url (required with --smtp-url): a Host header would let anyone mail
        # a link to someone else's sign-in that points at their own server.
        public_url = rt.settings.public_url
        if public_url is None:  # pragma: no cover - Settings refuses --smtp-url without it
            raise ApiError(404, "email_signin_off", "Email sign-in needs --public-url.")
        link = f"{public_url}/auth/email/verify?token={token}"
        message = link_message(rt.settings.smtp_from, email, link)
        try:
            await asyncio.to_thread(send_mail, smtp_url.get_secret_value(), message, email)
        except (OSError, ValueError) as exc:
            log.warning("sending a sign-in link failed: %s", exc)
            raise ApiError(
                502, "email_not_sent", "The sign-in link could not be sent; try again later."
            ) from None
    return json_response({"ok": True}, 202)


async def verify(request: Request) -> Response:
    """GET /auth/email/verify?token=: sign in with an emailed link, once, within 15 minutes."""
    rt = runtime(request)
    token = request.query_params.get("token", "")
    email: str | None = (await rt.store.write(lambda db: use_email_link(db, token))).value
    if email is None:
        return refusal_page(
            400,
            "link_used_or_expired",
            "Sign-in refused",
            "This sign-in link was used already or has expired (a link works once, within 15"
            " minutes). Ask the page for a new one.",
        )
    profile = Profile(PROVIDER, email, email=email, email_verified=True)
    return await finish_sign_in(request, profile)


routes = [
    Route("/auth/email", send_link, methods=["POST"]),
    Route("/auth/email/verify", verify, methods=["GET"]),
]
