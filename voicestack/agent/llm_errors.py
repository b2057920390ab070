"""What a failed provider call means, in words that name the provider, its URL and the fix."""

from __future__ import annotations

import email.utils
import json
import math
import os
import time
from dataclasses import dataclass
from datetime import UTC
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

from voicestack.agent.llm_wire import NotAStream

if TYPE_CHECKING:
    from collections.abc import Mapping

    import openai

NOT_CONFIGURED_MESSAGE = (
    "No model provider is configured: set OPENAI_API_KEY, "
    "or --openai-base-url for an OpenAI-compatible server."
)
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Provider clients do not follow redirects: a 301 or 302 would resend the call as a GET without
# its body, and one to another host without its key, failing there with an error that hides
# the redirect. The 3xx is reported instead, with where it points.
FOLLOW_REDIRECTS = False
_DETAIL_LIMIT = 300


@dataclass(frozen=True)
class ProviderRole:
    """What a provider is for, as its error messages name it: "The {name} provider at URL"."""

    name: str = "model"
    key_setting: str = "OPENAI_API_KEY"
    not_configured: str = NOT_CONFIGURED_MESSAGE


CHAT_ROLE = ProviderRole()


def describe_failure(
    exc: Exception,
    role: ProviderRole,
    where: str,
    *,
    responded: bool,
    after: str,
    model: str,
    timeout_s: float,
) -> tuple[str, str, bool]:
    """Code, message and retryability of a failed call to the provider at `where`."""
    import openai  # the SDK loads on first use (voicestack/agent/llm.py)

    them = f"The {role.name} provider"
    # The chat's own messages predate the other roles; an audio provider's always names its URL.
    who = them if role == CHAT_ROLE else f"{them} at {where}"
    if isinstance(exc, openai.APITimeoutError):
        late = "went silent mid-reply for" if responded else "did not answer within"
        return "provider_timeout", f"{them} at {where} {late} {timeout_s:g} s{after}.", True
    if isinstance(exc, openai.APIConnectionError) and responded:
        broken = f"{them}'s stream was cut off mid-reply{after} ({_reason(exc)})."
        return "provider_stream_broken", broken, True
    if isinstance(exc, openai.APIConnectionError):
        return (
            "provider_unreachable",
            f"Could not connect to the {role.name} provider at {where}{after} ({_reason(exc)}). "
            "Check that it is running and that the base URL is right.",
            True,
        )
    if isinstance(exc, openai.APIStatusError) and 300 <= exc.status_code < 400:
        return "provider_bad_request", _redirected(exc, f"{them} at {where}"), False
    if isinstance(exc, openai.APIStatusError):
        return _describe_status(exc.status_code, _detail(exc), role, who, model, after)
    if isinstance(exc, openai.OpenAIError):
        return "provider_error", f"{who} reported an error: {_detail(exc)}.", False
    if isinstance(exc, NotAStream):
        wrong = answered_instead(role, where, str(exc), "an event stream")
        return "provider_bad_response", wrong, False
    if isinstance(exc, json.JSONDecodeError):
        what = "a stream chunk" if role == CHAT_ROLE else "an answer"
        bad = f"{what} that is not valid JSON ({exc.msg} at character {exc.pos})"
    elif isinstance(exc, UnicodeDecodeError):
        bad = "a stream that is not UTF-8"
    else:
        bad = f"data that is not a chat completion chunk: {exc}"
    return "provider_bad_response", f"{who} sent {bad}.", False


def answered_instead(role: ProviderRole, where: str, answered: str, wanted: str) -> str:
    """The message for a provider at `where` that answered `answered` (a media type, '' for
    none, or what the body was) where `wanted` was asked for: most often a base URL that
    reaches a web page."""
    return (
        f"The {role.name} provider at {where} answered {answered or 'no content type'} instead"
        f" of {wanted}. Check the base URL: an OpenAI-compatible API's usually ends in /v1."
    )


