"""The outbox relay also runs alone (`studentwork relay`), beside workers that have none."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import asyncpg
import pytest

from tests.support import (
    STUDENT,
    Outgoing,
    Pipeline,
    WorkerProcess,
    brussels_millis,
    collect,
    dimona_in,
    publish,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def pipeline(kafka_bootstrap: str, database_url: str) -> Pipeline:
    return Pipeline(
        kafka_bootstrap, database_url, extra_env={"STUDENTWORK_RELAY_IN_WORKER": "false"}
    )


@pytest.fixture
def worker(pipeline: Pipeline, tmp_path: Path) -> Iterator[WorkerProcess]:
    with WorkerProcess(pipeline, tmp_path / "worker.log") as process:
        yield process


async def test_answers_wait_in_the_outbox_until_a_relay_runs(
    pipeline: Pipeline, worker: WorkerProcess, tmp_path: Path
) -> None:
    ts = brussels_millis(date(2026, 6, 1))
    await publish(
        pipeline.kafka_bootstrap,
        [
            Outgoing.json(
                pipeline.topic("dimona.declarations"), STUDENT, dimona_in("r1", hours=40), ts
            )
        ],
    )
    conn = await asyncpg.connect(pipeline.database_url)
    try:
        # Applied, answered in the outbox, but nothing publishes it yet.
        for _ in range(300):
            if await conn.fetchval("SELECT count(*) FROM applied_events"):
                break
            await asyncio.sleep(0.1)
        pending = await conn.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
    finally:
        await conn.close()
    assert pending == 3  # the answer, the public balance and the internal ledger record

    relay = WorkerProcess(pipeline, tmp_path / "relay.log", command="relay").start()
    try:
        acks = await collect(pipeline.kafka_bootstrap, pipeline.topic("dimona.acks"), count=1)
        balances = await collect(
            pipeline.kafka_bootstrap, pipeline.topic("student.balances"), count=1
        )
    finally:
        relay.stop()
    assert acks[0]["value"]["inReplyTo"] == "r1"
    assert acks[0]["value"]["status"] == "A"
    assert balances[0]["value"]["remaining"] == 610
