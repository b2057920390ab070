"""The whole core schema of a voicestack database, in the order it was built: the store's own
tables, the agent's, users and tokens, thread membership, the jobs table with the agent's reply
jobs, full-text search over messages, the live conversations' per-turn metrics, named agents
with cost per message, each reply's usage in parts (one per agent that answered), threads'
metadata, the one-time tokens of phone calls' media streams, sign-in's identities and
sessions, semantic memory, the ids the access guard reads, fixed, messages indexed for search
just after their commit, and each thread's last message position.

The server and the host-side `voicestack db` and `token` commands open a database with the same
list, so both agree on what "up to date" means. The order and count are history: a database
records how many of these it has had, so a change is always a new migration at the end.
"""

from __future__ import annotations

from voicestack.agent.memory_migrations import SEMANTIC_MEMORY_MIGRATIONS
from voicestack.agent.migrations import (
    AGENT_BINDING_MIGRATIONS,
    AGENT_MIGRATIONS,
    MEMBERSHIP_MIGRATIONS,
    MEMORY_MIGRATIONS,
    REPLY_JOBS_SQL,
    REPLY_PARTS_MIGRATIONS,
    SEARCH_INDEX_MIGRATIONS,
    THREAD_METADATA_MIGRATIONS,
    THREAD_POSITION_MIGRATIONS,
    VOICE_METRICS_MIGRATIONS,
)
from voicestack.auth.migrations import ACCESS_KEYS_MIGRATIONS, AUTH_MIGRATIONS
from voicestack.auth.signin_migrations import SIGNIN_MIGRATIONS
from voicestack.scheduler.migrations import JOBS_TABLE_SQL
from voicestack.store.migrations import CORE_MIGRATIONS, Migration
from voicestack.voice.telephony.migrations import TELEPHONY_MIGRATIONS

ALL_MIGRATIONS: tuple[Migration, ...] = (
    *CORE_MIGRATIONS,
    *AGENT_MIGRATIONS,
    *AUTH_MIGRATIONS,
    *MEMBERSHIP_MIGRATIONS,
    Migration("scheduler_jobs", JOBS_TABLE_SQL + REPLY_JOBS_SQL),
    *MEMORY_MIGRATIONS,
    *VOICE_METRICS_MIGRATIONS,
    *AGENT_BINDING_MIGRATIONS,
    *REPLY_PARTS_MIGRATIONS,
    *THREAD_METADATA_MIGRATIONS,
    *TELEPHONY_MIGRATIONS,
    *SIGNIN_MIGRATIONS,
    *SEMANTIC_MEMORY_MIGRATIONS,
    *ACCESS_KEYS_MIGRATIONS,
    *SEARCH_INDEX_MIGRATIONS,
    *THREAD_POSITION_MIGRATIONS,
)

__all__ = ["ALL_MIGRATIONS"]
