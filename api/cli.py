"""The HTTP tier's commands: ``studentwork api`` and ``studentwork token``."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer


def register(cli: typer.Typer) -> None:
    """Add the API's commands to the ``studentwork`` command line."""
    cli.command()(api)
    cli.command()(token)


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
    role: Annotated[str, typer.Argument(help="student, employer or agency.")],
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
