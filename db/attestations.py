"""Queries of attestations, access codes, employer look-ups and look-up rate limiting.

Like :mod:`db.store`, every function takes a connection the caller holds (inside a
transaction where atomicity matters) and only reads and writes rows; deciding what is
atomic, and every rule, belongs to the callers in :mod:`streams`. Plain codes never pass
through here: only their look-up digest and their sealed form.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal

import asyncpg

# Advisory-lock class of the look-up rate limiter (two-key form, so it can never collide
# with the one-key locks of the migrator and the outbox relay).
_LOOKUP_LOCK_CLASS = 0x4C4B  # "LK"


# --------------------------------------------------------------------------------------------
# Access codes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewCodes:
    """Codes of one month about to be stored, column by column: the i-th student gets the
    i-th digest and sealed form. Never the codes themselves."""

    month: date
    valid_from: date
    valid_until: date
    ssins: Sequence[str]
    digests: Sequence[bytes]
    sealed: Sequence[bytes]

    def __post_init__(self) -> None:
        if not len(self.ssins) == len(self.digests) == len(self.sealed):
            raise ValueError(
                f"{len(self.ssins)} students, {len(self.digests)} digests and"
                f" {len(self.sealed)} sealed codes do not pair up"
            )


@dataclass(frozen=True)
class StoredCode:
    ssin: str
    month: date
    sealed: bytes
    valid_from: date
    valid_until: date


async def insert_codes(
    conn: asyncpg.Connection, codes: NewCodes, *, expect_conflicts: bool = True
) -> int:
    """Store codes whose (student, month) has none yet; return how many were stored.

    ``ON CONFLICT DO NOTHING`` makes this safe to race (a rotation and an attestation of
    the same student, two workers) and to repeat: the first code of a month wins. A caller
    that just read which students lack a code passes ``expect_conflicts=False``: a plain
    insert, which PostgreSQL does without the speculative insertion of ``ON CONFLICT``
    (measured 40 % cheaper), and which raises ``asyncpg.UniqueViolationError`` if a code
    came meanwhile, rolling back the caller's transaction: the caller then inserts again
    with conflicts expected. Three arrays and three scalars in one statement, the count
    read from the command tag: the rotation stores hundreds of thousands this way.
    """
    if not codes.ssins:
        return 0
    status = await conn.execute(
        """
        INSERT INTO access_codes (ssin, month, digest, sealed, valid_from, valid_until)
        SELECT c.ssin, $4, c.digest, c.sealed, $5, $6
        FROM unnest($1::text[], $2::bytea[], $3::bytea[]) AS c(ssin, digest, sealed)
        """
        + (" ON CONFLICT DO NOTHING" if expect_conflicts else ""),
        codes.ssins,
        codes.digests,
        codes.sealed,
        codes.month,
        codes.valid_from,
        codes.valid_until,
    )
    return int(status.rsplit(" ", 1)[-1])


async def codes_of_month(
    conn: asyncpg.Connection, ssins: Iterable[str], month: date
) -> dict[str, StoredCode]:
    """The stored codes of the given students for one month, by SSIN."""
    rows = await conn.fetch(
        # A join of the keys, not `ssin = ANY($1)`: see db.store.LOCK_STUDENTS.
        "SELECT c.ssin, c.month, c.sealed, c.valid_from, c.valid_until"
        " FROM unnest($1::text[]) AS k(ssin) JOIN access_codes c ON c.ssin = k.ssin"
        " WHERE c.month = $2",
        sorted(set(ssins)),
        month,
    )
    return {
        r["ssin"]: StoredCode(r["ssin"], r["month"], r["sealed"], r["valid_from"], r["valid_until"])
        for r in rows
    }


async def students_without_code(
    conn: asyncpg.Connection, month: date, *, partition: int, partitions: int
) -> list[str]:
    """The students of ``partition`` (of ``partitions``) with no code for ``month`` yet.

    One read: the stored key hash (``students.key_hash``, Kafka's partitioner hash of the
    SSIN) picks the partition's students in SQL, an anti-join on the (ssin, month) key
    drops those who have their code, so a second rotation of the same month finds nothing.
    Rows whose hash is still unknown are not selected: :func:`db.store.set_key_hashes` first.
    """
    rows = await conn.fetch(
        "SELECT s.ssin FROM students s WHERE s.key_hash % $3 = $2 AND NOT EXISTS"
        " (SELECT 1 FROM access_codes c WHERE c.ssin = s.ssin AND c.month = $1)"
        " ORDER BY s.ssin",
        month,
        partition,
        partitions,
    )
    return [r["ssin"] for r in rows]


async def record_rotation(
    conn: asyncpg.Connection,
    *,
    month: date,
    partition: int,
    partitions: int,
    event_id: str,
    codes_created: int,
    at: datetime,
) -> None:
    """Note that a partition's rotation for ``month`` ran (counting the runs)."""
    await conn.execute(
        """
        INSERT INTO access_code_rotations
            (month, partition, partitions, codes_created, event_id, rotated_at)
        VALUES ($1, $2, $3, $4, $5, $6)
        ON CONFLICT (month, partition) DO UPDATE SET
            runs = access_code_rotations.runs + 1,
            codes_created = access_code_rotations.codes_created + EXCLUDED.codes_created,
            rotated_at = EXCLUDED.rotated_at
        """,
        month,
        partition,
        partitions,
        codes_created,
        event_id,
        at,
    )


