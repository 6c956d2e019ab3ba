"""A ledger batch is applied in parts, by partition number, that decide as the whole would.

``STUDENTWORK_LEDGER_CONCURRENCY`` parts, each in its own transaction, at once
(``BatchProcessor.apply``). A simulated year applied in parts leaves exactly the balances
and the outbox of the same year applied whole; a batch whose parts share an idempotency
key, a new period's id or an NSSO number being learned is applied whole, so the earlier
record wins as it always did.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, date, datetime
from typing import Any

import asyncpg
import pytest

from db.migrate import migrate
from producers.simulator import generate
from schemas.settings import Settings
from schemas.topics import ACKS, DIMONA
from streams.processor import BatchProcessor, RawRecord
from tests.conftest import throwaway_database
from tests.support import EMPLOYER_A, STUDENT, brussels_millis, dimona_in, valid_ssin

pytestmark = pytest.mark.integration

T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
ON_TIME = brussels_millis(date(2026, 6, 1))
OTHER = valid_ssin("020304", 56)
NSSO_A = "0197412345"


def record(partition: int, offset: int, body: dict[str, Any], ssin: str = STUDENT) -> RawRecord:
    return RawRecord(DIMONA, partition, offset, ON_TIME, ssin.encode(), json.dumps(body).encode())


def processor(pool: asyncpg.Pool, database_url: str, concurrency: int) -> BatchProcessor:
    settings = Settings(database_url=database_url, ledger_concurrency=concurrency)
    return BatchProcessor(pool, settings, lambda: T0)


async def parts_of(processor: BatchProcessor, records: list[RawRecord]) -> list[list[int]]:
    """The offsets of each part the processor cuts ``records`` into."""
    parsed = [processor.parse(r) for r in records]
    return [[item.record.offset for item in part] for part in await processor._parts(parsed)]


async def test_a_batch_is_cut_by_partition_number_each_part_in_its_order(
    pool: asyncpg.Pool, database_url: str
) -> None:
    students = [valid_ssin("010203", n) for n in range(1, 7)]
    records = [
        record(partition, offset, dimona_in(f"e{offset}", ssin=ssin), ssin)
        for offset, (partition, ssin) in enumerate(zip([0, 1, 2, 3, 0, 1], students, strict=True))
    ]
    assert await parts_of(processor(pool, database_url, 2), records) == [[0, 2, 4], [1, 3, 5]]
    assert await parts_of(processor(pool, database_url, 4), records) == [[0, 4], [1, 5], [2], [3]]
    assert await parts_of(processor(pool, database_url, 1), records) == [[0, 1, 2, 3, 4, 5]]
    # One partition: one part, whatever the setting.
    alone = [record(2, n, dimona_in(f"a{n}")) for n in range(3)]
    assert await parts_of(processor(pool, database_url, 2), alone) == [[0, 1, 2]]


async def test_an_id_reused_for_two_students_in_two_parts_keeps_the_batch_whole(
    pool: asyncpg.Pool, database_url: str
) -> None:
    # One declarant's "42" for two students of two partitions: the earlier is applied,
    # the later refused, exactly as in one transaction.
    records = [
        record(1, 0, dimona_in("42", ssin=OTHER, hours=10), OTHER),
        record(0, 1, dimona_in("42", hours=20)),
        record(0, 2, dimona_in("43", hours=5)),
    ]
    parts = processor(pool, database_url, 2)
    assert await parts_of(parts, records) == [[0, 1, 2]]
    report = await parts.apply(records)
    assert (report.applied, report.rejected) == (2, 1)
    used = {r["ssin"]: r["used"] for r in await pool.fetch("SELECT ssin, used FROM balances")}
    assert used == {OTHER: 10, STUDENT: 5}
    refused = [
        json.loads(r["value"])
        for r in await pool.fetch("SELECT value FROM outbox WHERE topic = $1", ACKS)
        if json.loads(r["value"])["status"] == "B"
    ]
    assert [(a["inReplyTo"], a["anomalies"][0]["code"]) for a in refused] == [
        ("42", "DUPLICATE_EVENT_ID")
    ]


async def test_an_nsso_number_learned_in_one_part_and_named_in_another_keeps_it_whole(
    pool: asyncpg.Pool, database_url: str
) -> None:
    pair = {"enterpriseNumber": EMPLOYER_A, "nssoRegistrationNumber": NSSO_A}
    records = [
        record(0, 0, {**dimona_in("p", hours=10), "employer": pair}),
        record(
            1,
            1,
            {**dimona_in("n", ssin=OTHER, hours=20), "employer": {"employerId": NSSO_A}},
            OTHER,
        ),
    ]
    parts = processor(pool, database_url, 2)
    assert await parts_of(parts, records) == [[0, 1]]
    await parts.apply(records)
    # Both under the enterprise number: the second was decided knowing the first's pair.
    rows = await pool.fetch("SELECT ssin, employer FROM periods ORDER BY ssin")
    assert sorted((r["ssin"], r["employer"]) for r in rows) == sorted(
        [(STUDENT, EMPLOYER_A), (OTHER, EMPLOYER_A)]
    )
    # Once the number is known, nothing is learned any more: the parts go their ways.
    later = [
        record(0, 2, {**dimona_in("p2", hours=1), "employer": pair}),
        record(
            1,
            3,
            {**dimona_in("n2", ssin=OTHER, hours=1), "employer": {"employerId": NSSO_A}},
            OTHER,
        ),
    ]
    assert await parts_of(parts, later) == [[2], [3]]


async def _replay(
    admin_dsn: str, records: list[RawRecord], concurrency: int
) -> tuple[list[tuple[Any, ...]], dict[tuple[str, bytes | None, str | None], list[bytes]], int]:
    """The balances, the outbox per topic, key and student, and how many batches were cut in
    more than one part, of ``records`` applied in batches of 400 with ``concurrency``
    parts, on a new database."""
    async with throwaway_database(admin_dsn, "parts") as url:
        await migrate(url)
        pool = await asyncpg.create_pool(url, min_size=1, max_size=concurrency + 1)
        try:
            applier = processor(pool, url, concurrency)
            cut = 0
            for start in range(0, len(records), 400):
                batch = records[start : start + 400]
                cut += len(await applier._parts([applier.parse(r) for r in batch])) > 1
                await applier.apply(batch)
            balances = [
                tuple(r)
                for r in await pool.fetch(
                    "SELECT ssin, year, quota, used, remaining, version, document::text"
                    " FROM balances ORDER BY ssin, year"
                )
            ]
            # Kafka keeps order per key, and a key's messages about one student are in
            # one part; the answers to one employer about different students are
            # independent messages (as from two workers), compared per student.
            outbox: dict[tuple[str, bytes | None, str | None], list[bytes]] = defaultdict(list)
            for r in await pool.fetch("SELECT topic, key, value FROM outbox ORDER BY id"):
                student = json.loads(r["value"]).get("ssin")
                outbox[(r["topic"], r["key"], student)].append(r["value"])
            # Refusals naming no student: one by one, in no order between the parts.
            for group, values in outbox.items():
                if group[2] is None:
                    values.sort()
        finally:
            await pool.close()
    return balances, dict(outbox), cut


async def test_a_simulated_year_in_parts_gives_the_ledger_and_outbox_of_the_whole(
    postgres_admin_dsn: str,
) -> None:
    records = [
        RawRecord(r.topic, int(r.key) % 4, offset, r.timestamp_ms, r.key.encode(), r.value)
        for offset, r in enumerate(generate(2025, 300, 5))
    ]
    assert len({r.partition for r in records}) == 4
    whole = await _replay(postgres_admin_dsn, records, 1)
    in_parts = await _replay(postgres_admin_dsn, records, 2)
    assert len(whole[0]) > 250
    assert in_parts[0] == whole[0]
    assert in_parts[1] == whole[1]
    # The parts were really cut: most batches in two, none in one.
    assert whole[2] == 0
    assert in_parts[2] > len(records) // 400 // 2
