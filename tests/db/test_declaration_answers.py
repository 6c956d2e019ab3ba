"""The answers of HTTP declarations copied as they enter the outbox (``db.store.enqueue``,
migration 0020), on a real PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import pytest

from db.store import OutboxMessage, enqueue

pytestmark = pytest.mark.integration

ACKS = "dimona.acks"


async def declare(conn: asyncpg.Connection, declaration_id: str, ack_event_id: str) -> None:
    await conn.execute(
        "INSERT INTO http_declarations (declaration_id, declarant, employer, ssin, action,"
        " event_id, body_sha256, ack_event_id, received_at)"
        " VALUES ($1, 'declarant', '0202239951', '01010100123', 'CREATE', $1, '\\x00', $2,"
        " now())",
        declaration_id,
        ack_event_id,
    )


def message(topic: str, event_id: str, status: str) -> OutboxMessage:
    body = {"eventId": event_id, "status": status}
    return OutboxMessage(topic, b"01010100123", json.dumps(body).encode())


async def answers(conn: asyncpg.Connection) -> dict[str, Any]:
    rows = await conn.fetch(
        "SELECT declaration_id, answer, answered_at IS NOT NULL AS dated"
        " FROM http_declarations ORDER BY declaration_id"
    )
    return {
        row["declaration_id"]: (
            None if row["answer"] is None else json.loads(row["answer"]),
            row["dated"],
        )
        for row in rows
    }


async def test_each_waiting_declaration_takes_the_first_answer_that_names_it(
    conn: asyncpg.Connection,
) -> None:
    await declare(conn, "d1", "ack-1")
    await declare(conn, "d2", "ack-2")
    await declare(conn, "d3", "ack-3")
    async with conn.transaction():
        await enqueue(
            conn,
            [
                message("quota.balances", "ack-3", "NOT AN ANSWER"),
                message(ACKS, "ack-elsewhere", "ACCEPTED"),
                message(ACKS, "ack-2", "REFUSED"),
                message(ACKS, "ack-1", "ACCEPTED"),
                message(ACKS, "ack-2", "ACCEPTED"),
            ],
        )
    assert await answers(conn) == {
        "d1": ({"eventId": "ack-1", "status": "ACCEPTED"}, True),
        "d2": ({"eventId": "ack-2", "status": "REFUSED"}, True),
        "d3": (None, False),
    }

    # A later answer naming an answered declaration leaves it as it is.
    await enqueue(conn, [message(ACKS, "ack-1", "REFUSED"), message(ACKS, "ack-3", "ACCEPTED")])
    assert await answers(conn) == {
        "d1": ({"eventId": "ack-1", "status": "ACCEPTED"}, True),
        "d2": ({"eventId": "ack-2", "status": "REFUSED"}, True),
        "d3": ({"eventId": "ack-3", "status": "ACCEPTED"}, True),
    }


async def test_answers_with_no_declaration_waiting_are_only_stored_in_the_outbox(
    conn: asyncpg.Connection,
) -> None:
    await declare(conn, "d1", "ack-1")
    await enqueue(conn, [message(ACKS, "ack-1", "ACCEPTED")])
    # Nobody waits now: an answer that is not even JSON is not read at all.
    await enqueue(conn, [OutboxMessage(ACKS, None, b"not json")])
    assert await conn.fetchval("SELECT count(*) FROM outbox WHERE topic = $1", ACKS) == 2
    assert await answers(conn) == {"d1": ({"eventId": "ack-1", "status": "ACCEPTED"}, True)}