async def rotated_partitions(conn: asyncpg.Connection, month: date) -> set[int]:
    """The partitions whose rotation for ``month`` has run."""
    rows = await conn.fetch("SELECT partition FROM access_code_rotations WHERE month = $1", month)
    return {r["partition"] for r in rows}


# --------------------------------------------------------------------------------------------
# Attestations
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttestationRow:
    attestation_id: str
    ssin: str
    year: int
    status: str
    requested_at: datetime
    issued_at: datetime | None
    reason: str | None
    pdf: bytes | None
    #: When the stored PDF was purged at the end of its eBox period (docs/RETENTION.md):
    #: the attestation was issued, its bytes are gone for good (HTTP 410, not 500).
    pdf_purged_at: datetime | None = None


@dataclass(frozen=True)
class IssuedAttestation:
    """Everything stored about an attestation once rendered."""

    attestation_id: str
    ssin: str
    year: int
    event_id: str
    requested_at: datetime
    issued_at: datetime
    issued_on: date
    remaining: int
    quota: int
    code_month: date
    code_valid_from: date
    code_valid_until: date
    pdf: bytes
    sha256: str


async def insert_pending(
    conn: asyncpg.Connection,
    *,
    attestation_id: str,
    ssin: str,
    year: int,
    event_id: str,
    requested_at: datetime,
) -> None:
    await conn.execute(
        "INSERT INTO attestations (attestation_id, ssin, year, status, event_id, requested_at)"
        " VALUES ($1, $2, $3, 'pending', $4, $5)",
        attestation_id,
        ssin,
        year,
        event_id,
        requested_at,
    )


async def attestation_of(
    conn: asyncpg.Connection, attestation_id: str, ssin: str
) -> AttestationRow | None:
    """One attestation of one student (another student's id reads as unknown)."""
    r = await conn.fetchrow(
        "SELECT attestation_id, ssin, year, status, requested_at, issued_at, reason, pdf,"
        " pdf_purged_at FROM attestations WHERE attestation_id = $1 AND ssin = $2",
        attestation_id,
        ssin,
    )
    if r is None:
        return None
    return AttestationRow(
        r["attestation_id"],
        r["ssin"],
        r["year"],
        r["status"],
        r["requested_at"],
        r["issued_at"],
        r["reason"],
        r["pdf"],
        r["pdf_purged_at"],
    )


