"""The hub's live shared queries: found by identity, indexed by the tables they read.

A commit invalidates exactly the shared queries whose read set holds a table it changed; a
re-run's value goes out only when it differs from the last one sent.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from pydantic import BaseModel

from voicestack.functions.registry import ServerFunction
from voicestack.identity import Caller
from voicestack.reactive.channel import Channel
from voicestack.reactive.payloads import ErrorPayload, Payload
from voicestack.reactive.subscription import Outcome, SharedKey, SharedQuery, shared_key
from voicestack.store.changes import ChangeSet


class SharedQueries:
    """Every live SharedQuery, by (function, arguments, user) and by the tables it read."""

    def __init__(self) -> None:
        self._by_key: dict[SharedKey, SharedQuery] = {}
        self._by_table: dict[str, set[SharedQuery]] = defaultdict(set)

    def __len__(self) -> int:
        return len(self._by_key)

    def get(self, function: ServerFunction, args: BaseModel, user: Caller | None) -> SharedQuery:
        """The shared query of `function` with `args` for `user`, new if nobody watches it."""
        key = shared_key(function, args, user)
        shared = self._by_key.get(key)
        if shared is None:
            shared = SharedQuery(function, args, user, key)
            self._by_key[key] = shared
        return shared

    def all(self) -> set[SharedQuery]:
        """Every live shared query."""
        return set(self._by_key.values())

    @property
    def subscription_count(self) -> int:
        """How many subscriptions are attached in all."""
        return sum(len(s.subscriptions) for s in self._by_key.values())

    def reads(self, table: str) -> bool:
        """Whether some live query read `table`."""
        return table in self._by_table

    def drop(self, shared: SharedQuery) -> None:
        """Forget `shared` (nobody watches it any more)."""
        if self._by_key.get(shared.key) is shared:
            del self._by_key[shared.key]
        for table in shared.tables:
            watchers = self._by_table.get(table)
            if watchers is not None:
                watchers.discard(shared)
                if not watchers:
                    del self._by_table[table]

    def invalidated(self, changes: Iterable[ChangeSet]) -> set[SharedQuery]:
        """The shared queries that read a table one of `changes` touched."""
        stale: set[SharedQuery] = set()
        for changeset in changes:
            for table in changeset.tables:
                watchers = self._by_table.get(table)
                if watchers:
                    stale |= watchers
        return stale

    def apply(self, outcomes: dict[SharedQuery, Outcome], version: int, now: float) -> None:
        """Record each re-run's read set and push every value that changed, at `version`."""
        ending: set[Channel] = set()
        for shared, outcome in outcomes.items():
            if self._by_key.get(shared.key) is not shared:
                continue  # dropped while it ran
            self._index(shared, outcome.tables)
            if outcome.error is not None:
                payload: Payload | ErrorPayload = ErrorPayload(
                    outcome.error.code,
                    outcome.error.message,
                    version,
                    outcome.error.status,
                    outcome.error.ends_subscription,
                )
            elif isinstance(shared.payload, Payload) and (
                shared.payload.value_json == outcome.value_json
            ):
                continue
            else:
                assert outcome.value_json is not None
                payload = Payload(outcome.value_json, version)
            shared.payload = payload
            shared.changed_version = version
            shared.fan_out(payload, now)
            if isinstance(payload, ErrorPayload) and payload.final:
                ending.update(subscription.channel for subscription in shared.subscriptions)
        # Access is gone: the error goes out with the rest of this version, then the stream
        # ends (all of a multi-watch, which could no longer be served as it was asked for).
        for channel in ending:
            channel.close()

    def _index(self, shared: SharedQuery, tables: frozenset[str]) -> None:
        if tables == shared.tables:
            return
        for table in shared.tables - tables:
            watchers = self._by_table.get(table)
            if watchers is not None:
                watchers.discard(shared)
        for table in tables - shared.tables:
            self._by_table[table].add(shared)
        shared.tables = tables
