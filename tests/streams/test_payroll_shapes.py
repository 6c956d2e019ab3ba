"""What payroll software sends, unchanged, on the real broker and database.

Each shape is published exactly as a payroll package builds it: no envelope, its own field
names, follow-ups that carry only the period reference turned into whatever the package
makes of the id it got back. The producer is confluent-kafka (librdkafka) with its default
partitioner (``consistent_random``, not Kafka's Java murmur2): the worker must not care
which partition a student's records land on, only that they all land on the same one.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from confluent_kafka import Producer

from tests.support import (
    Pipeline,
    WorkerProcess,
    collect,
    valid_ssin,
)

pytestmark = pytest.mark.integration

EMPLOYER = "0123456749"
QUOTA = 650  # 2027
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "payroll_bodies.json"


@dataclass(frozen=True)
class Shape:
    """One package's bodies; ``period_as`` is what the package makes of the period id."""

    declare: dict[str, Any]
    update: dict[str, Any]
    cancel: dict[str, Any]
    period_as: Callable[[int], Any]
    #: The hours after the update: None where the package's update carries no hours
    #: (it changes the dates only, so the 30 hours stay).
    updated_hours: int | None = 26


WORKER_DETAILS = {
    "familyName": "Peeters",
    "givenName": "An",
    "birthDate": "1993-05-18",
    "gender": 2,
    "address": {"street": "Wetstraat", "houseNumber": "16", "postCode": "1000"},
}

CURRENT = Shape(
    declare={
        "employer": {"enterpriseNumber": EMPLOYER},
        "worker": {"ssin": "<SSIN>", **WORKER_DETAILS},
        "dimonaIn": {
            "startDate": "2027-07-01",
            "endDate": "2027-07-31",
            "features": {"jointCommissionNumber": "XXX", "workerType": "STU"},
            "plannedHoursNumber": 30.0,
            "studentPlaceOfWork": {"postCode": "1000", "municipality": "Brussel"},
        },
    },
    update={
        "dimonaUpdate": {
            "periodId": "<PERIOD_ID>",
            "startDate": "2027-07-01",
            "endDate": "2027-07-31",
            "plannedHoursNumber": 26,
        }
    },
    cancel={"dimonaCancel": {"periodId": "<PERIOD_ID>"}},
    period_as=int,
)

OLDER = Shape(
    declare={
        "employer": {"nssoRegistrationNumber": "197412345"},
        "worker": {"ssin": "<SSIN>", **WORKER_DETAILS},
        "dimonaIn": {
            "startingDate": "2027-07-01",
            "endingDate": "2027-07-31",
            "dimonaFeatures": {"jointCommissionNumber": "XXX", "workerType": "STU"},
            "plannedHoursNumber": 30,
        },
    },
    update={
        "dimonaUpdate": {
            "dimonaNumber": "<PERIOD_ID>",
            "startingDate": "2027-07-01",
            "endingDate": "2027-07-31",
            "plannedHoursNumber": 26,
        }
    },
    cancel={"dimonaCancel": {"dimonaNumber": "<PERIOD_ID>"}},
    period_as=str,
)

EMPLOYER_ID = Shape(
    declare={
        **copy.deepcopy(CURRENT.declare),
        "employer": {"employerId": 100234567},
    },
    update=CURRENT.update,
    cancel=CURRENT.cancel,
    period_as=lambda n: str(int(n)),  # parseInt, then back into a template string
)


def shapes() -> dict[str, Shape]:
    """The shapes above, and every package's bodies found in public code (fixtures)."""
    found = {"dimona-rest-v2": CURRENT, "odoo-17-18": OLDER, "employer-id": EMPLOYER_ID}
    if FIXTURES.exists():
        for name, entry in json.loads(FIXTURES.read_text()).items():
            if not isinstance(entry, dict) or "declare" not in entry:
                continue
            as_int = entry.get("periodIdAs", "int") == "int"
            found[name] = Shape(
                entry["declare"],
                entry["update"],
                entry["cancel"],
                int if as_int else str,
                26 if entry.get("updateCarriesHours", True) else None,
            )
    return found


