"""A hub batch's query work: re-running the shared queries its commits made stale, and admitting
the subscribers that joined, each with the value it is missing."""

from __future__ import annotations

from voicestack.functions.errors import FunctionError
from voicestack.reactive.listeners import BatchListeners
from voicestack.reactive.payloads import ErrorPayload, Payload
from voicestack.reactive.queries import SharedQueries
from voicestack.reactive.subscription import Outcome, QueryJoin, SharedQuery, run_query
from voicestack.store.changes import changed_since
from voicestack.store.readers import Snapshot


def run_batch_queries(
    snapshot: Snapshot,
    to_run: set[SharedQuery],
    joins: list[QueryJoin],
    listeners: BatchListeners,
) -> tuple[dict[SharedQuery, Outcome], set[int]]:
    """On the hub's reader thread, inside the batch's pinned snapshot: run `to_run`, let the
    listeners collect, and return the outcomes with the indexes of the joins whose client
    already has the current value."""
    outcomes = {shared: run_query(snapshot, shared) for shared in to_run}
    listeners.collect(snapshot)
    current: set[int] = set()
    for index, join in enumerate(joins):
        outcome = outcomes.get(join.shared)
        tables = outcome.tables if outcome else join.shared.tables
        if join.last_version is not None and not changed_since(
            snapshot.conn, join.last_version, snapshot.version, tables
        ):
            current.add(index)
    return outcomes, current


def admit_joins(
    queries: SharedQueries, joins: list[QueryJoin], current: set[int], version: int
) -> None:
    """Attach each join's subscription to its shared query and push it the value at `version`
    (unless its index is in `current`); a join whose query refuses fails with that error."""
    for index, join in enumerate(joins):
        shared, subscription = join.shared, join.subscription
        if join.ready.done():  # the subscriber went away while it waited
            continue
        payload = shared.payload
        if isinstance(payload, ErrorPayload) and (payload.final or not shared.subscriptions):
            if not shared.subscriptions:
                queries.drop(shared)
            join.ready.set_exception(FunctionError(payload.code, payload.message, payload.status))
            continue
        shared.subscriptions.add(subscription)
        if index not in current and payload is not None:
            if isinstance(payload, Payload) and payload.version != version:
                payload = Payload(payload.value_json, version)
            subscription.channel.push(subscription.sub_id, payload)
        join.ready.set_result(None)
