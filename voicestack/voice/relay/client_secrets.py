"""Short-lived keys for the speech-to-speech provider (OpenAI's Realtime client secrets).

A server that holds the provider's key mints an ephemeral key (`ek_...`) for each connection an
edge opens: `POST .../realtime/client_secrets` with the real key. The edge connects with that
key, which is good for one minute, so the real key never leaves the server that holds it.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import httpx

from voicestack.voice.relay.provider import ProviderUnavailable

# How long a minted key may be used to open a connection (the API's least is 10 s).
SECRET_SECONDS = 60


def client_secrets_url(realtime_url: str) -> str:
    """The REST address that mints keys for the Realtime socket `realtime_url`
    (`wss://host/v1/realtime?model=M` → `https://host/v1/realtime/client_secrets`)."""
    parts = urlsplit(realtime_url)
    scheme = {"wss": "https", "ws": "http"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/client_secrets", "", ""))


async def mint_client_secret(realtime_url: str, api_key: str, model: str, timeout_s: float) -> str:
    """A new ephemeral key for one connection to `realtime_url`; raises ProviderUnavailable
    when the provider gives none (it refuses, cannot be reached, or mints no keys)."""
    body = {
        "expires_after": {"anchor": "created_at", "seconds": SECRET_SECONDS},
        "session": {"type": "realtime", "model": model},
    }
    headers = {"Authorization": f"Bearer {api_key}"}
    try:
        async with httpx.AsyncClient(timeout=timeout_s) as http:
            answer = await http.post(client_secrets_url(realtime_url), json=body, headers=headers)
    except httpx.HTTPError as exc:
        raise ProviderUnavailable(f"no short-lived key: {exc}") from None
    if answer.status_code != 200:
        raise ProviderUnavailable(f"no short-lived key: the provider answered {answer.status_code}")
    try:
        value = answer.json()["value"]
    except (ValueError, KeyError, TypeError):
        value = None
    if not isinstance(value, str) or not value:
        raise ProviderUnavailable("no short-lived key: the provider's answer has no `value`")
    return value
