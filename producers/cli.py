"""Commands of the producers package, added to the ``studentwork`` command line.

``publish`` is what an employer, agency or social secretariat runs to send a file of
declarations and read the answers; ``simulate`` generates (or publishes) a realistic
year of them for load tests and demos. Results go to standard output, progress bars and
local errors to standard error, so ``--json`` output and ``--out -`` style pipelines
stay clean.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

    from producers.publisher import PublishReport, RejectedLine
    from producers.simulator import GenerationStats, Simulation
    from schemas.answers import DimonaAnswer
    from schemas.settings import Settings


# The command help, written as paragraphs: typer keeps a docstring's line breaks.
_PUBLISH_HELP = (
    "Publish Dimona declarations and DmfA lines from a file and print the answers.\n\n"
    "Every line is checked against the message contracts first; a bad line is reported with "
    "its number and the reason, and the others still go. A missing eventId (uuid4) or "
    "submittedAt (now) is filled in, so the bare REST body of payroll software will do. "
    "Messages are keyed by the worker's SSIN.\n\n"
    "Exit code: 0 when every valid line was answered (even with B), 1 for local errors or "
    "missing answers, 2 for usage errors."
)
_SIMULATE_HELP = (
    "Generate a realistic year of student declarations (DOMAIN.md section 7).\n\n"
    "Students, employers and temp agencies with day, week and longer contracts, a summer "
    "peak, updates, cancellations, a few late and invalid declarations, and DmfA lines after "
    "each quarter. Deterministic: the same seed and options give the same file byte for byte "
    "(event ids derive from the seed, nothing from the clock)."
)


def register(cli: typer.Typer) -> None:
    """Add this package's commands to ``cli``."""
    cli.command("publish", help=_PUBLISH_HELP)(publish)
    cli.command("simulate", help=_SIMULATE_HELP)(simulate)
    cli.command("rotate-codes")(rotate_codes)
    cli.command("relay")(relay)


def relay() -> None:
    """Run the outbox relay alone (when workers run with STUDENTWORK_RELAY_IN_WORKER=false)."""
    import asyncio
    import signal

    from producers.relay import OutboxRelay
    from streams.cli import settings_from_environment, setup_logging
    from streams.metrics import serve

    settings = settings_from_environment()
    setup_logging(settings)
    serve(settings)  # /metrics on STUDENTWORK_METRICS_PORT

    async def main() -> None:
        outbox_relay = OutboxRelay(settings)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, outbox_relay.stop)
        await outbox_relay.run()

    asyncio.run(main())


def rotate_codes(
    month: Annotated[
        str | None,
        typer.Option(help="Month to rotate, YYYY-MM (default: the current month in Brussels)."),
    ] = None,
) -> None:
    """Publish the access-code rotation of a month now (the leader does it every 1st)."""
    import asyncio
    from datetime import UTC, date, datetime

    from producers.access_code_scheduler import publish_rotation
    from schemas.settings import Settings

    settings = Settings()
    now = datetime.now(UTC)
    try:
        first = (
            date.fromisoformat(f"{month}-01") if month else settings.today_in_brussels(now)
        ).replace(day=1)
    except ValueError as error:
        raise typer.BadParameter(f"month must be YYYY-MM (got {month!r})") from error
    partitions = asyncio.run(publish_rotation(settings, first, now))
    typer.echo(f"published the {first:%Y-%m} rotation to partitions {partitions}")


# ----------------------------------------------------------------------------- output


def _consoles() -> tuple[Console, Console]:
    """(stdout, stderr) consoles; no wrapping, so every result stays on one line."""
    from rich.console import Console

    # No markup either: reasons and anomaly texts may hold brackets.
    return (
        Console(soft_wrap=True, highlight=False, markup=False),
        Console(stderr=True, soft_wrap=True, highlight=False, markup=False),
    )


def _progress(console: Console) -> Progress:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description:<12}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        # Progress is for people; logs and pipes get the results only.
        disable=not console.is_terminal,
        redirect_stdout=False,
        redirect_stderr=False,
    )


_STATUS_STYLE = {"A": "green", "W": "yellow", "B": "bold red", "S": "cyan"}