SHAPES = shapes()


def fill(body: Any, ssin: str, period_id: int | None = None, shape: Shape | None = None) -> Any:
    """The body with the worker's SSIN and the period id (as the package makes it)."""
    if isinstance(body, dict):
        return {k: fill(v, ssin, period_id, shape) for k, v in body.items()}
    if isinstance(body, list):
        return [fill(v, ssin, period_id, shape) for v in body]
    if body == "<SSIN>":
        return ssin
    if body == "93051822361":  # the fixtures' example worker
        return ssin
    if body == "<PERIOD_ID>":
        assert period_id is not None and shape is not None
        return shape.period_as(period_id)
    return body


class LibrdkafkaPublisher:
    """A payroll system's producer: confluent-kafka, its default partitioner."""

    def __init__(self, bootstrap: str) -> None:
        self._producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
        self.delivered: list[tuple[str, int, int]] = []

    def send(self, topic: str, key: str, body: Any, headers: dict[str, str] | None = None) -> None:
        def report(error: Any, message: Any) -> None:
            assert error is None, error
            self.delivered.append((message.topic(), message.partition(), message.offset()))

        self._producer.produce(
            topic,
            json.dumps(body).encode(),
            key=key.encode(),
            headers=list((headers or {}).items()),
            on_delivery=report,
        )
        assert self._producer.flush(30) == 0


@pytest.fixture
def pipeline(kafka_bootstrap: str, database_url: str) -> Pipeline:
    # LogAppendTime, as in production: the broker's time decides lateness, and these
    # July 2027 periods are declared before they start.
    return Pipeline(
        kafka_bootstrap,
        database_url,
        extra_env={"STUDENTWORK_INPUT_TIMESTAMP_TYPE": "LogAppendTime"},
    )


@pytest.fixture
def worker(pipeline: Pipeline, tmp_path: Path) -> Iterator[WorkerProcess]:
    with WorkerProcess(pipeline, tmp_path / "worker.log") as process:
        yield process


async def remaining(pipeline: Pipeline, ssin: str) -> int:
    conn = await asyncpg.connect(pipeline.database_url)
    try:
        value = await conn.fetchval(
            "SELECT remaining FROM balances WHERE ssin = $1 AND year = 2027", ssin
        )
        return int(value)
    finally:
        await conn.close()


async def answers(pipeline: Pipeline, count: int, settle: float = 0.0) -> list[dict[str, Any]]:
    acks = await collect(
        pipeline.kafka_bootstrap, pipeline.topic("dimona.acks"), count=count, settle=settle
    )
    return [a["value"] for a in acks]


