"""Poison input on the real broker and database: one bad message costs one refusal.

Each defect that once crashed a batch (acknowledging it unapplied) or stalled a
partition (a permanent database error retried forever) is sent between valid
declarations; each bad one must get exactly its refusal, and every valid one its answer.
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from db.migrate import migrate
from streams.admin import ensure_topics
from tests.support import (
    EMPLOYER_A,
    EMPLOYER_B,
    STUDENT,
    Outgoing,
    Pipeline,
    WorkerProcess,
    accept_any_timestamp,
    brussels_millis,
    collect,
    dimona_in,
    dmfa,
    expected_answers,
    expected_balances,
    publish,
    valid_enterprise_number,
    valid_ssin,
)

pytestmark = pytest.mark.integration

ON_TIME = brussels_millis(date(2026, 6, 1))
DIMONA = "dimona.declarations"
DMFA = "dmfa.declarations"
YEAR_10000_MS = 253_402_300_800_000  # 10000-01-01T00:00:00Z


@pytest.fixture
def pipeline(kafka_bootstrap: str, database_url: str) -> Pipeline:
    return Pipeline(kafka_bootstrap, database_url)


@pytest.fixture
def worker(pipeline: Pipeline, tmp_path: Path) -> Iterator[WorkerProcess]:
    with WorkerProcess(pipeline, tmp_path / "worker.log") as process:
        yield process


def by_reply(acks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {a["value"]["inReplyTo"]: a["value"] for a in acks}


def codes(answer: dict[str, Any]) -> list[str]:
    return [a["code"] for a in answer["anomalies"]]


def raw_with_event_id(event_id_json: str, **kwargs: Any) -> bytes:
    """A Dimona body whose eventId is the given JSON text, escapes kept as written."""
    body = dimona_in("PLACEHOLDER", **kwargs)
    return json.dumps(body).replace('"PLACEHOLDER"', event_id_json).encode()


async def test_each_poison_message_is_refused_alone(
    pipeline: Pipeline, worker: WorkerProcess
) -> None:
    t = pipeline.topic(DIMONA)
    student_2 = valid_ssin("010203", 124)
    await accept_any_timestamp(pipeline)

    def hours(event_id: str, value: Any, **kwargs: Any) -> Outgoing:
        body = dimona_in(event_id, **kwargs)
        body["dimonaIn"]["plannedHoursNumber"] = value
        return Outgoing.json(t, kwargs.get("ssin", STUDENT), body, ON_TIME)

    await publish(
        pipeline.kafka_bootstrap,
        [
            Outgoing.json(t, STUDENT, dimona_in("ok-1", hours=10), ON_TIME),
            # A lone UTF-16 surrogate: not even valid JSON text for a strict parser.
            Outgoing(t, STUDENT.encode(), raw_with_event_id('"\\ud800"'), ON_TIME),
            # The SSIN followed by a byte that is not UTF-8.
            Outgoing(t, STUDENT.encode() + b"\xff", json.dumps(dimona_in("bad-key")).encode()),
            # A sender's clock at the year 10000 (CreateTime input topic).
            Outgoing.json(t, STUDENT, dimona_in("year-10000"), YEAR_10000_MS),
            hours("hours-2-31", 2**31),
            hours("hours-1.5e9-a", 1_500_000_000, ssin=student_2),
            hours("hours-1.5e9-b", 1_500_000_000, ssin=student_2),
            hours("hours-million", 1_000_000),
            hours("hours-true", True),
            hours("hours-string", "30"),
            Outgoing(t, STUDENT.encode(), raw_with_event_id('"a\\u0000b"'), ON_TIME),
            Outgoing.json(
                t,
                STUDENT,
                dimona_in("december-9999", start="9999-12-01", end="9999-12-31"),
                ON_TIME,
            ),
            Outgoing.json(
                t,
                STUDENT,
                dimona_in("far-ahead", start="2029-07-01", end="2029-07-31"),
                ON_TIME,
            ),
            Outgoing.json(
                pipeline.topic(DMFA),
                STUDENT,
                dmfa("wage-huge", wage_cents=10**20),
                ON_TIME,
            ),
            Outgoing.json(t, STUDENT, dimona_in("ok-2", employer=EMPLOYER_B, hours=20), ON_TIME),
            Outgoing.json(t, student_2, dimona_in("ok-3", ssin=student_2, hours=5), ON_TIME),
        ],
    )
    acks = await collect(pipeline.kafka_bootstrap, pipeline.topic("dimona.acks"), count=16)
    answers = by_reply(acks)
    assert (answers["ok-1"]["status"], answers["ok-1"]["reducedHours"]) == ("A", 10)
    assert (answers["ok-2"]["status"], answers["ok-2"]["reducedHours"]) == ("A", 20)
    assert (answers["ok-3"]["status"], answers["ok-3"]["reducedHours"]) == ("A", 5)
    expected = {
        "bad-key": "INVALID_KEY",
        "year-10000": "INVALID_TIMESTAMP",
        "hours-2-31": "HOURS_OUT_OF_RANGE",
        "hours-1.5e9-a": "HOURS_OUT_OF_RANGE",
        "hours-1.5e9-b": "HOURS_OUT_OF_RANGE",
        "hours-million": "HOURS_OUT_OF_RANGE",
        "hours-true": "HOURS_NOT_INTEGER",
        "hours-string": "HOURS_NOT_INTEGER",
        "december-9999": "DATE_OUT_OF_RANGE",
        "far-ahead": "DATE_OUT_OF_RANGE",
        "wage-huge": "AMOUNT_OUT_OF_RANGE",
    }
    for event_id, code in expected.items():
        assert answers[event_id]["status"] == "B", event_id
        assert codes(answers[event_id]) == [code], event_id
        assert answers[event_id]["anomalies"][0]["text"], event_id
    # The ids that are not printable text are answered under the dead letter's id.
    unnamed = [a for reply, a in answers.items() if reply.startswith("rejected:")]
    assert sorted(codes(a)[0] for a in unnamed) == ["INVALID_MESSAGE", "INVALID_TEXT"]
    assert len(acks) == 16

    letters = await collect(
        pipeline.kafka_bootstrap, pipeline.topic("declarations.rejected"), count=13, settle=1.0
    )
    assert len(letters) == 13
    keys = {base64.b64decode(m["value"]["keyBase64"]) for m in letters}
    assert STUDENT.encode() + b"\xff" in keys

    conn = await asyncpg.connect(pipeline.database_url)
    try:
        used = await conn.fetch("SELECT ssin, used FROM balances WHERE year = 2026 ORDER BY 1")
        pending = await conn.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
    finally:
        await conn.close()
    assert {r["ssin"]: r["used"] for r in used} == {STUDENT: 30, student_2: 5}
    assert pending == 0


async def test_event_ids_are_unique_per_declarant_and_kind(
    pipeline: Pipeline, worker: WorkerProcess
) -> None:
    t = pipeline.topic(DIMONA)
    other = valid_ssin("020304", 56)
    first = dimona_in("42", hours=10)
    await publish(
        pipeline.kafka_bootstrap,
        [
            Outgoing.json(t, STUDENT, first, ON_TIME),
            # Another employer's "42": its own declaration.
            Outgoing.json(t, other, dimona_in("42", ssin=other, employer=EMPLOYER_B), ON_TIME),
            # A Dimona id shaped like a DmfA key, then the DmfA "7".
            Outgoing.json(t, STUDENT, dimona_in("dmfa:7", employer=EMPLOYER_B, hours=3), ON_TIME),
            Outgoing.json(pipeline.topic(DMFA), STUDENT, dmfa("7", hours=8), ON_TIME),
            # A Dimona id shaped like a dead letter's id.
            Outgoing.json(
                t, STUDENT, dimona_in("rejected:x:0:0", employer=EMPLOYER_B, hours=1), ON_TIME
            ),
            # The same id and body again (resubmitted later): a replay, no second answer.
            Outgoing.json(t, STUDENT, {**first, "submittedAt": "2026-06-03T10:00:00Z"}, ON_TIME),
            # The same id with another body: refused, naming the first message.
            Outgoing.json(t, STUDENT, dimona_in("42", hours=99), ON_TIME),
        ],
    )
    acks = await collect(
        pipeline.kafka_bootstrap, pipeline.topic("dimona.acks"), count=6, settle=2.0
    )
    assert len(acks) == 6
    mine = [a["value"] for a in acks if a["key"] == EMPLOYER_A]
    theirs = [a["value"] for a in acks if a["key"] == EMPLOYER_B]
    assert sorted((a["inReplyTo"], a["action"], a["status"]) for a in mine) == [
        ("42", "in", "A"),
        ("42", "in", "B"),
        ("7", "dmfa", "A"),
    ]
    refused = next(a for a in mine if a["status"] == "B")
    assert codes(refused) == ["DUPLICATE_EVENT_ID"]
    assert f"{t.split('.', 1)[1]}[" in refused["anomalies"][0]["text"]
    assert sorted((a["inReplyTo"], a["status"], a["ssin"]) for a in theirs) == [
        ("42", "A", other),
        ("dmfa:7", "A", STUDENT),
        ("rejected:x:0:0", "A", STUDENT),
    ]
    # Answers never share an event id, so downstream de-duplication keeps all of them.
    assert len({a["value"]["eventId"] for a in acks}) == 6


# --------------------------------------------------------------------------------------
# A batch of 1,000 with five poison records of different kinds
# --------------------------------------------------------------------------------------

POISON_TRIGGER = """
CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.joint_commission = '999' THEN
        RAISE EXCEPTION 'injected fault for a test';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER refuse_poison BEFORE INSERT ON periods
    FOR EACH ROW EXECUTE FUNCTION refuse_poison();