def describe_answer(line: int, answer: DimonaAnswer) -> list[tuple[str, str]]:
    """The human form of an answer: (text, style) pieces; anomalies on their own lines."""
    pieces = [
        (f"line {line}: ", ""),
        (answer.status, _STATUS_STYLE.get(answer.status, "")),
        (f" ({answer.action}) event {answer.in_reply_to}", ""),
    ]
    if answer.action in ("in", "update") and answer.status != "B":
        pieces.append(
            (f": {answer.reduced_hours} h reduced, {answer.ordinary_hours} h ordinary", "")
        )
    if answer.period_id and answer.status != "B":
        pieces.append((f", period {answer.period_id}", "dim"))
    for anomaly in answer.anomalies:
        hours = f" ({anomaly.hours} h)" if anomaly.hours is not None else ""
        pieces.append((f"\n    {anomaly.code}{hours}: {anomaly.text}", ""))
    return pieces


class _Printer:
    """Prints what ``publish_lines`` reports, human or JSON, with a progress bar."""

    def __init__(self, *, as_json: bool, quiet: bool, total_lines: int | None) -> None:
        self.out, self.err = _consoles()
        self.as_json = as_json
        self.quiet = quiet
        self.progress = _progress(self.err)
        self._publishing: TaskID = self.progress.add_task("publishing", total=total_lines)
        self._answers: TaskID | None = None
        # Same terminal for both: print through the progress console so the bar redraws
        # below the results instead of over them.
        same_terminal = self.out.is_terminal and self.err.is_terminal
        self._results = self.progress.console if same_terminal else self.out

    def json_line(self, document: dict[str, object]) -> None:
        sys.stdout.write(json.dumps(document, ensure_ascii=False) + "\n")

    def rejected(self, line: RejectedLine) -> None:
        if self.as_json:
            self.json_line({"type": "rejected", "line": line.line, "reason": line.reason})
            return
        self.progress.console.print(f"line {line.line}: rejected: {line.reason}")

    def sent(self, count: int) -> None:
        self.progress.update(self._publishing, completed=count)

    def waiting(self, expected: int) -> None:
        task = self.progress.tasks[0]
        self.progress.update(self._publishing, total=task.completed)
        self._answers = self.progress.add_task("answers", total=expected)

    def answered(self, line: int, answer: DimonaAnswer) -> None:
        if self._answers is not None:
            self.progress.advance(self._answers)
        if self.as_json:
            self.json_line(
                {
                    "type": "answer",
                    "line": line,
                    "eventId": answer.in_reply_to,
                    "status": answer.status,
                    "answer": answer.model_dump(mode="json", by_alias=True, exclude_none=True),
                }
            )
            return
        if self.quiet and answer.status == "A":
            return
        from rich.text import Text

        self._results.print(Text.assemble(*describe_answer(line, answer)))

    def summary(self, report: PublishReport, timeout: float) -> None:
        if self.as_json:
            for line, event_id in report.missing:
                self.json_line({"type": "missing", "line": line, "eventId": event_id})
            self.json_line(
                {
                    "type": "summary",
                    "lines": report.lines,
                    "sent": report.sent,
                    "rejected": len(report.rejected),
                    "answered": report.answered,
                    "statuses": dict(sorted(report.statuses.items())),
                    "missing": len(report.missing),
                    "exitCode": report.exit_code,
                }
            )
            return
        for line, event_id in report.missing:
            self.out.print(f"line {line}: no answer to event {event_id} within {timeout:g} s")
        statuses = ", ".join(f"{s} {n}" for s, n in sorted(report.statuses.items())) or "none"
        answered = (
            f"answers: {report.answered} ({statuses}), missing: {len(report.missing)}; "
            if report.waited
            else "not waiting for answers; "
        )
        self.out.print(
            f"summary: {report.sent} of {report.lines} lines published; {answered}"
            f"rejected: {len(report.rejected)}"
        )


def _count_lines(file: str) -> int | None:
    if file == "-":
        return None
    with Path(file).open(encoding="utf-8", errors="replace") as text:
        return sum(1 for line in text if line.strip())


# ----------------------------------------------------------------------------- publish


