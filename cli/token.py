"""`voicestack token ...`: users' tokens, managed on the database file on this host.

These write the file directly (safe while a server runs on it: the writes go through SQLite's
lock, and a running server hears of them through the change log and ends revoked streams).
Each command imports the store when it runs, so that `--help` loads none of it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, TypeVar

import apsw
import typer

from cli.errors import CliError, reports_errors
from cli.options import DEFAULT_DB, DbOption, JsonOption
from cli.output import Output, iso_time

if TYPE_CHECKING:
    from voicestack.auth.users import TokenInfo
    from voicestack.store.db import WriteDB

T = TypeVar("T")

app = typer.Typer(
    help="Users' API tokens on this host's database: create, list, revoke.",
    no_args_is_help=True,
)


def _write(db: DbOption, fn: Callable[[WriteDB], T]) -> T:
    """Run `fn` in one transaction on the database (migrated first), logged like any commit."""
    from voicestack.functions.errors import FunctionError
    from voicestack.schema import ALL_MIGRATIONS
    from voicestack.store.store import Store

    try:
        store = Store(db, readers=1, migrations=ALL_MIGRATIONS)
    except (apsw.Error, RuntimeError) as exc:
        raise CliError(f"Cannot open {db}: {exc}") from None
    try:
        store.start()
        return store.write_sync(fn).value
    except FunctionError as exc:
        raise CliError(exc.message) from None
    finally:
        store.close()


@app.command("create")
@reports_errors
def create(
    user: Annotated[str, typer.Option("--user", help="The user's name (created if new).")],
    admin: Annotated[bool, typer.Option("--admin", help="Make the user an admin.")] = False,
    db: DbOption = DEFAULT_DB,
) -> None:
    """Create a token for USER and print it, alone, on stdout (it is shown only this once).

    Example: export VOICESTACK_TOKEN=$(voicestack token create --user ana)
    """
    from voicestack.auth.users import create_token

    token, info = _write(db, lambda conn: create_token(conn, user, admin))
    out = Output()
    out.line(token)
    out.note(f"token {info.id} for {info.user} ({info.role}); it is not shown again")


def _row(info: TokenInfo) -> list[str]:
    state = f"revoked {iso_time(info.revoked_at)}" if info.revoked_at else "active"
    return [info.id, info.user, info.role, iso_time(info.created_at), state]


@app.command("list")
@reports_errors
def list_(db: DbOption = DEFAULT_DB, as_json: JsonOption = False) -> None:
    """List every token (never the token itself): id, user, role, created, state.

    Example: voicestack token list --db /var/lib/voicestack/voicestack.db
    """
    from voicestack.auth.users import list_tokens

    infos = _write(db, list_tokens)
    out = Output()
    if as_json:
        out.json([info.as_json() for info in infos])
        return
    out.table(["id", "user", "role", "created", "state"], [_row(info) for info in infos])


@app.command("revoke")
@reports_errors
def revoke(
    token_or_id: Annotated[str, typer.Argument(help="The token itself, or its id (tok_...).")],
    db: DbOption = DEFAULT_DB,
) -> None:
    """Revoke a token: requests with it get 401, and its open streams end at once.

    Example: voicestack token revoke tok_3f9a0c1b2d4e
    """
    from voicestack.auth.users import revoke_token

    revoked = _write(db, lambda conn: revoke_token(conn, token_or_id))
    if revoked is None:
        raise CliError("No such token (give the token or its id; `voicestack token list`).")
    info, changed = revoked
    if not changed:
        raise CliError(
            f"Token {info.id} of {info.user} was already revoked at {iso_time(info.revoked_at)};"
            " nothing changed."
        )
    Output().note(f"revoked token {info.id} of {info.user}")
