"""The stream worker's administration commands: migrations, topics, quota, tokens, schemas.

Registered on the ``studentwork`` command line by its root, :mod:`infra.cli`.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from schemas.settings import Settings
from schemas.topics import QUOTA_CHANGES, TOPICS

quota_cli = typer.Typer(help="Show or change the quota per year.", no_args_is_help=True)
schema_cli = typer.Typer(help="Message contracts as JSON Schema.", no_args_is_help=True)


def register(cli: typer.Typer) -> None:
    """Add this package's commands to ``cli``."""
    cli.command()(migrate)
    cli.command()(topics)
    cli.command()(token)
    cli.add_typer(quota_cli, name="quota")
    cli.add_typer(schema_cli, name="schema")


def settings_from_environment() -> Settings:
    """The settings, or a clean exit naming what is wrong with them."""
    from pydantic import ValidationError

    try:
        return Settings()
    except ValidationError as error:
        typer.echo(f"studentwork: invalid settings: {error}", err=True)
        raise typer.Exit(2) from error


def setup_logging(settings: Settings) -> None:
    """Text or JSON log lines, SSINs masked (:mod:`streams.logs`)."""
    from streams.logs import configure

    configure(settings)


def migrate() -> None:
    """Apply pending database migrations."""
    from db.migrate import migrate as run_migrations

    applied = asyncio.run(run_migrations(settings_from_environment().database_url))
    typer.echo(f"applied: {', '.join(applied)}" if applied else "database is up to date")


def topics(
    check: Annotated[
        bool, typer.Option("--check", help="Only report what differs (exit 1 if anything).")
    ] = False,
) -> None:
    """Create missing topics and make existing ones match their declared configuration.

    Configuration values that differ are altered. A partition count or replication
    factor that differs is reported and left alone (exit 1): adding partitions would
    move students' keys and break per-student order.
    """
    from streams.admin import reconcile_topics

    report = asyncio.run(reconcile_topics(settings_from_environment(), check=check))
    created, altered = ("missing", "differs") if check else ("created", "altered")
    if report.created:
        typer.echo(f"{created}: {', '.join(report.created)}")
    for change in report.altered:
        typer.echo(f"{altered}: {change}")
    for problem in report.problems:
        typer.echo(f"{'problem' if check else 'cannot fix'}: {problem}", err=True)
    if not report.differs:
        typer.echo("all topics match their declaration")
    if report.problems or (check and report.differs):
        raise typer.Exit(1)


@quota_cli.command("show")
def quota_show(
    year: Annotated[int | None, typer.Argument(help="Only this year.")] = None,
) -> None:
    """Print the quota per year: configuration, with operators' changes from the database."""
    settings = settings_from_environment()
    overrides: dict[int, int] = {}
    try:
        overrides = asyncio.run(_quota_overrides(settings))
    except OSError as error:
        typer.echo(f"(database not reachable, showing configuration only: {error})", err=True)
    table = {**settings.quota_rules.quota_hours, **overrides}
    for y in sorted(table):
        if year is None or y == year:
            source = "changed" if y in overrides else "configured"
            typer.echo(f"{y}  {table[y]:>5} hours  ({source})")


async def _quota_overrides(settings: Settings) -> dict[int, int]:
    import asyncpg

    conn = await asyncpg.connect(settings.database_url)
    try:
        rows = await conn.fetch("SELECT year, hours FROM quota_years")
        return {r["year"]: r["hours"] for r in rows}
    finally:
        await conn.close()


@quota_cli.command("set")
def quota_set(
    year: Annotated[int, typer.Argument(help="Calendar year.", min=2000, max=2100)],
    hours: Annotated[int, typer.Argument(help="Quota in hours.", min=0, max=10_000)],
    by: Annotated[str, typer.Option(help="Who asks (kept with the change).")] = "operator",
) -> None:
    """Change a year's quota: every balance of that year is recomputed and re-published."""
    from aiokafka import AIOKafkaProducer

    from schemas.answers import QuotaChange

    settings = settings_from_environment()
    change = QuotaChange(
        event_id=str(uuid.uuid4()),
        year=year,
        hours=hours,
        requested_at=datetime.now(UTC),
        requested_by=by,
    )

    async def publish() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap, enable_idempotence=True
        )
        await producer.start()
        try:
            await producer.send_and_wait(
                settings.topic(QUOTA_CHANGES), change.to_json_bytes(), key=str(year).encode()
            )
        finally:
            await producer.stop()

    asyncio.run(publish())
    typer.echo(f"published: quota {year} = {hours} hours (event {change.event_id})")


def token(
    role: Annotated[str, typer.Argument(help="student, employer or agency.")],
    subject: Annotated[str, typer.Argument(help="SSIN (student) or enterprise number.")],
    minutes: Annotated[int | None, typer.Option(help="Validity in minutes.")] = None,
) -> None:
    """Mint a development token (HS256, the configured secret) for the API."""
    from datetime import timedelta

    from schemas.identifiers import normalize_enterprise_number, normalize_ssin
    from streams.web.auth import Role, mint_token

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


@schema_cli.command("export")
def schema_export(
    out: Annotated[
        Path | None, typer.Option(help="Write one <topic>.schema.json per topic here.")
    ] = None,
) -> None:
    """Export the JSON Schema of every topic's contract (stdout, or files with --out)."""
    schemas = {
        spec.name: {
            **spec.contract.model_json_schema(by_alias=True),
            "x-topic": spec.name,
            "x-key": spec.key,
            "description": spec.description,
        }
        for spec in TOPICS
    }
    if out is None:
        json.dump(schemas, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    out.mkdir(parents=True, exist_ok=True)
    for name, schema in schemas.items():
        (out / f"{name}.schema.json").write_text(json.dumps(schema, indent=2) + "\n")
    typer.echo(f"wrote {len(schemas)} schemas to {out}")
