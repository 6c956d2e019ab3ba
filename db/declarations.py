"""Dimona declarations received over HTTP, their answers, and secretariats' mandates.

``POST /v1/declarations`` stores a row here and the declaration's record in the outbox in
one transaction; the worker applies the record like any other from ``dimona.declarations``
and its answer is copied onto the row as the answer enters the outbox
(:func:`db.store.enqueue`: one statement per insert, sent only while some declaration
waits for one; migration 0020), so the API reads answers from PostgreSQL alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg


@dataclass(frozen=True)
class HttpDeclaration:
    declaration_id: str
    declarant: str
    employer: str
    ssin: str
    action: str
    event_id: str
    body_sha256: bytes
    received_at: datetime
    #: The worker's answer (``dimona.acks`` JSON), None until it decided.
    answer: dict[str, Any] | None


_COLUMNS = (
    "declaration_id, declarant, employer, ssin, action, event_id, body_sha256, received_at, answer"
)


def _declaration(row: asyncpg.Record) -> HttpDeclaration:
    answer = row["answer"]
    return HttpDeclaration(
        row["declaration_id"],
        row["declarant"],
        row["employer"],
        row["ssin"],
        row["action"],
        row["event_id"],
        bytes(row["body_sha256"]),
        row["received_at"],
        json.loads(answer) if isinstance(answer, str) else answer,
    )


async def by_event_id(
    conn: asyncpg.Connection, declarant: str, event_id: str
) -> HttpDeclaration | None:
    """The declaration a declarant sent under ``event_id`` (its idempotency key)."""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM http_declarations WHERE declarant = $1 AND event_id = $2",
        declarant,
        event_id,
    )
    return _declaration(row) if row is not None else None


async def by_id(conn: asyncpg.Connection, declaration_id: str) -> HttpDeclaration | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM http_declarations WHERE declaration_id = $1", declaration_id
    )
    return _declaration(row) if row is not None else None


async def id_taken(conn: asyncpg.Connection, declaration_id: str) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM http_declarations WHERE declaration_id = $1)"
            " OR EXISTS (SELECT 1 FROM periods WHERE period_id = $1)",
            declaration_id,
        )
    )


async def insert(conn: asyncpg.Connection, declaration: HttpDeclaration, ack_event_id: str) -> None:
    await conn.execute(
        "INSERT INTO http_declarations (declaration_id, declarant, employer, ssin, action,"
        " event_id, body_sha256, ack_event_id, received_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        declaration.declaration_id,
        declaration.declarant,
        declaration.employer,
        declaration.ssin,
        declaration.action,
        declaration.event_id,
        declaration.body_sha256,
        ack_event_id,
        declaration.received_at,
    )


@dataclass(frozen=True)
class PeriodOwner:
    period_id: str
    ssin: str
    employer: str


async def period_owner(conn: asyncpg.Connection, reference: str) -> PeriodOwner | None:
    """The student and employer of the period a follow-up names.

    ``reference`` is a period id, or the id of a ``dimonaIn`` declared over HTTP (Odoo
    sends the ``Location`` id back as its period reference): that declaration's period,
    the one its answer names once decided, else the one it will create.
    """
    row = await conn.fetchrow(
        "SELECT period_id, ssin, employer FROM periods WHERE period_id = $1", reference
    )
    if row is not None:
        return PeriodOwner(row["period_id"], row["ssin"], row["employer"])
    declared = await by_id(conn, reference)
    if declared is None or declared.action != "in":
        return None
    answered = (declared.answer or {}).get("periodId")
    if answered is not None and str(answered) != reference:
        return await period_owner(conn, str(answered))
    return PeriodOwner(reference, declared.ssin, declared.employer)


async def has_mandate(conn: asyncpg.Connection, secretariat: str, employer: str) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM mandates WHERE secretariat = $1 AND employer = $2)",
            secretariat,
            employer,
        )
    )


async def load_mandates(
    conn: asyncpg.Connection, mandates: Iterable[tuple[str, str]], *, replace: bool
) -> int:
    """Store (secretariat, employer) mandates; ``replace`` first forgets every other one.

    Returns how many mandates the table holds afterwards.
    """
    async with conn.transaction():
        if replace:
            await conn.execute("DELETE FROM mandates")
        await conn.executemany(
            "INSERT INTO mandates (secretariat, employer) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            list(mandates),
        )
        count: int = await conn.fetchval("SELECT count(*) FROM mandates")
    return count
