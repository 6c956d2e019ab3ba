"""Access codes in a real PostgreSQL: on-demand creation, bulk rotation, idempotency."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime

import asyncpg
import pytest

from db import attestations as queries
from db.migrate import migrate
from producers.access_code_scheduler import rotation_commands
from quota.access_codes import format_code, lookup_digest
from schemas.settings import Settings
from streams.attestations import AccessCodes, partition_of, rotate_partition
from tests.support import valid_ssin

pytestmark = pytest.mark.integration

DECEMBER = date(2026, 12, 1)
NOW = datetime(2026, 12, 1, 0, 0, 5, tzinfo=UTC)
STUDENTS = [valid_ssin("040506", serial) for serial in range(11, 91, 2)]


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    await migrate(database_url)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    async with pool.acquire() as conn:
        await conn.execute("INSERT INTO students (ssin) SELECT unnest($1::text[])", STUDENTS)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
def codes() -> AccessCodes:
    return AccessCodes(Settings(access_code_validity_months=3))


async def snapshot(pool: asyncpg.Pool) -> list[tuple[str, date, bytes, bytes]]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT ssin, month, digest, sealed FROM access_codes ORDER BY ssin, month"
        )
    return [(r["ssin"], r["month"], r["digest"], r["sealed"]) for r in rows]


async def test_rotation_gives_each_student_one_code_by_partition_and_twice_changes_nothing(
    pool: asyncpg.Pool, codes: AccessCodes
) -> None:
    commands = rotation_commands(DECEMBER, 2, NOW)
    created = [await rotate_partition(pool, codes, c, NOW, chunk=7) for c in commands]
    mine = [sum(1 for s in STUDENTS if partition_of(s, 2) == p) for p in (0, 1)]
    assert created == mine
    first = await snapshot(pool)
    assert [row[0] for row in first] == sorted(STUDENTS)
    assert {row[1] for row in first} == {DECEMBER}

    # Twice, even concurrently: nothing changes but the run counter.
    again = await asyncio.gather(*(rotate_partition(pool, codes, c, NOW) for c in commands))
    assert again == [0, 0]
    assert await snapshot(pool) == first
    async with pool.acquire() as conn:
        rotations = await conn.fetch(
            "SELECT partition, runs, codes_created FROM access_code_rotations"
            " WHERE month = $1 ORDER BY partition",
            DECEMBER,
        )
        assert await queries.rotated_partitions(conn, DECEMBER) == {0, 1}
    assert [(r["partition"], r["runs"], r["codes_created"]) for r in rotations] == [
        (0, 2, mine[0]),
        (1, 2, mine[1]),
    ]


async def test_on_demand_and_rotation_agree_on_the_month_code(
    pool: asyncpg.Pool, codes: AccessCodes
) -> None:
    student = STUDENTS[0]

    async def ask() -> str:
        async with pool.acquire() as conn, conn.transaction():
            return (await codes.month_codes(conn, {student}, date(2026, 12, 17)))[student].code

    # Two attestations at once, then a rotation: one code for the month, whoever was first.
    first, second = await asyncio.gather(ask(), ask())
    assert first == second
    for command in rotation_commands(DECEMBER, 2, NOW):
        await rotate_partition(pool, codes, command, NOW)
    assert await ask() == first
    rows = [row for row in await snapshot(pool) if row[0] == student]
    assert len(rows) == 1
    _, month, digest, sealed = rows[0]
    assert month == DECEMBER
    # Stored as digest and sealed form, never as text.
    assert digest == lookup_digest(format_code(first), codes.keys.lookup)
    assert first.encode() not in sealed
    async with pool.acquire() as conn:
        stored = await conn.fetchrow(
            "SELECT valid_from, valid_until FROM access_codes WHERE ssin = $1", student
        )
    assert (stored["valid_from"], stored["valid_until"]) == (DECEMBER, date(2027, 2, 28))


async def test_a_sealed_code_cannot_be_moved_to_another_student(
    pool: asyncpg.Pool, codes: AccessCodes
) -> None:
    victim, other = STUDENTS[0], STUDENTS[1]
    async with pool.acquire() as conn, conn.transaction():
        await codes.month_codes(conn, {victim, other}, DECEMBER)
        await conn.execute(
            "UPDATE access_codes SET sealed = (SELECT sealed FROM access_codes WHERE ssin = $1)"
            " WHERE ssin = $2",
            victim,
            other,
        )
    async with pool.acquire() as conn:
        stored = await queries.codes_of_month(conn, [other], DECEMBER)
    with pytest.raises(ValueError, match="failed authentication"):
        codes.unseal(stored[other])
