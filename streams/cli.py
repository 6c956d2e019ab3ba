"""``studentwork``: the one command line of the project."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from schemas.settings import Settings
from schemas.topics import QUOTA_CHANGES, TOPICS

cli = typer.Typer(
    name="studentwork",
    help="Student@work hour-quota pipeline: Dimona and DmfA on Kafka, ledgers in PostgreSQL.",
    no_args_is_help=True,
    add_completion=False,
)
quota_cli = typer.Typer(help="Show or change the quota per year.", no_args_is_help=True)
schema_cli = typer.Typer(help="Message contracts as JSON Schema.", no_args_is_help=True)
cli.add_typer(quota_cli, name="quota")
cli.add_typer(schema_cli, name="schema")


def _settings() -> Settings:
    return Settings()


def _logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@cli.command()
def worker() -> None:
    """Run the stream worker (agents, and the outbox relay unless disabled)."""
    from pydantic import ValidationError

    from schemas.secrets import DevelopmentSecretsError

    # Checked before anything else: a worker with public secrets must not even migrate.
    try:
        settings = _settings()
        settings.require_production_secrets()
    except (ValidationError, DevelopmentSecretsError) as error:
        typer.echo(f"studentwork worker: {error}", err=True)
        raise typer.Exit(2) from error
    from streams.admin import TopicConfigError, prepare
    from streams.app import create_app, run_worker

    _logging(settings)
    try:
        asyncio.run(prepare(settings))
    except TopicConfigError as error:
        # A refusal to start, not a crash: the message is all the operator needs.
        typer.echo(f"worker not started: {error}", err=True)
        raise typer.Exit(2) from None
    # asyncio.run leaves no current loop behind; faust wants one.
    asyncio.set_event_loop(asyncio.new_event_loop())
    from producers.access_code_scheduler import publish_rotation
    from producers.relay import OutboxRelay

    services = []
    if settings.relay_in_worker:
        relay = OutboxRelay(settings)

        async def outbox_relay() -> None:
            try:
                await relay.run()
            finally:
                relay.stop()

        services.append(outbox_relay)
    app, _state = create_app(settings, services=services, publish_rotation=publish_rotation)
    run_worker(app, settings)


@cli.command()
def relay() -> None:
    """Run the outbox relay alone (when workers run with STUDENTWORK_RELAY_IN_WORKER=false)."""
    from producers.relay import OutboxRelay

    settings = _settings()
    _logging(settings)

    async def main() -> None:
        relay = OutboxRelay(settings)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, relay.stop)
        await relay.run()

    asyncio.run(main())


@cli.command()
def migrate() -> None:
    """Apply pending database migrations."""
    from db.migrate import migrate as run_migrations

    applied = asyncio.run(run_migrations(_settings().database_url))
    typer.echo(f"applied: {', '.join(applied)}" if applied else "database is up to date")


@cli.command()
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

    report = asyncio.run(reconcile_topics(_settings(), check=check))
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
    settings = _settings()
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

    settings = _settings()
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


@cli.command()
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
    typer.echo(mint_token(_settings(), parsed, normalized, ttl=ttl))


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


@cli.command()
def services() -> None:
    """Start local Kafka and PostgreSQL, print how to reach them, wait for Ctrl-C."""
    from infra import local_services

    with local_services() as running:
        typer.echo(f"export KAFKA_BOOTSTRAP={running.kafka_bootstrap}")
        typer.echo(f"export DATABASE_URL={running.database_url}")
        typer.echo("# running; Ctrl-C stops both", err=True)
        wait_for_stop_signal()


def _register_package_commands() -> None:
    from consumers.cli import register as register_consumers
    from producers.cli import register as register_producers
    from streams.demo import register as register_demo

    register_producers(cli)
    register_consumers(cli)
    register_demo(cli)


_register_package_commands()


def wait_for_stop_signal() -> None:
    """Block until SIGINT or SIGTERM, so the caller's clean-up always runs."""
    stop = {signal.SIGINT, signal.SIGTERM}
    # Blocked first, so the signals queue for sigwait instead of killing the process.
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)
    try:
        signal.sigwait(stop)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, stop)


def main() -> None:
    cli()
