"""Users and bearer tokens: create, look up, list and revoke; tokens are stored only as hashes.

A token is `vs_` followed by 256 random bits (base64url). It is shown once, when created; the
database keeps its SHA-256, so a copy of the database never grants access.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any, Literal

from voicestack.functions.errors import FunctionError
from voicestack.identity import Caller
from voicestack.store.db import ReadDB, WriteDB

Role = Literal["admin", "user"]
TOKEN_PREFIX = "vs_"  # noqa: S105 - a prefix, not a secret
_TOKEN_RE = re.compile(r"^vs_[A-Za-z0-9_-]{43}$")
USER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


def new_token() -> str:
    """A fresh token: `vs_` + 32 random bytes, base64url without padding (46 characters)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def looks_like_token(text: str) -> bool:
    """True when `text` has a token's shape (says nothing about whether it is valid)."""
    return bool(_TOKEN_RE.match(text))


def token_hash(token: str) -> bytes:
    """The SHA-256 the database stores for `token`."""
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """A token's row as `token list` shows it: never the token itself."""

    id: str
    user_id: str
    user: str
    role: Role
    created_at: float
    revoked_at: float | None

    def as_json(self) -> dict[str, Any]:
        """The camelCase JSON shape."""
        return {
            "id": self.id,
            "userId": self.user_id,
            "user": self.user,
            "role": self.role,
            "createdAt": self.created_at,
            "revokedAt": self.revoked_at,
        }


_SELECT_CREDENTIALS = (
    "SELECT t.id, t.user_id, u.name, u.role, t.created_at, t.revoked_at"
    " FROM auth_tokens t JOIN auth_users u ON u.id = t.user_id"
)


def _info(row: dict[str, Any]) -> TokenInfo:
    return TokenInfo(
        row["id"], row["user_id"], row["name"], row["role"], row["created_at"], row["revoked_at"]
    )


def check_user_name(name: str) -> str:
    """`name` if it is a valid user name; otherwise an `invalid_user` error (400)."""
    if not USER_NAME_RE.match(name):
        raise FunctionError(
            "invalid_user",
            "A user name is 1-64 letters, digits or . _ @ -, starting with a letter or digit.",
        )
    return name


def user_by_name(db: ReadDB | WriteDB, name: str) -> Caller | None:
    """The user called `name`, if any."""
    row = db.one("SELECT id, name, role FROM auth_users WHERE name = ?", (name,))
    return Caller(row["id"], row["name"], row["role"]) if row else None


def user_by_id(db: ReadDB | WriteDB, user_id: str) -> Caller | None:
    """The user with id `user_id`, with their current name and role, if any."""
    row = db.one("SELECT id, name, role FROM auth_users WHERE id = ?", (user_id,))
    return Caller(row["id"], row["name"], row["role"]) if row else None


def ensure_user(db: WriteDB, name: str, role: Role = "user") -> Caller:
    """The user called `name`, created with `role` if missing; an existing user asked to be an
    admin becomes one (an admin is never demoted here)."""
    check_user_name(name)
    user = user_by_name(db, name)
    if user is None:
        user_id = f"usr_{secrets.token_hex(8)}"
        db.execute(
            "INSERT INTO auth_users(id, name, role, created_at) VALUES (?, ?, ?, ?)",
            (user_id, name, role, time.time()),
        )
        return Caller(user_id, name, role)
    if role == "admin" and not user.is_admin:
        db.execute("UPDATE auth_users SET role = 'admin' WHERE id = ?", (user.id,))
        return Caller(user.id, user.name, "admin")
    return user


def create_token(db: WriteDB, user_name: str, admin: bool = False) -> tuple[str, TokenInfo]:
    """A new token for `user_name` (the user is created if missing): the token, shown this once,
    and its row."""
    user = ensure_user(db, user_name, "admin" if admin else "user")
    token = new_token()
    token_id = f"tok_{secrets.token_hex(6)}"
    created = time.time()
    db.execute(
        "INSERT INTO auth_tokens(id, user_id, hash, created_at) VALUES (?, ?, ?, ?)",
        (token_id, user.id, token_hash(token), created),
    )
    return token, TokenInfo(token_id, user.id, user.name, user.role, created, None)  # type: ignore[arg-type]


def list_tokens(db: ReadDB | WriteDB) -> list[TokenInfo]:
    """Every token's row, oldest first, revoked ones included."""
    return [_info(row) for row in db.all(f"{_SELECT_CREDENTIALS} ORDER BY t.created_at, t.id")]


def find_token(db: ReadDB | WriteDB, token_or_id: str) -> TokenInfo | None:
    """The row of a token given as the token itself or as its id."""
    if looks_like_token(token_or_id):
        row = db.one(f"{_SELECT_CREDENTIALS} WHERE t.hash = ?", (token_hash(token_or_id),))
    else:
        row = db.one(f"{_SELECT_CREDENTIALS} WHERE t.id = ?", (token_or_id,))
    return _info(row) if row else None


def revoke_token(db: WriteDB, token_or_id: str) -> tuple[TokenInfo, bool] | None:
    """Revoke a token (given as itself or its id): the token's row and whether this call revoked
    it (False: it was revoked already, and keeps its first time); None when there is no such
    token."""
    info = find_token(db, token_or_id)
    if info is None:
        return None
    if info.revoked_at is not None:
        return info, False
    stamp = time.time()
    db.execute("UPDATE auth_tokens SET revoked_at = ? WHERE id = ?", (stamp, info.id))
    return TokenInfo(info.id, info.user_id, info.user, info.role, info.created_at, stamp), True


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a presented token belongs to, and which token it was (for limits and revocation)."""

    caller: Caller
    token_id: str


def identify(db: ReadDB | WriteDB, token: str) -> Identity | None:
    """The identity behind `token`, or None when it is unknown, malformed or revoked, or its
    user is disabled (`voicestack user disable`)."""
    if not looks_like_token(token):
        return None
    row = db.one(
        f"{_SELECT_CREDENTIALS} WHERE t.hash = ? AND t.revoked_at IS NULL"
        " AND u.disabled_at IS NULL",
        (token_hash(token),),
    )
    if row is None:
        return None
    return Identity(Caller(row["user_id"], row["name"], row["role"]), row["id"])


def active_token_count(db: ReadDB | WriteDB) -> int:
    """How many tokens are not revoked."""
    return int(db.scalar("SELECT count(*) FROM auth_tokens WHERE revoked_at IS NULL"))


def user_count(db: ReadDB | WriteDB) -> int:
    """How many users exist."""
    return int(db.scalar("SELECT count(*) FROM auth_users"))
