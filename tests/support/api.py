"""The public HTTP contract from a client's side: calling functions, and the one error shape."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

JSON = "application/json"


@dataclass(frozen=True)
class Result:
    """A successful call's `value` and `version`."""

    value: Any
    version: int


class Api:
    """Calls server functions over HTTP with an httpx.AsyncClient bound to the server's URL."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def call(self, kind: str, name: str, args: dict[str, Any] | None = None) -> Result:
        """POST /api/{kind}/{name}; asserts 200 and the exact `{"value", "version"}` shape."""
        response = await self.client.post(f"/api/{kind}/{name}", json={"args": args or {}})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == JSON
        body = response.json()
        assert set(body) == {"value", "version"}, body
        assert isinstance(body["version"], int), body
        return Result(body["value"], body["version"])

    async def query(self, name: str, args: dict[str, Any] | None = None) -> Result:
        """Run a query."""
        return await self.call("query", name, args)

    async def mutation(self, name: str, args: dict[str, Any] | None = None) -> Result:
        """Run a mutation; returns after its commit."""
        return await self.call("mutation", name, args)

    async def action(self, name: str, args: dict[str, Any] | None = None) -> Result:
        """Run an action."""
        return await self.call("action", name, args)


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Assert `response` is the JSON error `{"error": {"code", "message", ...}}`; return it.

    The message must be a non-empty sentence; any further keys (such as `fields`) are returned
    for the caller to compare exactly.
    """
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"] == JSON, response.headers
    body = response.json()
    assert list(body) == ["error"], body
    error = body["error"]
    assert isinstance(error, dict), body
    assert error["code"] == code, body
    assert isinstance(error["message"], str), body
    assert error["message"].strip(), body
    return error
