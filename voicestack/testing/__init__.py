"""Test and benchmark helpers, including a real OpenAI-compatible fake HTTP server."""