async def attestations_of(conn: asyncpg.Connection, ssin: str, limit: int) -> list[AttestationRow]:
    """A student's attestations, newest first, without their PDFs."""
    rows = await conn.fetch(
        "SELECT attestation_id, ssin, year, status, requested_at, issued_at, reason"
        " FROM attestations WHERE ssin = $1 ORDER BY requested_at DESC LIMIT $2",
        ssin,
        limit,
    )
    return [
        AttestationRow(
            r["attestation_id"],
            r["ssin"],
            r["year"],
            r["status"],
            r["requested_at"],
            r["issued_at"],
            r["reason"],
            None,
        )
        for r in rows
    ]


async def balances_for(
    conn: asyncpg.Connection, keys: Sequence[tuple[str, int]]
) -> dict[tuple[str, int], tuple[int, int]]:
    """(quota, remaining) of the stored balances for the given (ssin, year) keys."""
    if not keys:
        return {}
    rows = await conn.fetch(
        "SELECT b.ssin, b.year, b.quota, b.remaining FROM balances b"
        " JOIN unnest($1::text[], $2::int[]) AS k(ssin, year)"
        " ON b.ssin = k.ssin AND b.year = k.year",
        [k[0] for k in keys],
        [k[1] for k in keys],
    )
    return {(r["ssin"], r["year"]): (r["quota"], r["remaining"]) for r in rows}


async def claim_events(conn: asyncpg.Connection, event_ids: Sequence[str]) -> set[str]:
    """Record event ids as applied; return those this transaction recorded first.

    An id another transaction recorded (a replay, or a partition handed over during a
    rebalance) is not returned, so its effects are not written twice.
    """
    if not event_ids:
        return set()
    rows = await conn.fetch(
        "INSERT INTO applied_events (event_id) SELECT unnest($1::text[])"
        " ON CONFLICT DO NOTHING RETURNING event_id",
        list(event_ids),
    )
    return {r["event_id"] for r in rows}


async def save_issued(conn: asyncpg.Connection, issued: Sequence[IssuedAttestation]) -> None:
    """Store rendered attestations, creating rows that the API did not create.

    An existing row keeps its owner: a row of another student under the same id (which
    only a forged request could produce) is left untouched.
    """
    if not issued:
        return
    await conn.executemany(
        """
        INSERT INTO attestations (attestation_id, ssin, year, status, event_id, requested_at,
            issued_at, issued_on, remaining, quota, code_month, code_valid_from,
            code_valid_until, pdf, sha256)
        VALUES ($1, $2, $3, 'issued', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
        ON CONFLICT (attestation_id) DO UPDATE SET status = 'issued',
            issued_at = EXCLUDED.issued_at, issued_on = EXCLUDED.issued_on,
            remaining = EXCLUDED.remaining, quota = EXCLUDED.quota,
            code_month = EXCLUDED.code_month, code_valid_from = EXCLUDED.code_valid_from,
            code_valid_until = EXCLUDED.code_valid_until, pdf = EXCLUDED.pdf,
            sha256 = EXCLUDED.sha256, reason = NULL
        WHERE attestations.ssin = EXCLUDED.ssin
        """,
        [
            (
                a.attestation_id,
                a.ssin,
                a.year,
                a.event_id,
                a.requested_at,
                a.issued_at,
                a.issued_on,
                a.remaining,
                a.quota,
                a.code_month,
                a.code_valid_from,
                a.code_valid_until,
                a.pdf,
                a.sha256,
            )
            for a in issued
        ],
    )


async def save_unissued(
    conn: asyncpg.Connection,
    rows: Sequence[tuple[str, str, int, str, datetime, str]],
    *,
    status: Literal["refused", "failed"],
) -> None:
    """Close requests without a document.

    Rows are (attestation_id, ssin, year, event_id, requested_at, reason). Only a pending
    row of the same student changes; a missing one is created so the student can see why.
    """
    if not rows:
        return
    await conn.executemany(
        """
        INSERT INTO attestations (attestation_id, ssin, year, status, event_id, requested_at,
            reason)
        VALUES ($1, $2, $3, $7, $4, $5, $6)
        ON CONFLICT (attestation_id) DO UPDATE SET status = EXCLUDED.status,
            reason = EXCLUDED.reason
        WHERE attestations.ssin = EXCLUDED.ssin AND attestations.status = 'pending'
        """,
        [(*row, status) for row in rows],
    )


