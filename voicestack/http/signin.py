"""Sign-in with an identity provider: `GET /auth/login/{provider}` sends the browser there,
`GET /auth/callback/{provider}` brings it back signed in (voicestack/http/signin_providers.py).

A refused sign-in lands on a page that says why, with a 4xx status: a state this browser did not
start (forged, or used already), a code the provider refuses (replayed), an id_token whose
signature, issuer, audience, nonce or expiry is wrong, an account that is disabled or an email
sign-up does not allow.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from voicestack.auth.sessions import create_session
from voicestack.auth.signin_users import Profile, SignInRefused, sign_in_user
from voicestack.http.signin_auth import is_secure
from voicestack.http.signin_pages import base_url, refusal_page, signed_in
from voicestack.http.signin_providers import (
    LOGIN_COOKIE,
    LOGIN_TTL_S,
    Provider,
    Providers,
    github_profile,
    http_errors,
    oidc_profile,
)
from voicestack.http.state import runtime
from voicestack.runtime import Runtime
from voicestack.store.db import WriteDB

log = logging.getLogger(__name__)
CALLBACK_PATH = "/auth/callback"


def provider_failures() -> tuple[type[Exception], ...]:
    """A provider that cannot be reached, or answers what is not discovery, JSON or a token."""
    return (*http_errors(), ValueError, KeyError, RuntimeError)


def make_providers(rt: Runtime) -> Providers:
    """The sign-in providers of the runtime's settings, with their Authlib clients. The app
    makes them as it starts, so that no request waits for Authlib's import."""

    async def write(fn: Any) -> Any:
        return (await rt.store.write(fn)).value

    return Providers(rt.settings, write)


def providers_of(request: Request) -> Providers:
    """The app's sign-in providers (made at start; made here when an app started without)."""
    found: Providers | None = getattr(request.app.state, "signin_providers", None)
    if found is None:
        found = make_providers(runtime(request))
        request.app.state.signin_providers = found
    return found


def _provider(request: Request) -> tuple[Providers, Provider] | Response:
    providers = providers_of(request)
    name = request.path_params["provider"]
    provider = providers.providers.get(name)
    if provider is None:
        return refusal_page(
            404,
            "unknown_provider",
            "No such sign-in",
            f"This server has no sign-in provider named {name[:40]!r}.",
        )
    return providers, provider


def _unreachable(provider: Provider, exc: Exception) -> Response:
    log.warning("sign-in provider %s failed: %s", provider.name, exc)
    return refusal_page(
        502,
        "provider_unreachable",
        "Sign-in failed",
        f"{provider.title} could not be reached or answered with an error. Try again later.",
    )


async def login(request: Request) -> Response:
    """GET /auth/login/{provider}: redirect to the provider (code flow, state, nonce, PKCE)."""
    found = _provider(request)
    if isinstance(found, Response):
        return found
    providers, provider = found
    session: dict[str, Any] = {}
    request.scope["session"] = session
    redirect_uri = f"{base_url(request)}{CALLBACK_PATH}/{provider.name}"
    try:
        response: Response = await providers.client(provider.name).authorize_redirect(
            request, redirect_uri
        )
    except provider_failures() as exc:
        return _unreachable(provider, exc)
    prefix = f"_state_{provider.name}_"
    state = next(key[len(prefix) :] for key in session if key.startswith(prefix))
    secure = is_secure(request.scope, runtime(request).settings.public_url)
    response.set_cookie(
        LOGIN_COOKIE,
        state,
        max_age=LOGIN_TTL_S,
        path=CALLBACK_PATH,
        secure=secure,
        httponly=True,
        samesite="lax",
    )
    return response


def _refused(code: str, message: str, status: int = 400) -> Response:
    return refusal_page(status, code, "Sign-in refused", message)


async def _profile(request: Request, providers: Providers, provider: Provider) -> Profile:
    client = providers.client(provider.name)
    if provider.kind == "github":
        token = await client.authorize_access_token(request)
        return await github_profile(client, token)
    token = await client.authorize_access_token(
        request, claims_options=providers.claims_options(provider)
    )
    claims = token.get("userinfo")
    if claims is None:
        from authlib.integrations.base_client.errors import OAuthError

        raise OAuthError("missing_id_token", "The provider sent no id_token.")
    return oidc_profile(provider.name, dict(claims))


async def callback(request: Request) -> Response:
    """GET /auth/callback/{provider}: check the provider's answer, sign the user in, and
    redirect to the page with the session cookies."""
    found = _provider(request)
    if isinstance(found, Response):
        return found
    providers, provider = found
    started = request.cookies.get(LOGIN_COOKIE)
    key = f"_state_{provider.name}_{started}"
    request.scope["session"] = {key: {"exp": time.time() + LOGIN_TTL_S}} if started else {}
    # Loaded with the providers' clients (signin_providers), by the first sign-in.
    from authlib.integrations.base_client.errors import MismatchingStateError, OAuthError
    from joserfc.errors import BadSignatureError, ClaimError, ExpiredTokenError, JoseError

    try:
        profile = await _profile(request, providers, provider)
    except MismatchingStateError:
        return _refused(
            "state_mismatch",
            "This sign-in was not started by this browser, or was finished already:"
            " start again from the page.",
        )
    except OAuthError as exc:
        detail = f" ({exc.description})" if exc.description else ""
        return _refused(
            "provider_refused",
            f"{provider.title} refused the sign-in: {exc.error}{detail}. Start again from"
            " the page.",
        )
    except ExpiredTokenError:
        return _refused("id_token_expired", "The provider's id_token has expired.")
    except BadSignatureError:
        return _refused(
            "id_token_bad_signature",
            "The provider's id_token is not signed by any of the provider's keys.",
        )
    except ClaimError as exc:
        return _refused(
            "id_token_invalid", f"The provider's id_token has a wrong claim: {exc.description}."
        )
    except JoseError as exc:
        return _refused("id_token_invalid", f"The provider's id_token is unusable: {exc.error}.")
    except provider_failures() as exc:
        return _unreachable(provider, exc)
    return await finish_sign_in(request, profile)


async def finish_sign_in(request: Request, profile: Profile) -> Response:
    """Find or create the user of `profile`, start their session, and send them to the page
    (or to a page saying why they may not sign in)."""
    rt = runtime(request)
    lifetime = rt.settings.session_days * 86_400.0
    domains = rt.settings.signin_allowed_domains

    def sign_in(db: WriteDB) -> str:
        user = sign_in_user(db, profile, domains, {rt.settings.twilio_user})
        return create_session(db, user.id, profile.provider, lifetime)

    try:
        secret: str = (await rt.store.write(sign_in)).value
    except SignInRefused as exc:
        return _refused(exc.code, exc.message, 403)
    response = signed_in(request, secret)
    response.delete_cookie(LOGIN_COOKIE, path=CALLBACK_PATH)
    return response


routes = [
    Route("/auth/login/{provider}", login, methods=["GET"]),
    Route(CALLBACK_PATH + "/{provider}", callback, methods=["GET"]),
]
