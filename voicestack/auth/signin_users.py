"""People who sign in: found or created by (provider, subject), listed, promoted and disabled.

A new user's name is their verified email when it makes a valid user name, else the provider
and subject, made unique with a number and never a reserved name (the phone calls' user); it is
a label, never what identifies them: a provider's user name or an unverified email would let
anyone pick a name that looks like someone else's. Signing in never links two providers'
accounts by their email: a provider that does not verify emails would otherwise let anyone take
over an account.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from voicestack.auth.sessions import end_user_sessions
from voicestack.auth.users import USER_NAME_RE, Role
from voicestack.identity import Caller
from voicestack.store.db import ReadDB, WriteDB

_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9._@-]+")


class SignInRefused(Exception):
    """A sign-in this server refuses (a disabled user, an email outside the allowed domains)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Profile:
    """Who a provider says signed in: its name for them (subject) and what it tells of them."""

    provider: str
    subject: str
    email: str | None = None
    email_verified: bool | None = None
    username: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class UserInfo:
    """A user's row as `user list` and `GET /api/me` show it."""

    id: str
    name: str
    email: str | None
    role: Role
    created_at: float
    disabled_at: float | None

    def as_json(self) -> dict[str, Any]:
        """The camelCase JSON shape."""
        return {
            "id": self.id,
            "name": self.name,
            "email": self.email,
            "role": self.role,
            "createdAt": self.created_at,
            "disabledAt": self.disabled_at,
        }


def email_domain_allowed(email: str | None, verified: bool | None, domains: list[str]) -> bool:
    """True when sign-up is open to everyone, or the verified email is in one of `domains`."""
    if not domains:
        return True
    # Only an explicit True: a missing claim or the string "false" is no verification.
    if email is None or verified is not True or "@" not in email:
        return False
    return email.rsplit("@", 1)[1].lower() in {d.lower().lstrip("@") for d in domains}


def _name_for(db: WriteDB, profile: Profile, reserved: Collection[str]) -> str:
    fallback = f"{profile.provider}-{profile.subject}"
    candidates = [profile.email if profile.email_verified is True else None, fallback]
    base = "user"
    for candidate in candidates:
        cleaned = _NOT_IN_NAME.sub("-", candidate or "")[:56].strip("-._@")
        if cleaned and USER_NAME_RE.match(cleaned):
            base = cleaned
            break
    name, number = base, 1
    while name in reserved or db.one("SELECT 1 FROM auth_users WHERE name = ?", (name,)):
        number += 1
        name = f"{base}-{number}"
    return name


def sign_in_user(
    db: WriteDB, profile: Profile, allowed_domains: list[str], reserved: Collection[str] = ()
) -> Caller:
    """The user `profile` signs in as: found by (provider, subject), or created with the role
    `user` when sign-up allows their email, under a name that is none of `reserved` nor any
    other user's; raises SignInRefused for a disabled user or an email sign-up does not
    allow."""
    row = db.one(
        "SELECT u.id, u.name, u.role, u.disabled_at FROM auth_identities i"
        " JOIN auth_users u ON u.id = i.user_id WHERE i.provider = ? AND i.subject = ?",
        (profile.provider, profile.subject),
    )
    if row is not None:
        if row["disabled_at"] is not None:
            raise SignInRefused("user_disabled", "This account is disabled on this server.")
        if profile.email is not None:
            db.execute(
                "UPDATE auth_identities SET email = ? WHERE provider = ? AND subject = ?",
                (profile.email, profile.provider, profile.subject),
            )
        return Caller(row["id"], row["name"], row["role"])
    if not email_domain_allowed(profile.email, profile.email_verified, allowed_domains):
        raise SignInRefused(
            "signup_not_allowed",
            "Sign-up on this server is open only to verified emails of: "
            + ", ".join(allowed_domains)
            + ".",
        )
    user_id = f"usr_{secrets.token_hex(8)}"
    name = _name_for(db, profile, reserved)
    now = time.time()
    db.execute(
        "INSERT INTO auth_users(id, name, role, created_at, email) VALUES (?, ?, 'user', ?, ?)",
        (user_id, name, now, profile.email),
    )
    db.execute(
        "INSERT INTO auth_identities(provider, subject, user_id, email, created_at)"
        " VALUES (?, ?, ?, ?, ?)",
        (profile.provider, profile.subject, user_id, profile.email, now),
    )
    return Caller(user_id, name, "user")


_SELECT_USERS = "SELECT id, name, email, role, created_at, disabled_at FROM auth_users"


def _user(row: dict[str, Any]) -> UserInfo:
    return UserInfo(
        row["id"], row["name"], row["email"], row["role"], row["created_at"], row["disabled_at"]
    )


def user_info(db: ReadDB | WriteDB, user_id: str) -> UserInfo | None:
    """The user with id `user_id`, if any."""
    row = db.one(f"{_SELECT_USERS} WHERE id = ?", (user_id,))
    return _user(row) if row else None


def list_users(db: ReadDB | WriteDB) -> list[UserInfo]:
    """Every user, oldest first, disabled ones included."""
    return [_user(row) for row in db.all(f"{_SELECT_USERS} ORDER BY created_at, id")]


def _by_name(db: WriteDB, name: str) -> UserInfo:
    row = db.one(f"{_SELECT_USERS} WHERE name = ?", (name,))
    if row is None:
        raise SignInRefused(
            "user_not_found", f"No user is named {name!r} (`voicestack user list`)."
        )
    return _user(row)


def set_role(db: WriteDB, name: str, role: Role) -> tuple[UserInfo, bool]:
    """Give user `name` the role `role`: their row and whether it changed."""
    user = _by_name(db, name)
    if user.role == role:
        return user, False
    db.execute("UPDATE auth_users SET role = ? WHERE id = ?", (role, user.id))
    return UserInfo(user.id, user.name, user.email, role, user.created_at, user.disabled_at), True


def disable_user(db: WriteDB, name: str) -> tuple[UserInfo, bool]:
    """Disable user `name`: their sessions and tokens are revoked at this commit (ending their
    open streams), and they cannot sign in again. Their row and whether this call changed it."""
    user = _by_name(db, name)
    if user.disabled_at is not None:
        return user, False
    now = time.time()
    db.execute("UPDATE auth_users SET disabled_at = ? WHERE id = ?", (now, user.id))
    end_user_sessions(db, user.id)
    db.execute(
        "UPDATE auth_tokens SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL",
        (now, user.id),
    )
    return UserInfo(user.id, user.name, user.email, user.role, user.created_at, now), True
