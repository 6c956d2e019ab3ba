"""Read-side queries for the HTTP API and the operators: plain reads, no locks, no writes.

The write side (:mod:`db.store`) locks a student's rows ``FOR UPDATE`` because it is about
to change them; a student looking at a balance must never take those locks, or a busy
page would stall the partition that applies declarations. These queries only read, and
:func:`read_snapshot` runs them in a read-only ``REPEATABLE READ`` transaction so that
the periods and the wage reports of one answer come from the same committed state.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg

from quota.ledger import Period, StudentLedger, Tranche, WageReport


@dataclass(frozen=True)
class StoredBalance:
    """A row of ``balances``: the figures the worker last computed for (ssin, year)."""

    year: int
    quota: int
    used: int
    remaining: int
    version: int


@asynccontextmanager
async def read_snapshot(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A connection inside a read-only, repeatable-read transaction.

    Everything read through it sees one committed state of the database, even while the
    worker commits batches concurrently.
    """
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        yield conn


async def ping(conn: asyncpg.Connection) -> bool:
    """Whether the database answers a trivial query."""
    return bool(await conn.fetchval("SELECT 1") == 1)


@dataclass(frozen=True)
class OutboxState:
    """The outbox as operators watch it."""

    backlog: int
    """Rows waiting for the relay (neither sent nor failed)."""
    failed: int
    """Rows the broker refused for good, each standing for a dead letter."""
    oldest_age_seconds: float
    """Age of the oldest row waiting; 0 when none waits."""


async def outbox_state(conn: asyncpg.Connection) -> OutboxState:
    """The backlog, the failed rows and the age of the oldest waiting row, in one read of
    the two partial indexes (``outbox_unsent``, ``outbox_failed``): a failed row is never
    sent, and the sent rows a retention keeps are not read at all."""
    row = await conn.fetchrow(
        "SELECT count(*) FILTER (WHERE failed_at IS NULL) AS backlog,"
        " count(*) FILTER (WHERE failed_at IS NOT NULL) AS failed,"
        " coalesce(extract(epoch FROM now() - min(created_at)"
        "   FILTER (WHERE failed_at IS NULL)), 0)::float8 AS oldest"
        " FROM outbox WHERE (sent_at IS NULL AND failed_at IS NULL) OR failed_at IS NOT NULL"
    )
    assert row is not None
    return OutboxState(int(row["backlog"]), int(row["failed"]), float(row["oldest"]))


async def relay_backlog(conn: asyncpg.Connection) -> int:
    """Outbox rows not yet published by the relay (served by the partial index)."""
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM outbox WHERE sent_at IS NULL AND failed_at IS NULL"
        )
    )


async def quota_overrides(conn: asyncpg.Connection) -> dict[int, int]:
    """The operators' quota per year (table ``quota_years``), without the quota lock.

    The write side takes ``quota_lock`` so that a recomputation never interleaves with a
    batch; a reader only needs the committed values.
    """
    rows = await conn.fetch("SELECT year, hours FROM quota_years")
    return {int(r["year"]): int(r["hours"]) for r in rows}


async def stored_balances(
    conn: asyncpg.Connection, ssin: str, years: Sequence[int]
) -> dict[int, StoredBalance]:
    """The stored balances of one student for the given years (missing years absent)."""
    rows = await conn.fetch(
        "SELECT year, quota, used, remaining, version FROM balances"
        " WHERE ssin = $1 AND year = ANY($2::int[])",
        ssin,
        list(years),
    )
    return {
        int(r["year"]): StoredBalance(
            year=int(r["year"]),
            quota=int(r["quota"]),
            used=int(r["used"]),
            remaining=int(r["remaining"]),
            version=int(r["version"]),
        )
        for r in rows
    }


async def student_ledger(conn: asyncpg.Connection, ssin: str, year: int) -> StudentLedger:
    """The part of a student's ledger that the balance of ``year`` depends on.

    Periods belong to the year of their start date (a period never spans quarters, so
    never years either); wage reports carry their year. Cancelled periods are included:
    the detailed view lists them, the balance computation ignores them.
    """
    ledger = StudentLedger(ssin)
    period_rows = await conn.fetch(
        "SELECT * FROM periods WHERE ssin = $1"
        " AND start_date >= make_date($2, 1, 1) AND start_date < make_date($2 + 1, 1, 1)",
        ssin,
        year,
    )
    for r in period_rows:
        period = period_from_row(r)
        ledger.periods[period.period_id] = period
    report_rows = await conn.fetch(
        "SELECT * FROM wage_reports WHERE ssin = $1 AND year = $2", ssin, year
    )
    for r in report_rows:
        report = wage_report_from_row(r)
        ledger.wage_reports[(report.employer, report.year, report.quarter)] = report
    return ledger


async def student_periods(conn: asyncpg.Connection, ssin: str) -> list[Period]:
    """Every declared period of a student, all years: employment in a row with one
    employer (the 12-month warning) runs across years."""
    rows = await conn.fetch("SELECT * FROM periods WHERE ssin = $1", ssin)
    return [period_from_row(r) for r in rows]


def _tranches(seqs: Sequence[int], hours: Sequence[int]) -> tuple[Tranche, ...]:
    """The places of a row: its two parallel arrays (bigint, integer) as tranches."""
    if len(seqs) != len(hours):
        raise ValueError(f"{len(seqs)} tranche ranks for {len(hours)} tranche hours")
    return tuple(map(Tranche, seqs, hours))


def period_from_row(r: asyncpg.Record) -> Period:
    """A ``periods`` row as the domain core's :class:`Period`."""
    return Period.restore(
        period_id=r["period_id"],
        employer=r["employer"],
        declarant=r["declarant"],
        start=r["start_date"],
        end=r["end_date"],
        tranches=_tranches(r["tranche_seqs"], r["tranche_hours"]),
        received_at=r["received_at"],
        late=r["late"],
        event_id=r["event_id"],
        joint_commission=r["joint_commission"],
        using_employer=r["using_employer"],
        cancelled=r["cancelled"],
    )


def wage_report_from_row(r: asyncpg.Record) -> WageReport:
    """A ``wage_reports`` row as the domain core's :class:`WageReport` (rows stored
    before migration 0006 have no places: None, derived by the domain core)."""
    seqs, hours = r["tranche_seqs"], r["tranche_hours"]
    tranches = None if seqs is None else _tranches(seqs, hours)
    return WageReport.restore(
        employer=r["employer"],
        year=int(r["year"]),
        quarter=int(r["quarter"]),
        hours_worked=int(r["hours_worked"]),
        gross_wage_cents=int(r["gross_wage_cents"]),
        received_at=r["received_at"],
        event_id=r["event_id"],
        seq=int(r["seq"]),
        tranches=tranches,
    )
