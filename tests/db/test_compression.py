"""Large balance documents and outbox messages are compressed with lz4 (migration 0018),
on a real PostgreSQL: a quota change rewrites every document and writes two outbox rows
for each, and pglz cost PostgreSQL a good part of that."""

from __future__ import annotations

import json

import asyncpg
import pytest

from db.store import OutboxMessage, enqueue, requota_balances, save_balances

pytestmark = pytest.mark.integration

SSIN = "01010100123"


def document(terms: int) -> dict[str, object]:
    """A balance document of ``terms`` terms: 1 stays under PostgreSQL's 2 kB threshold,
    40 go over it."""
    return {
        "ssin": SSIN,
        "year": 2026,
        "quota": 650,
        "used": 0,
        "remaining": 650,
        "terms": [
            {"employer": f"{n:010d}", "quarter": 1 + n % 4, "hours": 0, "periodIds": [str(n)]}
            for n in range(terms)
        ],
    }


async def compressions(conn: asyncpg.Connection, query: str) -> list[str | None]:
    """``pg_column_compression`` of each row ``query`` selects: the method, None if the
    value is stored uncompressed."""
    return [r[0] for r in await conn.fetch(query)]


async def test_large_documents_and_messages_are_stored_with_lz4(pool: asyncpg.Pool) -> None:
    small_ssin = "02020200246"
    async with pool.acquire() as conn, conn.transaction():
        await save_balances(
            conn,
            [
                (SSIN, 2026, 650, 0, 650, document(40)),
                (small_ssin, 2026, 650, 0, 650, {**document(1), "ssin": small_ssin}),
            ],
        )
        large = json.dumps(document(40)).encode()
        await enqueue(conn, [OutboxMessage("student.ledger", SSIN.encode(), large)])
    async with pool.acquire() as conn:
        by_ssin = "SELECT pg_column_compression(document) FROM balances ORDER BY ssin"
        # A small document is stored as it is; a large one compressed, with lz4.
        assert await compressions(conn, by_ssin) == ["lz4", None]
        outbox = "SELECT pg_column_compression(value) FROM outbox"
        assert await compressions(conn, outbox) == ["lz4"]
        # Set in place by a quota change, the document is written with lz4 again and
        # reads back whole.
        async with conn.transaction():
            requoted = await requota_balances(conn, [SSIN, small_ssin], 2026, 625)
        assert await compressions(conn, by_ssin) == ["lz4", None]
        assert json.loads(requoted[SSIN][1]) == {**document(40), "quota": 625, "remaining": 625}
