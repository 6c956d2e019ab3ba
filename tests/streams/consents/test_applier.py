"""The consent agent's unit of work against a real PostgreSQL, without Kafka.

Stream order inside one batch, replays, key checks and dead letters are decided here;
the module beside this one drives the same code through the worker.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from schemas.settings import Settings
from streams.consents import ConsentApplier, Rejection, parse
from streams.processor import RawRecord
from tests.support import EMPLOYER_A, EMPLOYER_B, STUDENT, valid_ssin

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


def record(offset: int, body: dict[str, object] | bytes | None, key: str = STUDENT) -> RawRecord:
    value = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    return RawRecord("consents", 0, offset, None, key.encode(), value)


def change(
    event_id: str, action: str, agency: str = EMPLOYER_A, ssin: str = STUDENT, minutes: int = 0
) -> dict[str, object]:
    return {
        "eventId": event_id,
        "ssin": ssin,
        "agency": agency,
        "action": action,
        "changedAt": (T0 + timedelta(minutes=minutes)).isoformat(),
    }


async def states(pool: asyncpg.Pool) -> dict[tuple[str, str], bool]:
    rows = await pool.fetch("SELECT ssin, agency, active FROM consents")
    return {(r["ssin"], r["agency"]): r["active"] for r in rows}


async def test_the_last_change_in_stream_order_wins_within_one_batch(
    pool: asyncpg.Pool, database_url: str
) -> None:
    applier = ConsentApplier(pool, Settings(database_url=database_url), lambda: T0)
    other = valid_ssin("010203", 124)
    batch = [
        record(0, change("g1", "grant")),
        record(1, change("r1", "revoke", minutes=1)),
        # changedAt earlier than the revoke: stream order decides, not the timestamp.
        record(2, change("g2", "grant", minutes=-5)),
        record(3, change("g3", "grant", agency=EMPLOYER_B)),
        record(4, change("r3", "revoke", agency=EMPLOYER_B)),
        record(5, change("r-unknown", "revoke", ssin=other), key=other),
        record(6, change("g1", "grant")),  # the same event twice in one batch
    ]
    report = await applier.apply(batch)
    assert (report.applied, report.replayed, report.rejected) == (6, 1, 0)
    assert await states(pool) == {(STUDENT, EMPLOYER_A): True, (STUDENT, EMPLOYER_B): False}
    row = await pool.fetchrow(
        "SELECT granted_at, revoked_at FROM consents WHERE agency = $1", EMPLOYER_B
    )
    assert row["granted_at"] == T0 and row["revoked_at"] == T0
    history = await pool.fetchval("SELECT count(*) FROM consent_changes")
    assert history == 6

    # A redelivery of the whole batch changes nothing.
    again = await applier.apply(batch)
    assert (again.applied, again.replayed) == (0, 7)
    assert await states(pool) == {(STUDENT, EMPLOYER_A): True, (STUDENT, EMPLOYER_B): False}


async def test_invalid_records_become_one_dead_letter_each(
    pool: asyncpg.Pool, database_url: str
) -> None:
    applier = ConsentApplier(pool, Settings(database_url=database_url), lambda: T0)
    batch = [
        record(0, change("bad-ssin", "grant", ssin="93051822362")),
        record(1, change("wrong-key", "grant"), key=valid_ssin("010203", 124)),
        record(2, change("bad-action", "maybe")),
        record(3, None),
        record(4, change("fine", "grant")),
    ]
    report = await applier.apply(batch)
    assert (report.applied, report.rejected) == (1, 4)
    assert await applier.apply(batch) == type(report)(applied=0, replayed=5, rejected=0)
    rows = await pool.fetch("SELECT topic, value FROM outbox ORDER BY id")
    assert [r["topic"] for r in rows] == ["declarations.rejected"] * 4
    reasons = [json.loads(r["value"])["reason"] for r in rows]
    assert "ssin" in reasons[0]
    assert "key" in reasons[1]
    assert "action" in reasons[2]
    assert "empty" in reasons[3]
    assert await states(pool) == {(STUDENT, EMPLOYER_A): True}


def test_parse_accepts_written_forms_and_normalises() -> None:
    body = change("e", "grant", agency="BE 0123.456.749", ssin="93.05.18-223.61")
    parsed = parse(record(0, body))
    assert not isinstance(parsed, Rejection)
    assert (parsed.ssin, parsed.agency) == (STUDENT, EMPLOYER_A)
