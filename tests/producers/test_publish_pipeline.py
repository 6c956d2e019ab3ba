"""Publishing against the real pipeline: a Kafka broker, PostgreSQL and a worker process.

The command line runs as a subprocess (``python -m infra publish``), exactly as an
employer would run it, with the pipeline's environment.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from producers.publisher import DeclarationPublisher, InvalidDeclaration
from producers.simulator import RecordKind, Simulation
from quota.calendar import brussels_date
from schemas.declarations import DimonaDeclaration
from streams.messages import declared_period_id
from tests.support import (
    EMPLOYER_A,
    EMPLOYER_B,
    REPO,
    STUDENT,
    Pipeline,
    WorkerProcess,
    brussels_millis,
    collect,
    dimona_in,
    dimona_update,
    dmfa,
    now_utc,
    valid_ssin,
)

pytestmark = pytest.mark.integration

#: A simulated year whose every record (DmfA of Q4 included) lies in the past: brokers
#: refuse record timestamps more than an hour ahead.
PAST_YEAR = brussels_date(now_utc()).year - 2
OTHER = valid_ssin("010203", 124)
THIRD = valid_ssin("990101", 33)


@pytest.fixture
def pipeline(kafka_bootstrap: str, database_url: str) -> Pipeline:
    # 475 hours for 2026 reproduces the worked examples of DOMAIN.md.
    return Pipeline(
        kafka_bootstrap, database_url, extra_env={"STUDENTWORK_QUOTA_HOURS": '{"2026": 475}'}
    )


@pytest.fixture
def worker(pipeline: Pipeline, tmp_path: Path) -> Iterator[WorkerProcess]:
    with WorkerProcess(pipeline, tmp_path / "worker.log") as process:
        yield process


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    def json_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout.splitlines()]


async def studentwork(pipeline: Pipeline, *args: str) -> Run:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "infra",
        *args,
        cwd=REPO,
        env={**os.environ, **pipeline.env()},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 180)
    assert process.returncode is not None
    return Run(process.returncode, out.decode(), err.decode())


def write_lines(path: Path, *items: object) -> Path:
    path.write_text(
        "".join((item if isinstance(item, str) else json.dumps(item)) + "\n" for item in items)
    )
    return path


async def test_good_lines_go_bad_lines_are_reported_answers_are_printed(
    pipeline: Pipeline, worker: WorkerProcess, tmp_path: Path
) -> None:
    bare_cross_quarter = dimona_in("x", ssin=OTHER, start="2026-06-20", end="2026-07-10")
    del bare_cross_quarter["eventId"], bare_cross_quarter["submittedAt"]
    file = write_lines(
        tmp_path / "declarations.jsonl",
        dimona_in("pub-300", hours=300),  # 1
        dimona_in("pub-bad-ssin", ssin="93051822362"),  # 2
        "",  # 3
        "{not json",  # 4
        dimona_in("pub-200", employer=EMPLOYER_B, hours=200),  # 5
        bare_cross_quarter,  # 6
        dmfa("pub-dmfa", ssin=THIRD, hours=12),  # 7
        dimona_in("pub-300", hours=5),  # 8
        {"worker": {"ssin": STUDENT}},  # 9
        # Period ids derive from the declarant and its event id: no need to wait for the
        # answer.
        dimona_update("pub-280", declared_period_id(EMPLOYER_A, "pub-300"), hours=280),  # 10
        # Stamped tomorrow: the broker refuses timestamps more than an hour ahead.
        {
            "topic": "dimona.declarations",
            "timestamp": int(now_utc().timestamp() * 1000) + 86_400_000,
            "value": dimona_in("pub-future", ssin=OTHER),
        },  # 11
    )
    run = await studentwork(
        pipeline, "publish", str(file), "--json", "--timestamp", "2026-06-01T09:00:00+02:00"
    )
    assert run.code == 1, run.stderr  # local errors
    documents = run.json_lines()
    rejected = {d["line"]: d["reason"] for d in documents if d["type"] == "rejected"}
    assert set(rejected) == {2, 4, 8, 9}
    # --timestamp applies to every line, so the envelope's own (tomorrow) is not used.
    assert rejected[2].startswith("worker.ssin: ") and "check digits" in rejected[2]
    assert rejected[4].startswith("not valid JSON")
    assert "already used on line 1" in rejected[8]
    assert rejected[9].startswith("neither a Dimona declaration")

    answers = {d["line"]: d for d in documents if d["type"] == "answer"}
    assert {
        line: (
            a["status"],
            a["answer"]["action"],
            a["answer"]["reducedHours"],
            a["answer"]["ordinaryHours"],
            [(x["code"], x.get("hours")) for x in a["answer"]["anomalies"]],
        )
        for line, a in answers.items()
    } == {
        1: ("A", "in", 300, 0, []),
        5: ("W", "in", 175, 25, [("QUOTA_EXCEEDED", 25)]),
        6: ("B", "in", 0, 0, [("CROSS_QUARTER", None)]),
        7: ("W", "dmfa", 0, 0, [("DMFA_WITHOUT_DECLARATION", 12)]),
        10: ("A", "update", 280, 0, []),
        11: ("A", "in", 30, 0, []),
    }
    assert answers[1]["eventId"] == "pub-300"
    assert answers[1]["answer"]["periodId"] == int(declared_period_id(EMPLOYER_A, "pub-300"))
    assert uuid.UUID(answers[6]["eventId"]).version == 4  # filled in by the publisher
    assert answers[11]["status"] == "A"
    (summary,) = (d for d in documents if d["type"] == "summary")
    assert summary == {
        "type": "summary",
        "lines": 10,
        "sent": 6,
        "rejected": 4,
        "answered": 6,
        "statuses": {"A": 3, "B": 1, "W": 2},
        "missing": 0,
        "exitCode": 1,
    }

    # Without --timestamp the envelope's timestamp counts, and the broker refuses it.
    file = write_lines(tmp_path / "future.jsonl", *file.read_text().splitlines()[10:])
    run = await studentwork(pipeline, "publish", str(file), "--timeout", "5")
    assert run.code == 1
    assert "line 1: rejected: the broker refused it: InvalidTimestampError" in run.stderr
    assert run.stdout.splitlines()[-1] == (
        "summary: 0 of 1 lines published; answers: 0 (none), missing: 0; rejected: 1"
    )


async def test_human_output_lateness_replays_and_missing_answers(
    pipeline: Pipeline, worker: WorkerProcess, tmp_path: Path
) -> None:
    # A simulator envelope received the day after the start (late), and a bare body
    # without submittedAt and without a timestamp: CreateTime is now, its start later.
    start = brussels_date(now_utc()) + timedelta(days=3)
    ahead = dimona_in("hum-ahead", ssin=OTHER, start=str(start), end=str(start), hours=8)
    del ahead["submittedAt"]
    envelope = {
        "topic": "dimona.declarations",
        "key": STUDENT,
        "timestamp": brussels_millis(date(2026, 7, 2)),
        "value": dimona_in("hum-late", hours=40),
    }
    file = write_lines(tmp_path / "mixed.jsonl", envelope, ahead)
    run = await studentwork(pipeline, "publish", str(file))
    assert run.code == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[-1] == (
        "summary: 2 of 2 lines published; answers: 2 (A 1, W 1), missing: 0; rejected: 0"
    )
    assert (
        f"line 1: W (in) event hum-late: 0 h reduced, 40 h ordinary, period "
        f"{declared_period_id(EMPLOYER_A, 'hum-late')}" in lines
    )
    assert any(line.startswith("    LATE_DECLARATION (40 h): declared after") for line in lines)
    assert (
        f"line 2: A (in) event hum-ahead: 8 h reduced, 0 h ordinary, period "
        f"{declared_period_id(EMPLOYER_A, 'hum-ahead')}" in lines
    )

    # The same event ids again: replays, which the service does not answer twice.
    again = await studentwork(pipeline, "publish", str(file), "--timeout", "2", "--quiet")
    assert again.code == 1
    assert again.stdout.splitlines() == [
        "line 1: no answer to event hum-late within 2 s",
        "line 2: no answer to event hum-ahead within 2 s",
        "summary: 2 of 2 lines published; answers: 0 (none), missing: 2; rejected: 0",
    ]
    # Their first answers are on the topic, from its beginning.
    found = await studentwork(pipeline, "publish", str(file), "--from-beginning", "--quiet")
    assert found.code == 0, found.stdout
    assert found.stdout.splitlines()[
        0
    ] == "line 1: W (in) event hum-late: 0 h reduced, 40 h ordinary, period " + declared_period_id(
        EMPLOYER_A, "hum-late"
    )
    assert found.stdout.splitlines()[-1].startswith("summary: 2 of 2 lines published; answers: 2")

    no_wait = await studentwork(pipeline, "publish", str(file), "--no-wait")
    assert no_wait.code == 0
    assert no_wait.stdout.strip() == (
        "summary: 2 of 2 lines published; not waiting for answers; rejected: 0"
    )


async def test_the_python_client(pipeline: Pipeline, worker: WorkerProcess) -> None:
    on_time = brussels_millis(date(2026, 6, 1))
    bare = dimona_in("ignored", ssin=OTHER, hours=20)
    del bare["eventId"], bare["submittedAt"]
    model = DimonaDeclaration.model_validate(dimona_in("client-30", hours=30))
    async with DeclarationPublisher(pipeline.settings()) as publisher:
        first = await publisher.submit(bare, timestamp_ms=on_time)
        second = await publisher.submit(model, timestamp_ms=on_time)
        with pytest.raises(InvalidDeclaration, match=r"dimonaIn\.plannedHoursNumber"):
            await publisher.submit({**dimona_in("client-bad"), "dimonaIn": {"startingDate": 1}})
        with pytest.raises(ValueError, match="already submitted"):
            await publisher.submit(model, timestamp_ms=on_time)
        answers = await publisher.answers([first, second, "never-sent"], timeout=60)
    assert set(answers) == {first, second}
    assert (answers[first].status, answers[first].reduced_hours, answers[first].ssin) == (
        "A",
        20,
        OTHER,
    )
    assert (answers[second].status, answers[second].reduced_hours) == ("A", 30)
    assert answers[second].employer == EMPLOYER_A


async def test_a_simulated_year_through_the_pipeline(
    pipeline: Pipeline, worker: WorkerProcess, tmp_path: Path
) -> None:
    file = tmp_path / "year.jsonl"
    made = await studentwork(
        pipeline,
        "simulate",
        "--students",
        "40",
        "--year",
        str(PAST_YEAR),
        "--seed",
        "4",
        "--out",
        str(file),
    )
    assert made.code == 0, made.stderr
    kinds = {n: json.loads(line)["kind"] for n, line in enumerate(file.open(), start=1)}
    assert {"in", "late", "dmfa"} <= set(kinds.values())
    assert any(k.startswith("invalid:") for k in kinds.values())

    run = await studentwork(
        pipeline, "publish", str(file), "--json", "--send-invalid", "--timeout", "120"
    )
    documents = run.json_lines()
    (summary,) = (d for d in documents if d["type"] == "summary")
    assert summary["missing"] == 0 and summary["sent"] == len(kinds)
    invalid_ssins = sum(1 for k in kinds.values() if k == "invalid:SSIN")
    assert summary["rejected"] == invalid_ssins
    assert run.code == (1 if invalid_ssins else 0)
    outcomes: dict[str, Counter[tuple[str, str]]] = {}
    for d in documents:
        if d["type"] == "answer":
            codes = ",".join(a["code"] for a in d["answer"]["anomalies"])
            outcomes.setdefault(kinds[d["line"]], Counter())[(d["status"], codes)] += 1
    assert set(outcomes["late"]) == {("W", "LATE_DECLARATION")}
    assert set(outcomes["cancel"]) == {("A", "")}
    expected_refusals = {
        "invalid:CROSS_QUARTER": ("B", "CROSS_QUARTER"),
        "invalid:ZERO_HOURS": ("B", "ZERO_HOURS"),
        "invalid:SSIN": ("B", "INVALID_MESSAGE"),
    }
    for kind, outcome in expected_refusals.items():
        assert set(outcomes.get(kind, {outcome: 1})) == {outcome}
    # DmfA and Dimona travel on two topics, consumed side by side: replayed in one burst,
    # a quarter's DmfA may be applied before that quarter's declarations or updates.
    assert ("A", "") in outcomes["in"]
    assert set(outcomes["in"]) <= {
        ("A", ""),
        ("W", "QUOTA_EXCEEDED"),
        ("W", "DMFA_ALREADY_RECEIVED"),
    }
    assert set(outcomes["update"]) <= {("A", ""), ("B", "UPDATE_AFTER_DMFA")}
    assert set(outcomes["dmfa"]) <= {("A", ""), ("W", "DMFA_WITHOUT_DECLARATION")}


async def test_simulate_publish_sends_every_record(
    pipeline: Pipeline, worker: WorkerProcess
) -> None:
    run = await studentwork(
        pipeline,
        "simulate",
        "--students",
        "15",
        "--year",
        str(PAST_YEAR),
        "--seed",
        "9",
        "--publish",
    )
    assert run.code == 0, run.stderr
    simulation = Simulation(PAST_YEAR, 15, 9)
    records = list(simulation.records())
    assert f"{len(records):,} records published" in run.stdout
    # Every record names an employer and an event id, so each gets an answer.
    acks = await collect(
        pipeline.kafka_bootstrap, pipeline.topic("dimona.acks"), count=len(records)
    )
    replied = Counter(a["value"]["inReplyTo"] for a in acks)
    assert set(replied) == {json.loads(r.value)["eventId"] for r in records}
    late = {json.loads(r.value)["eventId"] for r in records if r.kind is RecordKind.LATE}
    for ack in acks:
        if ack["value"]["inReplyTo"] in late:
            assert ack["value"]["anomalies"][0]["code"] == "LATE_DECLARATION"
