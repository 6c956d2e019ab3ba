"""Migration 0008: rows stored with an NSSO number "as written" (leading zeros) take the
form every comparison now uses, and their idempotency keys with them."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import pytest

from db.migrate import migrate, migration_files

pytestmark = pytest.mark.integration

STUDENT = "93051822361"
WHEN = datetime(2026, 10, 20, 9, tzinfo=UTC)
LATER = datetime(2026, 10, 21, 9, tzinfo=UTC)


async def test_stored_nsso_numbers_lose_their_leading_zeros(database_url: str) -> None:
    conn: asyncpg.Connection = await asyncpg.connect(database_url)
    try:
        # The database as it was before 0008, migrations recorded as migrate() does.
        await conn.execute(
            "CREATE TABLE schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for version, sql in migration_files():
            if version >= "0008":
                break
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
        await conn.execute("INSERT INTO students (ssin) VALUES ($1)", STUDENT)
        await conn.execute(
            "INSERT INTO periods (period_id, ssin, employer, declarant, start_date, end_date,"
            " tranche_seqs, tranche_hours, planned_hours, received_at, late, event_id)"
            " VALUES ('p1', $1, 'NSSO0197412345', 'NSSO0197412345', '2026-07-01',"
            " '2026-07-31', '{1}', '{30}', 30, $2, false, 'dimona:NSSO0197412345:e1')",
            STUDENT,
            WHEN,
        )
        # The same employer's Q3 DmfA under both spellings: the later one stands.
        for employer, hours, received, seq in [
            ("NSSO0197412345", 28, LATER, 3),
            ("NSSO197412345", 20, WHEN, 2),
        ]:
            await conn.execute(
                "INSERT INTO wage_reports (ssin, employer, year, quarter, hours_worked,"
                " gross_wage_cents, received_at, event_id, seq, tranche_seqs, tranche_hours)"
                " VALUES ($1, $2, 2026, 3, $3, 1000, $4, 'x', $5, '{1}', $6)",
                STUDENT,
                employer,
                hours,
                received,
                seq,
                [hours],
            )
        await conn.execute(
            "INSERT INTO applied_events (event_id) VALUES ('dimona:NSSO0197412345:e1'),"
            " ('dmfa:NSSO0197412345:d1'), ('dmfa:NSSO197412345:d1'), ('consent:NSSO0x')"
        )

        assert await migrate(database_url) == [v for v, _ in migration_files() if v >= "0008"]

        period = await conn.fetchrow("SELECT employer, declarant FROM periods")
        assert tuple(period) == ("NSSO197412345", "NSSO197412345")
        reports = await conn.fetch("SELECT employer, hours_worked, tranche_seqs FROM wage_reports")
        assert [tuple(r) for r in reports] == [("NSSO197412345", 28, None)]
        ids = await conn.fetch("SELECT event_id FROM applied_events ORDER BY 1")
        assert [r["event_id"] for r in ids] == [
            "consent:NSSO0x",
            "dimona:NSSO197412345:e1",
            "dmfa:NSSO197412345:d1",
        ]
    finally:
        await conn.close()