def publish(
    file: Annotated[
        str,
        typer.Argument(
            help="JSON Lines file: Dimona or DmfA bodies, or simulator envelopes "
            "(topic, key, timestamp, value); '-' reads standard input.",
            metavar="FILE",
        ),
    ],
    wait: Annotated[
        bool,
        typer.Option(
            "--wait/--no-wait", help="Wait for and print the answer (A/W/B) to every message."
        ),
    ] = True,
    timeout: Annotated[
        float,
        typer.Option(
            min=0,
            help="Seconds to wait for the answers once everything is published; those "
            "still missing are listed and the exit code is 1.",
        ),
    ] = 60.0,
    timestamp: Annotated[
        str | None,
        typer.Option(
            help="Record timestamp (CreateTime) of every message, as an ISO date-time "
            "(Brussels time if no zone is given), for replays. It decides lateness where the "
            "input topics keep CreateTime; in production the broker stamps LogAppendTime.",
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Machine-readable output: one JSON object per line (rejected, answer, "
            "missing, summary) on standard output.",
        ),
    ] = False,
    send_invalid: Annotated[
        bool,
        typer.Option(
            help="Publish lines that fail the local checks anyway, so that the service refuses "
            "them itself (B answer and dead letter); they still count as local errors.",
        ),
    ] = False,
    from_beginning: Annotated[
        bool,
        typer.Option(
            help="Look for answers from the start of the answers topic, to find those of "
            "event ids published before (the service does not answer a replay twice).",
        ),
    ] = False,
    quiet: Annotated[
        bool,
        typer.Option("--quiet", "-q", help="Print only W and B answers, problems and the summary."),
    ] = False,
) -> None:
    """Publish Dimona declarations and DmfA lines from a file and print the answers.

    Every line is checked against the message contracts first; a bad line is reported
    with its number and the reason and the others still go. A missing eventId (uuid4)
    or submittedAt (now) is filled in, so the bare REST body of payroll software will
    do. Messages are keyed by the worker's SSIN. Exit code: 0 when every valid line was
    answered (even with B), 1 for local errors or missing answers, 2 for usage errors.
    """
    from aiokafka.errors import KafkaError

    from producers.publisher import describe_delivery_error, parse_timestamp, publish_file
    from schemas.settings import Settings

    if file != "-" and not Path(file).is_file():
        raise typer.BadParameter(f"no such file: {file}", param_hint="FILE")
    timestamp_ms = None
    if timestamp is not None:
        try:
            timestamp_ms = parse_timestamp(timestamp)
        except ValueError as error:
            raise typer.BadParameter(
                f"{timestamp!r} is not an ISO date-time ({error})", param_hint="--timestamp"
            ) from error
    settings = Settings()
    printer = _Printer(as_json=as_json, quiet=quiet, total_lines=_count_lines(file))
    try:
        with printer.progress:
            report = publish_file(
                file,
                settings,
                wait=wait,
                timeout=timeout,
                timestamp_ms=timestamp_ms,
                send_invalid=send_invalid,
                from_beginning=from_beginning,
                listener=printer,
                keep_answers=False,
            )
    except (KafkaError, OSError) as error:
        printer.err.print(
            f"error: cannot publish to Kafka at {settings.kafka_bootstrap}: "
            f"{describe_delivery_error(error)}"
        )
        raise typer.Exit(1) from error
    printer.summary(report, timeout)
    raise typer.Exit(report.exit_code)


# ----------------------------------------------------------------------------- simulate


def simulate(
    students: Annotated[int, typer.Option(min=1, help="Number of students to simulate.")] = 1000,
    year: Annotated[
        int | None,
        typer.Option(
            min=2000,
            max=2100,
            help="Calendar year simulated. Default: the current year (give it explicitly "
            "for reproducible output).",
        ),
    ] = None,
    seed: Annotated[
        int, typer.Option(help="Random seed: the same seed and options give the same file.")
    ] = 0,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Write JSON Lines envelopes (topic, key, timestamp, value, kind) here, in "
            "submission order, for 'studentwork publish' or any replay tool.",
            dir_okay=False,
            writable=True,
        ),
    ] = None,
    publish_now: Annotated[
        bool,
        typer.Option(
            "--publish",
            help="Publish to Kafka directly (topics of the settings, created if missing), "
            "each record with its simulated submission time as CreateTime.",
        ),
    ] = False,
    until: Annotated[
        str | None,
        typer.Option(
            help="Leave out the records submitted after this ISO date-time (Brussels time if "
            "no zone) or 'now'. Default with --publish: now (later records have not happened "
            "yet, and brokers refuse timestamps more than an hour ahead); with --out: none.",
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1, help="Processes generating students; the output does not depend on it."
        ),
    ] = 1,
    tmp_dir: Annotated[
        Path | None,
        typer.Option(
            help="Directory for the day buckets of large simulations (default: the system's "
            "temporary directory).",
            file_okay=False,
        ),
    ] = None,
    max_buffered: Annotated[
        int,
        typer.Option(
            min=1000, help="Records kept in memory before buckets spill to temporary files."
        ),
    ] = 250_000,
) -> None:
    """Generate a realistic year of student declarations (DOMAIN.md section 7).

    Students, employers and temp agencies with day, week and longer contracts, a summer
    peak, updates, cancellations, a few late and invalid declarations and DmfA lines
    after each quarter. Deterministic: event ids derive from the seed, nothing from the
    clock.
    """
    from producers.publisher import parse_timestamp
    from producers.simulator import Simulation
    from schemas.settings import Settings

    if (out is None) == (not publish_now):
        raise typer.BadParameter("give either --out FILE or --publish", param_hint="--out")
    simulated_year = year if year is not None else datetime.now(UTC).year
    until_ms: int | None = None
    if until == "now" or (until is None and publish_now):
        until_ms = int(time.time() * 1000)
    elif until is not None:
        try:
            until_ms = parse_timestamp(until)
        except ValueError as error:
            raise typer.BadParameter(
                f"{until!r} is not an ISO date-time or 'now'", param_hint="--until"
            ) from error
    stdout, stderr = _consoles()
    progress = _progress(stderr)
    tasks = {
        "students": progress.add_task("students", total=students),
        "records": progress.add_task("publishing" if publish_now else "writing", total=None),
    }

    def on_progress(phase: str, done: int, total: int) -> None:
        if phase == "records" and publish_now:
            return  # the publishing task counts acknowledged records instead
        progress.update(tasks[phase], completed=done, total=total)

    try:
        simulation = Simulation(
            simulated_year,
            students,
            seed,
            on_progress=on_progress,
            max_buffered=max_buffered,
            temp_dir=tmp_dir,
            workers=workers,
        )
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--students") from error
    started = time.perf_counter()
    with progress:
        if out is not None:
            stats = simulation.write_jsonl(out, until_ms)
        else:
            settings = Settings()
            _publish_simulation(simulation, until_ms, settings, progress, tasks["records"], stderr)
            stats = simulation.stats
    elapsed = time.perf_counter() - started
    _print_summary(stdout, stats, elapsed, out)


