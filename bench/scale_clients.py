"""Subscribers of `bench/scale.py`: bench/peers_clients.py's client processes, with distinct
credentials per stream when asked, and made tokens for them.

peers_clients builds every stream of a process from one request. To measure what the edges'
deduplication saves, each stream may instead carry a token of its own (an edge keys its
upstreams by path, query and credentials, so N tokens are N subscriptions on the primary): the
client process then gives each new stream the next token's request, and is otherwise the same
process, measuring the same way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path

from bench import peers_clients
from bench.peers_clients import ClientSpec, Group, Sub, stream_request


def _per_token(spec: ClientSpec, tokens: list[str]) -> type[Sub]:
    requests: Iterator[bytes] = iter(
        [stream_request(dataclasses.replace(spec, token=token)) for token in tokens]
    )

    class TokenSub(Sub):
        """A stream that sends the next token's request instead of the shared one."""

        def __init__(self, request: bytes, ready_pattern: bytes, group: Group, pb: bool) -> None:
            super().__init__(next(requests, request), ready_pattern, group, pb)

    return TokenSub


def client_process(conn: Connection, spec: ClientSpec, tokens: list[str]) -> None:
    """peers_clients.client_process; with `tokens` (one per stream), each stream uses its own."""
    if tokens:
        # This is a spawned process of its own: only its streams are built this way.
        peers_clients.Sub = _per_token(spec, tokens)  # type: ignore[misc]
    peers_clients.client_process(conn, spec)


def make_tokens(db: Path, count: int) -> list[str]:
    """`count` new admin tokens, each of a user of its own, on the database file (the server
    may be running: the write takes SQLite's lock, as `voicestack token create` does)."""
    from voicestack.auth.users import create_token
    from voicestack.schema import ALL_MIGRATIONS
    from voicestack.store.db import WriteDB
    from voicestack.store.store import Store

    def create(conn: WriteDB) -> list[str]:
        return [create_token(conn, f"scale-bench-{n}", admin=True)[0] for n in range(count)]

    store = Store(db, readers=1, migrations=ALL_MIGRATIONS)
    try:
        store.start()
        made: list[str] = store.write_sync(create).value
        return made
    finally:
        store.close()
