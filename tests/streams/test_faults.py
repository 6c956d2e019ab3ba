"""Never stall, never drop: the pipeline under crashes of everything it runs on.

During a stream of declarations, worker processes are SIGKILLed several times, a
separate outbox relay process is SIGKILLed, and the Kafka broker and the PostgreSQL
server each crash (no clean shutdown) and come back on the same address with the same
data. At the end the ledger must equal the uninterrupted run's (the pure domain core),
row for row; every declaration must be answered, every copy of an answer the same; and
the outbox must be empty.

The test runs its own broker and database server, since it restarts them.
STUDENTWORK_FAULT_RECORDS sets the number of Dimona records (default 3000).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from infra import LocalKafka, LocalPostgres, MissingTool
from schemas.topics import ACKS
from tests.streams.resilience import (
    APPLIED,
    Fleet,
    check_end_state,
    chunks,
    declaration_stream,
    pipeline_env,
    wait_answered,
    wait_for_output,
    wait_until,
)
from tests.support import Pipeline, publish

pytestmark = [pytest.mark.integration, pytest.mark.long]

RECORDS = int(os.environ.get("STUDENTWORK_FAULT_RECORDS", "3000"))
#: How long the database stays down: a few of the workers' retries.
DATABASE_OUTAGE_SECONDS = 3.0


@pytest.fixture
def kafka() -> Iterator[LocalKafka]:
    """A broker of this test's own, which it may crash and restart (a restart waits for
    the controller to fence the dead incarnation, about ten seconds, more when loaded)."""
    broker = LocalKafka(startup_timeout=300)
    try:
        broker.start()
    except MissingTool as missing:
        pytest.skip(str(missing))
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def postgres() -> Iterator[LocalPostgres]:
    """A PostgreSQL server of this test's own, which it may crash and restart.

    Crash-safe: with asynchronous commit, a crash would lose transactions whose offsets
    the worker had already committed, a loss no real server would cause.
    """
    server = LocalPostgres(crash_safe=True)
    try:
        server.start()
    except MissingTool as missing:
        pytest.skip(str(missing))
    try:
        yield server
    finally:
        server.stop()


async def create_database(admin_dsn: str, name: str) -> str:
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return admin_dsn.rsplit("/", 1)[0] + f"/{name}"


async def test_kills_and_restarts_end_with_the_uninterrupted_ledger(
    kafka: LocalKafka, postgres: LocalPostgres, tmp_path: Path
) -> None:
    began = time.monotonic()
    database_url = await create_database(postgres.dsn, "faults")
    pipeline = Pipeline(
        kafka.bootstrap,
        database_url,
        extra_env=pipeline_env(STUDENTWORK_RELAY_IN_WORKER="false"),
    )
    stream = declaration_stream(pipeline, dimona_records=RECORDS)
    n, m = len(stream.dimona), len(stream.dmfa)
    fleet = Fleet(pipeline, tmp_path)
    at: dict[str, int] = {}
    try:
        worker = fleet.start("worker")
        parts = chunks(stream.dimona, 4)

        # Phase 1: Dimona. Each fault waits until the stream is far enough along, and
        # each threshold is below what has been published, so none can wait forever.
        await publish(pipeline.kafka_bootstrap, parts[0])
        at["worker kill 1"] = await wait_until(fleet, "first applied records", APPLIED, n // 10)
        fleet.kill(worker)
        worker = fleet.start("worker")

        # The relay starts on the backlog the worker left and dies while publishing its
        # first batch (some answers on the broker, none marked sent): its successor
        # publishes them again, which the checks must see as identical copies.
        relay = fleet.start("relay")
        at["relay kill (answers out)"] = await wait_for_output(fleet, pipeline.topic(ACKS), 1)
        fleet.kill(relay)
        relay = fleet.start("relay")

        await publish(pipeline.kafka_bootstrap, parts[1])
        at["broker restart"] = await wait_until(fleet, "applied records", APPLIED, 2 * n // 5)
        await asyncio.to_thread(kafka.restart)

        await publish(pipeline.kafka_bootstrap, parts[2])
        at["worker kill 2"] = await wait_until(fleet, "applied records", APPLIED, 3 * n // 5)
        fleet.kill(worker)
        worker = fleet.start("worker")

        at["database restart"] = await wait_until(fleet, "applied records", APPLIED, 7 * n // 10)
        await asyncio.to_thread(postgres.crash)
        await asyncio.sleep(DATABASE_OUTAGE_SECONDS)
        await asyncio.to_thread(postgres.resume)

        await publish(pipeline.kafka_bootstrap, parts[3])
        at["worker kill 3"] = await wait_until(fleet, "applied records", APPLIED, 17 * n // 20)
        fleet.kill(worker)
        worker = fleet.start("worker")
        await wait_answered(fleet, n)
        phase_one = time.monotonic() - began

        # Phase 2: DmfA, once every Dimona is answered.
        await publish(pipeline.kafka_bootstrap, stream.dmfa)
        at["worker kill 4"] = await wait_until(fleet, "applied DmfA", APPLIED, n + m // 3)
        fleet.kill(worker)
        fleet.kill(relay)
        worker = fleet.start("worker")
        relay = fleet.start("relay")
        await wait_answered(fleet, n + m)
        figures = await check_end_state(pipeline, stream.messages)
    finally:
        fleet.stop_all()

    print(
        f"\nfaults: {n} Dimona + {m} DmfA records for {stream.students} students; "
        f"{fleet.kills['worker']} worker and {fleet.kills['relay']} relay SIGKILLs, "
        f"1 broker and 1 database crash-restart; applied records (answers out for the relay) "
        f"at each fault: {at}; "
        f"{figures['answers']} answers on the topic ({figures['duplicate_answers']} "
        f"republished copies), {figures['balances']} balances; phase 1 {phase_one:.0f} s, "
        f"total {time.monotonic() - began:.0f} s"
    )
