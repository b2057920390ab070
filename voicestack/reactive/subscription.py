"""The objects the hub keeps for queries: shared queries, their subscriptions and joins."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from pydantic import BaseModel

from voicestack import jsoncodec
from voicestack.functions.context import QueryCtx
from voicestack.functions.errors import FunctionError
from voicestack.functions.registry import ServerFunction
from voicestack.identity import Caller
from voicestack.reactive.channel import Channel
from voicestack.reactive.payloads import ErrorPayload, Payload
from voicestack.store.readers import Snapshot

log = logging.getLogger(__name__)

# A shared query's identity: function name, canonical JSON arguments, user id.
SharedKey = tuple[str, bytes, str | None]


@dataclass(eq=False)
class SharedQuery:
    """One query with one set of arguments for one user, shared by all its subscriptions."""

    function: ServerFunction
    args: BaseModel
    user: Caller | None
    key: SharedKey
    tables: frozenset[str] = frozenset()
    payload: Payload | ErrorPayload | None = None
    # The version at which the value last changed: a client that has seen it is up to date.
    changed_version: int = 0
    subscriptions: set[Subscription] = field(default_factory=set)

    def fan_out(self, payload: Payload | ErrorPayload, now: float) -> None:
        """Send `payload` to every subscription: its pre-framed bytes written straight to each
        idle one-subscription stream, pushed to the outbox of every other."""
        frame = payload.single_frame() if isinstance(payload, Payload) else None
        for subscription in self.subscriptions:
            channel = subscription.channel
            if (
                frame is not None
                and subscription.sub_id is None
                and not channel.has_pending()
                and channel.write_direct(frame, now)
            ):
                continue
            channel.push(subscription.sub_id, payload)


@dataclass(eq=False)
class Subscription:
    """One client's interest in a SharedQuery, delivered to its Channel under `sub_id`."""

    channel: Channel
    sub_id: str | None
    shared: SharedQuery | None = None


@dataclass(eq=False)
class QueryJoin:
    """A subscription waiting to be attached in the next batch; `ready` says when it is."""

    subscription: Subscription
    shared: SharedQuery
    last_version: int | None
    ready: asyncio.Future[None]


@dataclass(slots=True)
class Outcome:
    """One run of a shared query: its read set, and its JSON value or its refusal."""

    tables: frozenset[str]
    value_json: bytes | None
    error: FunctionError | None


def shared_key(function: ServerFunction, args: BaseModel, user: Caller | None) -> SharedKey:
    """The identity of a shared query: function name, canonical arguments, user."""
    return (function.name, jsoncodec.dumps(args.model_dump(mode="json")), user.id if user else None)


def run_query(snapshot: Snapshot, shared: SharedQuery) -> Outcome:
    """Run a shared query in `snapshot`, returning its read set and JSON value or its refusal."""
    db = snapshot.db()
    try:
        value = shared.function.invoke(QueryCtx(db, shared.user, snapshot.version), shared.args)
        return Outcome(frozenset(db.tables_read), jsoncodec.dumps(value), None)
    except FunctionError as exc:
        return Outcome(frozenset(db.tables_read), None, exc)
    except Exception as exc:
        log.exception("query %s failed", shared.function.name)
        reason = f"The query failed ({type(exc).__name__}); see the server log."
        error = FunctionError("internal_error", reason, 500)
        return Outcome(frozenset(db.tables_read), None, error)
