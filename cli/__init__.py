"""The voicestack command line: a thin Typer shell over the library and the HTTP API."""
