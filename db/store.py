"""Queries of the system of record, each set-based so a batch costs a few round trips.

Every function takes a connection that the caller holds inside a transaction: the
batch processor decides what is atomic, these functions only read and write rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from db.reads import period_from_row, wage_report_from_row
from quota.ledger import Period, StudentLedger, WageReport


@dataclass(frozen=True)
class OutboxMessage:
    topic: str
    key: bytes | None
    value: bytes


@dataclass(frozen=True)
class DeadLetterPayload:
    """The raw bytes of a rejected message kept in PostgreSQL instead of in its dead letter.

    ``event_id`` is the dead letter's; ``sha256`` (hex) and ``size`` are also carried by
    the dead letter, so whoever fetches the bytes can check they are the ones meant.
    """

    event_id: str
    raw: bytes
    sha256: str
    size: int


async def lock_students(conn: asyncpg.Connection, ssins: Iterable[str]) -> dict[str, int]:
    """Create missing student rows, lock all of them, return their next acceptance rank.

    Locking in SSIN order serialises two transactions that touch the same student (two
    agents, or a partition handed over during a rebalance) without deadlocks.
    """
    ordered = sorted(set(ssins))
    await conn.execute(
        "INSERT INTO students (ssin) SELECT unnest($1::text[]) ORDER BY 1 ON CONFLICT DO NOTHING",
        ordered,
    )
    rows = await conn.fetch(
        "SELECT ssin, next_seq FROM students WHERE ssin = ANY($1::text[]) ORDER BY ssin FOR UPDATE",
        ordered,
    )
    return {r["ssin"]: r["next_seq"] for r in rows}


async def load_ledgers(conn: asyncpg.Connection, ssins: Iterable[str]) -> dict[str, StudentLedger]:
    """The ledgers of the given students (locked with :func:`lock_students`)."""
    next_seqs = await lock_students(conn, ssins)
    ledgers = {ssin: StudentLedger(ssin, next_seq=seq) for ssin, seq in next_seqs.items()}
    wanted = list(next_seqs)
    for r in await conn.fetch("SELECT * FROM periods WHERE ssin = ANY($1::text[])", wanted):
        ledgers[r["ssin"]].periods[r["period_id"]] = period_from_row(r)
    for r in await conn.fetch("SELECT * FROM wage_reports WHERE ssin = ANY($1::text[])", wanted):
        report = wage_report_from_row(r)
        ledgers[r["ssin"]].wage_reports[(report.employer, report.year, report.quarter)] = report
    return ledgers


async def existing_period_ids(conn: asyncpg.Connection, period_ids: Sequence[str]) -> set[str]:
    """Which of ``period_ids`` some period already has."""
    rows = await conn.fetch(
        "SELECT period_id FROM periods WHERE period_id = ANY($1::text[])", list(period_ids)
    )
    return {r["period_id"] for r in rows}


async def ssins_with_data_in_year(conn: asyncpg.Connection, year: int) -> list[str]:
    rows = await conn.fetch(
        "SELECT ssin FROM periods WHERE start_date >= make_date($1, 1, 1)"
        " AND start_date < make_date($1 + 1, 1, 1)"
        " UNION SELECT ssin FROM wage_reports WHERE year = $1 ORDER BY 1",
        year,
    )
    return [r["ssin"] for r in rows]


async def save_ledgers(conn: asyncpg.Connection, ledgers: Iterable[StudentLedger]) -> None:
    """Write what changed in the ledgers since they were loaded."""
    students: list[tuple[str, int]] = []
    periods: list[Period] = []
    period_owner: list[str] = []
    reports: list[tuple[str, WageReport]] = []
    for ledger in ledgers:
        if not ledger.changed_periods and not ledger.changed_reports:
            continue
        students.append((ledger.ssin, ledger.next_seq))
        for pid in sorted(ledger.changed_periods):
            periods.append(ledger.periods[pid])
            period_owner.append(ledger.ssin)
        reports.extend(
            (ledger.ssin, ledger.wage_reports[k]) for k in sorted(ledger.changed_reports)
        )
        ledger.mark_saved()
    if students:
        await conn.execute(
            "UPDATE students s SET next_seq = u.next_seq"
            " FROM unnest($1::text[], $2::bigint[]) AS u(ssin, next_seq) WHERE s.ssin = u.ssin",
            [s for s, _ in students],
            [n for _, n in students],
        )
    if periods:
        await conn.executemany(
            """
            INSERT INTO periods (period_id, ssin, employer, declarant, start_date, end_date,
                tranche_seqs, tranche_hours, planned_hours, received_at, late, cancelled,
                event_id, joint_commission, using_employer)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
            ON CONFLICT (period_id) DO UPDATE SET end_date = EXCLUDED.end_date,
                tranche_seqs = EXCLUDED.tranche_seqs, tranche_hours = EXCLUDED.tranche_hours,
                planned_hours = EXCLUDED.planned_hours, cancelled = EXCLUDED.cancelled
            """,
            [
                (
                    p.period_id,
                    ssin,
                    p.employer,
                    p.declarant,
                    p.start,
                    p.end,
                    [t.seq for t in p.tranches],
                    [t.hours for t in p.tranches],
                    p.planned_hours,
                    p.received_at,
                    p.late,
                    p.cancelled,
                    p.event_id,
                    p.joint_commission,
                    p.using_employer,
                )
                for p, ssin in zip(periods, period_owner, strict=True)
            ],
        )
    if reports:
        await conn.executemany(
            """
            INSERT INTO wage_reports (ssin, employer, year, quarter, hours_worked,
                gross_wage_cents, received_at, event_id, seq, tranche_seqs, tranche_hours)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
            ON CONFLICT (ssin, employer, year, quarter) DO UPDATE SET
                hours_worked = EXCLUDED.hours_worked, gross_wage_cents = EXCLUDED.gross_wage_cents,
                received_at = EXCLUDED.received_at, event_id = EXCLUDED.event_id,
                tranche_seqs = EXCLUDED.tranche_seqs, tranche_hours = EXCLUDED.tranche_hours
            """,
            [
                (
                    ssin,
                    r.employer,
                    r.year,
                    r.quarter,
                    r.hours_worked,
                    r.gross_wage_cents,
                    r.received_at,
                    r.event_id,
                    r.seq,
                    None if r.tranches is None else [t.seq for t in r.tranches],
                    None if r.tranches is None else [t.hours for t in r.tranches],
                )
                for ssin, r in reports
            ],
        )


@dataclass(frozen=True)
class AppliedEvent:
    """What is kept of an applied idempotency key: the digest of the message first
    applied under it, and where that message came from (``topic[partition]@offset``)."""

    digest: bytes | None
    origin: str | None


async def applied_events(
    conn: asyncpg.Connection, event_ids: Sequence[str]
) -> dict[str, AppliedEvent]:
    """The keys among ``event_ids`` that were applied, with their digest and origin."""
    rows = await conn.fetch(
        "SELECT event_id, digest, origin FROM applied_events WHERE event_id = ANY($1::text[])",
        list(event_ids),
    )
    return {r["event_id"]: AppliedEvent(r["digest"], r["origin"]) for r in rows}


async def record_applied_events(
    conn: asyncpg.Connection, events: Sequence[tuple[str, bytes | None, str | None]]
) -> None:
    """Record (key, digest, origin) rows as applied."""
    if events:
        await conn.execute(
            "INSERT INTO applied_events (event_id, digest, origin)"
            " SELECT * FROM unnest($1::text[], $2::bytea[], $3::text[])",
            [e[0] for e in events],
            [e[1] for e in events],
            [e[2] for e in events],
        )


async def already_applied(conn: asyncpg.Connection, event_ids: Sequence[str]) -> set[str]:
    """The ids among ``event_ids`` that were applied (for ids the system makes itself)."""
    return set(await applied_events(conn, event_ids))


async def record_applied(conn: asyncpg.Connection, event_ids: Sequence[str]) -> None:
    """Record ids as applied, without digest or origin (ids the system makes itself)."""
    await record_applied_events(conn, [(event_id, None, None) for event_id in event_ids])


async def quota_overrides(conn: asyncpg.Connection, *, exclusive: bool = False) -> dict[int, int]:
    """The operators' quota changes, taking the quota lock (shared, or exclusive)."""
    mode = "UPDATE" if exclusive else "SHARE"
    await conn.execute(f"SELECT 1 FROM quota_lock FOR {mode}")
    rows = await conn.fetch("SELECT year, hours FROM quota_years")
    return {r["year"]: r["hours"] for r in rows}


