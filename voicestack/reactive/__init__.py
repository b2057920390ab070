"""Subscriptions: read sets, invalidation, re-runs and fan-out to SSE clients."""
