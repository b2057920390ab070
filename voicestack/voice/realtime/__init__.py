"""Live conversation over one WebSocket: wire messages, audio codec, VAD turns, barge-in."""