async def stored_quotas(conn: asyncpg.Connection) -> dict[int, set[int]]:
    """Per year, the quotas the stored balances were computed with."""
    rows = await conn.fetch("SELECT year, quota FROM balances GROUP BY year, quota")
    found: dict[int, set[int]] = {}
    for r in rows:
        found.setdefault(int(r["year"]), set()).add(int(r["quota"]))
    return found


async def set_quota(conn: asyncpg.Connection, year: int, hours: int, event_id: str) -> None:
    await conn.execute(
        "INSERT INTO quota_years (year, hours, event_id) VALUES ($1, $2, $3)"
        " ON CONFLICT (year) DO UPDATE SET hours = EXCLUDED.hours, event_id = EXCLUDED.event_id,"
        " changed_at = now()",
        year,
        hours,
        event_id,
    )


async def stored_balances(
    conn: asyncpg.Connection, keys: Sequence[tuple[str, int]]
) -> dict[tuple[str, int], tuple[int, dict[str, Any]]]:
    """(version, document) of the stored balances for the given (ssin, year) keys.

    Asks for the SSINs and the years as two lists (a superset, filtered here): joined
    on ``unnest`` of the pairs, the planner merged on the year alone once some 10,000
    balances shared it, 2.9 s per 2,000 keys against tens of milliseconds this way
    (primary key, ``ssin = ANY``).
    """
    if not keys:
        return {}
    wanted = set(keys)
    rows = await conn.fetch(
        "SELECT ssin, year, version, document FROM balances"
        " WHERE ssin = ANY($1::text[]) AND year = ANY($2::int[])",
        sorted({k[0] for k in wanted}),
        sorted({k[1] for k in wanted}),
    )
    return {
        (r["ssin"], r["year"]): (r["version"], json.loads(r["document"]))
        for r in rows
        if (r["ssin"], r["year"]) in wanted
    }


