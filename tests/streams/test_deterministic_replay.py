"""Replays are deterministic: the same input gives the same balances, row for row.

One simulated year (producers/simulator.py: Dimona and DmfA of many students, late,
invalid and repeated records included) is published once; then it is replayed three
times into three empty databases, each by a consumer group of its own: one worker with
small batches, one worker with large batches, and two workers in one group, the second
joining mid-stream and leaving again before the end (two rebalances). Every
balance document must be identical in the three, terms and the order of their terms
included (the worker merges a student's Dimona and DmfA partitions in broker-timestamp
order, see docs/ARCHITECTURE.md), and no worker may have had to give up waiting for
a lagging topic (the wait is set long, so a loaded machine is slow, never unordered).
STUDENTWORK_REPLAY_STUDENTS sets the size (2500: about 26,000 records; with the two
topics applied side by side in fetch order, as before the merge, this size already
gave differing balances).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from producers.simulator import generate, publish_records
from quota.calendar import brussels_date
from schemas.topics import DIMONA, DMFA
from streams.admin import prepare
from tests.conftest import throwaway_database
from tests.streams.resilience import DEADLINE_SECONDS, Fleet
from tests.support import Pipeline, now_utc

pytestmark = [pytest.mark.integration, pytest.mark.long]

STUDENTS = int(os.environ.get("STUDENTWORK_REPLAY_STUDENTS", "2500"))
PAST_YEAR = brussels_date(now_utc()).year - 1

BALANCE_ROWS = (
    "SELECT ssin, year, quota, used, remaining, document::text FROM balances ORDER BY ssin, year"
)


async def end_offsets(pipeline: Pipeline) -> dict[TopicPartition, int]:
    """The end offsets of both declaration topics (the published year)."""
    tps = [
        TopicPartition(pipeline.topic(topic), partition)
        for topic in (DIMONA, DMFA)
        for partition in range(pipeline.settings().partitions)
    ]
    consumer = AIOKafkaConsumer(bootstrap_servers=pipeline.kafka_bootstrap, group_id=None)
    await consumer.start()
    try:
        consumer.assign(tps)
        ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
        return ends
    finally:
        await consumer.stop()


async def wait_consumed(
    fleet: Fleet, group: str, ends: dict[TopicPartition, int], fraction: float = 1.0
) -> int:
    """Until the group committed ``fraction`` of the declarations up to the end offsets
    (every one by default: a lane commits only after its transaction); returns how many
    it had committed then."""
    admin = AIOKafkaAdminClient(bootstrap_servers=fleet.pipeline.kafka_bootstrap)
    await admin.start()
    deadline = time.monotonic() + DEADLINE_SECONDS
    try:
        while True:
            fleet.check_alive()
            committed = await admin.list_consumer_group_offsets(group)
            done = sum(
                min(committed[tp].offset, end) for tp, end in ends.items() if tp in committed
            )
            if fraction >= 1.0:
                if all(tp in committed and committed[tp].offset >= e for tp, e in ends.items()):
                    return done
            elif done >= fraction * sum(ends.values()):
                return done
            if time.monotonic() > deadline:
                raise AssertionError(f"group {group} committed {committed}, ends {ends}")
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


def fleet_logs(logs: Path) -> list[str]:
    """The text of every worker log of a fleet."""
    return [path.read_text(errors="replace") for path in sorted(logs.glob("worker-*.log"))]


async def replay(
    pipeline: Pipeline,
    admin_dsn: str,
    logs: Path,
    label: str,
    *,
    workers: int,
    batch_size: int,
    ends: dict[TopicPartition, int],
    join_and_leave: bool = False,
) -> list[tuple[object, ...]]:
    """The balances after ``workers`` workers of a new group read the whole year.

    ``join_and_leave`` (two workers): the second joins once a quarter of the year is
    committed and leaves (SIGTERM: it finishes its batch and leaves the group) once half
    is, so the partitions change hands twice mid-stream.
    """
    async with throwaway_database(admin_dsn, label) as url:
        app_id = f"sw-{pipeline.prefix.rstrip('.')}-{label}"
        run = dataclasses.replace(
            pipeline,
            database_url=url,
            extra_env={
                **pipeline.extra_env,
                "STUDENTWORK_APP_ID": app_id,
                "STUDENTWORK_BATCH_SIZE": str(batch_size),
                "STUDENTWORK_MERGE_WAIT_SECONDS": "60",
            },
        )
        fleet = Fleet(run, logs)
        group = f"{app_id}.ledger"
        try:
            if join_and_leave:
                fleet.start("worker")
                joined_at = await wait_consumed(fleet, group, ends, 0.25)
                second = fleet.start("worker")
                left_at = await wait_consumed(fleet, group, ends, 0.5)
                fleet.stop(second)
                total = sum(ends.values())
                assert left_at < total, "the year was applied before the second worker left"
                print(f"\nsecond worker joined at {joined_at}, left at {left_at} of {total}")
            else:
                started = [fleet.start("worker", ready=False) for _ in range(workers)]
                for worker in started:
                    worker.wait_ready(timeout=DEADLINE_SECONDS)
            await wait_consumed(fleet, group, ends)
        finally:
            fleet.stop_all()
        for worker in fleet_logs(logs):
            assert "lagging for" not in worker, "a merge gave up waiting"
        conn = await asyncpg.connect(url)
        try:
            return [tuple(row) for row in await conn.fetch(BALANCE_ROWS)]
        finally:
            await conn.close()


async def test_a_replayed_year_gives_the_same_balances_whatever_the_batching_and_workers(
    kafka_bootstrap: str, database_url: str, postgres_admin_dsn: str, tmp_path: Path
) -> None:
    pipeline = Pipeline(kafka_bootstrap, database_url)
    settings = pipeline.settings()
    await prepare(settings)
    records = list(generate(PAST_YEAR, STUDENTS, 11))
    assert {r.topic for r in records} == {DIMONA, DMFA}
    await publish_records(records, settings)
    ends = await end_offsets(pipeline)
    assert sum(ends.values()) == len(records)
    for label in "abc":
        (tmp_path / label).mkdir()

    small = await replay(
        pipeline, postgres_admin_dsn, tmp_path / "a", "a", workers=1, batch_size=37, ends=ends
    )
    large = await replay(
        pipeline, postgres_admin_dsn, tmp_path / "b", "b", workers=1, batch_size=1000, ends=ends
    )
    two = await replay(
        pipeline,
        postgres_admin_dsn,
        tmp_path / "c",
        "c",
        workers=2,
        batch_size=100,
        ends=ends,
        join_and_leave=True,
    )

    assert len(small) > STUDENTS // 2
    assert large == small
    assert two == small
    print(
        f"\nreplayed {len(records)} records of {STUDENTS} students three times: "
        f"{len(small)} identical balances"
    )
