"""``studentwork demo``: the whole system on the embedded default, with a simulated year.

Starts local Kafka and PostgreSQL (or uses ``KAFKA_BOOTSTRAP`` / ``DATABASE_URL``),
migrates, runs the worker (lanes, relay, ``/health``), the HTTP API (``studentwork api``)
and the eBox consumer as child processes, feeds a simulated year, prints what happened
and a ready-to-paste ``curl`` against the API, then serves until Ctrl-C and stops
everything it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

console = Console(stderr=True)


def register(cli: typer.Typer) -> None:
    """Add the demo command."""
    cli.command()(demo)


def demo(
    students: Annotated[int, typer.Option(help="Students in the simulated year.")] = 3000,
    seed: Annotated[int, typer.Option(help="Simulation seed (same seed, same year).")] = 2026,
    port: Annotated[int, typer.Option(help="Port of the HTTP API (studentwork api).")] = 8080,
    health_port: Annotated[
        int | None,
        typer.Option(help="Port of the worker's /health (default: any free port)."),
    ] = None,
    exit_after_feed: Annotated[
        bool, typer.Option(help="Stop after the summary instead of serving the API.")
    ] = False,
) -> None:
    """Run the whole system locally on a simulated year, then serve the API until Ctrl-C."""
    from infra import MissingTool, local_services

    started = time.monotonic()
    try:
        with local_services(log=lambda line: console.print(f"[dim]{line}[/dim]")) as services:
            console.print(
                f"[bold]services[/bold] Kafka {services.kafka_bootstrap}, "
                f"PostgreSQL {services.database_url} ({time.monotonic() - started:.1f} s)"
            )
            with tempfile.TemporaryDirectory(prefix="studentwork-demo-") as workdir:
                _run(
                    services.kafka_bootstrap,
                    services.database_url,
                    Path(workdir),
                    students=students,
                    seed=seed,
                    port=port,
                    health_port=health_port if health_port is not None else _free_port(),
                    exit_after_feed=exit_after_feed,
                )
    except MissingTool as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from error


def _free_port() -> int:
    """A port nobody listens on now, so two demos (or a demo and tests) never collide."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _demo_env(kafka: str, database: str, port: int, health_port: int) -> dict[str, str]:
    return {
        **os.environ,
        "KAFKA_BOOTSTRAP": kafka,
        "DATABASE_URL": database,
        # Simulated submissions carry their simulated moment as the record timestamp.
        "STUDENTWORK_INPUT_TIMESTAMP_TYPE": "CreateTime",
        "STUDENTWORK_WEB_PORT": str(health_port),
        "STUDENTWORK_API_PORT": str(port),
        "STUDENTWORK_LOG_LEVEL": os.environ.get("STUDENTWORK_LOG_LEVEL", "warning"),
        # The demo runs on the repository's public development secrets.
        "STUDENTWORK_DEVELOPMENT": "true",
    }


@contextlib.contextmanager
def _child(
    name: str, args: list[str], env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "infra", *args], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        console.print(f"[dim]{name} stopped[/dim]")


