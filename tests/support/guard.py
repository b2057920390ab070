"""The access guard in process: waiting for the hub to hear of every commit, and viewers with
tokens of their own (tests/test_access_guard.py, tests/test_access_scopes.py)."""

from __future__ import annotations

import anyio

from voicestack.auth.users import create_token
from voicestack.reactive.access import Viewer
from voicestack.runtime import Runtime


async def settled(rt: Runtime) -> int:
    """The hub's batch count once it has heard of every commit so far."""
    version = await rt.store.read(lambda snapshot: snapshot.version)
    with anyio.fail_after(5):
        while rt.hub.version < version:
            await anyio.sleep(0.005)
    await anyio.sleep(0.05)  # a batch under way ends
    return rt.hub.batches


async def viewer(rt: Runtime, name: str) -> Viewer:
    """A viewer with a new token of the user `name`, identified by the guard."""
    token = (await rt.store.write(lambda db: create_token(db, name)[0])).value
    await settled(rt)
    identity = await rt.access.identify(token)
    assert identity is not None
    return Viewer(identity, rt.access.generation)
