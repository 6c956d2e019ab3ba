"""End to end: declarations on a real Kafka broker, ledgers in a real PostgreSQL server.

The worker runs as a real subprocess (``python -m infra worker``), exactly as deployed.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.support import (
    EMPLOYER_A,
    EMPLOYER_B,
    STUDENT,
    Outgoing,
    Pipeline,
    WorkerProcess,
    brussels_millis,
    collect,
    dimona_cancel,
    dimona_in,
    dimona_update,
    dmfa,
    expected_balances,
    latest_by_key,
    publish,
    valid_enterprise_number,
    valid_ssin,
)

pytestmark = pytest.mark.integration

ON_TIME = brussels_millis(date(2026, 6, 1))
DIMONA = "dimona.declarations"
DMFA = "dmfa.declarations"


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


def period_id_of(acks: list[dict[str, Any]], event_id: str) -> str:
    for ack in acks:
        if ack["value"]["inReplyTo"] == event_id:
            return str(ack["value"]["periodId"])
    raise AssertionError(f"no answer to {event_id}")


def by_reply(acks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {a["value"]["inReplyTo"]: a["value"] for a in acks}


async def test_answers_and_balances_are_exact(pipeline: Pipeline, worker: WorkerProcess) -> None:
    b = pipeline.kafka_bootstrap
    other = valid_ssin("010203", 124)
    late_student = valid_ssin("990101", 33)
    await publish(
        b,
        [
            Outgoing.json(pipeline.topic(DIMONA), STUDENT, dimona_in("a-300", hours=300), ON_TIME),
            Outgoing.json(
                pipeline.topic(DIMONA),
                STUDENT,
                dimona_in("b-200", employer=EMPLOYER_B, hours=200),
                ON_TIME,
            ),
            Outgoing.json(
                pipeline.topic(DIMONA), other, dimona_in("o-30", ssin=other, hours=30), ON_TIME
            ),
            # Received on 2 July for work starting 1 July: late.
            Outgoing.json(
                pipeline.topic(DIMONA),
                late_student,
                dimona_in("late-40", ssin=late_student, hours=40),
                brussels_millis(date(2026, 7, 2)),
            ),
        ],
    )
    acks = await collect(b, pipeline.topic("dimona.acks"), count=4)
    answers = by_reply(acks)
    assert answers["a-300"]["status"] == "A"
    assert (answers["a-300"]["reducedHours"], answers["a-300"]["ordinaryHours"]) == (300, 0)
    assert answers["b-200"]["status"] == "W"
    assert (answers["b-200"]["reducedHours"], answers["b-200"]["ordinaryHours"]) == (175, 25)
    assert [(x["code"], x["hours"]) for x in answers["b-200"]["anomalies"]] == [
        ("QUOTA_EXCEEDED", 25)
    ]
    assert answers["o-30"]["status"] == "A"
    assert answers["late-40"]["status"] == "W"
    assert answers["late-40"]["anomalies"][0]["code"] == "LATE_DECLARATION"
    assert (answers["late-40"]["reducedHours"], answers["late-40"]["ordinaryHours"]) == (0, 40)
    # Answers are keyed by employer.
    assert {a["key"] for a in acks} == {EMPLOYER_A, EMPLOYER_B}

    # 30 booked, updated to 26: 4 hours are free at once. Then the DmfA of employer A
    # (280 hours worked) replaces its 300 planned hours.
    period = period_id_of(acks, "o-30")
    await publish(
        b,
        [
            Outgoing.json(
                pipeline.topic(DIMONA),
                other,
                dimona_update("o-26", period, ssin=other, hours=26),
                ON_TIME,
            ),
            Outgoing.json(
                pipeline.topic(DMFA),
                STUDENT,
                dmfa("dmfa-a", hours=280, wage_cents=420_000),
                brussels_millis(date(2026, 10, 20)),
            ),
        ],
    )
    acks = await collect(b, pipeline.topic("dimona.acks"), count=6)
    answers = by_reply(acks)
    assert answers["o-26"]["status"] == "A"
    assert answers["dmfa-a"]["status"] == "A"
    assert answers["dmfa-a"]["action"] == "dmfa"

    balances = latest_by_key(
        await collect(b, pipeline.topic("student.balances"), count=5, settle=1.0)
    )
    assert {k: (v["quota"], v["used"], v["remaining"]) for k, v in balances.items()} == {
        f"{STUDENT}:2026": (475, 480, 0),
        f"{other}:2026": (475, 26, 449),
        f"{late_student}:2026": (475, 0, 475),
    }
    # The public topic carries the figures only; the terms are on the internal one.
    assert all("terms" not in balance for balance in balances.values())
    ledger = latest_by_key(await collect(b, pipeline.topic("student.ledger"), count=5, settle=1.0))
    terms = {(t["employer"], t["source"], t["hours"]) for t in ledger[f"{STUDENT}:2026"]["terms"]}
    assert terms == {(EMPLOYER_A, "dmfa", 280), (EMPLOYER_B, "planned", 200)}
    assert balances[f"{late_student}:2026"]["lateHours"] == 40

    conn = await asyncpg.connect(pipeline.database_url)
    try:
        rows = await conn.fetch("SELECT ssin, remaining FROM balances ORDER BY ssin")
    finally:
        await conn.close()
    assert {r["ssin"]: r["remaining"] for r in rows} == {STUDENT: 0, other: 449, late_student: 475}


async def test_refusals_have_distinct_reasons(pipeline: Pipeline, worker: WorkerProcess) -> None:
    b = pipeline.kafka_bootstrap
    t = pipeline.topic(DIMONA)
    await publish(
        b,
        [
            Outgoing.json(t, STUDENT, dimona_in("base", hours=30), ON_TIME),
            Outgoing.json(
                t, STUDENT, dimona_in("cross", start="2026-06-20", end="2026-07-10"), ON_TIME
            ),
            Outgoing.json(t, STUDENT, dimona_in("zero", hours=0), ON_TIME),
            Outgoing.json(t, STUDENT, dimona_update("ghost", "no-such-period"), ON_TIME),
            Outgoing.json(t, STUDENT, dimona_cancel("ghost-cancel", "no-such-period"), ON_TIME),
        ],
    )
    acks = await collect(b, pipeline.topic("dimona.acks"), count=5)
    period = period_id_of(acks, "base")
    await publish(
        b,
        [
            Outgoing.json(t, STUDENT, dimona_update("move", period, start="2026-07-02"), ON_TIME),
            Outgoing.json(pipeline.topic(DMFA), STUDENT, dmfa("q3", hours=30), ON_TIME),
        ],
    )
    await collect(b, pipeline.topic("dimona.acks"), count=7)
    await publish(b, [Outgoing.json(t, STUDENT, dimona_update("after-dmfa", period), ON_TIME)])
    answers = by_reply(await collect(b, pipeline.topic("dimona.acks"), count=8))
    codes = {
        event: (answers[event]["status"], answers[event]["anomalies"][0]["code"])
        for event in ["cross", "zero", "ghost", "ghost-cancel", "move", "after-dmfa"]
    }
    assert codes == {
        "cross": ("B", "CROSS_QUARTER"),
        "zero": ("B", "ZERO_HOURS"),
        "ghost": ("B", "UNKNOWN_PERIOD"),
        "ghost-cancel": ("B", "UNKNOWN_PERIOD"),
        "move": ("B", "START_DATE_CHANGE"),
        "after-dmfa": ("B", "UPDATE_AFTER_DMFA"),
    }


async def test_the_same_events_twice_change_nothing(
    pipeline: Pipeline, worker: WorkerProcess
) -> None:
    b = pipeline.kafka_bootstrap
    events = [
        Outgoing.json(pipeline.topic(DIMONA), STUDENT, dimona_in("d1", hours=100), ON_TIME),
        Outgoing.json(
            pipeline.topic(DIMONA), STUDENT, dimona_in("d2", employer=EMPLOYER_B, hours=50), ON_TIME
        ),
        Outgoing.json(pipeline.topic(DMFA), STUDENT, dmfa("m1", hours=90), ON_TIME),
    ]
    await publish(b, events)
    first = await collect(b, pipeline.topic("dimona.acks"), count=3)
    balances_first = await collect(b, pipeline.topic("student.balances"), count=1, settle=1.0)
    await publish(b, events)
    await publish(b, events)
    # Give the worker every chance to (wrongly) answer again.
    acks = await collect(b, pipeline.topic("dimona.acks"), count=3, settle=3.0)
    balances = await collect(b, pipeline.topic("student.balances"), count=1, settle=0.5)
    assert [a["value"] for a in acks] == [a["value"] for a in first]
    assert [m["value"] for m in balances] == [m["value"] for m in balances_first]
    assert latest_by_key(balances)[f"{STUDENT}:2026"]["used"] == 140


async def test_garbage_and_invalid_become_refusals_and_dead_letters(
    pipeline: Pipeline, worker: WorkerProcess
) -> None:
    b = pipeline.kafka_bootstrap
    t = pipeline.topic(DIMONA)
    bad_ssin = dimona_in("bad-ssin", ssin="93051822362")
    missing_hours = dimona_in("no-hours")
    del missing_hours["dimonaIn"]["plannedHoursNumber"]
    garbage = b"\x00\xff{not json"
    await publish(
        b,
        [
            Outgoing.json(t, STUDENT, dimona_in("ok-1", hours=10), ON_TIME),
            Outgoing(t, b"whatever", garbage, ON_TIME),
            Outgoing.json(t, "93051822362", bad_ssin, ON_TIME),
            Outgoing.json(t, STUDENT, missing_hours, ON_TIME),
            Outgoing(t, STUDENT.encode(), None, ON_TIME),  # type: ignore[arg-type]
            Outgoing.json(t, STUDENT, dimona_in("ok-2", employer=EMPLOYER_B, hours=20), ON_TIME),
        ],
    )
    answers = by_reply(await collect(b, pipeline.topic("dimona.acks"), count=4, settle=1.0))
    assert answers["ok-1"]["status"] == "A"
    assert answers["ok-2"]["status"] == "A"
    assert answers["bad-ssin"]["status"] == "B"
    assert answers["bad-ssin"]["anomalies"][0]["code"] == "INVALID_MESSAGE"
    assert "worker.ssin" in answers["bad-ssin"]["anomalies"][0]["text"]
    assert answers["bad-ssin"]["action"] == "in"
    assert answers["no-hours"]["status"] == "B"
    assert "dimonaIn.plannedHoursNumber" in answers["no-hours"]["anomalies"][0]["text"]
    assert len(answers) == 4  # garbage and the empty message name no employer to answer

    letters = await collect(b, pipeline.topic("declarations.rejected"), count=4, settle=1.0)
    assert len(letters) == 4
    import base64

    raws = [base64.b64decode(m["value"]["rawBase64"]) for m in letters]
    assert garbage in raws
    assert json.loads(raws[raws.index(garbage) + 1])["eventId"] == "bad-ssin"
    for letter in letters:
        assert letter["value"]["topic"] == t
        assert letter["value"]["reason"]


async def test_sigkill_mid_stream_ends_with_the_uninterrupted_balances(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    rng = random.Random(7)
    employers = [valid_enterprise_number(1_000_000 + i) for i in range(5)]
    students = [
        valid_ssin(
            f"0{rng.randint(1, 4)}0{rng.randint(1, 9)}1{rng.randint(0, 9)}", rng.randint(1, 998)
        )
        for _ in range(120)
    ]
    messages: list[Outgoing] = []
    for i in range(3000):
        ssin = rng.choice(students)
        month = rng.choice([7, 8, 9])
        hours = rng.randint(4, 60)
        body = dimona_in(
            f"k{i}",
            ssin=ssin,
            employer=rng.choice(employers),
            start=f"2026-{month:02d}-01",
            end=f"2026-{month:02d}-20",
            hours=hours,
        )
        messages.append(Outgoing.json(pipeline.topic(DIMONA), ssin, body, ON_TIME))
    for i, ssin in enumerate(students[:40]):
        body = dmfa(f"w{i}", ssin=ssin, employer=employers[0], hours=rng.randint(0, 80))
        messages.append(Outgoing.json(pipeline.topic(DMFA), ssin, body, ON_TIME))

    log = tmp_path / "worker.log"
    pipeline.extra_env["STUDENTWORK_BATCH_SIZE"] = "50"
    first = WorkerProcess(pipeline, log).start()
    first.wait_ready()
    await publish(pipeline.kafka_bootstrap, messages)
    conn = await asyncpg.connect(pipeline.database_url)
    try:
        # Kill it once some but not all of the stream is applied.
        for _ in range(600):
            applied = await conn.fetchval("SELECT count(*) FROM applied_events")
            if applied >= 300:
                break
            await asyncio.sleep(0.05)
        first.kill()
        applied_at_kill = await conn.fetchval("SELECT count(*) FROM applied_events")
        assert 0 < applied_at_kill < len(messages)

        second = WorkerProcess(pipeline, log).start()
        try:
            second.wait_ready()
            for _ in range(1200):
                if await conn.fetchval("SELECT count(*) FROM applied_events") == len(messages):
                    break
                await asyncio.sleep(0.1)
            rows = await conn.fetch("SELECT ssin, year, used, remaining FROM balances")
            periods = await conn.fetchval("SELECT count(*) FROM periods")
        finally:
            second.stop()
    finally:
        await conn.close()

    assert periods == 3000
    expected = expected_balances(messages, pipeline.settings().quota_rules.with_quota(2026, 475))
    assert {(r["ssin"], r["year"]): (r["used"], r["remaining"]) for r in rows} == expected
    # Every declaration was answered exactly once, whatever the relay republished.
    acks = await collect(
        pipeline.kafka_bootstrap,
        pipeline.topic("dimona.acks"),
        count=len(messages),
        wait=120,
        settle=1.0,
    )
    assert {a["value"]["inReplyTo"] for a in acks} == {f"k{i}" for i in range(3000)} | {
        f"w{i}" for i in range(40)
    }


async def test_quota_change_recomputes_every_balance_of_the_year(
    pipeline: Pipeline, worker: WorkerProcess
) -> None:
    b = pipeline.kafka_bootstrap
    other = valid_ssin("020304", 56)
    await publish(
        b,
        [
            Outgoing.json(pipeline.topic(DIMONA), STUDENT, dimona_in("q1", hours=500), ON_TIME),
            Outgoing.json(
                pipeline.topic(DIMONA), other, dimona_in("q2", ssin=other, hours=100), ON_TIME
            ),
        ],
    )
    await collect(b, pipeline.topic("dimona.acks"), count=2)
    change = {
        "eventId": "law-2025",
        "year": 2026,
        "hours": 650,
        "requestedAt": "2026-11-26T10:00:00+01:00",
    }
    await publish(b, [Outgoing.json(pipeline.topic("quota.changes"), "2026", change)])
    balances = latest_by_key(
        await collect(b, pipeline.topic("student.balances"), count=4, settle=1.0)
    )
    assert {k: (v["quota"], v["remaining"]) for k, v in balances.items()} == {
        f"{STUDENT}:2026": (650, 150),
        f"{other}:2026": (650, 550),
    }