# --------------------------------------------------------------------------------------------
# Employer look-ups
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CodeMatch:
    """What one look-up query returns, whether or not a code matched.

    ``ssin`` is None when no code has the digest. ``remaining`` is None when the student
    has no balance row for the year; ``quota_override`` is the operators' quota of the
    year, if any.
    """

    ssin: str | None
    month: date | None
    valid_from: date | None
    valid_until: date | None
    remaining: int | None
    quota_override: int | None


async def find_code(conn: asyncpg.Connection, digest: bytes, year: int) -> CodeMatch:
    """Look a digest up together with the balance of ``year``: always one row, one query.

    The query has the same shape and cost whether or not the digest matches, so that an
    unknown code costs the caller the same round trip as a known one.
    """
    r = await conn.fetchrow(
        """
        SELECT c.ssin, c.month, c.valid_from, c.valid_until, b.remaining,
               (SELECT q.hours FROM quota_years q WHERE q.year = $2) AS quota_override
        FROM (SELECT 1) AS one
        LEFT JOIN access_codes c ON c.digest = $1
        LEFT JOIN balances b ON b.ssin = c.ssin AND b.year = $2
        """,
        digest,
        year,
    )
    assert r is not None
    return CodeMatch(
        r["ssin"],
        r["month"],
        r["valid_from"],
        r["valid_until"],
        r["remaining"],
        r["quota_override"],
    )


async def lock_lookup_subjects(conn: asyncpg.Connection, employer: str, address: str) -> None:
    """Serialise, until the transaction ends, look-ups of one employer and one address.

    Counting the failures and recording a new one then happen atomically, so parallel
    guesses cannot all slip in under the limit. Always employer first, then address, so
    two transactions never wait for each other in a cycle.
    """
    await conn.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext('employer:' || $2)),"
        " pg_advisory_xact_lock($1, hashtext('address:' || $3))",
        _LOOKUP_LOCK_CLASS,
        employer,
        address,
    )


@dataclass(frozen=True)
class FailureWindow:
    """Failures of one scope in the window, and the ``nth`` most recent of them."""

    failures: int
    nth_latest: datetime | None


async def recent_failures(
    conn: asyncpg.Connection, employer: str, address: str, *, since: datetime, nth: int
) -> dict[str, FailureWindow]:
    """Failures since ``since`` per scope ('employer', 'address'); absent scope: none."""
    rows = await conn.fetch(
        """
        SELECT scope, count(*) AS failures,
               (array_agg(failed_at ORDER BY failed_at DESC))[$4] AS nth_latest
        FROM lookup_failures
        WHERE ((scope = 'employer' AND subject = $1) OR (scope = 'address' AND subject = $2))
          AND failed_at > $3
        GROUP BY scope
        """,
        employer,
        address,
        since,
        nth,
    )
    return {r["scope"]: FailureWindow(r["failures"], r["nth_latest"]) for r in rows}


async def record_failure(
    conn: asyncpg.Connection, employer: str, address: str, at: datetime
) -> None:
    await conn.execute(
        "INSERT INTO lookup_failures (scope, subject, failed_at)"
        " VALUES ('employer', $1, $3), ('address', $2, $3)",
        employer,
        address,
        at,
    )


async def purge_failures(conn: asyncpg.Connection, before: datetime) -> int:
    """Forget failures that left every window; return how many."""
    result: str = await conn.execute("DELETE FROM lookup_failures WHERE failed_at < $1", before)
    return int(result.rsplit(" ", 1)[-1])


