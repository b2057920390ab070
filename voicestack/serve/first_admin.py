"""The first admin token: made when a database has no users, kept in `<db>.token` (mode 0600).

Tokens are stored hashed, so the file is the only copy of this one. `voicestack serve` reads it on
every start to print the page's URL with the token, and refuses to listen on a public address
while no token at all is valid.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from voicestack.auth.users import active_token_count, create_token, identify, user_count
from voicestack.schema import ALL_MIGRATIONS
from voicestack.store.db import WriteDB
from voicestack.store.store import Store

FIRST_ADMIN = "admin"


def token_file(db: Path) -> Path:
    """Where the first admin token of database `db` is kept."""
    return db.with_name(db.name + ".token")


@dataclass(frozen=True, slots=True)
class AuthState:
    """What `serve` needs to know about tokens before it listens."""

    page_token: str | None  # the first admin token, while it is still valid
    created: bool  # True when this start made it
    active_tokens: int


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an older file may have had looser bits
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def prepare_auth(db_path: Path) -> AuthState:
    """Migrate `db_path`, create the first admin and its token when there are no users yet
    (writing `<db>.token` before the commit, so a crash between the two never loses it), and
    report which token the page URL can carry."""
    path = token_file(db_path)
    store = Store(db_path, readers=1, migrations=ALL_MIGRATIONS)
    try:
        store.start()

        def first_admin(db: WriteDB) -> str | None:
            if user_count(db):
                return None
            token, _info = create_token(db, FIRST_ADMIN, admin=True)
            _write_private(path, token + "\n")
            return token

        created = store.write_sync(first_admin).value
        token = created or _read_token(path)
        if token is not None and not _identifies(store, token):
            token = None  # revoked, or the file belongs to an older database
        active = store.read_sync(lambda s: active_token_count(s.db()))
    finally:
        store.close()
    return AuthState(token, created is not None, active)


def _identifies(store: Store, token: str) -> bool:
    return store.read_sync(lambda s: identify(s.db(), token)) is not None


def _read_token(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def is_loopback(host: str) -> bool:
    """True when `host` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
