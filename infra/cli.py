"""``studentwork``: the one command line of the project, and where a worker is assembled.

This is the root of the import graph: it imports each package's commands
(``streams.cli``, ``db.cli``, ``producers.cli``, ``consumers.cli``, ``api.cli``,
``infra.demo``) and nothing
imports it back. The ``worker`` command lives here because a worker process is put
together from parts of several packages: the stream worker of ``streams/`` with the
outbox relay and the access-code scheduler of ``producers/``.
"""

from __future__ import annotations

import asyncio

import typer

from infra._util import wait_for_stop_signal

cli = typer.Typer(
    name="studentwork",
    help="Student@work hour-quota pipeline: Dimona and DmfA on Kafka, ledgers in PostgreSQL.",
    no_args_is_help=True,
    add_completion=False,
)


@cli.command()
def worker() -> None:
    """Run the stream worker (its input lanes, and the outbox relay unless disabled)."""
    from schemas.secrets import DevelopmentSecretsError
    from streams.cli import settings_from_environment, setup_logging

    # Checked before anything else: a worker with public secrets must not even migrate.
    settings = settings_from_environment()
    try:
        settings.require_production_secrets()
    except DevelopmentSecretsError as error:
        typer.echo(f"studentwork worker: {error}", err=True)
        raise typer.Exit(2) from error
    from producers.access_code_scheduler import publish_rotation
    from producers.relay import OutboxRelay
    from streams.admin import TopicConfigError, prepare
    from streams.app import create_app, run_worker
    from streams.processor import reconcile_configured_quota

    setup_logging(settings)
    try:
        asyncio.run(prepare(settings))
    except TopicConfigError as error:
        # A refusal to start, not a crash: the message is all the operator needs.
        typer.echo(f"worker not started: {error}", err=True)
        raise typer.Exit(2) from None
    # A quota changed in the configuration only must reach the stored balances too.
    asyncio.run(reconcile_configured_quota(settings))
    # asyncio.run leaves no current loop behind; faust wants one.
    asyncio.set_event_loop(asyncio.new_event_loop())
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
def services() -> None:
    """Start local Kafka and PostgreSQL, print how to reach them, wait for Ctrl-C."""
    from infra import local_services

    with local_services() as running:
        typer.echo(f"export KAFKA_BOOTSTRAP={running.kafka_bootstrap}")
        typer.echo(f"export DATABASE_URL={running.database_url}")
        typer.echo("# running; Ctrl-C stops both", err=True)
        wait_for_stop_signal()


def _register_package_commands() -> None:
    from api.cli import register as register_api
    from consumers.cli import register as register_consumers
    from db.cli import register as register_db
    from infra.demo import register as register_demo
    from ops.cli import register as register_ops
    from producers.cli import register as register_producers
    from streams.cli import register as register_streams

    register_streams(cli)
    register_db(cli)
    register_producers(cli)
    register_consumers(cli)
    register_api(cli)
    register_ops(cli)
    register_demo(cli)


_register_package_commands()


def main() -> None:
    cli()
