"""Commands of the consumers package, added to the ``studentwork`` command line."""

from __future__ import annotations

import asyncio
import signal
from datetime import date
from typing import Annotated

import typer


def register(cli: typer.Typer) -> None:
    """Add this package's commands to ``cli``."""
    cli.command(name="ebox")(ebox)


def ebox(
    purge_every: Annotated[
        float,
        typer.Option(
            help="Seconds between two purges of expired documents (one also runs at start).",
            min=1.0,
        ),
    ] = 3600.0,
    purge_once: Annotated[
        bool,
        typer.Option(
            "--purge-once",
            help="Delete expired, non-archived documents once and exit (for cron jobs).",
        ),
    ] = False,
    today: Annotated[
        str | None,
        typer.Option(
            help="With --purge-once: the date to purge as of (YYYY-MM-DD); default today "
            "in Brussels (or STUDENTWORK_TODAY).",
        ),
    ] = None,
) -> None:
    """Run the eBox consumer: store each delivered attestation once, purge expired ones.

    Own consumer group (<app id>-ebox). Offsets are committed after each database
    transaction, invalid messages are dead-lettered, SIGTERM or Ctrl-C stops it cleanly.
    """
    from consumers.ebox import EboxConsumer, purge
    from streams.admin import TopicConfigError, prepare
    from streams.cli import settings_from_environment, setup_logging

    settings = settings_from_environment()
    setup_logging(settings)
    as_of: date | None = None
    if today is not None:
        try:
            as_of = date.fromisoformat(today)
        except ValueError as error:
            raise typer.BadParameter(f"--today must be YYYY-MM-DD: {error}") from error
    if purge_once:
        from db.migrate import migrate

        asyncio.run(migrate(settings.database_url))
        deleted = asyncio.run(purge(settings, as_of))
        typer.echo(f"purged {deleted} expired eBox documents")
        return
    if as_of is not None:
        raise typer.BadParameter("--today only applies with --purge-once")

    from streams.metrics import serve

    serve(settings)  # /metrics on STUDENTWORK_METRICS_PORT

    async def main() -> None:
        consumer = EboxConsumer(settings, purge_every=purge_every)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, consumer.stop)
        # Migrations and topics, as the worker does: either may be the first to start.
        await prepare(settings)
        await consumer.run()

    try:
        asyncio.run(main())
    except TopicConfigError as error:
        typer.echo(f"eBox consumer not started: {error}", err=True)
        raise typer.Exit(2) from None
