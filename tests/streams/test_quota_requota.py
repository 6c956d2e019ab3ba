"""A recompute that sets the quota in place gives exactly the balances computed anew.

A simulated year (producers/simulator.py: Dimona updates and cancellations, DmfA, late
declarations) is applied by the batch processor, in this process, on the real
database. The quota then goes down to 300 hours and up again to 700: each time, the
balances within both the old and the new quota are set in place
(``db.store.requota_balances``), the others computed from their ledgers. Afterwards
every stored balance, and every event published for it, must be byte for byte what
computing its ledger anew under the new quota gives.
"""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import orjson
import pytest

from db import store
from producers.simulator import generate
from quota import compute_balance
from schemas.answers import QuotaChange, QuotaRecompute
from schemas.settings import Settings
from schemas.topics import BALANCES, LEDGER, QUOTA_RECOMPUTE
from streams.messages import balance_document, balance_event_bytes, ledger_event_bytes
from streams.processor import BatchProcessor, RawRecord

pytestmark = pytest.mark.integration

YEAR = 2026
STUDENTS = 400
T0 = datetime(YEAR, 12, 1, 9, 0, tzinfo=UTC)


async def replayed_year(processor: BatchProcessor) -> None:
    records = [
        RawRecord(r.topic, 0, n, r.timestamp_ms, r.key.encode(), r.value)
        for n, r in enumerate(generate(YEAR, STUDENTS, seed=3))
    ]
    for start in range(0, len(records), 500):
        await processor.apply(records[start : start + 500])


async def change_quota(processor: BatchProcessor, pool: asyncpg.Pool, hours: int) -> int:
    """Apply a change of the year's quota and run its commands; the balances changed."""
    change = QuotaChange(event_id=f"to-{hours}", year=YEAR, hours=hours, requested_at=T0)
    await processor.change_quota(change)
    rows = await pool.fetch(
        "WITH sent AS (DELETE FROM outbox WHERE topic = $1 RETURNING id, value)"
        " SELECT value FROM sent ORDER BY id",
        QUOTA_RECOMPUTE,
    )
    changed = 0
    for row in rows:
        changed += await processor.recompute_share(QuotaRecompute.model_validate_json(row["value"]))
    return changed


async def test_balances_set_in_place_are_those_computed_anew(
    pool: asyncpg.Pool, database_url: str
) -> None:
    settings = Settings(database_url=database_url, partitions=4)
    processor = BatchProcessor(pool, settings, lambda: T0)
    await replayed_year(processor)
    await pool.execute("DELETE FROM outbox")

    for old, new in ((650, 300), (300, 700)):
        before = {
            r["ssin"]: (r["used"], r["version"])
            for r in await pool.fetch(
                "SELECT ssin, used, version FROM balances WHERE year = $1", YEAR
            )
        }
        within = {ssin for ssin, (used, _) in before.items() if used <= min(old, new)}
        # Both ways are taken: set in place, and computed from the ledger.
        assert 0 < len(within) < len(before), (old, new)

        assert await change_quota(processor, pool, new) == len(before)

        rules = settings.quota_rules.with_overrides({YEAR: new})
        async with pool.acquire() as conn, conn.transaction():
            ledgers = await store.load_ledgers(conn, list(before))
        rows = await pool.fetch(
            "SELECT ssin, quota, used, remaining, version, document::text FROM balances"
            " WHERE year = $1",
            YEAR,
        )
        events = {
            (r["topic"], bytes(r["key"])): bytes(r["value"])
            for r in await pool.fetch("SELECT topic, key, value FROM outbox ORDER BY id")
        }
        assert len(rows) == len(before)
        assert len(events) == 2 * len(before)
        for row in rows:
            ssin = row["ssin"]
            expected = balance_document(compute_balance(ledgers[ssin], YEAR, rules))
            version = before[ssin][1] + 1
            assert orjson.loads(row["document"]) == expected, ssin
            assert (row["quota"], row["used"], row["remaining"], row["version"]) == (
                new,
                expected["used"],
                expected["remaining"],
                version,
            )
            key = f"{ssin}:{YEAR}".encode()
            assert events[(BALANCES, key)] == balance_event_bytes(expected, version, T0), ssin
            assert events[(LEDGER, key)] == ledger_event_bytes(expected, version, T0), ssin
        await pool.execute("DELETE FROM outbox")


async def test_only_balances_within_both_quotas_are_set_in_place(pool: asyncpg.Pool) -> None:
    ssins = ["93051822361", "93051822460", "93051822559", "93051822658"]
    async with pool.acquire() as conn, conn.transaction():
        await store.lock_students(conn, ssins)
        await store.save_balances(
            conn,
            [
                (ssin, YEAR, 650, used, max(0, 650 - used), {"ssin": ssin, "used": used})
                for ssin, used in zip(ssins, (100, 600, 610, 700), strict=True)
            ],
        )
        requoted = await store.requota_balances(conn, [*ssins, "00000000097"], YEAR, 600)
        # 600 is within both (to the hour), 610 not within 600, 700 not within 650; the
        # unknown student has no balance.
        assert {ssin: (v, orjson.loads(text)) for ssin, (v, text) in requoted.items()} == {
            ssins[0]: (2, {"ssin": ssins[0], "used": 100, "quota": 600, "remaining": 500}),
            ssins[1]: (2, {"ssin": ssins[1], "used": 600, "quota": 600, "remaining": 0}),
        }
        rows = await conn.fetch("SELECT ssin, quota, remaining, version FROM balances ORDER BY 1")
        assert [tuple(r) for r in rows] == [
            (ssins[0], 600, 500, 2),
            (ssins[1], 600, 0, 2),
            (ssins[2], 650, 40, 1),
            (ssins[3], 650, 0, 1),
        ]
        # Already at the quota: nothing to set.
        assert await store.requota_balances(conn, ssins, YEAR, 600) == {}
