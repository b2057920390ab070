"""Tokens and API keys never reach a log: a logging filter masks them in every record."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote_plus

# Query parameters whose value is a secret, by their decoded name: the server decodes
# `?%74oken=` to `token` too, so the log must see through the encoding as well.
# `code` and `state` are a sign-in's authorization code and its state (/auth/callback/NAME).
SECRET_PARAMS = frozenset({"token", "api_key", "apikey", "access_token", "code", "state"})
_PARAM = re.compile(r"(?P<head>(?:^|[?&\s])(?P<name>[^=&\s\"'?#]+)=)(?P<value>[^&\s\"'#]+)")
# A bearer header, or anything shaped like one of our tokens or an OpenAI key, even
# percent-encoded (`vs%5F...`).
_SHAPES = re.compile(
    r"(?P<bearer>Bearer\s+)[^\s\"']+"
    r"|vs(?:_|%5F)(?:[A-Za-z0-9_-]|%5F|%2D){43}"
    r"|sk-[A-Za-z0-9_-]{16,}",
    re.IGNORECASE,
)
MASK = "[redacted]"
# Keys of any shape (a local speech server's key need not look like OpenAI's), masked verbatim.
# Shorter ones would mask ordinary words; no real key is that short.
_MIN_KNOWN_CHARS = 4
_known: list[str] = []


def _mask_param(match: re.Match[str]) -> str:
    if unquote_plus(match["name"]).lower() in SECRET_PARAMS:
        return match["head"] + MASK
    return match[0]


def _mask_shape(match: re.Match[str]) -> str:
    return (match["bearer"] or "") + MASK


def redact(text: str) -> str:
    """`text` with every token or key replaced by `[redacted]`."""
    for secret in _known:
        text = text.replace(secret, MASK)
    return _SHAPES.sub(_mask_shape, _PARAM.sub(_mask_param, text))


def _redact_arg(value: Any) -> Any:
    return redact(value) if isinstance(value, str) else value


class RedactSecrets(logging.Filter):
    """Masks secrets in a record's message, string arguments and traceback (uvicorn's access
    log passes the request path, query string included, as an argument)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record in place; never drops it."""
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redact_arg(arg) for arg in record.args)
        elif isinstance(record.args, dict):
            record.args = {key: _redact_arg(arg) for key, arg in record.args.items()}
        if record.exc_info and not record.exc_text:
            # Formatters reuse `exc_text` once set: the traceback is formatted here, masked.
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_FILTER = RedactSecrets()
_LOGGERS = ("", "uvicorn", "uvicorn.access", "uvicorn.error")


def install_log_redaction(known: Iterable[str] = ()) -> None:
    """Put the filter on every handler of the root and uvicorn loggers (idempotent); it masks
    the `known` secrets (the configured API keys) verbatim as well."""
    for secret in known:
        if len(secret) >= _MIN_KNOWN_CHARS and secret not in _known:
            _known.append(secret)
    _known.sort(key=len, reverse=True)  # a key that contains another is masked whole
    for logger in map(logging.getLogger, _LOGGERS):
        for handler in logger.handlers:
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)
