"""Queries of agency consents and of the one figure an agency may read: remaining hours.

Like :mod:`db.store`, every function takes a connection; the caller decides what is
atomic (the consent agent applies a whole batch in one transaction).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from quota import QuotaRules
from schemas.consents import ConsentChange


@dataclass(frozen=True)
class Consent:
    """A student's consent to one agency, as it stands after the latest change."""

    agency: str
    active: bool
    granted_at: datetime | None
    revoked_at: datetime | None
    updated_at: datetime


async def apply_changes(conn: asyncpg.Connection, changes: Sequence[ConsentChange]) -> None:
    """Apply changes in the given (stream) order: the last one per (ssin, agency) wins.

    A grant (re)activates the consent and clears any earlier revocation; a revoke keeps
    the grant time so the student still sees when they had agreed. A revoke of a consent
    that never existed is kept in the history only: there is nothing to withdraw.
    Statements run in order (``executemany``), which is what makes "last wins" hold
    inside one batch.
    """
    if not changes:
        return
    await conn.executemany(
        "INSERT INTO consent_changes (event_id, ssin, agency, action, changed_at)"
        " VALUES ($1, $2, $3, $4, $5)",
        [(c.event_id, c.ssin, c.agency, c.action, c.changed_at) for c in changes],
    )
    grant = """
        INSERT INTO consents (ssin, agency, active, granted_at, revoked_at, event_id)
        VALUES ($1, $2, true, $3, NULL, $4)
        ON CONFLICT (ssin, agency) DO UPDATE SET active = true,
            granted_at = EXCLUDED.granted_at, revoked_at = NULL,
            event_id = EXCLUDED.event_id, updated_at = now()
    """
    revoke = """
        UPDATE consents SET active = false, revoked_at = $3, event_id = $4, updated_at = now()
        WHERE ssin = $1 AND agency = $2
    """
    # Consecutive changes of the same kind go in one executemany; the order across kinds
    # is kept by flushing whenever the kind changes.
    run: list[tuple[str, str, datetime, str]] = []
    kind: str | None = None
    for change in changes:
        if change.action != kind and run:
            await conn.executemany(grant if kind == "grant" else revoke, run)
            run = []
        kind = change.action
        run.append((change.ssin, change.agency, change.changed_at, change.event_id))
    if run:
        await conn.executemany(grant if kind == "grant" else revoke, run)


async def list_consents(conn: asyncpg.Connection, ssin: str) -> list[Consent]:
    """Every agency the student ever consented to, active ones first."""
    rows = await conn.fetch(
        "SELECT agency, active, granted_at, revoked_at, updated_at FROM consents"
        " WHERE ssin = $1 ORDER BY active DESC, updated_at DESC, agency",
        ssin,
    )
    return [
        Consent(r["agency"], r["active"], r["granted_at"], r["revoked_at"], r["updated_at"])
        for r in rows
    ]


async def has_active_consent(conn: asyncpg.Connection, ssin: str, agency: str) -> bool:
    active = await conn.fetchval(
        "SELECT active FROM consents WHERE ssin = $1 AND agency = $2", ssin, agency
    )
    return bool(active)


async def remaining_hours(conn: asyncpg.Connection, ssin: str, year: int, rules: QuotaRules) -> int:
    """The student's remaining hours of ``year``: the stored balance, else the full quota.

    A student without any declaration that year has no balance row; their remaining
    hours are the whole quota of the year, operators' changes (``quota_years``)
    included. The quota table is read without the quota lock: an API read must not wait
    for a year-wide recomputation, and either side of it is a correct answer.
    """
    remaining = await conn.fetchval(
        "SELECT remaining FROM balances WHERE ssin = $1 AND year = $2", ssin, year
    )
    if remaining is not None:
        return int(remaining)
    rows = await conn.fetch("SELECT year, hours FROM quota_years")
    overridden = rules.with_overrides({r["year"]: r["hours"] for r in rows})
    return overridden.quota(year)
