"""The error a server function raises to refuse a call with a code the client can act on."""

from __future__ import annotations


class FunctionError(Exception):
    """A refusal with a snake_case `code` and a human `message`; HTTP answers it with `status`."""

    # True for a refusal that means the caller may no longer see what a watched query reads:
    # the hub then sends the error as the stream's last event and ends the stream.
    ends_subscription: bool = False

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