def _publish_simulation(
    simulation: Simulation,
    until_ms: int | None,
    settings: Settings,
    progress: Progress,
    task: TaskID,
    stderr: Console,
) -> None:
    from aiokafka.errors import KafkaError

    from producers.publisher import describe_delivery_error
    from producers.simulator import publish_records
    from streams.admin import ensure_topics

    if settings.input_timestamp_type != "CreateTime":
        stderr.print(
            "note: input topics are configured with LogAppendTime: the broker stamps arrival "
            "times, so simulated submission times and late declarations are not kept (set "
            "STUDENTWORK_INPUT_TIMESTAMP_TYPE=CreateTime for simulations)"
        )

    async def run() -> None:
        await ensure_topics(settings)
        await publish_records(
            simulation.records(until_ms),
            settings,
            on_sent=lambda n: progress.update(task, completed=n, total=simulation.stats.records),
        )

    try:
        asyncio.run(run())
    except (KafkaError, OSError) as error:
        stderr.print(
            f"error: cannot publish to Kafka at {settings.kafka_bootstrap}: "
            f"{describe_delivery_error(error)}"
        )
        raise typer.Exit(1) from error


def _print_summary(
    console: Console, stats: GenerationStats, elapsed: float, out: Path | None
) -> None:
    from rich.table import Table

    table = Table(title=f"Simulated year {stats.year}", title_justify="left")
    table.add_column("records")
    table.add_column("count", justify="right")
    for kind, count in sorted(stats.by_kind.items(), key=lambda item: (-item[1], item[0])):
        table.add_row(kind, f"{count:,}")
    table.add_row("total", f"{stats.records:,}", style="bold")
    console.print(table)
    ins = stats.by_kind["in"] + stats.by_kind["late"]
    share = stats.agency_planned_hours / stats.planned_hours if stats.planned_hours else 0.0
    decl_share = stats.agency_declarations / ins if ins else 0.0
    console.print(
        f"{stats.students:,} students ({stats.summer_only_students / stats.students:.1%} "
        f"summer only), {stats.employers:,} employers, {stats.agencies:,} agencies; "
        f"{stats.mean_planned_hours:.0f} planned hours per student on average, "
        f"{stats.students_over_quota:,} students over the quota; agencies: {share:.1%} of "
        f"the hours, {decl_share:.1%} of the declarations"
    )
    rate = stats.records / elapsed if elapsed > 0 else 0.0
    where = f"written to {out}" if out is not None else "published"
    left_out = stats.records - stats.emitted
    later = f"; {left_out:,} submitted after --until left out" if left_out else ""
    console.print(
        f"{stats.emitted:,} records {where} in {elapsed:.1f} s ({rate:,.0f} records/s "
        f"generated){later}"
    )
