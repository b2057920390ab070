"""`voicestack thread ...`: agent threads on a running server, over its HTTP API.

Each command imports the HTTP client and the feed renderers when it runs, so that `--help`
loads none of them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli.errors import USAGE, CliError, reports_errors
from cli.options import DEFAULT_URL, JsonOption, ServerOption, TokenOption
from cli.output import Output, iso_time, pretty_json

if TYPE_CHECKING:
    from cli.tail import FeedRenderer

app = typer.Typer(
    help="Agent threads on a server: create, list, show, export, send a message, tail the feed.",
    no_args_is_help=True,
)

ThreadId = Annotated[str, typer.Argument(help="The thread's id (thr_…).", show_default=False)]
EXPORT_FORMATS = ("md", "json")


def _thread_path(thread_id: str) -> str:
    if not thread_id.strip() or "/" in thread_id:
        raise CliError(f"{thread_id!r} is not a thread id.", USAGE)
    return f"/api/threads/{thread_id}"


@app.command("new")
@reports_errors
def new(
    title: Annotated[str | None, typer.Option(help="The thread's title.")] = None,
    agent: Annotated[
        str | None,
        typer.Option(help="The agent that answers (`voicestack agents list`); default assistant."),
    ] = None,
    server: ServerOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Create a thread; prints its id alone on stdout.

    Example: THREAD=$(voicestack thread new --title support --agent support)
    """
    from cli.client import ApiClient

    body = {"title": title, "agent": agent}
    with ApiClient(server, token) as api:
        created = api.post("/api/threads", {k: v for k, v in body.items() if v})
    Output().line(created["id"])


@app.command("list")
@reports_errors
def list_(
    limit: Annotated[int, typer.Option(min=1, max=200, help="How many threads.")] = 20,
    before: Annotated[
        str | None, typer.Option(help="List the threads after this one (paging).")
    ] = None,
    as_json: JsonOption = False,
    server: ServerOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """List threads, most recently active first (plain: id, title, updated, agent,
    tab-separated).

    Example: voicestack thread list --limit 5
    """
    from cli.client import ApiClient

    with ApiClient(server, token) as api:
        threads = api.get("/api/threads", {"limit": limit, "before": before})
    out = Output()
    if as_json:
        out.json(threads)
        return
    rows = [
        [t["id"], t.get("title") or "", out.when(t.get("updatedAt")), t.get("agent") or ""]
        for t in threads
    ]
    out.table(["id", "title", "updated", "agent"], rows)


@app.command("show")
@reports_errors
def show(
    thread_id: ThreadId,
    as_json: JsonOption = False,
    server: ServerOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Show a thread: its messages with roles and status, tool calls and usage.

    Example: voicestack thread show thr_0123456789abcdef0123
    """
    from cli.client import ApiClient
    from cli.transcript import plain_thread, rich_thread

    with ApiClient(server, token) as api:
        thread = api.get(_thread_path(thread_id))
    out = Output()
    if as_json:
        out.json(thread)
    elif out.terminal:
        out.console.print(rich_thread(thread, out.when(thread.get("createdAt"))))
    else:
        out.line(plain_thread(thread, out.when(thread.get("createdAt"))))


@app.command("export")
@reports_errors
def export(
    thread_id: ThreadId,
    format_: Annotated[
        str, typer.Option("--format", "-f", metavar="md|json", help="Markdown or JSON.")
    ] = "md",
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write to this file, not stdout.", dir_okay=False),
    ] = None,
    server: ServerOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Export a thread as Markdown or JSON, to stdout or a file.

    Example: voicestack thread export thr_0123456789abcdef0123 --format md -o support.md
    """
    from cli.client import ApiClient
    from cli.transcript import markdown_thread, thread_title

    if format_ not in EXPORT_FORMATS:
        raise CliError(f"--format must be md or json, not {format_!r}.", USAGE)
    with ApiClient(server, token) as api:
        thread = api.get(_thread_path(thread_id))
    if format_ == "json":
        document = pretty_json(thread) + "\n"
    else:
        document = markdown_thread(thread, iso_time(thread.get("createdAt")))
    if output is None:
        sys.stdout.write(document)
        return
    try:
        output.write_text(document, encoding="utf-8")
    except OSError as exc:
        raise CliError(f"Cannot write {output}: {exc.strerror or exc}.") from None
    Output().note(f"exported {thread_title(thread)} ({thread['id']}) to {output}")


@app.command("send")
@reports_errors
def send(
    thread_id: ThreadId,
    text: Annotated[str, typer.Argument(help="The message; '-' reads it from stdin.")],
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="Only send: print the message and reply ids.")
    ] = False,
    server: ServerOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Send a message and print the reply live as it streams (exit 1 if the reply fails).

    Example: voicestack thread send thr_0123456789abcdef0123 "What's the weather in Oslo?"
    """
    from cli.client import ApiClient
    from cli.send import post_message, send_and_stream

    if text == "-":
        text = sys.stdin.read().strip()
    if not text.strip():
        raise CliError("The message is empty.", USAGE)
    out = Output()
    with ApiClient(server, token) as api:
        _thread_path(thread_id)
        if no_wait:
            ids = post_message(api, thread_id, text)
            out.line(f"{ids['messageId']} {ids['replyId']}")
            return
        try:
            send_and_stream(api, thread_id, text, out.err)
        except KeyboardInterrupt:
            out.note("[dim]stopped watching; the reply goes on on the server[/]")
            raise


@app.command("tail")
@reports_errors
def tail(
    thread_id: ThreadId,
    as_json: Annotated[
        bool,
        typer.Option("--json", help='One JSON object per event and line: {"event", "id", "data"}.'),
    ] = False,
    since: Annotated[
        int | None,
        typer.Option(min=0, help="Start after this event id instead of with a snapshot."),
    ] = None,
    server: ServerOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Follow a thread live: messages appear, replies grow, tool calls run; Ctrl-C stops.

    Survives server restarts: it reconnects and resumes after the last event it saw.

    Example: voicestack thread tail thr_0123456789abcdef0123 --json | jq .event
    """
    from cli.client import ApiClient
    from cli.feed import FeedFollower
    from cli.tail import JsonTail, LiveTail, PlainTail, follow

    out = Output()
    renderer: FeedRenderer
    if as_json:
        renderer = JsonTail()
    elif out.terminal:
        renderer = LiveTail(out.console)
    else:
        renderer = PlainTail()
    with ApiClient(server, token) as api:
        _thread_path(thread_id)
        try:
            follow(FeedFollower(api, thread_id, since=since), renderer)
        except KeyboardInterrupt:
            return  # Ctrl-C is how a tail ends: quietly, exit 0
