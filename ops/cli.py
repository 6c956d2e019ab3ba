"""The operators' commands: ``studentwork monitor`` and ``studentwork dead-letters ...``.

Registered on the ``studentwork`` command line by its root, :mod:`infra.cli`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

dead_letters_cli = typer.Typer(
    help="List, show, replay and export the dead letters (declarations.rejected).",
    no_args_is_help=True,
)


def register(cli: typer.Typer) -> None:
    """Add this package's commands to ``cli``."""
    cli.command()(monitor)
    cli.add_typer(dead_letters_cli, name="dead-letters")


def monitor(
    once: Annotated[bool, typer.Option("--once", help="Print one snapshot and exit.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="With --once: the snapshot as JSON, for scripts.")
    ] = False,
    interval: Annotated[
        float,
        typer.Option(
            help="Seconds between the two offset samples (rates), and between refreshes.", min=0.1
        ),
    ] = 2.0,
) -> None:
    """A live view of the deployment from Kafka and PostgreSQL: rates and lag per topic
    and group, answers of the last minute, dead letters of the last hour, the outbox,
    the workers and their partitions."""
    from rich.console import Console

    from ops.monitor import render, run_live, snapshot
    from streams.cli import settings_from_environment

    settings = settings_from_environment()
    if as_json and not once:
        raise typer.BadParameter("--json needs --once")
    if once:
        snap = asyncio.run(snapshot(settings, interval))
        if as_json:
            json.dump(snap, sys.stdout, indent=2)
            sys.stdout.write("\n")
        else:
            Console().print(render(snap))
        return
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_live(settings, interval))


def _since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as error:
        raise typer.BadParameter(f"--since must be an ISO date or moment: {error}") from error
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dead_letters_cli.command("list")
def list_letters(
    since: Annotated[
        str | None,
        typer.Option(help="Only letters rejected at or after this ISO moment (UTC if no zone)."),
    ] = None,
    reason: Annotated[
        str | None,
        typer.Option(help="Only this reason class (INVALID_KEY, PROCESSING_FAILED, ...)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object a line.")] = False,
) -> None:
    """One line per dead letter, oldest first: id, when, reason class, where from."""
    from ops.dead_letters import read_letters, select, summary
    from streams.cli import settings_from_environment

    settings = settings_from_environment()
    letters = select(asyncio.run(read_letters(settings)), since=_since(since), reason=reason)
    for stored in letters:
        line = summary(stored)
        if as_json:
            typer.echo(json.dumps(line))
        else:
            typer.echo(
                f"{line['eventId']}  {line['rejectedAt']}  {line['reasonCode']}  {line['origin']}"
            )
    if not as_json:
        typer.echo(f"{len(letters)} dead letter(s)", err=True)


@dead_letters_cli.command("show")
def show(event_id: Annotated[str, typer.Argument(help="The dead letter's eventId.")]) -> None:
    """One dead letter: the reason, where it came from, key, headers and raw bytes decoded."""
    from ops.dead_letters import DeadLetterError, details, find, read_letters
    from streams.cli import settings_from_environment

    settings = settings_from_environment()
    try:
        stored = find(asyncio.run(read_letters(settings)), event_id)
    except DeadLetterError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps(asyncio.run(details(settings, stored)), indent=2, ensure_ascii=False))


@dead_letters_cli.command("replay")
def replay(
    event_ids: Annotated[list[str], typer.Argument(help="The eventIds of the letters to replay.")],
) -> None:
    """Republish each letter's original record (original topic, key, headers, timestamp).

    The worker's idempotency makes a record already applied a no-op; replay once the
    cause of the refusal is fixed.
    """
    from ops.dead_letters import DeadLetterError, find, read_letters
    from ops.dead_letters import replay as replay_letters
    from streams.cli import settings_from_environment

    settings = settings_from_environment()
    try:
        letters = asyncio.run(read_letters(settings))
        chosen = [find(letters, event_id) for event_id in event_ids]
        for line in asyncio.run(replay_letters(settings, chosen)):
            typer.echo(line)
    except DeadLetterError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None


@dead_letters_cli.command("export")
def export(
    out: Annotated[Path | None, typer.Option(help="Write here instead of stdout.")] = None,
    since: Annotated[str | None, typer.Option(help="As for list.")] = None,
    reason: Annotated[str | None, typer.Option(help="As for list.")] = None,
) -> None:
    """The dead letters as JSON Lines, raw bytes included (base64), for archives and tools."""
    from ops.dead_letters import export as export_letters
    from ops.dead_letters import read_letters, select
    from streams.cli import settings_from_environment

    settings = settings_from_environment()
    letters = select(asyncio.run(read_letters(settings)), since=_since(since), reason=reason)
    lines = [json.dumps(doc) for doc in asyncio.run(export_letters(settings, letters))]
    text = "".join(line + "\n" for line in lines)
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text)
        typer.echo(f"wrote {len(lines)} dead letter(s) to {out}", err=True)
