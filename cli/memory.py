"""`voicestack memory ...`: host-side commands on semantic memory in the database file.

`reindex` re-embeds every message and note with the configured embedding model, after a change
of model or size that made `voicestack serve` refuse to start. It takes the serve command's
--embedding-* and provider settings (flags, VOICESTACK_* variables or the config file) and
can be stopped and run again: it resumes where it stopped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.errors import USAGE, CliError, reports_errors
from cli.options import DEFAULT_DB, DbOption
from cli.output import Output

app = typer.Typer(
    help="Semantic memory in the database file: re-embed it with another model.",
    no_args_is_help=True,
)


@app.command("reindex")
@reports_errors
def reindex(
    db: DbOption = DEFAULT_DB,
    config: Annotated[
        Path | None, typer.Option(help="TOML config file [default: ./voicestack.toml if present].")
    ] = None,
    embedding_model: Annotated[
        str | None, typer.Option(help="Embedding model. Default: text-embedding-3-small.")
    ] = None,
    embedding_dimensions: Annotated[
        int | None, typer.Option(help="Vector size asked of the model; default: its own.")
    ] = None,
    embedding_base_url: Annotated[
        str | None,
        typer.Option(help="OpenAI-compatible base URL for embeddings; default: the chat's."),
    ] = None,
    embedding_api_key: Annotated[
        str | None, typer.Option(help="API key for the embedding provider.")
    ] = None,
    openai_base_url: Annotated[
        str | None, typer.Option(help="The chat provider's base URL (also OPENAI_BASE_URL).")
    ] = None,
    openai_api_key: Annotated[
        str | None, typer.Option(help="The chat provider's API key (also OPENAI_API_KEY).")
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(min=1, help="Stop after this many messages and notes (run again to go on)."),
    ] = None,
) -> None:
    """Re-embed every message and note with the configured embedding model, with a progress bar;
    stopped, it resumes where it stopped.

    Example: voicestack memory reindex --db ./voicestack.db --embedding-dimensions 512
    """
    from pydantic import ValidationError
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from voicestack.agent.embedding import Embedder, EmbeddingSettings
    from voicestack.agent.memory_reindex import ReindexError, run_reindex
    from voicestack.config import load_settings
    from voicestack.schema import ALL_MIGRATIONS

    if not db.is_file():
        raise CliError(f"No database at {db} (`voicestack serve --db {db}` creates one).")
    try:
        settings = load_settings(
            config,
            db=db,
            embedding_model=embedding_model,
            embedding_dimensions=embedding_dimensions,
            embedding_base_url=embedding_base_url,
            embedding_api_key=embedding_api_key,
            openai_base_url=openai_base_url,
            openai_api_key=openai_api_key,
        )
    except (ValidationError, FileNotFoundError, ValueError) as exc:
        raise CliError(str(exc), USAGE) from None
    embedder = Embedder(EmbeddingSettings.from_settings(settings))
    out = Output()
    columns = (
        TextColumn("embedding"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=out.err, disable=not out.err.is_terminal) as progress:
        task = progress.add_task("reindex", total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        try:
            report = run_reindex(db, embedder, ALL_MIGRATIONS, advance, limit)
        except ReindexError as exc:
            raise CliError(str(exc)) from None
    if report.cleared:
        out.note("the index held another model or size: it was emptied first")
    size = f"{report.dimensions} dimensions" if report.dimensions else "its own size"
    out.line(
        f"embedded {report.embedded} messages and notes ({report.chunks} chunks) with"
        f" {report.model} at {size}; {report.already} were done already,"
        f" {report.remaining} remain"
    )
    if report.remaining:
        out.note("stopped at --limit: run the same command again to go on")
