"""``load_ledgers`` reads a batch's students a chunk at a time and misses none of them.

The rows of a whole batch's students, alive beside the periods made of them, were a
worker's largest allocation; they are now read 500 students at a time. 1,100 students
(three chunks, the last one short) each get exactly their own period and wage report,
for every year or for one.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import asyncpg
import pytest

from db import store
from schemas.settings import Settings
from schemas.topics import DIMONA, DMFA
from streams.processor import BatchProcessor, RawRecord
from tests.support import EMPLOYER_A, brussels_millis, dimona_in, dmfa, valid_ssin

pytestmark = pytest.mark.integration

T0 = datetime(2026, 10, 21, 9, 0, tzinfo=UTC)
SSINS = [valid_ssin(f"0{1 + n % 4}0{1 + n % 9}{10 + n % 18}", n % 997 + 1) for n in range(1100)]


async def test_every_student_of_every_chunk_gets_exactly_its_rows(
    pool: asyncpg.Pool, database_url: str
) -> None:
    assert len(set(SSINS)) == len(SSINS)
    processor = BatchProcessor(pool, Settings(database_url=database_url), lambda: T0)
    records = []
    for n, ssin in enumerate(SSINS):
        hours = 10 + n % 50
        for topic, body in (
            (DIMONA, dimona_in(f"in-{n}", ssin=ssin, hours=hours)),
            (DMFA, dmfa(f"dmfa-{n}", ssin=ssin, hours=hours)),
        ):
            records.append(
                RawRecord(
                    topic,
                    0,
                    len(records),
                    brussels_millis(date(2026, 10, 20)),
                    ssin.encode(),
                    json.dumps(body).encode(),
                )
            )
    report = await processor.apply(records)
    assert report.applied == 2 * len(SSINS)

    async with pool.acquire() as conn, conn.transaction():
        ledgers = await store.load_ledgers(conn, list(reversed(SSINS)))
        of_2026 = await store.load_ledgers(conn, SSINS, 2026)
        of_2025 = await store.load_ledgers(conn, SSINS, 2025)

    assert set(ledgers) == set(of_2026) == set(of_2025) == set(SSINS)
    for n, ssin in enumerate(SSINS):
        for ledger in (ledgers[ssin], of_2026[ssin]):
            (period,) = ledger.periods.values()
            assert (period.start, period.end, period.planned_hours) == (
                date(2026, 7, 1),
                date(2026, 7, 31),
                10 + n % 50,
            )
            assert period.event_id == f"dimona:{EMPLOYER_A}:in-{n}"
            assert list(ledger.wage_reports) == [(EMPLOYER_A, 2026, 3)]
            assert ledger.wage_reports[(EMPLOYER_A, 2026, 3)].hours_worked == 10 + n % 50
        assert of_2025[ssin].periods == {}
        assert of_2025[ssin].wage_reports == {}