async def record_lookup(
    conn: asyncpg.Connection,
    *,
    ssin: str,
    employer: str,
    at: datetime,
    code_month: date,
    reader_role: str = "employer",
) -> None:
    """Audit a successful code look-up (the student lists it); ``reader_role`` is the
    token's role, ``employer`` or ``agency``."""
    await conn.execute(
        "INSERT INTO access_code_lookups (ssin, employer, looked_up_at, code_month, reader_role)"
        " VALUES ($1, $2, $3, $4, $5)",
        ssin,
        employer,
        at,
        code_month,
        reader_role,
    )


async def record_agency_read(
    conn: asyncpg.Connection, *, ssin: str, agency: str, at: datetime
) -> None:
    """Audit an agency's read of a consenting student's remaining hours."""
    await conn.execute(
        "INSERT INTO agency_reads (ssin, agency, read_at) VALUES ($1, $2, $3)", ssin, agency, at
    )


@dataclass(frozen=True)
class LookupRow:
    """One read of a student's remaining hours: by access code, or by an agency under
    the student's consent (``code_month`` None)."""

    employer: str
    looked_up_at: datetime
    code_month: date | None
    reader_role: str
    via: str


async def lookups_of(conn: asyncpg.Connection, ssin: str, limit: int) -> list[LookupRow]:
    """Who read a student's remaining hours (code look-ups and agency reads), newest first."""
    rows = await conn.fetch(
        "SELECT employer, looked_up_at, code_month, reader_role, via FROM ("
        "  SELECT id, employer, looked_up_at, code_month, reader_role, 'access_code' AS via"
        "  FROM access_code_lookups WHERE ssin = $1"
        "  UNION ALL"
        "  SELECT id, agency, read_at, NULL::date, 'agency', 'consent'"
        "  FROM agency_reads WHERE ssin = $1"
        ") AS reads ORDER BY looked_up_at DESC, via, id DESC LIMIT $2",
        ssin,
        limit,
    )
    return [
        LookupRow(r["employer"], r["looked_up_at"], r["code_month"], r["reader_role"], r["via"])
        for r in rows
    ]


async def purge_expired_pdfs(conn: asyncpg.Connection, today: date, ebox_months: int) -> list[str]:
    """Drop the stored PDF of every attestation whose eBox period ended before ``today``
    and that the student did not archive in the eBox; return their ids, in order.

    The period is the eBox document's (``available_until``), or for an attestation that
    never reached the eBox, its issue day plus ``ebox_months`` (PostgreSQL's month
    arithmetic clamps to the month's last day, as :func:`db.ebox.add_months_clamped`).
    An archived document keeps its attestation's PDF. The row stays, without its bytes.
    """
    rows = await conn.fetch(
        """
        UPDATE attestations a SET pdf = NULL, pdf_purged_at = now()
        WHERE a.status = 'issued' AND a.pdf IS NOT NULL
          AND NOT EXISTS (
              SELECT 1 FROM ebox_documents d
              WHERE d.attestation_id = a.attestation_id AND d.ssin = a.ssin
                AND (d.archived_at IS NOT NULL OR d.available_until >= $1))
          AND coalesce(
              (SELECT max(d.available_until) FROM ebox_documents d
               WHERE d.attestation_id = a.attestation_id AND d.ssin = a.ssin),
              (a.issued_on + make_interval(months => $2))::date) < $1
        RETURNING a.attestation_id
        """,
        today,
        ebox_months,
    )
    return sorted(r["attestation_id"] for r in rows)


async def purge_lookups(conn: asyncpg.Connection, before: datetime) -> int:
    """Delete the audit rows of reads older than ``before`` (code look-ups and agency
    reads: the student's list of who looked); return how many."""
    lookups: str = await conn.execute(
        "DELETE FROM access_code_lookups WHERE looked_up_at < $1", before
    )
    agency: str = await conn.execute("DELETE FROM agency_reads WHERE read_at < $1", before)
    return int(lookups.rsplit(" ", 1)[-1]) + int(agency.rsplit(" ", 1)[-1])
