"""A small ledger whose one mutation may fail half-way: for store property tests and the fuzzer.

`ledger.post` writes a batch row, then its lines one by one, and refuses the batch at the first
line that takes an account below zero, after the lines before it are in: a refused batch proves
that a mutation failing mid-way leaves nothing behind. It has no deliberate bugs (unlike
tests/apps/inventory.py), so any 500 a fuzzer finds in it is the server's.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from voicestack import FunctionError, MutationCtx, QueryCtx, mutation, query

MIGRATIONS = [
    "CREATE TABLE ledger_batches (id TEXT PRIMARY KEY, lines INTEGER NOT NULL)",
    "CREATE TABLE ledger_entries (id INTEGER PRIMARY KEY,"
    " batch TEXT NOT NULL REFERENCES ledger_batches(id),"
    " account TEXT NOT NULL, amount INTEGER NOT NULL)",
]

MAX_AMOUNT = 1_000_000


class Line(BaseModel):
    """One line of a batch: an amount in or out of an account."""

    model_config = ConfigDict(extra="forbid")

    account: str = Field(pattern=r"^[a-z]{1,8}$")
    amount: int = Field(ge=-MAX_AMOUNT, le=MAX_AMOUNT)


class PostArgs(BaseModel):
    """A batch of lines, under an id of the caller's choosing."""

    model_config = ConfigDict(extra="forbid")

    batch: str = Field(min_length=1, max_length=40)
    lines: list[Line] = Field(min_length=1, max_length=20)


class BatchArgs(BaseModel):
    """One batch, by id."""

    model_config = ConfigDict(extra="forbid")

    batch: str = Field(min_length=1, max_length=40)


def _balance(ctx: MutationCtx | QueryCtx, account: str) -> int:
    return ctx.db.scalar(
        "SELECT coalesce(sum(amount), 0) FROM ledger_entries WHERE account = ?", (account,)
    )


@mutation("ledger.post")
def post(ctx: MutationCtx, args: PostArgs) -> dict[str, Any]:
    """Record a batch line by line; 409 for a used batch id or an overdrawn account."""
    if ctx.db.one("SELECT id FROM ledger_batches WHERE id = ?", (args.batch,)) is not None:
        raise FunctionError("batch_exists", f"Batch {args.batch!r} is already recorded.", 409)
    ctx.db.execute(
        "INSERT INTO ledger_batches(id, lines) VALUES (?, ?)", (args.batch, len(args.lines))
    )
    for number, line in enumerate(args.lines, 1):
        ctx.db.execute(
            "INSERT INTO ledger_entries(batch, account, amount) VALUES (?, ?, ?)",
            (args.batch, line.account, line.amount),
        )
        if _balance(ctx, line.account) < 0:
            raise FunctionError(
                "overdrawn", f"Line {number} takes account {line.account!r} below zero.", 409
            )
    return {"batch": args.batch, "lines": len(args.lines)}


@query("ledger.balances")
def balances(ctx: QueryCtx) -> dict[str, int]:
    """Every account's balance."""
    rows = ctx.db.all("SELECT account, sum(amount) AS balance FROM ledger_entries GROUP BY account")
    return {row["account"]: row["balance"] for row in rows}


@query("ledger.batch")
def batch(ctx: QueryCtx, args: BatchArgs) -> list[dict[str, Any]]:
    """A batch's lines in order (none for an unknown batch)."""
    return ctx.db.all(
        "SELECT account, amount FROM ledger_entries WHERE batch = ? ORDER BY id", (args.batch,)
    )


@query("ledger.entries")
def entries(ctx: QueryCtx) -> list[dict[str, Any]]:
    """Every line of every batch, oldest first."""
    return ctx.db.all("SELECT batch, account, amount FROM ledger_entries ORDER BY id")
