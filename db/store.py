"""Queries of the system of record, each set-based so a batch costs a few round trips.

Every function takes a connection that the caller holds inside a transaction: the
batch processor decides what is atomic, these functions only read and write rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from db.reads import period_from_row, wage_report_from_row
from quota.ledger import Period, StudentLedger, WageReport
from schemas.partitioning import student_key_hash
from schemas.topics import ACKS


@dataclass(frozen=True)
class OutboxMessage:
    topic: str
    key: bytes | None
    value: bytes
    #: The partition the message is for; None: the key's (the default partitioner).
    partition: int | None = None


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


async def lock_students(
    conn: asyncpg.Connection, ssins: Iterable[str], *, create: bool = True
) -> dict[str, int]:
    """Create missing student rows, lock all of them, return their next acceptance rank.

    Locking in SSIN order serialises two transactions that touch the same student (two
    agents, or a partition handed over during a rebalance) without deadlocks. With
    ``create=False``, students without a row are left out (a recompute, which reads its
    students from their rows, spares the hashing of every SSIN).
    """
    ordered = sorted(set(ssins))
    # A new row gets its partitioner hash (schemas.partitioning): the access-code rotation
    # selects a partition's students by it in SQL.
    if create:
        await conn.execute(
            "INSERT INTO students (ssin, key_hash)"
            " SELECT * FROM unnest($1::text[], $2::integer[]) ORDER BY 1 ON CONFLICT DO NOTHING",
            ordered,
            [student_key_hash(ssin) for ssin in ordered],
        )
    rows = await conn.fetch(LOCK_STUDENTS, ordered)
    return {r["ssin"]: r["next_seq"] for r in rows}


# The rows of a set of keys are read by joining the key array, never by
# `column = ANY($1)`. asyncpg prepares every statement, and after five runs PostgreSQL
# may keep a generic plan made while the table was small: a sequential scan whose filter
# compares each row with every element of the (parameter) array, one by one. That plan
# costs rows x keys text comparisons: measured in the benchmark, 85 ms instead of 3 for
# 500 students against 9,000 periods, PostgreSQL's CPU per record 0.098 or 0.157 ms in
# two runs of one code depending on which plan a connection kept, and growing with the
# table. A join is linear in either plan (an index probe per key, or one hash).
LOCK_STUDENTS = (
    "SELECT s.ssin, s.next_seq FROM unnest($1::text[]) AS k(ssin)"
    " JOIN students s ON s.ssin = k.ssin ORDER BY s.ssin FOR UPDATE OF s"
)
PERIODS_OF_STUDENTS = (
    "SELECT p.* FROM unnest($1::text[]) AS k(ssin) JOIN periods p ON p.ssin = k.ssin"
)
WAGE_REPORTS_OF_STUDENTS = (
    "SELECT r.* FROM unnest($1::text[]) AS k(ssin) JOIN wage_reports r ON r.ssin = k.ssin"
)
EXISTING_PERIODS = (
    "SELECT DISTINCT p.period_id FROM unnest($1::text[]) AS k(period_id)"
    " JOIN periods p ON p.period_id = k.period_id"
)
APPLIED_EVENTS = (
    "SELECT DISTINCT a.event_id, a.digest, a.origin FROM unnest($1::text[]) AS k(event_id)"
    " JOIN applied_events a ON a.event_id = k.event_id"
)


async def load_ledgers(
    conn: asyncpg.Connection, ssins: Iterable[str], year: int | None = None
) -> dict[str, StudentLedger]:
    """The ledgers of the given students (locked with :func:`lock_students`).

    With ``year``, only that year's periods (by start date) and wage reports: all a
    balance of the year depends on (a recompute), not what a command may change.
    """
    return await read_ledgers(conn, await lock_students(conn, ssins), year)


async def read_ledgers(
    conn: asyncpg.Connection, next_seqs: Mapping[str, int], year: int | None = None
) -> dict[str, StudentLedger]:
    """The ledgers of students already locked (``next_seqs``, as :func:`lock_students`
    returns them), as :func:`load_ledgers` reads them."""
    ledgers = {ssin: StudentLedger(ssin, next_seq=seq) for ssin, seq in next_seqs.items()}
    periods = PERIODS_OF_STUDENTS
    reports = WAGE_REPORTS_OF_STUDENTS
    if year is not None:
        periods += (
            " AND p.start_date >= make_date($2, 1, 1) AND p.start_date < make_date($2 + 1, 1, 1)"
        )
        reports += " AND r.year = $2"
    wanted = list(next_seqs)
    of_year = () if year is None else (year,)
    # A chunk of students at a time: the rows of a whole batch's students, alive beside
    # the periods made of them, were its largest allocation (memray: 26 of 169 MB).
    for start in range(0, len(wanted), _LEDGER_READ_CHUNK):
        chunk = wanted[start : start + _LEDGER_READ_CHUNK]
        for r in await conn.fetch(periods, chunk, *of_year):
            ledgers[r["ssin"]].periods[r["period_id"]] = period_from_row(r)
        for r in await conn.fetch(reports, chunk, *of_year):
            report = wage_report_from_row(r)
            ledgers[r["ssin"]].wage_reports[(report.employer, report.year, report.quarter)] = report
    return ledgers


#: Students whose stored rows :func:`load_ledgers` reads in one query.
_LEDGER_READ_CHUNK = 500


async def existing_period_ids(conn: asyncpg.Connection, period_ids: Sequence[str]) -> set[str]:
    """Which of ``period_ids`` some period already has."""
    rows = await conn.fetch(EXISTING_PERIODS, list(period_ids))
    return {r["period_id"] for r in rows}


async def ssins_with_data_in_year(
    conn: asyncpg.Connection, year: int, share: tuple[int, int] | None = None
) -> list[str]:
    """The students with a period or a wage report in ``year``, in SSIN order.

    ``share`` = (partition, partitions) keeps those whose key hash falls on that
    partition (``key_hash % partitions``, see :mod:`schemas.partitioning`): the shares
    of 0 .. partitions - 1 divide the students between them, once their key hashes are
    filled in (rows from before migration 0013 may still lack theirs).

    Each student is asked whether a row of the year exists (two index probes) rather than
    every row of the year read and deduplicated: each share of a recompute runs this, and
    the union of the year's rows cost a twentieth of the recompute (pg_stat_statements).
    """
    query = (
        "SELECT ssin FROM students s WHERE (EXISTS (SELECT 1 FROM periods p"
        " WHERE p.ssin = s.ssin AND p.start_date >= make_date($1, 1, 1)"
        " AND p.start_date < make_date($1 + 1, 1, 1))"
        " OR EXISTS (SELECT 1 FROM wage_reports w WHERE w.ssin = s.ssin AND w.year = $1))"
    )
    if share is None:
        rows = await conn.fetch(f"{query} ORDER BY 1", year)
    else:
        partition, partitions = share
        rows = await conn.fetch(
            f"{query} AND s.key_hash % $2 = $3 ORDER BY 1", year, partitions, partition
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
        await conn.execute(
            """
            INSERT INTO periods (period_id, ssin, employer, declarant, start_date, end_date,
                tranche_seqs, tranche_hours, planned_hours, received_at, late, cancelled,
                event_id, joint_commission, using_employer)
            SELECT p, s, e, d, sd, ed, ts::bigint[], th::integer[], ph, ra, l, c, ev, jc, ue
            FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::date[], $6::date[],
                $7::text[], $8::text[], $9::bigint[], $10::timestamptz[], $11::bool[],
                $12::bool[], $13::text[], $14::text[], $15::text[])
                AS u(p, s, e, d, sd, ed, ts, th, ph, ra, l, c, ev, jc, ue)
            ON CONFLICT (period_id) DO UPDATE SET end_date = EXCLUDED.end_date,
                tranche_seqs = EXCLUDED.tranche_seqs, tranche_hours = EXCLUDED.tranche_hours,
                planned_hours = EXCLUDED.planned_hours, cancelled = EXCLUDED.cancelled
            """,
            [p.period_id for p in periods],
            period_owner,
            [p.employer for p in periods],
            [p.declarant for p in periods],
            [p.start for p in periods],
            [p.end for p in periods],
            [_int_array([t.seq for t in p.tranches]) for p in periods],
            [_int_array([t.hours for t in p.tranches]) for p in periods],
            [p.planned_hours for p in periods],
            [p.received_at for p in periods],
            [p.late for p in periods],
            [p.cancelled for p in periods],
            [p.event_id for p in periods],
            [p.joint_commission for p in periods],
            [p.using_employer for p in periods],
        )
    if reports:
        await conn.execute(
            """
            INSERT INTO wage_reports (ssin, employer, year, quarter, hours_worked,
                gross_wage_cents, received_at, event_id, seq, tranche_seqs, tranche_hours)
            SELECT s, e, y, q, hw, gw, ra, ev, sq, ts::bigint[], th::integer[]
            FROM unnest($1::text[], $2::text[], $3::int[], $4::int[], $5::bigint[],
                $6::bigint[], $7::timestamptz[], $8::text[], $9::bigint[], $10::text[],
                $11::text[])
                AS u(s, e, y, q, hw, gw, ra, ev, sq, ts, th)
            ON CONFLICT (ssin, employer, year, quarter) DO UPDATE SET
                hours_worked = EXCLUDED.hours_worked, gross_wage_cents = EXCLUDED.gross_wage_cents,
                received_at = EXCLUDED.received_at, event_id = EXCLUDED.event_id,
                tranche_seqs = EXCLUDED.tranche_seqs, tranche_hours = EXCLUDED.tranche_hours
            """,
            [ssin for ssin, _ in reports],
            [r.employer for _, r in reports],
            [r.year for _, r in reports],
            [r.quarter for _, r in reports],
            [r.hours_worked for _, r in reports],
            [r.gross_wage_cents for _, r in reports],
            [r.received_at for _, r in reports],
            [r.event_id for _, r in reports],
            [r.seq for _, r in reports],
            [
                None if r.tranches is None else _int_array([t.seq for t in r.tranches])
                for _, r in reports
            ],
            [
                None if r.tranches is None else _int_array([t.hours for t in r.tranches])
                for _, r in reports
            ],
        )


def _int_array(values: Sequence[int]) -> str:
    """An integer array as PostgreSQL's array literal (``{1,2,3}``).

    The tranches of the rows of one statement have different lengths, which no
    two-dimensional array parameter can carry: each row's array travels as its literal
    in a ``text[]`` parameter and is cast back in the statement, so a batch's rows are
    written by one ``unnest`` statement instead of one ``executemany`` round per row.
    """
    return "{" + ",".join(map(str, values)) + "}"


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
    rows = await conn.fetch(APPLIED_EVENTS, list(event_ids))
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


async def requested_recomputes(conn: asyncpg.Connection) -> dict[int, int]:
    """Per year, the quota its last requested recompute recomputes to."""
    rows = await conn.fetch("SELECT year, hours FROM quota_recomputes")
    return {int(r["year"]): int(r["hours"]) for r in rows}


async def request_recompute(conn: asyncpg.Connection, year: int, hours: int, event_id: str) -> None:
    """Record that the balances of ``year`` are being recomputed to ``hours``."""
    await conn.execute(
        "INSERT INTO quota_recomputes (year, hours, event_id) VALUES ($1, $2, $3)"
        " ON CONFLICT (year) DO UPDATE SET hours = EXCLUDED.hours,"
        " event_id = EXCLUDED.event_id, requested_at = now()",
        year,
        hours,
        event_id,
    )


async def set_quota(conn: asyncpg.Connection, year: int, hours: int, event_id: str) -> None:
    await conn.execute(
        "INSERT INTO quota_years (year, hours, event_id) VALUES ($1, $2, $3)"
        " ON CONFLICT (year) DO UPDATE SET hours = EXCLUDED.hours, event_id = EXCLUDED.event_id,"
        " changed_at = now()",
        year,
        hours,
        event_id,
    )


async def save_balances(
    conn: asyncpg.Connection,
    rows: Sequence[tuple[str, int, int, int, int, dict[str, Any]]],
) -> dict[tuple[str, int], int]:
    """Store the (ssin, year, quota, used, remaining, document) rows whose document
    differs from the stored one; return the new version of each row stored.

    One statement, compared in PostgreSQL (``jsonb`` equality, which like the domain's
    documents ignores key order and not list order): the worker neither fetches nor
    decodes the stored documents to find which balances changed. A new balance is
    version 1, a changed one its stored version plus one; an unchanged one is left as
    it is, absent from the result. A key given twice keeps its last row.
    """
    latest = {(s, y): (s, y, q, u, r, d) for s, y, q, u, r, d in rows}
    if not latest:
        return {}
    given = list(latest.values())
    stored = await conn.fetch(
        """
        INSERT INTO balances AS b (ssin, year, quota, used, remaining, version, document)
        SELECT s, y, q, u, r, 1, d::jsonb
        FROM unnest($1::text[], $2::int[], $3::bigint[], $4::bigint[], $5::bigint[], $6::text[])
            AS n(s, y, q, u, r, d)
        ON CONFLICT (ssin, year) DO UPDATE SET quota = EXCLUDED.quota, used = EXCLUDED.used,
            remaining = EXCLUDED.remaining, version = b.version + 1,
            document = EXCLUDED.document, updated_at = now()
        WHERE b.document IS DISTINCT FROM EXCLUDED.document
        RETURNING ssin, year, version
        """,
        [g[0] for g in given],
        [g[1] for g in given],
        [g[2] for g in given],
        [g[3] for g in given],
        [g[4] for g in given],
        [orjson.dumps(g[5]).decode() for g in given],
    )
    return {(r["ssin"], r["year"]): r["version"] for r in stored}


async def requota_balances(
    conn: asyncpg.Connection, ssins: Sequence[str], year: int, quota: int
) -> dict[str, tuple[int, str]]:
    """Give the students' balances of ``year`` the quota ``quota`` in place, where that
    is all a recompute would change; return the new version and document (JSON text)
    of each balance changed, by SSIN.

    A balance whose used hours fit within both its stored quota and ``quota`` had every
    hour at the reduced rate and keeps them all there (:func:`quota.balance.compute_balance`
    fills the quota in acceptance order, and nothing else in it depends on the quota), so
    only ``quota`` and ``remaining`` change. Balances above either quota, already at
    ``quota``, or absent are left to the caller, to be computed from their ledgers.
    """
    rows = await conn.fetch(
        """
        UPDATE balances AS b SET quota = $3, remaining = $3 - b.used, version = b.version + 1,
            document = b.document
                || jsonb_build_object('quota', $3::int, 'remaining', $3::int - b.used),
            updated_at = now()
        FROM unnest($1::text[]) AS s(ssin)
        WHERE b.ssin = s.ssin AND b.year = $2 AND b.quota <> $3 AND b.used <= least(b.quota, $3)
        RETURNING b.ssin, b.version, b.document::text AS document
        """,
        list(ssins),
        year,
        quota,
    )
    return {r["ssin"]: (r["version"], r["document"]) for r in rows}


#: Copies each answer onto the HTTP declaration waiting for it: the first answer of the
#: statement naming a declaration still unanswered (``$1``: the answers, in order).
_ANSWER_WAITING_DECLARATIONS = """
UPDATE http_declarations h SET answer = a.reply, answered_at = now()
  FROM (SELECT DISTINCT ON (r.reply->>'eventId') r.reply->>'eventId' AS event_id, r.reply
          FROM (SELECT n, convert_from(v, 'UTF8')::jsonb AS reply
                  FROM unnest($1::bytea[]) WITH ORDINALITY AS m(v, n)) AS r
         ORDER BY r.reply->>'eventId', r.n) AS a
 WHERE h.ack_event_id = a.event_id AND h.answer IS NULL
