"""The whole core schema of a voicestack database: the store's migrations, then the agent's.

The server and the host-side `voicestack db` commands open a database with the same list, so
both agree on what "up to date" means.
"""

from __future__ import annotations

from voicestack.agent.schema import AGENT_MIGRATIONS
from voicestack.store.migrations import CORE_MIGRATIONS, Migration

ALL_MIGRATIONS: tuple[Migration, ...] = (*CORE_MIGRATIONS, *AGENT_MIGRATIONS)

__all__ = ["ALL_MIGRATIONS"]
