"""A quota change is recomputed in chunks while declarations go on being decided.

STUDENTS students each have 300 hours of 2026 in the ledger, under an operator's quota
of 475 hours (seeded by the batch processor itself, in this process, on the real
database). A worker (a real process) then reads a quota change to 600 hours, recomputed
by the commands it writes for every partition, in chunks of 50 students; once the
recompute has begun, declarations of 250 more hours for some of those students are
published. They must be answered before the recompute's
last chunk commits, decided with the new quota (250 reduced hours, none ordinary: under
475 it would be 175 and 75), and when the recompute is done no balance of the year is
left with the old quota: every one is exactly what 600 hours give.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from datetime import UTC, date, datetime
from pathlib import Path

import asyncpg
import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from db import store
from db.migrate import migrate
from schemas.topics import ACKS, BALANCES, DIMONA, QUOTA_CHANGES, QUOTA_RECOMPUTE
from streams.processor import BatchProcessor, RawRecord
from tests.streams.resilience import DEADLINE_SECONDS, Fleet
from tests.support import (
    Outgoing,
    Pipeline,
    brussels_millis,
    dimona_in,
    publish,
    valid_ssin,
)

pytestmark = pytest.mark.integration

YEAR = 2026
STUDENTS = 6000
LATE_COMERS = 20
ON_TIME = brussels_millis(date(YEAR, 6, 1))
T0 = datetime(YEAR, 6, 1, 9, 0, tzinfo=UTC)


def students(count: int) -> list[str]:
    rng = random.Random(7)
    found: dict[str, None] = {}
    while len(found) < count:
        birth = f"0{rng.randint(1, 4)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
        found[valid_ssin(birth, rng.randint(1, 997))] = None
    return list(found)


async def seed(pipeline: Pipeline, ssins: list[str]) -> None:
    """300 hours of July for each student, decided under an operator's 475 hours."""
    await migrate(pipeline.database_url)
    pool = await asyncpg.create_pool(pipeline.database_url, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            await store.set_quota(conn, YEAR, 475, "seed")
        processor = BatchProcessor(pool, pipeline.settings(), lambda: T0)
        records = [
            RawRecord(
                DIMONA,
                0,
                offset,
                ON_TIME,
                ssin.encode(),
                json.dumps(dimona_in(f"seed-{offset}", ssin=ssin, hours=300)).encode(),
            )
            for offset, ssin in enumerate(ssins)
        ]
        for start in range(0, len(records), 1000):
            await processor.apply(records[start : start + 1000])
    finally:
        await pool.close()


async def wait_for(
    fleet: Fleet, conn: asyncpg.Connection, query: str, at_least: int, *args: object
) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        fleet.check_alive()
        if await conn.fetchval(query, *args) >= at_least:
            return
        if time.monotonic() > deadline:
            # A bound against a hang, not a claim about speed (that is bench/run.py's).
            raise TimeoutError(f"{query}: not {at_least} within {DEADLINE_SECONDS} s")
        await asyncio.sleep(0.05)


async def committed(pipeline: Pipeline, group: str, tp: TopicPartition) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=pipeline.kafka_bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
        return offsets[tp].offset if tp in offsets else 0
    finally:
        await admin.close()


async def test_declarations_are_answered_during_a_recompute_and_none_keeps_the_old_quota(
    kafka_bootstrap: str, database_url: str, tmp_path: Path
) -> None:
    pipeline = Pipeline(
        kafka_bootstrap,
        database_url,
        extra_env={
            "STUDENTWORK_QUOTA_RECOMPUTE_CHUNK": "50",
            # The answers and balances are read back from the outbox once published.
            "STUDENTWORK_RELAY_KEEP_SENT_HOURS": "24",
        },
    )
    ssins = students(STUDENTS)
    await seed(pipeline, ssins)
    # The last in SSIN order, the recompute's order: their declarations come first.
    late_comers = sorted(ssins)[-LATE_COMERS:]
    change = {
        "eventId": "raise-2026",
        "year": YEAR,
        "hours": 600,
        "requestedAt": "2026-11-26T10:00:00+01:00",
    }
    new_quota = "SELECT count(*) FROM balances WHERE year = $1 AND quota = 600"
    fleet = Fleet(pipeline, tmp_path)
    conn = await asyncpg.connect(database_url)
    try:
        fleet.start("worker")
        await publish(
            kafka_bootstrap,
            [Outgoing.json(pipeline.topic(QUOTA_CHANGES), str(YEAR), change)],
        )
        # The recompute has begun: its first chunk committed.
        await wait_for(fleet, conn, new_quota, 1, YEAR)
        await publish(
            kafka_bootstrap,
            [
                Outgoing.json(
                    pipeline.topic(DIMONA),
                    ssin,
                    dimona_in(
                        f"late-{n}", ssin=ssin, start="2026-08-01", end="2026-08-31", hours=250
                    ),
                    ON_TIME,
                )
                for n, ssin in enumerate(late_comers)
            ],
        )
        answers = (
            "SELECT count(*) FROM outbox WHERE topic = $1"
            " AND convert_from(value, 'UTF8')::jsonb ->> 'inReplyTo' LIKE 'late-%'"
        )
        await wait_for(fleet, conn, answers, LATE_COMERS, ACKS)
        # The whole year recomputed: the recompute lane committed the command of every
        # partition (the quota lane wrote one per partition with the change).
        group = f"{pipeline.env()['STUDENTWORK_APP_ID']}.{QUOTA_RECOMPUTE}"
        shares = [
            TopicPartition(pipeline.topic(QUOTA_RECOMPUTE), p)
            for p in range(pipeline.settings().partitions)
        ]
        deadline = time.monotonic() + DEADLINE_SECONDS
        for tp in shares:
            while await committed(pipeline, group, tp) < 1:
                fleet.check_alive()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{tp} was not recomputed in {DEADLINE_SECONDS} s")
                await asyncio.sleep(0.2)
        outbox = [
            (row["id"], row["topic"], json.loads(row["value"]))
            for row in await conn.fetch(
                "SELECT id, topic, value FROM outbox WHERE topic = ANY($1::text[]) ORDER BY id",
                [ACKS, BALANCES],
            )
        ]
        rows = await conn.fetch(
            "SELECT ssin, quota, used, remaining FROM balances WHERE year = $1", YEAR
        )
    finally:
        await conn.close()
        fleet.stop_all()

    late = {
        value["inReplyTo"]: (id_, value)
        for id_, topic, value in outbox
        if topic == ACKS and value["inReplyTo"].startswith("late-")
    }
    recomputed = [
        id_
        for id_, topic, value in outbox
        if topic == BALANCES and value["quota"] == 600 and value["ssin"] not in late_comers
    ]
    # Every other student's balance recomputed once, after the declarations' answers
    # for some: answered while the recompute ran, before its last chunk was stored.
    assert len(recomputed) == STUDENTS - LATE_COMERS
    assert max(id_ for id_, _ in late.values()) < max(recomputed)
    # Decided with the new quota.
    assert len(late) == LATE_COMERS
    assert {(a["status"], a["reducedHours"], a["ordinaryHours"]) for _, a in late.values()} == {
        ("A", 250, 0)
    }
    # No balance left with the old quota; each exactly what 600 hours give.
    expected = {ssin: (600, 300, 300) for ssin in ssins}
    expected.update({ssin: (600, 550, 50) for ssin in late_comers})
    assert {r["ssin"]: (r["quota"], r["used"], r["remaining"]) for r in rows} == expected
