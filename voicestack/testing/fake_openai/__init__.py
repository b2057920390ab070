"""The OpenAI-compatible test provider: chat streams, tool calls, audio and failures, scripted."""

from voicestack.testing.fake_openai.server import FakeOpenAI

__all__ = ["FakeOpenAI"]
