"""The app the end-to-end tests serve: items, an unrelated audit table, and ways to fail.

`items.*` and `audit.*` read and write separate tables, so a test can write one and prove that
watchers of the other hear nothing.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from voicestack import ActionCtx, FunctionError, MutationCtx, QueryCtx, action, mutation, query

MIGRATIONS = [
    "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL)",
    "CREATE TABLE audit (id INTEGER PRIMARY KEY, note TEXT NOT NULL)",
    # Large rows, for tests that need the WAL to grow past a checkpoint's threshold.
    "CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB NOT NULL)",
]


class ItemArgs(BaseModel):
    """A new item."""

    name: str = Field(min_length=1, max_length=200)


class NoteArgs(BaseModel):
    """A new audit note."""

    note: str


class IdArgs(BaseModel):
    """One row, by id."""

    id: int


class SearchArgs(BaseModel):
    """Items whose name starts with `prefix`, at most `limit` of them."""

    prefix: str
    limit: int = Field(10, ge=1, le=100)


class RenameArgs(BaseModel):
    """An item's new name."""

    id: int
    name: str = Field(min_length=1, max_length=200)


class BlobArgs(BaseModel):
    """How many random bytes to store."""

    size: int = Field(gt=0, le=64 * 1024 * 1024)


@query("items.list")
def list_items(ctx: QueryCtx) -> list[dict]:
    """Every item, oldest first."""
    return ctx.db.all("SELECT id, name FROM items ORDER BY id")


@query("items.count")
def count_items(ctx: QueryCtx) -> int:
    """How many items exist."""
    return ctx.db.scalar("SELECT count(*) FROM items")


@query("items.get")
def get_item(ctx: QueryCtx, args: IdArgs) -> dict:
    """One item; refuses with 404 not_found when there is none."""
    row = ctx.db.one("SELECT id, name FROM items WHERE id = ?", (args.id,))
    if row is None:
        raise FunctionError("not_found", f"No item has id {args.id}.", 404)
    return row


@query("items.broken")
def broken(ctx: QueryCtx) -> int:
    """Read items, then fail like a bug would."""
    ctx.db.scalar("SELECT count(*) FROM items")
    raise RuntimeError("secret detail of a query")


@query("items.search")
def search_items(ctx: QueryCtx, args: SearchArgs) -> list[dict]:
    """Items whose name starts with a prefix, oldest first."""
    return ctx.db.all(
        "SELECT id, name FROM items WHERE substr(name, 1, ?) = ? ORDER BY id LIMIT ?",
        (len(args.prefix), args.prefix, args.limit),
    )


@query("items.parsed")
def parsed_items(ctx: QueryCtx, args: SearchArgs) -> list[dict]:
    """Names after a prefix parsed as JSON by SQLite; fails while any of them is not JSON."""
    return ctx.db.all(
        "SELECT id, json_extract(substr(name, ? + 1), '$') AS parsed FROM items"
        " WHERE substr(name, 1, ?) = ? ORDER BY id LIMIT ?",
        (len(args.prefix), len(args.prefix), args.prefix, args.limit),
    )


@query("audit.list")
def list_audit(ctx: QueryCtx) -> list[dict]:
    """Every audit note, oldest first."""
    return ctx.db.all("SELECT id, note FROM audit ORDER BY id")


@query("db.dump")
def dump(ctx: QueryCtx) -> dict:
    """Every row of every table of this app."""
    return {
        "items": ctx.db.all("SELECT id, name FROM items ORDER BY id"),
        "audit": ctx.db.all("SELECT id, note FROM audit ORDER BY id"),
        "blobs": ctx.db.all("SELECT id, length(data) AS size FROM blobs ORDER BY id"),
    }


@mutation("items.add")
def add_item(ctx: MutationCtx, args: ItemArgs) -> dict:
    """Insert an item; returns its id."""
    return {"id": ctx.db.execute("INSERT INTO items(name) VALUES (?)", (args.name,)).last_rowid}


@mutation("items.rename")
def rename_item(ctx: MutationCtx, args: RenameArgs) -> dict:
    """Rename an item."""
    ctx.db.execute("UPDATE items SET name = ? WHERE id = ?", (args.name, args.id))
    return {"id": args.id}


@mutation("items.add_then_fail")
def add_then_fail(ctx: MutationCtx, args: ItemArgs) -> dict:
    """Insert an item and an audit note, then refuse: neither may survive."""
    ctx.db.execute("INSERT INTO items(name) VALUES (?)", (args.name,))
    ctx.db.execute("INSERT INTO audit(note) VALUES (?)", (f"added {args.name}",))
    raise FunctionError("boom", f"Refused {args.name} after inserting it.")


@mutation("items.explode")
def explode(ctx: MutationCtx, args: ItemArgs) -> dict:
    """Insert an item, then fail like a bug would."""
    ctx.db.execute("INSERT INTO items(name) VALUES (?)", (args.name,))
    raise RuntimeError(f"secret detail about {args.name}")


@mutation("items.add_returning_bytes")
def add_returning_bytes(ctx: MutationCtx, args: ItemArgs) -> bytes:
    """Insert an item, then return a value JSON cannot hold."""
    ctx.db.execute("INSERT INTO items(name) VALUES (?)", (args.name,))
    return args.name.encode()


@mutation("audit.add")
def add_note(ctx: MutationCtx, args: NoteArgs) -> dict:
    """Insert an audit note; returns its id."""
    return {"id": ctx.db.execute("INSERT INTO audit(note) VALUES (?)", (args.note,)).last_rowid}


@mutation("blobs.add")
def add_blob(ctx: MutationCtx, args: BlobArgs) -> dict:
    """Store `size` random bytes in one row."""
    return {
        "id": ctx.db.execute(
            "INSERT INTO blobs(data) VALUES (randomblob(?))", (args.size,)
        ).last_rowid
    }


@action("items.add_and_count")
async def add_and_count(ctx: ActionCtx, args: ItemArgs) -> dict:
    """Add an item through its mutation, then count items through the query."""
    added = await ctx.run_mutation("items.add", {"name": args.name})
    return {"id": added["id"], "count": await ctx.run_query("items.count")}
