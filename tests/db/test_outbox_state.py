"""The outbox figures operators watch (the health view's backlog, the metrics' gauges,
`studentwork monitor`), read on a real PostgreSQL from the partial indexes that remain
once migration 0019 dropped ``outbox_pending``."""

from __future__ import annotations

import asyncpg
import pytest

from db.reads import OutboxState, outbox_state, relay_backlog

pytestmark = pytest.mark.integration


async def add(conn: asyncpg.Connection, state: str, age_seconds: int) -> None:
    """An outbox row ``age_seconds`` old: waiting, sent (kept by a retention) or failed."""
    await conn.execute(
        "INSERT INTO outbox (topic, key, value, created_at, sent_at, failed_at, failure)"
        " VALUES ('t.dimona.acks', 'k'::bytea, '{}'::bytea,"
        "  now() - make_interval(secs => $1),"
        "  CASE WHEN $2 = 'sent' THEN now() END,"
        "  CASE WHEN $2 = 'failed' THEN now() END,"
        "  CASE WHEN $2 = 'failed' THEN 'too large' END)",
        age_seconds,
        state,
    )


async def test_backlog_failed_and_oldest_age_count_each_row_in_its_state(
    conn: asyncpg.Connection,
) -> None:
    # One transaction, so that now() is one instant for the rows and the read: the age
    # is exact, whatever time the test takes.
    async with conn.transaction():
        for state, age in [
            ("sent", 7200),
            ("waiting", 300),
            ("failed", 3600),
            ("waiting", 60),
            ("sent", 10),
            ("waiting", 5),
        ]:
            await add(conn, state, age)

        state = await outbox_state(conn)

    # The sent rows are older than any waiting one, and the failed row older too: neither
    # counts as waiting, nor gives the age.
    assert state == OutboxState(backlog=3, failed=1, oldest_age_seconds=300.0)
    assert await relay_backlog(conn) == 3


async def test_an_empty_or_all_sent_outbox_has_no_backlog_and_no_age(
    conn: asyncpg.Connection,
) -> None:
    assert await outbox_state(conn) == OutboxState(backlog=0, failed=0, oldest_age_seconds=0.0)
    await add(conn, "sent", 100)
    assert await outbox_state(conn) == OutboxState(backlog=0, failed=0, oldest_age_seconds=0.0)
    assert await relay_backlog(conn) == 0


async def test_the_outbox_keeps_only_the_indexes_the_relay_and_the_counts_read(
    conn: asyncpg.Connection,
) -> None:
    indexes = await conn.fetch(
        "SELECT indexname FROM pg_indexes WHERE tablename = 'outbox' ORDER BY indexname"
    )
    assert [row["indexname"] for row in indexes] == [
        "outbox_failed",
        "outbox_pkey",
        "outbox_sent",
        "outbox_unsent",
        "outbox_unsent_bucket",
    ]
