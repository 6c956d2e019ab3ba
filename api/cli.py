"""The HTTP tier's commands: ``studentwork api``, ``token`` and ``mandates import``."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer


def register(cli: typer.Typer) -> None:
    """Add the API's commands to the ``studentwork`` command line."""
    cli.command()(api)
    cli.command()(token)
    cli.add_typer(mandates_cli, name="mandates")


def api(
    host: Annotated[
        str | None, typer.Option(help="Address to listen on (default: STUDENTWORK_API_HOST).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port to listen on (default: STUDENTWORK_API_PORT).")
    ] = None,
) -> None:
    """Serve the /v1 JSON API (FastAPI on uvicorn): reads PostgreSQL, writes the outbox."""
    from api.app import serve
    from schemas.secrets import DevelopmentSecretsError
    from streams.cli import settings_from_environment, setup_logging

    settings = settings_from_environment()
    try:
        settings.require_production_secrets()
    except DevelopmentSecretsError as error:
        typer.echo(f"studentwork api: {error}", err=True)
        raise typer.Exit(2) from error
    setup_logging(settings)
    serve(settings, host or settings.api_host, port or settings.api_port)


def token(
    role: Annotated[str, typer.Argument(help="student, employer, agency or social_secretariat.")],
    subject: Annotated[str, typer.Argument(help="SSIN (student) or enterprise number.")],
    minutes: Annotated[int | None, typer.Option(help="Validity in minutes.")] = None,
) -> None:
    """Mint a development token (HS256, the configured secret) for the API."""
    from api.auth import Role, mint_token
    from schemas.identifiers import normalize_enterprise_number, normalize_ssin
    from streams.cli import settings_from_environment

    try:
        parsed = Role(role)
        normalized = (
            normalize_ssin(subject)
            if parsed is Role.STUDENT
            else normalize_enterprise_number(subject)
        )
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    ttl = timedelta(minutes=minutes) if minutes else None
    typer.echo(mint_token(settings_from_environment(), parsed, normalized, ttl=ttl))


mandates_cli = typer.Typer(
    help="Mandates: the employers each social secretariat may declare for over HTTP.",
    no_args_is_help=True,
)


@mandates_cli.command("import")
def mandates_import(
    path: Annotated[Path, typer.Argument(help="CSV with the columns secretariat,employer.")],
    replace: Annotated[
        bool, typer.Option(help="Forget every mandate not in the file (a full export).")
    ] = False,
) -> None:
    """Load mandates from CSV (header ``secretariat,employer``; enterprise numbers in any
    usual writing, an employer known by its NSSO number as ``NSSO<number>``).

    The file is read whole first: any invalid line refuses the import, naming each line
    and why, so a half-loaded file never takes effect.
    """
    import asyncio

    from db.declarations import load_mandates
    from streams.cli import settings_from_environment

    mandates, problems = read_mandates(path)
    if problems:
        for problem in problems:
            typer.echo(f"{path}: {problem}", err=True)
        raise typer.Exit(2)
    settings = settings_from_environment()

    async def load() -> int:
        import asyncpg

        from db.migrate import migrate

        await migrate(settings.database_url)
        conn = await asyncpg.connect(settings.database_url)
        try:
            return await load_mandates(conn, mandates, replace=replace)
        finally:
            await conn.close()

    total = asyncio.run(load())
    typer.echo(f"loaded {len(mandates)} mandates from {path}; {total} in the table")


def read_mandates(path: Path) -> tuple[list[tuple[str, str]], list[str]]:
    """(secretariat, employer) pairs of a mandates CSV, and a reason per invalid line."""
    import csv

    from schemas.identifiers import normalize_enterprise_number, normalize_nsso_number

    mandates: list[tuple[str, str]] = []
    problems: list[str] = []
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"secretariat", "employer"} <= set(reader.fieldnames):
            return [], ["the header must name the columns secretariat and employer"]
        for line, row in enumerate(reader, start=2):
            try:
                secretariat = normalize_enterprise_number(row["secretariat"] or "")
                raw = (row["employer"] or "").strip()
                if raw.upper().startswith("NSSO"):
                    employer = f"NSSO{normalize_nsso_number(raw[4:])}"
                else:
                    employer = normalize_enterprise_number(raw)
            except ValueError as error:
                problems.append(f"line {line}: {error}")
                continue
            mandates.append((secretariat, employer))
    return mandates, problems