"""


async def enqueue(conn: asyncpg.Connection, messages: Sequence[OutboxMessage]) -> None:
    """Add messages to the outbox, in order, in the caller's transaction.

    Answers among them are also copied onto the HTTP declarations waiting for them
    (``http_declarations``, which the API reads), but only once a look at the partial
    index ``http_declarations_unanswered`` found one waiting: a replay's answers are
    never parsed for that (migration 0020).
    """
    if not messages:
        return
    await conn.execute(
        "INSERT INTO outbox (topic, key, value, partition)"
        " SELECT t, k, v, p FROM unnest($1::text[], $2::bytea[], $3::bytea[], $4::int[])"
        " WITH ORDINALITY AS m(t, k, v, p, n) ORDER BY n",
        [m.topic for m in messages],
        [m.key for m in messages],
        [m.value for m in messages],
        [m.partition for m in messages],
    )
    answers = [m.value for m in messages if m.topic == ACKS]
    if answers and await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM http_declarations WHERE answer IS NULL)"
    ):
        await conn.execute(_ANSWER_WAITING_DECLARATIONS, answers)


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


@dataclass(frozen=True)
class EmployerIdentity:
    """An NSSO registration number known to belong to an enterprise (table ``employer_ids``).

    ``nsso_id`` is the employer id a message naming only the NSSO number gets
    (``NSSO<number>``, :func:`schemas.identifiers.nsso_employer_id`); ``origin`` says
    where it was learned: a record (``topic[partition]@offset``) or an operator's file.
    """

    nsso_id: str
    enterprise_number: str
    source: str = "message"
    origin: str | None = None


async def employer_identities(conn: asyncpg.Connection, nsso_ids: Iterable[str]) -> dict[str, str]:
    """The enterprise number each of ``nsso_ids`` is known to belong to."""
    wanted = sorted(set(nsso_ids))
    if not wanted:
        return {}
    rows = await conn.fetch(
        "SELECT e.nsso_id, e.enterprise_number FROM unnest($1::text[]) AS k(nsso_id)"
        " JOIN employer_ids e ON e.nsso_id = k.nsso_id",  # a join: see LOCK_STUDENTS
        wanted,
    )
    return {r["nsso_id"]: r["enterprise_number"] for r in rows}


#: The advisory lock class of NSSO numbers (the two-key form: apart from the relay's).
EMPLOYER_IDS_LOCK = 0x4E53534F
#: NSSO numbers share this many locks (by a hash): a batch naming thousands of numbers
#: takes at most this many, well within PostgreSQL's lock table.
EMPLOYER_IDS_LOCK_SLOTS = 64


async def lock_employer_ids(
    conn: asyncpg.Connection, *, learning: Iterable[str] = (), naming: Iterable[str] = ()
) -> None:
    """Lock NSSO numbers for the transaction: exclusively those it may learn the
    enterprise of (``learning``), shared those it stores rows under (``naming``).

    Learning a number moves every row stored under it to the enterprise number
    (:func:`merge_employer_rows`), which sees only committed rows: a batch that stored a
    row under the number meanwhile, not knowing it yet, would leave that row behind for
    good. With the locks, a learner waits for the batches naming the number, and they
    for it, after which they read the mapping again. The numbers share
    :data:`EMPLOYER_IDS_LOCK_SLOTS` locks by a hash (two numbers in one slot only wait
    for each other while one is learned, once per employer), taken in the slots' order,
    in one statement, so two transactions never wait for each other's second lock.
    """
    exclusive = set(learning)
    numbers = sorted(exclusive | set(naming))
    if numbers:
        await conn.execute(
            "SELECT CASE WHEN s.exclusive THEN pg_advisory_xact_lock($3, s.slot)"
            " ELSE pg_advisory_xact_lock_shared($3, s.slot) END"
            " FROM (SELECT abs(hashtext(u.nsso_id) % $4) AS slot, bool_or(u.exclusive)"
            " AS exclusive FROM unnest($1::text[], $2::bool[]) AS u(nsso_id, exclusive)"
            " GROUP BY 1 ORDER BY 1) AS s",
            numbers,
            [number in exclusive for number in numbers],
            EMPLOYER_IDS_LOCK,
            EMPLOYER_IDS_LOCK_SLOTS,
        )


async def learn_employer_identities(
    conn: asyncpg.Connection, identities: Sequence[EmployerIdentity]
) -> list[EmployerIdentity]:
    """Store the identities not known yet; return those stored now.

    The caller has checked them against :func:`employer_identities`: a known NSSO number
    keeps its enterprise (a row is never changed), so a concurrent learner of the same
    number changes nothing here.
    """
    if not identities:
        return []
    rows = await conn.fetch(
        "INSERT INTO employer_ids (nsso_id, enterprise_number, source, origin)"
        " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])"
        " ON CONFLICT (nsso_id) DO NOTHING RETURNING nsso_id",
        [i.nsso_id for i in identities],
        [i.enterprise_number for i in identities],
        [i.source for i in identities],
        [i.origin for i in identities],
    )
    stored = {r["nsso_id"] for r in rows}
    return [i for i in identities if i.nsso_id in stored]


async def merge_employer_rows(
    conn: asyncpg.Connection, nsso_id: str, enterprise_number: str
) -> set[str]:
    """Move the ledger rows stored under ``nsso_id`` to ``enterprise_number``; return the
    students whose rows moved (locked, with :func:`lock_students`).

    The declarations keep their places. A DmfA line moved into a group that has one of
    its own (two lines of one employer and quarter) leaves the one received later, as a
    corrected DmfA replaces the previous one; a moved DmfA's places are derived again
    from the declarations of the group it joins (as for reports stored before they were
    kept), so its hours take the places of those declarations instead of queueing as a
    DmfA without declaration. The caller recomputes the students' balances.
    """
    groups = await conn.fetch(
        "SELECT ssin, extract(year FROM start_date)::int AS year,"
        " extract(quarter FROM start_date)::int AS quarter FROM periods WHERE employer = $1"
        " UNION SELECT ssin, year, quarter FROM wage_reports WHERE employer = $1",
        nsso_id,
    )
    ssins = {g["ssin"] for g in groups}
    if not ssins:
        return ssins
    await lock_students(conn, ssins)
    await conn.execute(
        "UPDATE periods SET employer = $2 WHERE employer = $1", nsso_id, enterprise_number
    )
    await conn.execute(
        """
        DELETE FROM wage_reports w USING wage_reports o
        WHERE (o.ssin, o.year, o.quarter) = (w.ssin, w.year, w.quarter)
          AND ((w.employer = $1 AND o.employer = $2) OR (w.employer = $2 AND o.employer = $1))
          AND (o.received_at, o.employer) > (w.received_at, w.employer)
        """,
        nsso_id,
        enterprise_number,
    )
    await conn.execute(
        """
        UPDATE wage_reports w SET employer = $2, tranche_seqs = NULL, tranche_hours = NULL
        FROM unnest($3::text[], $4::int[], $5::int[]) AS g(ssin, year, quarter)
        WHERE w.employer IN ($1, $2) AND (w.ssin, w.year, w.quarter) = (g.ssin, g.year, g.quarter)
        """,
        nsso_id,
        enterprise_number,
        [g["ssin"] for g in groups],
        [g["year"] for g in groups],
        [g["quarter"] for g in groups],
    )
    return ssins


async def prune_applied_events(conn: asyncpg.Connection, before: datetime) -> int:
    """Forget the event ids applied before ``before``; return how many.

    Only safe when no record applied before that moment can still be delivered, that is
    when ``before`` lies further back than the consumed topics keep records
    (:func:`streams.retention.applied_ids_horizon` decides it): a redelivered record whose
    id was forgotten would be applied a second time.
    """
    result: str = await conn.execute("DELETE FROM applied_events WHERE applied_at < $1", before)
    return int(result.rsplit(" ", 1)[-1])


async def lock_students_without_key_hash(
    conn: asyncpg.Connection, *, after: str, limit: int
) -> list[str]:
    """Lock and return the next ``limit`` students (by SSIN, after ``after``) without a hash.

    Rows from before the hash was stored; keyset pages, so each page starts where the last
    ended instead of stepping again over the index entries of the rows already filled. In
    the caller's transaction: the partial index of migration 0013 yields them in SSIN
    order, the order every batch locks students in (:func:`db.store.lock_students`), so
    this never deadlocks with a batch, and a second filler waits for the first and then
    skips the rows it filled. Once every row has its hash this is one empty index probe.
    """
    rows = await conn.fetch(
        "SELECT ssin FROM students WHERE key_hash IS NULL AND ssin > $1"
        " ORDER BY ssin LIMIT $2 FOR UPDATE",
        after,
        limit,
    )
    return [r["ssin"] for r in rows]


async def set_key_hashes(
    conn: asyncpg.Connection, ssins: Sequence[str], hashes: Sequence[int]
) -> None:
    """Store the key hash of students locked by :func:`lock_students_without_key_hash`.

    ``ssins`` in SSIN order: the range of the chunk keeps PostgreSQL to an index range
    scan instead of a pass over the whole table per chunk.
    """
    if not ssins:
        return
    await conn.execute(
        "UPDATE students s SET key_hash = u.key_hash"
        " FROM unnest($1::text[], $2::integer[]) AS u(ssin, key_hash)"
        " WHERE s.ssin = u.ssin AND s.key_hash IS NULL AND s.ssin BETWEEN $3 AND $4",
        ssins,
        hashes,
        ssins[0],
        ssins[-1],
    )
