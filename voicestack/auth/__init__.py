"""Users and bearer tokens (thread membership stays with threads, in voicestack.agent)."""
