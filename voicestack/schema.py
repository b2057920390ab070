"""The whole core schema of a voicestack database: the store's migrations, then the agent's, then
users and membership, then the scheduler's jobs.

The server and the host-side `voicestack db` commands open a database with the same list, so
both agree on what "up to date" means.
"""

from __future__ import annotations

from voicestack.agent.memory import MEMORY_MIGRATIONS
from voicestack.agent.migrations import AGENT_MIGRATIONS
from voicestack.auth.migrations import AUTH_MIGRATIONS
from voicestack.scheduler.migrations import SCHEDULER_MIGRATIONS
from voicestack.store.migrations import CORE_MIGRATIONS, Migration

ALL_MIGRATIONS: tuple[Migration, ...] = (
    *CORE_MIGRATIONS,
    *AGENT_MIGRATIONS,
    *AUTH_MIGRATIONS,
    *SCHEDULER_MIGRATIONS,
    *MEMORY_MIGRATIONS,
)

__all__ = ["ALL_MIGRATIONS"]
