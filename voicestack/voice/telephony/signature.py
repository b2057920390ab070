"""Twilio's request signature: `X-Twilio-Signature` is the base64 HMAC-SHA1, keyed with the
account's auth token, of the full URL Twilio requested followed by each POST parameter's name
and value, sorted by name. Twilio's own libraries accept the URL with or without its scheme's
default port (`https://host:443/...` or `https://host/...`), so both forms are checked."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

_DEFAULT_PORTS = {"https": 443, "http": 80}


def twilio_signature(auth_token: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    """The signature Twilio sends for a POST of `params` to `url`."""
    payload = url + "".join(name + value for name, value in sorted(params))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def url_forms(url: str) -> tuple[str, ...]:
    """`url` as given, and with its scheme's default port added or removed."""
    parts = urlsplit(url)
    default = _DEFAULT_PORTS.get(parts.scheme)
    if default is None or (parts.port is not None and parts.port != default):
        return (url,)
    if parts.port is None:
        other = parts._replace(netloc=f"{parts.netloc}:{default}")
    else:
        other = parts._replace(netloc=parts.netloc.rsplit(":", 1)[0])
    return (url, urlunsplit(other))


def signature_matches(
    auth_token: str, url: str, params: Iterable[tuple[str, str]], signature: str | None
) -> bool:
    """True when `signature` is Twilio's for this request, over either form of `url` (compared
    in constant time)."""
    if not signature:
        return False
    pairs = list(params)
    return any(
        hmac.compare_digest(twilio_signature(auth_token, form, pairs).encode(), signature.encode())
        for form in url_forms(url)
    )
