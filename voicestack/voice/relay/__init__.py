"""Relay mode (DESIGN §10): live conversations bridged to an OpenAI Realtime-compatible model."""