async def test_every_shape_declares_updates_and_cancels(
    pipeline: Pipeline, worker: WorkerProcess
) -> None:
    publisher = LibrdkafkaPublisher(pipeline.kafka_bootstrap)
    topic = pipeline.topic("dimona.declarations")
    students = {name: valid_ssin("950102", 11 + 2 * n) for n, name in enumerate(SHAPES)}
    for name, shape in SHAPES.items():
        publisher.send(topic, students[name], fill(shape.declare, students[name]))
    declared = await answers(pipeline, len(SHAPES))
    by_ssin = {a["ssin"]: a for a in declared}
    for name, ssin in students.items():
        answer = by_ssin[ssin]
        assert (answer["status"], answer["action"], answer["reducedHours"]) == ("A", "in", 30), name
        assert isinstance(answer["periodId"], int) and len(str(answer["periodId"])) == 12
        # The answer names the record its producer's delivery report named.
        record = answer["record"]
        assert (record["topic"], record["partition"], record["offset"]) in publisher.delivered
        assert answer["inReplyTo"].startswith("sha256:")  # no envelope: derived from the bytes
        assert await remaining(pipeline, ssin) == QUOTA - 30

    for name, shape in SHAPES.items():
        period = by_ssin[students[name]]["periodId"]
        publisher.send(topic, students[name], fill(shape.update, students[name], period, shape))
    updated = [a for a in await answers(pipeline, 2 * len(SHAPES)) if a["action"] == "update"]
    assert {a["ssin"]: (a["status"], a["action"]) for a in updated} == {
        ssin: ("A", "update") for ssin in students.values()
    }
    for name, ssin in students.items():
        hours = SHAPES[name].updated_hours
        assert await remaining(pipeline, ssin) == QUOTA - (30 if hours is None else hours), name

    for name, shape in SHAPES.items():
        period = by_ssin[students[name]]["periodId"]
        publisher.send(topic, students[name], fill(shape.cancel, students[name], period, shape))
    cancelled = [a for a in await answers(pipeline, 3 * len(SHAPES)) if a["action"] == "cancel"]
    assert {a["ssin"]: (a["status"], a["action"]) for a in cancelled} == {
        ssin: ("A", "cancel") for ssin in students.values()
    }
    # The follow-ups named no employer: their answers still go to the period's employer.
    assert {a["employer"] for a in updated + cancelled} == {
        by_ssin[s]["employer"] for s in students.values()
    }
    for ssin in students.values():
        assert await remaining(pipeline, ssin) == QUOTA


async def test_idempotency_without_an_envelope(pipeline: Pipeline, worker: WorkerProcess) -> None:
    publisher = LibrdkafkaPublisher(pipeline.kafka_bootstrap)
    topic = pipeline.topic("dimona.declarations")
    ssin = valid_ssin("960203", 21)
    body = fill(CURRENT.declare, ssin)
    other = copy.deepcopy(body)
    other["dimonaIn"]["plannedHoursNumber"] = 7.5  # a started hour counts whole: 8
    publisher.send(topic, ssin, body)
    publisher.send(topic, ssin, body)  # the same bytes again: one declaration
    publisher.send(topic, ssin, other)  # another body: another declaration
    keyed = copy.deepcopy(body)
    keyed["dimonaIn"]["plannedHoursNumber"] = 10
    publisher.send(topic, ssin, keyed, headers={"idempotency-key": "payroll-run-17/line-4"})
    publisher.send(topic, ssin, keyed, headers={"idempotency-key": "payroll-run-17/line-4"})
    got = await answers(pipeline, 3, settle=2.0)
    assert sorted((a["inReplyTo"][:7], a["reducedHours"]) for a in got) == [
        ("payroll", 10),
        ("sha256:", 8),
        ("sha256:", 30),
    ]
    assert await remaining(pipeline, ssin) == QUOTA - 48


async def test_refusals_of_payroll_bodies_have_their_own_codes(
    pipeline: Pipeline, worker: WorkerProcess
) -> None:
    publisher = LibrdkafkaPublisher(pipeline.kafka_bootstrap)
    topic = pipeline.topic("dimona.declarations")
    ssin = valid_ssin("970304", 31)
    no_hours = fill(CURRENT.declare, ssin)
    no_hours["dimonaIn"]["plannedHoursNumber"] = None
    zero = fill(CURRENT.declare, ssin)
    zero["dimonaIn"]["plannedHoursNumber"] = 0
    no_end = fill(CURRENT.declare, ssin)
    del no_end["dimonaIn"]["endDate"]
    stranger = {"dimonaCancel": {"periodId": 123456789012}}
    for body in (no_hours, zero, no_end, stranger):
        publisher.send(topic, ssin, body)
    got = await answers(pipeline, 4, settle=1.0)
    codes = sorted(a["anomalies"][0]["code"] for a in got)
    assert codes == ["MISSING_END_DATE", "UNKNOWN_PERIOD", "ZERO_HOURS", "ZERO_HOURS"]
    assert all(a["status"] == "B" for a in got)
