"""``studentwork employers``: load employer names from the KBO / BCE open-data export.

Registered on the ``studentwork`` command line by its root, :mod:`infra.cli`.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Annotated

import typer

employers_cli = typer.Typer(help="Employer names (KBO / BCE open data).", no_args_is_help=True)


def register(cli: typer.Typer) -> None:
    """Add this package's commands to ``cli``."""
    cli.add_typer(employers_cli, name="employers")


@employers_cli.command("import")
def import_names(
    path: Annotated[
        Path,
        typer.Argument(
            exists=True,
            help="The export's zip file (KboOpenData_..._Full.zip) or the folder of its CSVs.",
        ),
    ],
) -> None:
    """Replace the employer names with those of a KBO open-data export.

    Reads enterprise.csv and denomination.csv as published, streaming, in one
    transaction; prints what was loaded and every line it refused (the first ones).
    """
    import asyncpg
    from pydantic import ValidationError
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TaskID,
        TextColumn,
        TimeRemainingColumn,
    )

    from db.employers import ExportError, import_export
    from schemas.settings import Settings

    try:
        settings = Settings()
    except ValidationError as error:
        typer.echo(f"studentwork: invalid settings: {error}", err=True)
        raise typer.Exit(2) from error
    console = Console(stderr=True)

    async def run() -> None:
        conn = await asyncpg.connect(settings.database_url)
        try:
            with Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TimeRemainingColumn(),
                console=console,
            ) as progress:
                tasks: dict[str, TaskID] = {}

                def on_progress(name: str, done: int, total: int) -> None:
                    if name not in tasks:
                        tasks[name] = progress.add_task(name, total=total)
                    progress.update(tasks[name], completed=done)

                started = time.monotonic()
                report = await import_export(conn, path, on_progress)
        finally:
            await conn.close()
        seconds = time.monotonic() - started
        typer.echo(
            f"{report.enterprises:,} enterprises, {report.names:,} names loaded in "
            f"{seconds:.1f} s ({report.establishment_names:,} names of establishment units "
            f"left out); refused: {report.refused:,}"
        )
        for refusal in report.refusals:
            typer.echo(f"  refused {refusal}")
        if report.refused > len(report.refusals):
            typer.echo(f"  ... and {report.refused - len(report.refusals):,} more")

    try:
        asyncio.run(run())
    except ExportError as error:
        typer.echo(f"studentwork employers import: {error}", err=True)
        raise typer.Exit(2) from error
