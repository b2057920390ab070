"""Serving: the uvicorn server, the first admin token, and the `--workers` supervisor."""