def redact(message: str, api_key: str | None) -> str:
    """`message` with `api_key`, wherever the provider's words or a URL quote it, shown as
    `[redacted]`."""
    return message.replace(api_key, "[redacted]") if api_key else message


def shortened(text: str) -> str:
    """A provider's own words on one line, cut to at most _DETAIL_LIMIT characters."""
    text = " ".join(text.split())
    return text if len(text) <= _DETAIL_LIMIT else text[: _DETAIL_LIMIT - 3] + "..."


def _describe_status(
    status: int, detail: str, role: ProviderRole, who: str, model: str, after: str
) -> tuple[str, str, bool]:
    """Code, message and retryability for an HTTP error status the provider answered."""
    http = f"HTTP {status}: {detail}" if detail else f"HTTP {status}, with no explanation"
    if status == 401:
        message = f"{who} rejected the API key ({http}). Check {role.key_setting}."
        return "provider_auth_failed", message, False
    if status == 403:
        message = f"{who} refused access ({http}). Check that the key may use"
        return "provider_auth_failed", f"{message} model {model!r}.", False
    if status == 429:
        message = f"{who} is rate limiting requests ({http}){after}."
        return "provider_rate_limited", f"{message} Wait a moment and try again.", True
    if status >= 500:
        message = f"{who} failed ({http}){after}."
        return "provider_error", message, status in RETRY_STATUSES
    hint = f" Check the model name {model!r} and the base URL." if status == 404 else ""
    return "provider_bad_request", f"{who} rejected the request ({http}).{hint}", False


def _redirected(exc: openai.APIStatusError, who: str) -> str:
    location = exc.response.headers.get("location")
    if not location:
        return f"{who} answered HTTP {exc.status_code}, a redirect with no Location."
    try:
        target = display_url(urljoin(str(exc.request.url), location))
    except ValueError:  # not a URL (an unclosed IPv6 bracket, say)
        return f"{who} answered HTTP {exc.status_code}, a redirect to a malformed Location."
    return (
        f"{who} answered HTTP {exc.status_code}, a redirect to {target}. Check the base URL:"
        " voicestack does not follow a provider's redirects."
    )


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds the provider asked to wait: retry-after-ms, or Retry-After seconds or HTTP-date."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        try:
            seconds = float(headers.get(name, "")) * scale
        except ValueError:
            continue
        if math.isfinite(seconds):
            return max(0.0, seconds)
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, moment.timestamp() - time.time())


def after_retries(retries: int) -> str:
    if not retries:
        return ""
    return f" after {retries} {'retry' if retries == 1 else 'retries'}"


def _detail(exc: openai.OpenAIError) -> str:
    """The provider's own error message, on one line and not too long ('' when it gave none)."""
    import openai

    message = _explanation(getattr(exc, "body", None))
    if message is None and not isinstance(exc, openai.APIStatusError):
        message = str(exc)  # the client's own words; a status error's are only "Error code: N"
    return shortened(" ".join((message or "").split()).rstrip("."))


def _explanation(body: object) -> str | None:
    """The text of an error body in the shapes providers use: OpenAI's `{"message"}`, Ollama's
    `{"error": "..."}`, FastAPI's `{"detail": "..."}`, or plain text."""
    if isinstance(body, str):
        return body if body.strip() else None
    if isinstance(body, dict):
        for key in ("message", "error", "detail"):
            found = _explanation(body.get(key))
            if found is not None:
                return found
    return None


def _reason(exc: BaseException) -> str:
    """The deepest cause of a transport failure in its own words, e.g. "Connection refused"."""
    for _ in range(10):
        inner = exc.__cause__ or exc.__context__
        if inner is None:
            break
        exc = inner
    if isinstance(exc, OSError) and exc.errno and exc.errno > 0:
        return os.strerror(exc.errno)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def display_url(url: str) -> str:
    """The URL without credentials or query, safe to show in an error message."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}{parts.path}".rstrip("/")
