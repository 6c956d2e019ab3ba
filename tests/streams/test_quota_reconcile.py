"""A quota changed only in configuration reaches the stored balances at worker start."""

from __future__ import annotations

import asyncio
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


async def run_recompute_commands(pool: asyncpg.Pool, processor: BatchProcessor) -> int:
    """Apply the recompute commands not applied yet, as the workers' recompute lanes do;
    return the balances they changed."""
    commands = await pool.fetch(
        "SELECT id, partition, key, value FROM outbox WHERE topic = $1 AND sent_at IS NULL"
        " ORDER BY id",
        QUOTA_RECOMPUTE,
    )
    changed = 0
    for r in commands:
        changed += await processor.process_recompute(
            RawRecord(QUOTA_RECOMPUTE, r["partition"], r["id"], None, r["key"], r["value"])
        )
    # Published: the relay would have sent them.
    await pool.execute("UPDATE outbox SET sent_at = now() WHERE topic = $1", QUOTA_RECOMPUTE)
    return changed


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
    # The worker starting writes the year's recompute commands, one per partition, for
    # the workers to share; nothing is recomputed before it starts consuming.
    new = Settings(database_url=database_url)
    assert await reconcile_configured_quota(new, lambda: T0) == {2025: new.partitions}
    assert (await stored(pool))[(STUDENT, 2025)] == (475, 0, 1)
    # Another worker starting meanwhile finds the recompute under way: no second set.
    assert await reconcile_configured_quota(new, lambda: T0) == {}

    assert await run_recompute_commands(pool, BatchProcessor(pool, new, lambda: T0)) == 2
    assert await stored(pool) == {
        (STUDENT, 2025): (650, 150, 2),
        (OTHER, 2025): (650, 550, 2),
        (STUDENT, 2024): (600, 580, 1),
    }
    events = (await balance_events(pool))[published:]
    assert sorted((e["ssin"], e["year"], e["quota"], e["remaining"]) for e in events) == sorted(
        [(STUDENT, 2025, 650, 150), (OTHER, 2025, 650, 550)]
    )
    # A worker starting once it is done finds nothing to do.
    assert await reconcile_configured_quota(new, lambda: T0) == {}
    assert len(await balance_events(pool)) == published + 2


async def test_workers_starting_at_once_request_one_recompute(
    pool: asyncpg.Pool, database_url: str
) -> None:
    old = Settings(database_url=database_url, quota_hours={2025: 475})
    await BatchProcessor(pool, old, lambda: T0).apply([record(0, STUDENT, 500)])
    new = Settings(database_url=database_url)
    started = await asyncio.gather(*(reconcile_configured_quota(new, lambda: T0) for _ in range(4)))
    assert sorted(started, key=len) == [{}, {}, {}, {2025: new.partitions}]
    commands = await pool.fetchval("SELECT count(*) FROM outbox WHERE topic = $1", QUOTA_RECOMPUTE)
    assert commands == new.partitions


async def test_a_quota_configured_back_and_forth_is_recomputed_each_time(
    pool: asyncpg.Pool, database_url: str
) -> None:
    first = Settings(database_url=database_url, quota_hours={2025: 475})
    await BatchProcessor(pool, first, lambda: T0).apply([record(0, STUDENT, 500)])
    for hours in (None, 475, None):
        settings = Settings(
            database_url=database_url, **({} if hours is None else {"quota_hours": {2025: hours}})
        )
        quota = settings.quota_rules.quota(2025)
        assert await reconcile_configured_quota(settings, lambda: T0) == {2025: settings.partitions}
        processor = BatchProcessor(pool, settings, lambda: T0)
        assert await run_recompute_commands(pool, processor) == 1
        assert (await stored(pool))[(STUDENT, 2025)][:2] == (quota, max(0, quota - 500))
        assert await reconcile_configured_quota(settings, lambda: T0) == {}


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
