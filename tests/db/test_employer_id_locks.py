"""Learning an NSSO number's enterprise waits for the batches that store rows under it.

Two transactions at once, as two workers (or two parts of a batch) run them: one stores
a student's Dimona under the NSSO number alone, not knowing its enterprise yet; the
other learns the pair from another student's message and merges every row stored under
the number. Without ``db.store.lock_employer_ids`` the merge saw only committed rows and
the first student's row stayed under the NSSO number for good, a second employer for
one. Here the first transaction is held (its student's row locked from outside) until
the learner had every chance to finish; the row still ends under the enterprise number.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, date, datetime
from typing import Any

import asyncpg
import pytest

from db import store
from schemas.settings import Settings
from schemas.topics import DIMONA
from streams.processor import BatchProcessor, RawRecord
from tests.support import EMPLOYER_A, EMPLOYER_B, STUDENT, brussels_millis, dimona_in, valid_ssin

pytestmark = pytest.mark.integration

T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
OTHER = valid_ssin("020304", 56)
NSSO_A = "0197412345"


def record(offset: int, body: dict[str, Any], ssin: str) -> RawRecord:
    moment = brussels_millis(date(2026, 6, 1))
    return RawRecord(DIMONA, 0, offset, moment, ssin.encode(), json.dumps(body).encode())


async def _waiting_for_a_lock(pool: asyncpg.Pool, count: int) -> None:
    """Until ``count`` sessions of this database wait for a lock (a readiness poll)."""
    query = (
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    while True:
        if await pool.fetchval(query) >= count:
            return
        await asyncio.sleep(0.02)


async def test_a_row_stored_under_the_number_while_it_is_learned_is_merged(
    pool: asyncpg.Pool, database_url: str
) -> None:
    processor = BatchProcessor(pool, Settings(database_url=database_url), lambda: T0)
    await processor.apply([record(0, dimona_in("b", employer=EMPLOYER_B, hours=5), STUDENT)])

    holder = await asyncpg.connect(database_url)
    try:
        hold = holder.transaction()
        await hold.start()
        await holder.execute("SELECT 1 FROM students WHERE ssin = $1 FOR UPDATE", STUDENT)
        # The student's Dimona under the NSSO number alone: past the employer numbers, it
        # waits for its student's row.
        naming = asyncio.create_task(
            processor.apply(
                [
                    record(
                        1,
                        {**dimona_in("n", hours=20), "employer": {"employerId": NSSO_A}},
                        STUDENT,
                    )
                ]
            )
        )
        await asyncio.wait_for(_waiting_for_a_lock(pool, 1), 30)
        # Another student's Dimona pairs the number with enterprise A: it learns it.
        pair = {"enterpriseNumber": EMPLOYER_A, "nssoRegistrationNumber": NSSO_A}
        learning = asyncio.create_task(
            processor.apply(
                [record(2, {**dimona_in("p", ssin=OTHER, hours=10), "employer": pair}, OTHER)]
            )
        )
        # Time for a learner that does not wait to finish before the first commits.
        await asyncio.wait([learning], timeout=1.0)
        await hold.rollback()
        await asyncio.wait_for(asyncio.gather(naming, learning), 30)
    finally:
        await holder.close()

    rows = await pool.fetch(
        "SELECT ssin, employer, planned_hours FROM periods ORDER BY ssin, planned_hours"
    )
    assert sorted((r["ssin"], r["employer"], r["planned_hours"]) for r in rows) == sorted(
        [(STUDENT, EMPLOYER_B, 5), (STUDENT, EMPLOYER_A, 20), (OTHER, EMPLOYER_A, 10)]
    )
    assert (
        await pool.fetchval(
            "SELECT enterprise_number FROM employer_ids WHERE nsso_id = 'NSSO197412345'"
        )
        == EMPLOYER_A
    )
    document = json.loads(
        await pool.fetchval(
            "SELECT document FROM balances WHERE ssin = $1 AND year = 2026", STUDENT
        )
    )
    assert sorted((t["employer"], t["hours"]) for t in document["terms"]) == [
        (EMPLOYER_A, 20),
        (EMPLOYER_B, 5),
    ]


async def test_thousands_of_numbers_take_at_most_the_slots(pool: asyncpg.Pool) -> None:
    numbers = [f"NSSO{100000000 + n}" for n in range(3000)]
    async with pool.acquire() as conn, conn.transaction():
        await store.lock_employer_ids(conn, learning=numbers[:10], naming=numbers)
        held = await conn.fetch(
            "SELECT objid, mode FROM pg_locks WHERE locktype = 'advisory' AND classid = $1"
            " AND pid = pg_backend_pid()",
            store.EMPLOYER_IDS_LOCK,
        )
    assert len(held) == store.EMPLOYER_IDS_LOCK_SLOTS
    assert {r["objid"] for r in held} == set(range(store.EMPLOYER_IDS_LOCK_SLOTS))
    exclusive = {r["objid"] for r in held if r["mode"] == "ExclusiveLock"}
    assert 1 <= len(exclusive) <= 10
    # Gone with the transaction.
    assert not await pool.fetchval(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = $1",
        store.EMPLOYER_IDS_LOCK,
    )
