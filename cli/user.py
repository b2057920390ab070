"""`voicestack user ...`: the people who use this server, managed on the database file on this host.

Like `voicestack token`, these write the file directly; a running server hears of it through
the change log, so a disabled user's open streams end at that commit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from cli.errors import CliError, reports_errors
from cli.options import DEFAULT_DB, DbOption, JsonOption
from cli.output import Output, iso_time
from cli.token import _write

if TYPE_CHECKING:
    from voicestack.auth.signin_users import UserInfo

app = typer.Typer(
    help="Users of this host's database: list them, make one an admin, disable one.",
    no_args_is_help=True,
)


def _row(info: UserInfo) -> list[str]:
    state = f"disabled {iso_time(info.disabled_at)}" if info.disabled_at else "active"
    return [info.id, info.name, info.email or "", info.role, iso_time(info.created_at), state]


def _refusal(exc: Exception) -> CliError:
    return CliError(getattr(exc, "message", str(exc)))


@app.command("list")
@reports_errors
def list_(db: DbOption = DEFAULT_DB, as_json: JsonOption = False) -> None:
    """List every user: id, name, email, role, created, state.

    Example: voicestack user list --db /var/lib/voicestack/voicestack.db
    """
    from voicestack.auth.signin_users import list_users

    infos = _write(db, list_users)
    out = Output()
    if as_json:
        out.json([info.as_json() for info in infos])
        return
    rows = [_row(info) for info in infos]
    out.table(["id", "name", "email", "role", "created", "state"], rows)


@app.command("role")
@reports_errors
def role(
    name: Annotated[str, typer.Argument(help="The user's name (`voicestack user list`).")],
    new_role: Annotated[str, typer.Argument(metavar="ROLE", help="admin or user.")],
    db: DbOption = DEFAULT_DB,
) -> None:
    """Give user NAME the role ROLE (admin or user); it applies to their next request.

    Example: voicestack user role ana@example.com admin
    """
    from voicestack.auth.signin_users import SignInRefused, set_role

    if new_role not in ("admin", "user"):
        raise CliError(f"ROLE is admin or user, not {new_role!r}.")
    try:
        info, changed = _write(db, lambda conn: set_role(conn, name, new_role))  # type: ignore[arg-type]
    except SignInRefused as exc:
        raise _refusal(exc) from None
    if not changed:
        raise CliError(f"{info.name} is already {info.role}; nothing changed.")
    Output().note(f"{info.name} is now {info.role}")


@app.command("disable")
@reports_errors
def disable(
    name: Annotated[str, typer.Argument(help="The user's name (`voicestack user list`).")],
    db: DbOption = DEFAULT_DB,
) -> None:
    """Disable user NAME: their sessions and tokens are revoked, their open streams end at once,
    and they cannot sign in again. Their threads are kept.

    Example: voicestack user disable ana@example.com
    """
    from voicestack.auth.signin_users import SignInRefused, disable_user

    try:
        info, changed = _write(db, lambda conn: disable_user(conn, name))
    except SignInRefused as exc:
        raise _refusal(exc) from None
    if not changed:
        raise CliError(f"{info.name} was already disabled at {iso_time(info.disabled_at)}.")
    Output().note(f"disabled {info.name}: their sessions and tokens are revoked")
