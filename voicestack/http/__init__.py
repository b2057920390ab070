"""The HTTP layer: create_app(settings) and one module per route group."""

from voicestack.http.app import create_app

__all__ = ["create_app"]
