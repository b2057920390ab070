"""The HTTP client the CLI talks to a server with; every failure becomes one CliError line."""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn, Self

import httpx

from cli.errors import USAGE, CliError
from cli.options import DEFAULT_URL

TIMEOUT_S = 10.0


def server_url(raw: str) -> str:
    """The server URL without a trailing slash; a CliError when it is not http(s)."""
    url = raw.strip().rstrip("/")
    parsed = httpx.URL(url) if "://" in url else None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        raise CliError(
            f"--server must be an http:// or https:// URL such as {DEFAULT_URL}, not {raw!r}.",
            USAGE,
        )
    return url


def _error_body(response: httpx.Response) -> tuple[str, str] | None:
    """(code, message) of a voicestack error body, or None when it is something else."""
    try:
        error = response.json()["error"]
        return str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        return None


def local_token(url: str) -> str | None:
    """For a server on this machine, the first admin token that `voicestack serve` keeps beside
    its database (`$VOICESTACK_DB.token`, default ./voicestack.db.token), when it is readable."""
    host = httpx.URL(url).host
    if host not in ("127.0.0.1", "localhost", "::1"):
        return None  # never send a local secret to another machine
    db = Path(os.environ.get("VOICESTACK_DB") or "voicestack.db")
    try:
        return db.with_name(db.name + ".token").read_text().strip() or None
    except OSError:
        return None


class ApiClient:
    """A voicestack server seen from the CLI: JSON calls, and the raw httpx client for streams.

    Without `token`, a server on this machine is called with the token in its database's token
    file (`local_token`), so `voicestack thread list` works beside `voicestack serve`.
    """

    def __init__(self, server: str, token: str | None, timeout: float = TIMEOUT_S) -> None:
        self.url = server_url(server)
        self.timeout = timeout
        headers = {"Accept": "application/json"}
        self.token_file_used = False
        if not token:
            token = local_token(self.url)
            self.token_file_used = token is not None
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections."""
        self.http.close()

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """GET `path`; the JSON body."""
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any = None) -> Any:
        """POST `path` with a JSON body; the JSON answer."""
        return self.request("POST", path, body=body)

    def request(
        self, method: str, path: str, *, params: dict[str, Any] | None = None, body: Any = None
    ) -> Any:
        """One JSON call; a CliError for a transport failure or an error status."""
        try:
            response = self.http.request(
                method,
                path,
                params={k: v for k, v in (params or {}).items() if v is not None},
                json=body,
            )
        except httpx.TransportError as exc:
            self.transport_failed(exc)
        self.check(response)
        try:
            return response.json()
        except ValueError:
            raise CliError(
                f"The server at {self.url} answered {path} with something other than JSON;"
                " is it a voicestack server?"
            ) from None

    def check(self, response: httpx.Response) -> None:
        """Raise a CliError saying what went wrong when `response` is not a success."""
        if response.is_success:
            return
        if not response.is_stream_consumed:
            response.read()
        status = response.status_code
        known = _error_body(response)
        if known is None:
            raise CliError(
                f"The server at {self.url} answered HTTP {status} {response.reason_phrase}"
                f" to {response.request.method} {response.request.url.path}."
            )
        code, message = known
        if status in (401, 403):
            source = (
                " (the token came from the database's token file on this machine, which may"
                " belong to another database than the server's)"
                if status == 401 and self.token_file_used
                else ""
            )
            raise CliError(
                f"The server refused the request (HTTP {status}, {code}): {message}{source}"
                " Pass a valid --token or set VOICESTACK_TOKEN."
            )
        if status == 404 and code == "not_found":
            raise CliError(f"{message} Is {self.url} a voicestack server of this version?")
        raise CliError(f"{message} ({code})")

    def transport_failed(self, exc: httpx.TransportError) -> NoReturn:
        """Raise the CliError for a request that never got an answer."""
        raise CliError(self.transport_message(exc)) from None

    def transport_message(self, exc: httpx.TransportError) -> str:
        """What went wrong with the connection, in one sentence."""
        reason = " ".join(str(exc).split()) or type(exc).__name__
        if isinstance(exc, httpx.ConnectError):
            return (
                f"Cannot reach the voicestack server at {self.url} ({reason}). Start it with"
                " `voicestack serve`, or pass --server / set VOICESTACK_URL."
            )
        if isinstance(exc, httpx.TimeoutException):
            return f"The server at {self.url} did not answer within {self.timeout:g} s."
        return f"Lost the connection to the server at {self.url} ({reason})."
