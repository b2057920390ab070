"""Opening a watch stream: its channel, its access guard, and its queries joined in one batch.

A stream is guarded before its queries first read the database, so that no commit removing the
viewer's access can fall between the check and the guard. Every query of one stream joins the
same batch, so their first values are one consistent snapshot; if any refuses, the whole stream
is released and the first refusal is raised.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel

from voicestack.functions.registry import ServerFunction
from voicestack.reactive.access import AccessGuard, Viewer
from voicestack.reactive.channel import Outbox
from voicestack.reactive.hub import Hub
from voicestack.reactive.subscription import Subscription


@dataclass(frozen=True, slots=True)
class Stream:
    """An open event stream: the outbox its connection drains, and what to call when it ends."""

    outbox: Outbox
    close: Callable[[], None]


@dataclass(frozen=True, slots=True)
class WatchQuery:
    """One query of a watch stream, with parsed arguments; `sub_id` names it on a multi stream."""

    sub_id: str | None
    function: ServerFunction
    args: BaseModel


async def open_watch(
    hub: Hub,
    guard: AccessGuard,
    queries: list[WatchQuery],
    viewer: Viewer | None,
    last_version: int | None,
    multi: bool,
) -> Stream:
    """A stream of `queries`' values as `viewer` (now, unless `last_version` shows the client
    has them, then on every change), ended when the viewer's access is revoked."""
    channel = hub.open_channel(multi)
    guard.watch(channel, viewer)
    user = viewer.caller if viewer is not None else None
    subscriptions = [Subscription(channel, query.sub_id) for query in queries]

    def release() -> None:
        for subscription in subscriptions:
            hub.unsubscribe(subscription)
        hub.close_channel(channel)

    joins = [
        hub.join(subscription, query.function, query.args, user, last_version)
        for subscription, query in zip(subscriptions, queries, strict=True)
    ]
    try:
        results = await asyncio.gather(*joins, return_exceptions=True)
    except BaseException:
        release()
        raise
    failures = [result for result in results if isinstance(result, BaseException)]
    if failures:
        release()
        raise failures[0]
    return Stream(channel, release)
