"""A quota changed only in configuration reaches the stored balances at worker start."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import asyncpg
import pytest

from schemas.settings import Settings
from schemas.topics import BALANCES, DIMONA, QUOTA_CHANGES, QUOTA_RECOMPUTE
from streams.processor import BatchProcessor, RawRecord, reconcile_configured_quota
from tests.support import STUDENT, brussels_millis, dimona_in, valid_ssin

pytestmark = pytest.mark.integration

T0 = datetime(2025, 6, 1, 9, 0, tzinfo=UTC)
OTHER = valid_ssin("020304", 56)


def record(offset: int, ssin: str, hours: int, year: int = 2025) -> RawRecord:
    body = dimona_in(
        f"e{offset}", ssin=ssin, start=f"{year}-07-01", end=f"{year}-07-31", hours=hours
    )
    return RawRecord(
        DIMONA,
        0,
        offset,
        brussels_millis(date(year, 6, 1)),
        ssin.encode(),
        json.dumps(body).encode(),
    )


async def stored(pool: asyncpg.Pool) -> dict[tuple[str, int], tuple[int, int, int]]:
    rows = await pool.fetch("SELECT ssin, year, quota, remaining, version FROM balances")
    return {(r["ssin"], r["year"]): (r["quota"], r["remaining"], r["version"]) for r in rows}


async def balance_events(pool: asyncpg.Pool) -> list[dict[str, object]]:
    rows = await pool.fetch("SELECT value FROM outbox WHERE topic = $1 ORDER BY id", BALANCES)
    return [json.loads(r["value"]) for r in rows]


async def test_a_quota_changed_in_configuration_is_applied_to_stored_balances(
    pool: asyncpg.Pool, database_url: str
) -> None:
    # Balances computed while the configuration said 475 hours for 2025 (early 2025).
    old = Settings(database_url=database_url, quota_hours={2025: 475})
    await BatchProcessor(pool, old, lambda: T0).apply(
        [record(0, STUDENT, 500), record(1, OTHER, 100), record(2, STUDENT, 20, 2024)]
    )
    assert await stored(pool) == {
        (STUDENT, 2025): (475, 0, 1),
        (OTHER, 2025): (475, 375, 1),
        (STUDENT, 2024): (600, 580, 1),
    }
    published = len(await balance_events(pool))

    # The configuration now says 650 (the law of 10 April 2025); nobody sends anything.
    new = Settings(database_url=database_url)
    assert await reconcile_configured_quota(new, lambda: T0) == {2025: 2}
    assert await stored(pool) == {
        (STUDENT, 2025): (650, 150, 2),
        (OTHER, 2025): (650, 550, 2),
        (STUDENT, 2024): (600, 580, 1),
    }
    events = (await balance_events(pool))[published:]
    assert sorted((e["ssin"], e["year"], e["quota"], e["remaining"]) for e in events) == sorted(
        [(STUDENT, 2025, 650, 150), (OTHER, 2025, 650, 550)]
    )
    # A second worker starting finds nothing to do.
    assert await reconcile_configured_quota(new, lambda: T0) == {}
    assert len(await balance_events(pool)) == published + 2


async def test_an_operators_change_is_the_effective_quota(
    pool: asyncpg.Pool, database_url: str
) -> None:
    settings = Settings(database_url=database_url)
    processor = BatchProcessor(pool, settings, lambda: T0)
    await processor.apply([record(0, STUDENT, 500)])
    change = {
        "eventId": "q1",
        "year": 2025,
        "hours": 475,
        "requestedAt": "2025-03-01T09:00:00Z",
    }
    raw = RawRecord(QUOTA_CHANGES, 0, 0, None, b"2025", json.dumps(change).encode())
    # The change writes one recompute command per partition; the shares, run as the
    # workers' recompute lanes run them, change the one balance of the year.
    assert await processor.process_quota_change(raw) == settings.partitions
    commands = await pool.fetch(
        "SELECT partition, key, value FROM outbox WHERE topic = $1 ORDER BY id", QUOTA_RECOMPUTE
    )
    assert [r["partition"] for r in commands] == list(range(settings.partitions))
    changed = [
        await processor.process_recompute(
            RawRecord(QUOTA_RECOMPUTE, r["partition"], 0, None, r["key"], r["value"])
        )
        for r in commands
    ]
    assert sum(changed) == 1
    # Applied once: a redelivered change writes no command again.
    assert await processor.process_quota_change(raw) == 0
    # Configuration says 650, the operator said 475: the operator's change stands.
    assert await processor.reconcile_quota() == {}
    assert (await stored(pool))[(STUDENT, 2025)][:2] == (475, 0)
