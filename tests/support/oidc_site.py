"""The OpenID Connect sign-in tests' server, with every kind of provider, and its refusal pages."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.oidc_provider import OidcProvider, github_config, oidc_provider, signin_server
from tests.support.server import ServerProcess


@contextmanager
def signin_site(workdir: Path, provider: OidcProvider) -> Iterator[ServerProcess]:
    """A server that signs in with `provider` as `oidc` and `github`, has a provider `down` that
    cannot be reached, and lets people of example.com sign up."""
    allowed = ["--signin-allowed-domains", "example.com"]
    # A provider that cannot be reached: nothing listens on port 9 of loopback.
    down = '[auth.oidc.down]\nissuer = "http://127.0.0.1:9"\nclient_id = "x"\n'
    config = github_config(provider) + down
    with signin_server(workdir, provider, *allowed, config=config) as server:
        yield server


@contextmanager
def new_person(provider: OidcProvider) -> Iterator[str]:
    """A new person of example.com, whom the provider signs in; honest again afterwards."""
    name = f"p{secrets.token_hex(4)}"
    provider.login_as(f"sub-{name}", f"{name}@example.com", name.title())
    yield f"{name}@example.com"
    provider.honest()


def refusal(response: httpx.Response, status: int, code: str) -> str:
    """Assert an HTML refusal page with `status` and `code`; returns its text."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert f'data-code="{code}"' in response.text, response.text
    return response.text


def signin_fixtures() -> tuple[Any, Any, Any]:
    """A sign-in test module's fixtures, for it to assign at its top level (`provider, site,
    person = signin_fixtures()`): the provider and the server, one of each for the module, and
    a new person for each test. They take the place of tests/conftest.py's `provider`."""

    @pytest.fixture(scope="module")
    def provider() -> Iterator[OidcProvider]:
        with oidc_provider() as running:
            yield running

    @pytest.fixture(scope="module")
    def site(
        provider: OidcProvider, tmp_path_factory: pytest.TempPathFactory
    ) -> Iterator[ServerProcess]:
        with signin_site(tmp_path_factory.mktemp("signin"), provider) as server:
            yield server

    @pytest.fixture
    def person(provider: OidcProvider) -> Iterator[str]:
        """A new person of example.com, whom the provider signs in; honest again afterwards."""
        with new_person(provider) as email:
            yield email

    return provider, site, person
