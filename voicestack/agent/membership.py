"""Who may see a thread: its owner, the members the owner invited, and administrators.

Every built-in function, feed, file and voice route asks `require_thread`, so this module is the
one place that decides. A thread a caller may not see is reported as not found, never as
forbidden, so nobody learns which thread ids exist.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from voicestack.agent.records import now
from voicestack.auth.users import USER_NAME_RE, user_by_name
from voicestack.echo import echoed
from voicestack.functions.context import MutationCtx
from voicestack.functions.errors import FunctionError
from voicestack.functions.registry import mutation
from voicestack.identity import Caller
from voicestack.store.db import ReadDB, WriteDB


class ThreadNotFound(FunctionError):
    """`thread_not_found` (404): no such thread for this caller.

    A subscription whose query meets it has lost its access (or its thread), so the hub sends
    the error as the stream's last event and ends the stream: a later re-invite must not
    silently resume a stream the server already refused.
    """

    ends_subscription = True

    def __init__(self, thread_id: str) -> None:
        super().__init__("thread_not_found", f"No thread has id {echoed(thread_id)!r}.", 404)


def thread_visible(db: ReadDB | WriteDB, thread_id: str, user: Caller | None) -> bool:
    """True when `user` may see thread `thread_id` (and it exists).

    `None` is the server itself (the reply runner, start-up recovery), which sees everything.
    """
    if user is None or user.is_admin:
        return db.one("SELECT 1 AS ok FROM threads WHERE id = ?", (thread_id,)) is not None
    return (
        db.one(
            "SELECT 1 AS ok FROM thread_members WHERE thread_id = ? AND user_id = ?",
            (thread_id, user.id),
        )
        is not None
    )


def require_thread(db: ReadDB | WriteDB, thread_id: str, user: Caller | None) -> dict[str, Any]:
    """The thread row (with its `last_position`: its last message's place, 0 for none), or
    `thread_not_found` (404) when it does not exist for this caller."""
    # As thread_visible decides, in the same statement as the row.
    sql = (
        "SELECT id, title, owner, agent, metadata, created_at, updated_at, last_position"
        " FROM threads WHERE id = ?"
    )
    params: tuple[str, ...] = (thread_id,)
    if user is not None and not user.is_admin:
        sql += " AND EXISTS (SELECT 1 FROM thread_members WHERE thread_id = ? AND user_id = ?)"
        params = (thread_id, thread_id, user.id)
    row = db.one(sql, params)
    if row is None:
        raise ThreadNotFound(thread_id)
    return row


def add_member(db: WriteDB, thread_id: str, user_id: str, role: str) -> None:
    """Give `user_id` access to the thread (idempotent; an owner stays owner)."""
    db.execute(
        "INSERT INTO thread_members(thread_id, user_id, role, added_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (thread_id, user_id) DO NOTHING",
        (thread_id, user_id, role, now()),
    )


def _member_role(db: WriteDB, thread_id: str, user_id: str) -> str | None:
    row = db.one(
        "SELECT role FROM thread_members WHERE thread_id = ? AND user_id = ?",
        (thread_id, user_id),
    )
    return row["role"] if row else None


def _require_owner(db: WriteDB, thread_id: str, user: Caller | None) -> None:
    require_thread(db, thread_id, user)
    if user is None or user.is_admin:
        return
    if _member_role(db, thread_id, user.id) != "owner":
        raise FunctionError("forbidden", "Only the thread's owner or an admin can do that.", 403)


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InviteArgs(_Args):
    """Give a user access to a thread."""

    id: str = Field(min_length=1, max_length=100, description="The thread id.")
    user: str = Field(
        min_length=1, max_length=64, pattern=USER_NAME_RE.pattern, description="A user name."
    )


class LeaveArgs(_Args):
    """Leave a thread; its owner or an admin may name another member to remove."""

    id: str = Field(min_length=1, max_length=100, description="The thread id.")
    user: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        pattern=USER_NAME_RE.pattern,
        description="The member to remove (owner or admin only); absent: the caller leaves.",
    )


@mutation("threads.invite")
def invite(ctx: MutationCtx, args: InviteArgs) -> dict[str, str]:
    """Make user `args.user` a member of the thread (owner or admin only; idempotent)."""
    _require_owner(ctx.db, args.id, ctx.user)
    invited = user_by_name(ctx.db, args.user)
    if invited is None:
        raise FunctionError("user_not_found", f"No user is named {echoed(args.user)!r}.", 404)
    add_member(ctx.db, args.id, invited.id, "member")
    role = _member_role(ctx.db, args.id, invited.id) or "member"
    return {"id": args.id, "user": invited.name, "role": role}


@mutation("threads.leave")
def leave(ctx: MutationCtx, args: LeaveArgs) -> dict[str, str]:
    """Remove the caller (or, for the owner or an admin, `args.user`) from the thread; their
    open feeds of it end at this commit."""
    if args.user is None or (ctx.user is not None and args.user == ctx.user.name):
        require_thread(ctx.db, args.id, ctx.user)
        if ctx.user is None:
            raise FunctionError("invalid_args", "Name the member to remove.", 400)
        target = ctx.user
    else:
        _require_owner(ctx.db, args.id, ctx.user)
        found = user_by_name(ctx.db, args.user)
        if found is None:
            raise FunctionError("member_not_found", f"{echoed(args.user)!r} is not a member.", 404)
        target = found
    role = _member_role(ctx.db, args.id, target.id)
    if role is None:  # also an admin leaving a thread they see without being a member
        raise FunctionError("member_not_found", f"{target.name!r} is not a member.", 404)
    if role == "owner":
        raise FunctionError("owner_cannot_leave", "The thread's owner cannot leave it.", 409)
    ctx.db.execute(
        "DELETE FROM thread_members WHERE thread_id = ? AND user_id = ?", (args.id, target.id)
    )
    return {"id": args.id, "user": target.name}


MEMBERSHIP_FUNCTIONS = (invite, leave)
