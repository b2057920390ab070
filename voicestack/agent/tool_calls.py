"""Built-in server functions for the model's tool calls: list them, approve or deny one."""

from __future__ import annotations

from typing import Any

from voicestack.agent.membership import require_thread, thread_visible
from voicestack.agent.records import TOOL_CALL_COLUMNS, emit_tool_call, now, tool_call_from_row
from voicestack.agent.thread_args import InThreadArgs, ToolCallIdArgs
from voicestack.echo import echoed
from voicestack.functions.context import MutationCtx, QueryCtx
from voicestack.functions.errors import FunctionError
from voicestack.functions.registry import mutation, query
from voicestack.identity import Caller
from voicestack.store.db import ReadDB, WriteDB


def thread_tool_calls(db: ReadDB, thread_id: str) -> list[dict[str, Any]]:
    """Every tool call of the thread, oldest first."""
    rows = db.all(
        f"SELECT {TOOL_CALL_COLUMNS} FROM tool_calls WHERE thread_id = ? ORDER BY created_at, id",
        (thread_id,),
    )
    return [tool_call_from_row(row) for row in rows]


@query("tool_calls.list")
def list_tool_calls(ctx: QueryCtx, args: InThreadArgs) -> list[dict[str, Any]]:
    """Every tool call of the thread, oldest first."""
    require_thread(ctx.db, args.thread_id, ctx.user)
    return thread_tool_calls(ctx.db, args.thread_id)


def _awaiting_call(db: WriteDB, call_id: str, user: Caller | None) -> dict[str, Any]:
    row = db.one("SELECT id, thread_id, status FROM tool_calls WHERE id = ?", (call_id,))
    if row is None or not thread_visible(db, row["thread_id"], user):
        # The same answer either way: an outsider learns nothing, not even the thread's id.
        raise FunctionError("tool_call_not_found", f"No tool call has id {echoed(call_id)!r}.", 404)
    if row["status"] != "awaiting_approval":
        raise FunctionError(
            "not_awaiting_approval",
            f"Tool call {echoed(call_id)!r} is {row['status']}, not awaiting approval.",
            409,
        )
    return row


@mutation("tool_calls.approve")
def approve_tool_call(ctx: MutationCtx, args: ToolCallIdArgs) -> dict[str, str]:
    """Let a tool call that waits for approval run."""
    _awaiting_call(ctx.db, args.id, ctx.user)
    ctx.db.execute(
        "UPDATE tool_calls SET status = 'pending', updated_at = ? WHERE id = ?", (now(), args.id)
    )
    emit_tool_call(ctx.db, args.id)
    return {"id": args.id, "status": "pending"}


@mutation("tool_calls.deny")
def deny_tool_call(ctx: MutationCtx, args: ToolCallIdArgs) -> dict[str, str]:
    """Refuse a tool call that waits for approval; the model is told it was denied."""
    _awaiting_call(ctx.db, args.id, ctx.user)
    ctx.db.execute(
        "UPDATE tool_calls SET status = 'failed', error = 'denied by the user', updated_at = ?"
        " WHERE id = ?",
        (now(), args.id),
    )
    emit_tool_call(ctx.db, args.id)
    return {"id": args.id, "status": "failed"}


TOOL_CALL_FUNCTIONS = (list_tool_calls, approve_tool_call, deny_tool_call)
