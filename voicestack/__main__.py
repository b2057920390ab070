"""`python -m voicestack` is the `voicestack` command."""

from cli.main import run

run()