"""


async def test_a_poison_batch_applies_everything_else(pipeline: Pipeline, tmp_path: Path) -> None:
    rng = random.Random(11)
    employers = [valid_enterprise_number(2_000_000 + i) for i in range(4)]
    students = [valid_ssin(f"0{rng.randint(1, 4)}0{rng.randint(1, 9)}15", i + 1) for i in range(60)]
    t = pipeline.topic(DIMONA)
    valid: list[Outgoing] = []
    for i in range(995):
        ssin = rng.choice(students)
        month = rng.choice([7, 8, 9])
        body = dimona_in(
            f"v{i}",
            ssin=ssin,
            employer=rng.choice(employers),
            start=f"2026-{month:02d}-01",
            end=f"2026-{month:02d}-15",
            hours=rng.randint(4, 60),
        )
        valid.append(Outgoing.json(t, ssin, body, ON_TIME))
    trigger_fault = dimona_in("fault", ssin=students[0], employer=employers[0])
    trigger_fault["dimonaIn"]["dimonaFeatures"]["jointCommissionNumber"] = "999"
    poison = [
        Outgoing(t, students[1].encode(), raw_with_event_id('"\\ud800"', ssin=students[1])),
        Outgoing(t, students[2].encode() + b"\x80", json.dumps(dimona_in("p-key")).encode()),
        Outgoing.json(t, students[3], dimona_in("p-time", ssin=students[3]), YEAR_10000_MS),
        Outgoing(t, students[4].encode(), raw_with_event_id('"p\\u0000"', ssin=students[4])),
        Outgoing.json(t, students[0], trigger_fault, ON_TIME),
    ]
    stream = list(valid)
    for n, record in enumerate(poison):
        stream.insert(100 + 180 * n, record)

    # Everything is on the topic before the worker starts, so it comes in full batches.
    await migrate(pipeline.database_url)
    conn = await asyncpg.connect(pipeline.database_url)
    try:
        await conn.execute(POISON_TRIGGER)
    finally:
        await conn.close()
    await ensure_topics(pipeline.settings())
    await accept_any_timestamp(pipeline)
    await publish(pipeline.kafka_bootstrap, stream)
    pipeline.extra_env["STUDENTWORK_BATCH_SIZE"] = "1000"
    with WorkerProcess(pipeline, tmp_path / "worker.log"):
        acks = await collect(
            pipeline.kafka_bootstrap, pipeline.topic("dimona.acks"), count=1000, wait=180
        )
        letters = await collect(
            pipeline.kafka_bootstrap,
            pipeline.topic("declarations.rejected"),
            count=5,
            settle=1.0,
        )
        conn = await asyncpg.connect(pipeline.database_url)
        try:
            rows = await conn.fetch("SELECT ssin, year, used, remaining FROM balances")
        finally:
            await conn.close()

    rules = pipeline.settings().quota_rules
    answers, balances = expected_answers(valid, rules), expected_balances(valid, rules)
    got = by_reply(acks)
    applied = {r: a for r, a in got.items() if r in answers}
    assert {
        r: (a["status"], a["reducedHours"], a["ordinaryHours"]) for r, a in applied.items()
    } == (answers)
    refusals = {r: codes(a) for r, a in got.items() if r not in answers}
    assert sorted(c for cs in refusals.values() for c in cs) == [
        "INVALID_KEY",
        "INVALID_MESSAGE",
        "INVALID_TEXT",
        "INVALID_TIMESTAMP",
        "PROCESSING_FAILED",
    ]
    assert refusals["fault"] == ["PROCESSING_FAILED"]
    assert "injected fault" in got["fault"]["anomalies"][0]["text"]
    assert len(acks) == 1000
    assert len(letters) == 5
    assert {(r["ssin"], r["year"]): (r["used"], r["remaining"]) for r in rows} == balances
