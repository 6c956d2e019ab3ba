"""Queries of the student's eBox: delivered attestations, their retention and archiving.

A document stays available for a number of months after delivery (two by default,
DOMAIN.md section 5), unless the student archives it. Documents past that date are
hidden at once by every read here and deleted by :func:`purge_expired`, which the eBox
consumer runs periodically. Every function takes a connection; the caller decides what
is atomic.
"""

from __future__ import annotations

import calendar
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

import asyncpg

#: Namespace of the document ids: UUID v5 of the delivery's event id.
DOCUMENT_NAMESPACE = uuid.UUID("6f1d8f3e-5b8a-4d55-9a52-0c1b5e0e6b11")


def document_id(event_id: str) -> uuid.UUID:
    """The document id of a delivery: stable, so a rebuilt eBox keeps every address."""
    return uuid.uuid5(DOCUMENT_NAMESPACE, event_id)


def add_months_clamped(day: date, months: int) -> date:
    """The same day ``months`` later, or the last day of that month when it is shorter.

    26 November + 2 months = 26 January; 31 December + 2 months = 28 (or 29) February.
    """
    index = day.year * 12 + (day.month - 1) + months
    year, month0 = divmod(index, 12)
    last = calendar.monthrange(year, month0 + 1)[1]
    return date(year, month0 + 1, min(day.day, last))


@dataclass(frozen=True)
class NewDocument:
    """A validated delivery, ready to store."""

    event_id: str
    attestation_id: str
    ssin: str
    year: int
    title: str
    file_name: str
    content_type: str
    content: bytes
    sha256: str
    issued_at: datetime

    @property
    def id(self) -> uuid.UUID:
        return document_id(self.event_id)


@dataclass(frozen=True)
class Document:
    """A document as the student sees it in the listing (without its bytes)."""

    id: uuid.UUID
    title: str
    year: int
    file_name: str
    content_type: str
    size: int
    issued_at: datetime
    delivered_at: datetime
    available_until: date
    archived_at: datetime | None

    @property
    def archived(self) -> bool:
        return self.archived_at is not None


@dataclass(frozen=True)
class Content:
    """The bytes of a document, for download."""

    file_name: str
    content_type: str
    content: bytes


_VISIBLE = "(archived_at IS NOT NULL OR available_until >= $2)"
_COLUMNS = (
    "id, title, year, file_name, content_type, octet_length(content) AS size, issued_at,"
    " delivered_at, available_until, archived_at"
)


def _document(r: asyncpg.Record) -> Document:
    return Document(
        id=r["id"],
        title=r["title"],
        year=r["year"],
        file_name=r["file_name"],
        content_type=r["content_type"],
        size=r["size"],
        issued_at=r["issued_at"],
        delivered_at=r["delivered_at"],
        available_until=r["available_until"],
        archived_at=r["archived_at"],
    )


async def insert_documents(
    conn: asyncpg.Connection,
    documents: Sequence[NewDocument],
    *,
    delivered_at: datetime,
    available_until: date,
) -> int:
    """Store new documents; one already stored (same event or attestation) is skipped.

    Returns how many rows were inserted.
    """
    if not documents:
        return 0
    rows = await conn.fetch(
        """
        INSERT INTO ebox_documents (id, event_id, attestation_id, ssin, year, title,
            file_name, content_type, content, sha256, issued_at, delivered_at,
            available_until)
        SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int[],
            $6::text[], $7::text[], $8::text[], $9::bytea[], $10::text[],
            $11::timestamptz[], $12::timestamptz[], $13::date[])
        ON CONFLICT DO NOTHING
        RETURNING id
        """,
        [d.id for d in documents],
        [d.event_id for d in documents],
        [d.attestation_id for d in documents],
        [d.ssin for d in documents],
        [d.year for d in documents],
        [d.title for d in documents],
        [d.file_name for d in documents],
        [d.content_type for d in documents],
        [d.content for d in documents],
        [d.sha256 for d in documents],
        [d.issued_at for d in documents],
        [delivered_at] * len(documents),
        [available_until] * len(documents),
    )
    return len(rows)


async def list_documents(conn: asyncpg.Connection, ssin: str, today: date) -> list[Document]:
    """The student's visible documents, newest first."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM ebox_documents WHERE ssin = $1 AND {_VISIBLE}"
        " ORDER BY delivered_at DESC, id",
        ssin,
        today,
    )
    return [_document(r) for r in rows]


async def document_content(
    conn: asyncpg.Connection, ssin: str, doc_id: uuid.UUID, today: date
) -> Content | None:
    """The bytes of one of the student's visible documents; None for any other."""
    row = await conn.fetchrow(
        f"SELECT file_name, content_type, content FROM ebox_documents"
        f" WHERE ssin = $1 AND {_VISIBLE} AND id = $3",
        ssin,
        today,
        doc_id,
    )
    if row is None:
        return None
    return Content(row["file_name"], row["content_type"], bytes(row["content"]))


async def archive(
    conn: asyncpg.Connection, ssin: str, doc_id: uuid.UUID, today: date, now: datetime
) -> Document | None:
    """Archive one of the student's visible documents (again: no change); None if none."""
    row = await conn.fetchrow(
        f"UPDATE ebox_documents SET archived_at = coalesce(archived_at, $4)"
        f" WHERE ssin = $1 AND {_VISIBLE} AND id = $3 RETURNING {_COLUMNS}",
        ssin,
        today,
        doc_id,
        now,
    )
    return _document(row) if row is not None else None


async def purge_expired(conn: asyncpg.Connection, today: date) -> int:
    """Delete documents whose availability ended before ``today`` and that are not archived.

    Returns how many were deleted. Their delivery event ids stay applied, so a replay of
    the topic does not bring them back.
    """
    result: str = await conn.execute(
        "DELETE FROM ebox_documents WHERE archived_at IS NULL AND available_until < $1", today
    )
    return int(result.split()[-1])