async def save_balances(
    conn: asyncpg.Connection,
    rows: Sequence[tuple[str, int, int, int, int, int, dict[str, Any]]],
) -> None:
    """Upsert (ssin, year, quota, used, remaining, version, document) rows."""
    if rows:
        await conn.executemany(
            """
            INSERT INTO balances (ssin, year, quota, used, remaining, version, document)
            VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)
            ON CONFLICT (ssin, year) DO UPDATE SET quota = EXCLUDED.quota, used = EXCLUDED.used,
                remaining = EXCLUDED.remaining, version = EXCLUDED.version,
                document = EXCLUDED.document, updated_at = now()
            """,
            [(s, y, q, u, r, v, json.dumps(d)) for s, y, q, u, r, v, d in rows],
        )


async def enqueue(conn: asyncpg.Connection, messages: Sequence[OutboxMessage]) -> None:
    """Add messages to the outbox, in order, in the caller's transaction."""
    if messages:
        await conn.execute(
            "INSERT INTO outbox (topic, key, value)"
            " SELECT t, k, v FROM unnest($1::text[], $2::bytea[], $3::bytea[])"
            " WITH ORDINALITY AS m(t, k, v, n) ORDER BY n",
            [m.topic for m in messages],
            [m.key for m in messages],
            [m.value for m in messages],
        )


async def save_dead_letter_payloads(
    conn: asyncpg.Connection, payloads: Sequence[DeadLetterPayload]
) -> None:
    """Keep the raw bytes of dead letters too large to carry them, in the caller's transaction.

    Written in the transaction that enqueues the dead letters, so a published letter's
    ``rawRef`` always resolves. A redelivered rejection keeps the bytes stored first (they
    are the same bytes: the event id names the topic, partition and offset).
    """
    if payloads:
        await conn.execute(
            "INSERT INTO dead_letter_payloads (event_id, raw, sha256, size)"
            " SELECT * FROM unnest($1::text[], $2::bytea[], $3::text[], $4::int[])"
            " ON CONFLICT (event_id) DO NOTHING",
            [p.event_id for p in payloads],
            [p.raw for p in payloads],
            [p.sha256 for p in payloads],
            [p.size for p in payloads],
        )


async def dead_letter_payload(conn: asyncpg.Connection, event_id: str) -> DeadLetterPayload | None:
    """The stored raw bytes of the dead letter ``event_id``, or None if it kept them inline."""
    row = await conn.fetchrow(
        "SELECT event_id, raw, sha256, size FROM dead_letter_payloads WHERE event_id = $1",
        event_id,
    )
    if row is None:
        return None
    return DeadLetterPayload(row["event_id"], bytes(row["raw"]), row["sha256"], row["size"])
