"""The places a DmfA keeps in the queue survive PostgreSQL; rows from before 0006 get theirs."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import asyncpg
import pytest

from db import reads, store
from quota import Tranche
from schemas.settings import Settings
from schemas.topics import DIMONA, DMFA
from streams.processor import BatchProcessor, RawRecord
from tests.support import EMPLOYER_A, EMPLOYER_B, STUDENT, brussels_millis, dimona_in, dmfa

pytestmark = pytest.mark.integration

T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)


def record(topic: str, offset: int, body: dict[str, object]) -> RawRecord:
    return RawRecord(
        topic,
        0,
        offset,
        brussels_millis(date(2026, 6, 1)),
        STUDENT.encode(),
        json.dumps(body).encode(),
    )


async def test_places_are_stored_and_read_back(pool: asyncpg.Pool, database_url: str) -> None:
    settings = Settings(database_url=database_url)
    await BatchProcessor(pool, settings, lambda: T0).apply(
        [
            record(DIMONA, 0, dimona_in("a", hours=300)),
            record(DIMONA, 1, dimona_in("b", employer=EMPLOYER_B, hours=200)),
            record(DMFA, 2, dmfa("w", hours=475)),
        ]
    )
    async with pool.acquire() as conn:
        ledger = await reads.student_ledger(conn, STUDENT, 2026)
        history = await reads.student_periods(conn, STUDENT)
    report = ledger.wage_reports[(EMPLOYER_A, 2026, 3)]
    assert report.tranches == (Tranche(1, 300), Tranche(3, 175))
    assert sorted(p.period_id for p in history) == sorted(ledger.periods)


async def test_a_report_stored_before_0006_gets_its_places_on_the_next_batch(
    pool: asyncpg.Pool, database_url: str
) -> None:
    settings = Settings(database_url=database_url)
    processor = BatchProcessor(pool, settings, lambda: T0)
    await processor.apply(
        [record(DIMONA, 0, dimona_in("a", hours=300)), record(DMFA, 1, dmfa("w", hours=475))]
    )
    await pool.execute("UPDATE wage_reports SET tranche_seqs = NULL, tranche_hours = NULL")
    async with pool.acquire() as conn:
        legacy = await reads.student_ledger(conn, STUDENT, 2026)
    assert legacy.wage_reports[(EMPLOYER_A, 2026, 3)].tranches is None

    await processor.apply([record(DIMONA, 2, dimona_in("b", employer=EMPLOYER_B, hours=10))])
    async with pool.acquire() as conn, conn.transaction():
        ledgers = await store.load_ledgers(conn, [STUDENT])
    assert ledgers[STUDENT].wage_reports[(EMPLOYER_A, 2026, 3)].tranches == (
        Tranche(1, 300),
        Tranche(2, 175),
    )
