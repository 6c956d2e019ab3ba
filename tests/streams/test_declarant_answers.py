"""Answers reach their declarant only: a declarant that consumes Kafka itself gets its
own answer topic (``declarant_answer_topics``), and nobody else's answers land there."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from schemas.topics import declarant_answer_topic
from tests.support import (
    EMPLOYER_A,
    EMPLOYER_B,
    STUDENT,
    Outgoing,
    Pipeline,
    WorkerProcess,
    brussels_millis,
    collect,
    dimona_in,
    dimona_update,
    publish,
    valid_ssin,
)

pytestmark = pytest.mark.integration

ON_TIME = brussels_millis(date(2026, 6, 1))
OTHER = valid_ssin("010203", 124)


@pytest.fixture
def pipeline(kafka_bootstrap: str, database_url: str) -> Pipeline:
    return Pipeline(
        kafka_bootstrap,
        database_url,
        extra_env={"STUDENTWORK_DECLARANT_ANSWER_TOPICS": f'["{EMPLOYER_A}"]'},
    )


@pytest.fixture
def worker(pipeline: Pipeline, tmp_path: Path) -> Iterator[WorkerProcess]:
    with WorkerProcess(pipeline, tmp_path / "worker.log") as process:
        yield process


async def test_a_declarant_reads_its_own_answers_and_no_one_else_s(
    pipeline: Pipeline, worker: WorkerProcess
) -> None:
    b = pipeline.kafka_bootstrap
    dimona = pipeline.topic("dimona.declarations")
    garbage_for_a = b'{"employer": {"enterpriseNumber": "%s"}, "dimonaIn": 1}' % EMPLOYER_A.encode()
    await publish(
        b,
        [
            Outgoing.json(dimona, STUDENT, dimona_in("a-30", hours=30), ON_TIME),
            Outgoing.json(
                dimona, OTHER, dimona_in("b-40", ssin=OTHER, employer=EMPLOYER_B, hours=40), ON_TIME
            ),
            Outgoing(dimona, STUDENT.encode(), garbage_for_a, ON_TIME),
        ],
    )
    internal = await collect(b, pipeline.topic("dimona.acks"), count=3)
    period = next(a["value"]["periodId"] for a in internal if a["value"]["inReplyTo"] == "a-30")
    # A bare follow-up (period reference only) is answered to the period's employer.
    await publish(
        b,
        [Outgoing.json(dimona, STUDENT, dimona_update("a-26", str(period), hours=26), ON_TIME)],
    )
    internal = await collect(b, pipeline.topic("dimona.acks"), count=4)
    own = await collect(b, pipeline.topic(declarant_answer_topic(EMPLOYER_A)), count=3, settle=1.0)

    # The internal topic has every answer; A's topic has exactly A's, byte for byte.
    assert sorted(a["value"]["inReplyTo"] for a in internal if a["key"] == EMPLOYER_B) == ["b-40"]
    a_answers = [(a["key"], a["value"]) for a in internal if a["key"] == EMPLOYER_A]
    assert sorted((k, v["status"]) for k, v in a_answers) == [
        (EMPLOYER_A, "A"),
        (EMPLOYER_A, "A"),
        (EMPLOYER_A, "B"),
    ]
    assert sorted(((a["key"], a["value"]) for a in own), key=str) == sorted(a_answers, key=str)
    assert {a["value"]["employer"] for a in own} == {EMPLOYER_A}

    # The worker created A's topic at start; B consumes no topic of its own.
    admin = AIOKafkaAdminClient(bootstrap_servers=b)
    await admin.start()
    try:
        names = set(await admin.list_topics())
    finally:
        await admin.close()
    assert pipeline.topic(declarant_answer_topic(EMPLOYER_A)) in names
    assert not {n for n in names if n.startswith(pipeline.topic("dimona.acks."))} - {
        pipeline.topic(declarant_answer_topic(EMPLOYER_A))
    }
