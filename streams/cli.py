"""The stream worker's administration commands: migrations, topics, quota, schemas.

Registered on the ``studentwork`` command line by its root, :mod:`infra.cli`.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from schemas.settings import Settings
from schemas.topics import QUOTA_CHANGES, TOPICS

if TYPE_CHECKING:
    from db.store import EmployerIdentity
    from streams.processor import EmployerIdsImport

quota_cli = typer.Typer(help="Show or change the quota per year.", no_args_is_help=True)
schema_cli = typer.Typer(help="Message contracts as JSON Schema.", no_args_is_help=True)
employer_ids_cli = typer.Typer(
    help="NSSO registration numbers and the enterprise they belong to (one employer, one "
    "identity).",
    no_args_is_help=True,
)


def register(cli: typer.Typer) -> None:
    """Add this package's commands to ``cli``."""
    cli.command()(migrate)
    cli.command()(topics)
    cli.command()(purge)
    cli.add_typer(quota_cli, name="quota")
    cli.add_typer(schema_cli, name="schema")
    cli.add_typer(employer_ids_cli, name="employer-ids")


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


def read_employer_ids(path: Path) -> tuple[list[EmployerIdentity], list[str]]:
    """The (NSSO number, enterprise number) pairs of a CSV file, and one refusal per bad line.

    Two columns, ``nsso`` and ``enterprise``, in that order; a first line naming them is a
    header. Both numbers in any accepted written form (``0123.456.749``, ``BE0123456749``,
    ``197-4123-45``); each is normalized as the contracts do.
    """
    import csv

    from db.store import EmployerIdentity
    from schemas.identifiers import normalize_enterprise_number, nsso_employer_id

    identities: list[EmployerIdentity] = []
    refused: list[str] = []
    with path.open(newline="", encoding="utf-8") as handle:
        for number, row in enumerate(csv.reader(handle), start=1):
            if not row or all(not cell.strip() for cell in row):
                continue
            if number == 1 and [c.strip().lower() for c in row[:2]] == ["nsso", "enterprise"]:
                continue
            if len(row) != 2:
                refused.append(
                    f"line {number}: expected 2 columns (nsso, enterprise), got {len(row)}"
                )
                continue
            try:
                nsso_id = nsso_employer_id(row[0])
                enterprise = normalize_enterprise_number(row[1])
            except ValueError as error:
                refused.append(f"line {number}: {error}")
                continue
            identities.append(
                EmployerIdentity(nsso_id, enterprise, "operator", f"{path.name}:{number}")
            )
    return identities, refused


@employer_ids_cli.command("import")
def employer_ids_import(
    file: Annotated[
        Path, typer.Argument(help="CSV: nsso,enterprise per line.", exists=True, dir_okay=False)
    ],
) -> None:
    """Import NSSO numbers and their enterprise: what was stored under each new NSSO
    number counts as the enterprise's from now on, and the balances of the students
    concerned are recomputed and re-published. A known NSSO number is never remapped:
    a line naming another enterprise for it is refused (exit 1)."""
    import asyncpg

    from streams.processor import BatchProcessor

    settings = settings_from_environment()
    identities, refused = read_employer_ids(file)

    async def run() -> EmployerIdsImport:
        from db.migrate import migrate as run_migrations

        await run_migrations(settings.database_url)
        pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=1)
        try:
            return await BatchProcessor(pool, settings).import_employer_identities(identities)
        finally:
            await pool.close()

    report = asyncio.run(run())
    for identity in report.conflicts:
        refused.append(
            f"{identity.origin}: NSSO {identity.nsso_id.removeprefix('NSSO')} already belongs "
            f"to another enterprise than {identity.enterprise_number}; not changed"
        )
    for line in refused:
        typer.echo(f"refused: {line}", err=True)
    typer.echo(
        f"learned {report.learned}, already known {report.known}, refused {len(refused)}; "
        f"{report.students} students merged, {report.balances_changed} balances re-published"
    )
    if refused:
        raise typer.Exit(1)


def purge(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report what would go; delete nothing.")
    ] = False,
) -> None:
    """Apply the retention rules now (the worker's leader does it daily): expired
    attestation PDFs not archived in the eBox, expired eBox documents, look-ups older than
    STUDENTWORK_LOOKUP_AUDIT_MONTHS, applied ids older than the consumed topics keep
    records."""
    import asyncpg

    from streams.retention import PurgeReport
    from streams.retention import purge as run_purge

    settings = settings_from_environment()

    async def run() -> PurgeReport:
        pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=1)
        try:
            return await run_purge(pool, settings, datetime.now(UTC), dry_run=dry_run)
        finally:
            await pool.close()

    report = asyncio.run(run())
    verb = "would purge" if dry_run else "purged"
    typer.echo(
        f"{verb}: {len(report.pdfs)} attestation PDFs, {report.ebox_documents} eBox documents, "
        f"{report.lookups} look-ups, {report.applied_ids} applied ids"
    )
    for attestation_id in report.pdfs:
        typer.echo(f"  attestation {attestation_id}")
    if report.applied_ids_before is not None:
        typer.echo(f"applied ids before {report.applied_ids_before:%Y-%m-%d %H:%M} UTC")
    if report.applied_ids_kept_because:
        typer.echo(f"applied ids kept: {report.applied_ids_kept_because}")
