"""Whom a reply's tools act as: the user whose message started the reply, never the server.

A tool's `ctx.run_query` / `ctx.run_mutation` run as this user, so a tool reads and changes only
what its user could through the API: a thread they may not see is `thread_not_found` for it too.
"""

from __future__ import annotations

from voicestack.auth.users import user_by_id
from voicestack.identity import Caller
from voicestack.store.db import ReadDB


def reply_user(db: ReadDB, author_id: str | None) -> Caller | None:
    """The author of the message a reply answers, with their name and role as they are now.

    None only for a message no user wrote (one the server itself saved), which acts as the
    server. An author without a user row acts as a plain user with that id, so it gains nothing
    beyond the memberships that id has.
    """
    if author_id is None:
        return None
    return user_by_id(db, author_id) or Caller(author_id, author_id, "user")
