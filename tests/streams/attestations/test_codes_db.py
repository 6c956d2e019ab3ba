"""Access codes in a real PostgreSQL: on-demand creation, bulk rotation, idempotency."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path

import asyncpg
import pytest

from db import attestations as queries
from db.migrate import migrate
from db.store import lock_students
from producers.access_code_scheduler import rotation_commands
from quota.access_codes import format_code, lookup_digest
from schemas.partitioning import student_key_hash
from schemas.settings import Settings
from streams.attestations import (
    AccessCodes,
    partition_of,
    rotate_partition,
    store_rotated_codes,
)
from tests.support import (
    Outgoing,
    Pipeline,
    WorkerProcess,
    brussels_millis,
    collect,
    dimona_in,
    publish,
    valid_ssin,
)

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


async def key_hashes(pool: asyncpg.Pool) -> dict[str, int | None]:
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT ssin, key_hash FROM students ORDER BY ssin")
    return {r["ssin"]: r["key_hash"] for r in rows}


async def test_students_inserted_by_the_pipeline_carry_the_hash_kafka_partitions_them_by(
    kafka_bootstrap: str, database_url: str, tmp_path: Path
) -> None:
    await migrate(database_url)
    pipeline = Pipeline(kafka_bootstrap, database_url, extra_env={"STUDENTWORK_PARTITIONS": "3"})
    students = [valid_ssin("060708", serial) for serial in range(201, 241, 2)]
    # Rows from before the hash was stored: the worker fills theirs in when it starts.
    older = [valid_ssin("010203", serial) for serial in range(11, 31, 2)]
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("INSERT INTO students (ssin) SELECT unnest($1::text[])", older)
    finally:
        await conn.close()
    topic = pipeline.topic("dimona.declarations")
    with WorkerProcess(pipeline, tmp_path / "worker.log"):
        await publish(
            kafka_bootstrap,
            [
                Outgoing.json(
                    topic,
                    ssin,
                    dimona_in(f"kh-{ssin}", ssin=ssin, hours=10),
                    brussels_millis(date(2026, 6, 1)),
                )
                for ssin in students
            ],
        )
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
        try:
            async with asyncio.timeout(90):  # a bound against a hang, not a measure
                while True:
                    stored = await key_hashes(pool)
                    if len(stored) == len(students) + len(older) and None not in stored.values():
                        break
                    await asyncio.sleep(0.2)
        finally:
            await pool.close()
    # Where the broker put each student's record, by the producer's partitioner.
    records = await collect(kafka_bootstrap, topic, count=len(students))
    placed = {r["key"]: r["partition"] for r in records}
    assert sorted(placed) == sorted(students)
    assert {ssin: stored[ssin] % 3 for ssin in students} == placed
    assert stored == {ssin: student_key_hash(ssin) for ssin in [*students, *older]}


async def test_rotating_every_partition_gives_every_student_exactly_one_code(
    pool: asyncpg.Pool, codes: AccessCodes
) -> None:
    # The fixture's students have no hash (rows from before it was stored); these get theirs
    # as the pipeline inserts students.
    hashed = [valid_ssin("070809", serial) for serial in range(301, 361, 3)]
    async with pool.acquire() as conn, conn.transaction():
        await lock_students(conn, hashed)
    before = await key_hashes(pool)
    assert {s for s, h in before.items() if h is None} == set(STUDENTS)
    assert all(before[s] == student_key_hash(s) for s in hashed)

    commands = rotation_commands(DECEMBER, 3, NOW)
    created = [await rotate_partition(pool, codes, c, NOW, chunk=4) for c in commands]
    everyone = sorted([*STUDENTS, *hashed])
    assert created == [sum(1 for s in everyone if partition_of(s, 3) == p) for p in range(3)]
    rows = await snapshot(pool)
    assert [row[0] for row in rows] == everyone
    assert {row[1] for row in rows} == {DECEMBER}
    assert len({row[2] for row in rows}) == len(everyone)
    # Each sealed code opens for its owner and is the one its digest indexes.
    async with pool.acquire() as conn:
        stored = await queries.codes_of_month(conn, everyone, DECEMBER)
    for ssin, _, digest, _ in rows:
        assert lookup_digest(codes.unseal(stored[ssin]).code, codes.keys.lookup) == digest
    # The rows without a hash got theirs on the way.
    assert await key_hashes(pool) == {s: student_key_hash(s) for s in everyone}


async def test_rows_without_a_hash_are_rotated_whichever_partition_runs_first(
    pool: asyncpg.Pool, codes: AccessCodes
) -> None:
    last, *others = reversed(rotation_commands(DECEMBER, 4, NOW))
    assert await rotate_partition(pool, codes, last, NOW) == sum(
        1 for s in STUDENTS if partition_of(s, 4) == 3
    )
    # The first rotation filled every row's hash in, not only its partition's.
    assert await key_hashes(pool) == {s: student_key_hash(s) for s in STUDENTS}
    # Partitions run side by side, as workers owning them do.
    rest = await asyncio.gather(*(rotate_partition(pool, codes, c, NOW) for c in others))
    assert rest == [sum(1 for s in STUDENTS if partition_of(s, 4) == c.partition) for c in others]
    assert [row[0] for row in await snapshot(pool)] == sorted(STUDENTS)


async def test_a_chunk_racing_an_attestation_stores_the_others_and_keeps_the_first_code(
    pool: asyncpg.Pool, codes: AccessCodes
) -> None:
    chunk = codes.new_codes(STUDENTS[:10], DECEMBER)  # minted for students lacking a code
    meanwhile = STUDENTS[3]
    async with pool.acquire() as conn, conn.transaction():  # an attestation gets there first
        first = (await codes.month_codes(conn, {meanwhile}, DECEMBER))[meanwhile].code
    async with pool.acquire() as conn:
        # The cheap plain insert refuses the whole chunk, rolled back...
        with pytest.raises(asyncpg.UniqueViolationError):
            async with conn.transaction():
                await queries.insert_codes(conn, chunk, expect_conflicts=False)
        assert await conn.fetchval("SELECT count(*) FROM access_codes") == 1
        # ...so the rotation stores it again, skipping the student who has a code.
        assert await store_rotated_codes(conn, chunk) == 9
        stored = await queries.codes_of_month(conn, STUDENTS[:10], DECEMBER)
    assert sorted(stored) == sorted(STUDENTS[:10])
    assert codes.unseal(stored[meanwhile]).code == first
