"""Requests the HTTP parser refuses before the app sees them, answered in the JSON error shape.

uvicorn answers a request httptools cannot parse with a plain-text 400. The one a client meets
in practice is a long URL: httptools keeps URL offsets in 16 bits, so a URL (path and query)
over MAX_URL_BYTES cannot be served at all, whatever `--max-args-bytes` says. That one gets
`414 url_too_long`, saying so; any other unparsable request `400 bad_request`.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from voicestack import jsoncodec
from voicestack.http.headers import with_security_headers

MAX_URL_BYTES = 65_535

URL_TOO_LONG = (
    f"The URL is over the {MAX_URL_BYTES:,}-byte limit: "
    "shorten the arguments in ?args= or ?q= (they are percent-encoded)."
)


def parser_refusal(url_length: int) -> tuple[int, bytes]:
    """The status and JSON body for a request the parser refused, whose URL had `url_length`
    bytes when it stopped."""
    if url_length > MAX_URL_BYTES:
        status, code, message = 414, "url_too_long", URL_TOO_LONG
    else:
        status, code, message = 400, "bad_request", "The request is not valid HTTP/1.1."
    return status, jsoncodec.dumps({"error": {"code": code, "message": message}})


class JsonParserErrors(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing unparsable requests with a JSON error."""

    def send_400_response(self, msg: str) -> None:
        """Write the refusal for the request being parsed, then close the connection."""
        # `url` is set when the first request begins: garbage before that has none.
        status, body = parser_refusal(len(getattr(self, "url", b"")))
        headers = [
            *self.server_state.default_headers,
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        lines = [STATUS_LINE[status]]
        lines += [name + b": " + value + b"\r\n" for name, value in with_security_headers(headers)]
        self.transport.write(b"".join([*lines, b"\r\n", body]))
        self.transport.close()
