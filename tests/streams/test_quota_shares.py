"""A quota change's recompute, shared by partition: every student once, whatever share runs where.

The processor runs in this process on the real database. The change writes one command
per partition; each command recomputes the students whose key hash falls on its
partition, the rows from before the key hash (migration 0013) included once filled in.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime

import asyncpg
import pytest

from db import store
from db.migrate import migrate
from schemas.answers import QuotaChange, QuotaRecompute
from schemas.partitioning import student_key_hash
from schemas.settings import Settings
from schemas.topics import DIMONA, QUOTA_RECOMPUTE, REJECTED
from streams.processor import BatchProcessor, RawRecord
from tests.support import brussels_millis, dimona_in, valid_ssin

pytestmark = pytest.mark.integration

YEAR = 2026
PARTITIONS = 4
T0 = datetime(YEAR, 6, 1, 9, 0, tzinfo=UTC)
SSINS = [valid_ssin(f"0{1 + n % 4}0{1 + n % 9}{10 + n % 18}", n % 997 + 1) for n in range(300)]


@pytest.fixture
async def processor(database_url: str) -> AsyncIterator[BatchProcessor]:
    await migrate(database_url)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    settings = Settings(database_url=database_url, partitions=PARTITIONS)
    try:
        async with pool.acquire() as conn:
            await store.set_quota(conn, YEAR, 475, "seed")
        processor = BatchProcessor(pool, settings, lambda: T0)
        body = [dimona_in(f"s-{n}", ssin=ssin, hours=300) for n, ssin in enumerate(SSINS)]
        await processor.apply(
            [
                RawRecord(
                    DIMONA,
                    0,
                    n,
                    brussels_millis(date(YEAR, 6, 1)),
                    ssin.encode(),
                    json.dumps(b).encode(),
                )
                for n, (ssin, b) in enumerate(zip(SSINS, body, strict=True))
            ]
        )
        yield processor
    finally:
        await pool.close()


async def test_the_shares_recompute_every_student_once(
    processor: BatchProcessor, database_url: str
) -> None:
    assert len(set(SSINS)) == len(SSINS)
    conn = await asyncpg.connect(database_url)
    try:
        # A third of the rows as a version before migration 0013 left them.
        await conn.execute(
            "UPDATE students SET key_hash = NULL WHERE ssin = ANY($1::text[])", SSINS[::3]
        )
        change = QuotaChange(event_id="raise", year=YEAR, hours=600, requested_at=T0)
        assert await processor.change_quota(change) == PARTITIONS
        rows = await conn.fetch(
            "SELECT key, value, partition FROM outbox WHERE topic = $1 ORDER BY id",
            QUOTA_RECOMPUTE,
        )
        commands = [QuotaRecompute.model_validate_json(r["value"]) for r in rows]
        assert [(c.year, c.partition, c.partitions) for c in commands] == [
            (YEAR, p, PARTITIONS) for p in range(PARTITIONS)
        ]
        assert [(r["key"], r["partition"]) for r in rows] == [
            (str(p).encode(), p) for p in range(PARTITIONS)
        ]
        # The shares in another order than written: which worker runs which is free.
        changed = {c.partition: await processor.recompute_share(c) for c in reversed(commands)}
        expected = Counter(student_key_hash(ssin) % PARTITIONS for ssin in SSINS)
        assert changed == dict(expected)
        assert await conn.fetchval("SELECT count(*) FROM students WHERE key_hash IS NULL") == 0
        balances = await conn.fetch(
            "SELECT quota, used, remaining, version FROM balances WHERE year = $1", YEAR
        )
        assert Counter((r["quota"], r["used"], r["remaining"], r["version"]) for r in balances) == {
            (600, 300, 300, 2): len(SSINS)
        }
        # Run again (a redelivered command): nothing is left to change.
        assert [await processor.recompute_share(c) for c in commands] == [0] * PARTITIONS
        # The change redelivered: applied once, no second set of commands.
        assert await processor.change_quota(change) == 0
        assert (
            await conn.fetchval("SELECT count(*) FROM outbox WHERE topic = $1", QUOTA_RECOMPUTE)
            == PARTITIONS
        )
    finally:
        await conn.close()


def test_a_command_names_a_partition_of_its_count() -> None:
    with pytest.raises(ValueError, match="partition 4 is not one of 4"):
        QuotaRecompute(event_id="x", year=YEAR, partition=4, partitions=4, requested_at=T0)


async def test_an_invalid_command_becomes_a_dead_letter(
    processor: BatchProcessor, database_url: str
) -> None:
    record = RawRecord(QUOTA_RECOMPUTE, 1, 7, None, b"1", b'{"year": 2026, "partition": 9}')
    assert await processor.process_recompute(record) == 0
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT value FROM outbox WHERE topic = $1", REJECTED)
    finally:
        await conn.close()
    letters = [json.loads(r["value"]) for r in rows]
    assert [(d["topic"], d["partition"], d["offset"]) for d in letters] == [(QUOTA_RECOMPUTE, 1, 7)]
    assert "eventId" in letters[0]["reason"]