def _wait_for(
    predicate: Any, what: str, timeout: float, proc: subprocess.Popen[bytes], log: Path
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited; log:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    raise TimeoutError(f"{what}: not ready after {timeout:.0f} s; log in {log}")


def _run(
    kafka: str,
    database: str,
    workdir: Path,
    *,
    students: int,
    seed: int,
    port: int,
    health_port: int,
    exit_after_feed: bool,
) -> None:
    from schemas.settings import Settings
    from streams.admin import prepare

    env = _demo_env(kafka, database, port, health_port)
    settings = Settings(
        kafka_bootstrap=kafka,
        database_url=database,
        input_timestamp_type="CreateTime",
        web_port=health_port,
        api_port=port,
        development=True,
    )
    asyncio.run(prepare(settings))
    asyncio.run(_load_employer_names(settings))
    worker_log = workdir / "worker.log"
    api_log = workdir / "api.log"
    # Faust prints readiness at info level; the demo reads it from the log.
    with (
        _child(
            "worker", ["worker"], {**env, "STUDENTWORK_LOG_LEVEL": "info"}, worker_log
        ) as worker,
        _child("eBox consumer", ["ebox"], env, workdir / "ebox.log"),
        _child("API", ["api"], env, api_log) as api,
    ):
        _wait_for(
            lambda: "Worker]: Ready" in worker_log.read_text(errors="replace"),
            "worker",
            120,
            worker,
            worker_log,
        )
        _wait_for(lambda: _answers(port), "API", 60, api, api_log)
        console.print(
            f"[bold]worker[/bold] ready (health on http://127.0.0.1:{health_port}/health), "
            f"[bold]API[/bold] on http://127.0.0.1:{port} (logs in {workdir})"
        )
        fed = asyncio.run(
            _feed(settings, students=students, seed=seed, worker=worker, log=worker_log)
        )
        summary = asyncio.run(_summary(settings))
        _print_summary(summary, fed)
        token_for = summary["example_student"]
        if token_for:
            from api.auth import Role, mint_token

            token = mint_token(settings, Role.STUDENT, token_for)
            console.print("\n[bold]Try the API[/bold] (token valid one hour):")
            print(
                f"curl -s -H 'Authorization: Bearer {token}' http://127.0.0.1:{port}/v1/me/balance"
            )
            console.print(
                f"[bold]Or the pages[/bold]: http://localhost:{port}/dev/login, sign in as "
                f"student {token_for} (localhost: browsers keep the Secure cookie there)"
            )
        if exit_after_feed:
            return
        console.print("\n[bold]Serving[/bold]; Ctrl-C stops every process the demo started.")
        from infra._util import wait_for_stop_signal

        wait_for_stop_signal()


#: The small KBO open-data export made for the tests and the demo: names for the
#: simulated employers of the demo's seed (tests/fixtures/kbo/make_fixture.py).
KBO_FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "kbo"


async def _load_employer_names(settings: Any) -> None:
    """Load the fixture's employer names, so the pages show names instead of numbers."""
    import asyncpg

    from db.employers import import_export

    if not KBO_FIXTURE.is_dir():
        console.print(f"[yellow]no employer names: {KBO_FIXTURE} is missing[/yellow]")
        return
    conn = await asyncpg.connect(settings.database_url)
    try:
        report = await import_export(conn, KBO_FIXTURE)
    finally:
        await conn.close()
    console.print(
        f"[bold]employer names[/bold] {report.names} names of {report.enterprises} "
        f"enterprises from {KBO_FIXTURE.name}/ (refused: {report.refused})"
    )


def _answers(port: int) -> bool:
    """Whether the API on ``port`` serves its OpenAPI document (it is then ready)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/openapi.json", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


_WEEK_MS = 7 * 24 * 3600 * 1000


async def _feed(
    settings: Any, *, students: int, seed: int, worker: subprocess.Popen[bytes], log: Path
) -> int:
    """Publish the simulated current year up to now, a week at a time; return the count.

    Dimona and DmfA travel on two topics that the worker consumes side by side; in real
    time they are weeks apart, but a year replayed in one burst could let a quarter's DmfA
    overtake that quarter's last updates. Feeding week by week, each week applied before
    the next is sent, keeps the order real traffic has.
    """
    import asyncpg
    from rich.progress import Progress

    from db.reads import relay_backlog
    from producers.simulator import generate, publish_records

    year = datetime.now(UTC).year
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    # The rest of the year has not been declared yet.
    records = list(generate(year, students, seed, until_ms=now_ms))
    weeks: dict[int, list[Any]] = {}
    for record in records:
        weeks.setdefault(record.timestamp_ms // _WEEK_MS, []).append(record)
    conn = await asyncpg.connect(settings.database_url)
    sent = 0
    try:
        with Progress(console=console) as progress:
            task = progress.add_task(f"feeding {year} ({students} students)", total=len(records))
            for week in sorted(weeks):
                sent += await publish_records(weeks[week], settings)
                while await conn.fetchval("SELECT count(*) FROM applied_events") < sent:
                    if worker.poll() is not None:
                        raise RuntimeError(f"worker exited; see its log in {log}")
                    await asyncio.sleep(0.05)
                progress.update(task, completed=sent)
            while True:
                if not await relay_backlog(conn):
                    break
                await asyncio.sleep(0.1)
    finally:
        await conn.close()
    return sent


async def _summary(settings: Any) -> dict[str, Any]:
    import asyncpg
    from aiokafka import AIOKafkaConsumer

    conn = await asyncpg.connect(settings.database_url)
    try:
        over = await conn.fetchval("SELECT count(*) FROM balances WHERE used > quota")
        students = await conn.fetchval("SELECT count(DISTINCT ssin) FROM balances")
        top = await conn.fetch(
            "SELECT ssin, year, quota, used, remaining FROM balances ORDER BY used DESC LIMIT 5"
        )
        example = await conn.fetchval(
            "SELECT ssin FROM balances WHERE used BETWEEN 100 AND quota ORDER BY ssin LIMIT 1"
        )
    finally:
        await conn.close()

    statuses: Counter[str] = Counter()
    actions: Counter[str] = Counter()
    letters: list[str] = []
    consumer = AIOKafkaConsumer(
        settings.topic("dimona.acks"),
        settings.topic("declarations.rejected"),
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    try:
        idle = 0
        while idle < 3:
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            idle = 0 if batch else idle + 1
            for tp, records in batch.items():
                for r in records:
                    body = json.loads(r.value)
                    if tp.topic.endswith("dimona.acks"):
                        statuses[body["status"]] += 1
                        actions[body["action"]] += 1
                    else:
                        letters.append(body["reason"])
    finally:
        await consumer.stop()
    return {
        "over": over,
        "students": students,
        "top": [dict(r) for r in top],
        "example_student": example,
        "statuses": statuses,
        "actions": actions,
        "letters": letters,
    }


def _print_summary(summary: dict[str, Any], fed: int) -> None:
    table = Table(title=f"{fed} records fed")
    table.add_column("answers")
    table.add_column("count", justify="right")
    for status, label in [
        ("A", "A accepted"),
        ("W", "W accepted with warning"),
        ("B", "B refused"),
    ]:
        table.add_row(label, str(summary["statuses"].get(status, 0)))
    for action, count in sorted(summary["actions"].items()):
        table.add_row(f"  {action}", str(count))
    console.print(table)
    console.print(
        f"students with a balance: {summary['students']}, over the quota: {summary['over']}"
    )
    top = Table(title="top balances")
    for col in ("SSIN", "year", "quota", "used", "remaining"):
        top.add_column(col, justify="right")
    for row in summary["top"]:
        top.add_row(
            row["ssin"],
            str(row["year"]),
            str(row["quota"]),
            str(row["used"]),
            str(row["remaining"]),
        )
    console.print(top)
    letters = summary["letters"]
    console.print(f"dead letters: {len(letters)}")
    for reason, count in Counter(letters).most_common(8):
        console.print(f"  {count} x {reason[:140]}")
