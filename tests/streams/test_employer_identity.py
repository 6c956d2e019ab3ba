"""One employer, one identity: a Dimona under the enterprise number and a DmfA under the
NSSO registration number of the same employer make one term (issue 8, item 4).

The batch processor runs on a real PostgreSQL server; records are handed to it as the
runtime would (the pipeline test at the end goes through Kafka and the worker process).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from db.store import EmployerIdentity
from schemas.settings import Settings
from schemas.topics import ACKS, DIMONA, DMFA
from streams.cli import read_employer_ids
from streams.processor import BatchProcessor, RawRecord
from tests.support import (
    EMPLOYER_A,
    EMPLOYER_B,
    STUDENT,
    Outgoing,
    Pipeline,
    WorkerProcess,
    brussels_millis,
    collect,
    dimona_in,
    dmfa,
    latest_by_key,
    publish,
    valid_ssin,
)

pytestmark = pytest.mark.integration

T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
OTHER = valid_ssin("020304", 56)
#: Employer A's NSSO registration number, as written with a leading zero.
NSSO_A = "0197412345"
ON_TIME = brussels_millis(date(2026, 6, 1))
AFTER_Q3 = brussels_millis(date(2026, 10, 20))


@pytest.fixture
def processor(pool: asyncpg.Pool, database_url: str) -> BatchProcessor:
    # 475 hours for 2026 reproduces the worked examples of DOMAIN.md.
    settings = Settings(database_url=database_url, quota_hours={2026: 475})
    return BatchProcessor(pool, settings, lambda: T0)


class Records:
    """Records of one test, numbered like a partition's offsets."""

    def __init__(self) -> None:
        self.offset = 0

    def __call__(self, topic: str, body: dict[str, Any], ssin: str = STUDENT) -> RawRecord:
        self.offset += 1
        moment = ON_TIME if topic == DIMONA else AFTER_Q3
        return RawRecord(topic, 0, self.offset, moment, ssin.encode(), json.dumps(body).encode())


def nsso_only(body: dict[str, Any], number: Any = NSSO_A) -> dict[str, Any]:
    """The body filed under the NSSO number alone (``employerId``, as Dimona REST v2)."""
    return {**body, "employer": {"employerId": number}}


def both_numbers(body: dict[str, Any], enterprise: str = EMPLOYER_A) -> dict[str, Any]:
    """The body naming the enterprise number and the NSSO number (older field name)."""
    return {
        **body,
        "employer": {"enterpriseNumber": enterprise, "nssoRegistrationNumber": NSSO_A},
    }


async def terms(
    pool: asyncpg.Pool, ssin: str = STUDENT
) -> list[tuple[str, int, str, int, int, int]]:
    """(employer, quarter, source, hours, reduced, ordinary) of the stored 2026 balance."""
    document = json.loads(
        await pool.fetchval("SELECT document FROM balances WHERE ssin = $1 AND year = 2026", ssin)
    )
    return [
        (
            t["employer"],
            t["quarter"],
            t["source"],
            t["hours"],
            t["reducedHours"],
            t["ordinaryHours"],
        )
        for t in document["terms"]
    ]


async def figures(pool: asyncpg.Pool, ssin: str = STUDENT) -> tuple[int, int, int, int]:
    """(used, remaining, reduced, ordinary) of the stored 2026 balance."""
    document = json.loads(
        await pool.fetchval("SELECT document FROM balances WHERE ssin = $1 AND year = 2026", ssin)
    )
    return (
        document["used"],
        document["remaining"],
        document["reducedHours"],
        document["ordinaryHours"],
    )


async def answers(pool: asyncpg.Pool) -> dict[str, dict[str, Any]]:
    rows = await pool.fetch("SELECT key, value FROM outbox WHERE topic = $1 ORDER BY id", ACKS)
    return {json.loads(r["value"])["inReplyTo"]: json.loads(r["value"]) for r in rows}


async def test_an_imported_mapping_makes_the_dmfa_under_the_nsso_number_one_term(
    pool: asyncpg.Pool, processor: BatchProcessor
) -> None:
    report = await processor.import_employer_identities(
        [EmployerIdentity("NSSO197412345", EMPLOYER_A, "operator", "ids.csv:1")]
    )
    assert (report.learned, report.students) == (1, 0)
    r = Records()
    await processor.apply(
        [
            r(DIMONA, dimona_in("a-300", hours=300)),
            r(DIMONA, dimona_in("b-200", employer=EMPLOYER_B, hours=200)),
            r(DMFA, nsso_only(dmfa("a-dmfa", hours=280))),
        ]
    )
    # One term for A: the DmfA replaces A's planned hours in A's place; B keeps its 175
    # reduced hours and gains 20 of those A freed.
    assert await terms(pool) == [
        (EMPLOYER_A, 3, "dmfa", 280, 280, 0),
        (EMPLOYER_B, 3, "planned", 200, 195, 5),
    ]
    assert await figures(pool) == (480, 0, 475, 5)
    got = await answers(pool)
    assert (got["b-200"]["reducedHours"], got["b-200"]["ordinaryHours"]) == (175, 25)
    dmfa_answer = got["a-dmfa"]
    assert (dmfa_answer["status"], dmfa_answer["employer"], dmfa_answer["anomalies"]) == (
        "A",
        EMPLOYER_A,
        [],
    )
    rows = await pool.fetch("SELECT employer FROM wage_reports")
    assert [r["employer"] for r in rows] == [EMPLOYER_A]


async def test_a_mapping_learned_after_both_terms_exist_recomputes_the_students(
    pool: asyncpg.Pool, processor: BatchProcessor
) -> None:
    r = Records()
    await processor.apply(
        [
            r(DIMONA, dimona_in("a-300", hours=300)),
            r(DIMONA, dimona_in("b-200", employer=EMPLOYER_B, hours=200)),
            r(DMFA, nsso_only(dmfa("a-dmfa", hours=280))),
            # Another student of A: planned 40, then 40 worked under the NSSO number.
            r(DIMONA, dimona_in("o-40", ssin=OTHER, hours=40), ssin=OTHER),
            r(DMFA, nsso_only(dmfa("o-dmfa", ssin=OTHER, hours=40), 197412345), ssin=OTHER),
        ]
    )
    # Two identities, two terms: A's hours counted twice, the DmfA queued behind B.
    assert await terms(pool) == [
        (EMPLOYER_A, 3, "planned", 300, 300, 0),
        (EMPLOYER_B, 3, "planned", 200, 175, 25),
        ("NSSO197412345", 3, "dmfa", 280, 0, 280),
    ]
    assert await figures(pool, OTHER) == (80, 395, 80, 0)
    assert (await answers(pool))["a-dmfa"]["anomalies"][0]["code"] == "DMFA_WITHOUT_DECLARATION"

    # A later declaration of A names both numbers: the mapping is learned, what was
    # stored under the NSSO number becomes A's, and both students are recomputed.
    await processor.apply(
        [r(DIMONA, both_numbers(dimona_in("a-q4", start="2026-10-05", end="2026-10-09", hours=10)))]
    )
    assert await terms(pool) == [
        (EMPLOYER_A, 3, "dmfa", 280, 280, 0),
        (EMPLOYER_B, 3, "planned", 200, 195, 5),
        (EMPLOYER_A, 4, "planned", 10, 0, 10),
    ]
    assert await figures(pool) == (490, 0, 475, 15)
    assert await figures(pool, OTHER) == (40, 435, 40, 0)
    assert await terms(pool, OTHER) == [(EMPLOYER_A, 3, "dmfa", 40, 40, 0)]
    identity = await pool.fetchrow("SELECT * FROM employer_ids")
    assert (identity["nsso_id"], identity["enterprise_number"], identity["source"]) == (
        "NSSO197412345",
        EMPLOYER_A,
        "message",
    )
    assert identity["origin"] == "dimona.declarations[0]@6"
    reports = await pool.fetch("SELECT ssin, employer, hours_worked FROM wage_reports ORDER BY 1")
    assert [tuple(r) for r in reports] == [(OTHER, EMPLOYER_A, 40), (STUDENT, EMPLOYER_A, 280)]
    # The recomputed balances are published: the student not in the batch as well.
    published = await pool.fetch(
        "SELECT value FROM outbox WHERE topic = 'student.balances' AND key = $1 ORDER BY id",
        f"{OTHER}:2026".encode(),
    )
    assert [json.loads(r["value"])["used"] for r in published] == [80, 40]

    # A replay of the DmfA filed under the NSSO number stays a replay.
    before = await pool.fetchval("SELECT count(*) FROM outbox")
    replay = RawRecord(
        DMFA,
        0,
        3,
        AFTER_Q3,
        STUDENT.encode(),
        json.dumps(nsso_only(dmfa("a-dmfa", hours=280))).encode(),
    )
    report = await processor.apply([replay])
    assert (report.applied, report.replayed) == (0, 1)
    assert await pool.fetchval("SELECT count(*) FROM outbox") == before


async def test_a_message_pairing_a_known_nsso_number_with_another_enterprise_is_refused(
    pool: asyncpg.Pool, processor: BatchProcessor
) -> None:
    await processor.import_employer_identities(
        [EmployerIdentity("NSSO197412345", EMPLOYER_A, "operator", "ids.csv:1")]
    )
    r = Records()
    report = await processor.apply(
        [r(DIMONA, both_numbers(dimona_in("b-30", employer=EMPLOYER_B), EMPLOYER_B))]
    )
    assert (report.applied, report.rejected) == (0, 1)
    refusal = (await answers(pool))["b-30"]
    assert (refusal["status"], refusal["employer"], refusal["anomalies"][0]["code"]) == (
        "B",
        EMPLOYER_B,
        "EMPLOYER_IDS_CONFLICT",
    )
    # The sender is not told which enterprise the number belongs to.
    assert EMPLOYER_A not in refusal["anomalies"][0]["text"]
    assert await pool.fetchval("SELECT count(*) FROM periods") == 0
    assert await pool.fetchval("SELECT enterprise_number FROM employer_ids") == EMPLOYER_A
    # An operator cannot remap it either: the line is reported, nothing changes.
    again = await processor.import_employer_identities(
        [
            EmployerIdentity("NSSO197412345", EMPLOYER_B, "operator", "ids.csv:1"),
            EmployerIdentity("NSSO197412345", EMPLOYER_A, "operator", "ids.csv:2"),
        ]
    )
    assert (again.learned, again.known, [c.origin for c in again.conflicts]) == (
        0,
        1,
        ["ids.csv:1"],
    )


def test_the_import_file_is_read_with_the_contracts_rules(tmp_path: Path) -> None:
    path = tmp_path / "ids.csv"
    path.write_text(
        "nsso,enterprise\n"
        "0197412345,0123.456.749\n"
        "100234567,BE 0403 170 701\n"
        "\n"
        "12A,0123456749\n"
        "0,0123456749\n"
        "100234568,0123456748\n"
        "1,2,3\n",
        encoding="utf-8",
    )
    identities, refused = read_employer_ids(path)
    assert [(i.nsso_id, i.enterprise_number, i.origin) for i in identities] == [
        ("NSSO197412345", EMPLOYER_A, "ids.csv:2"),
        ("NSSO100234567", EMPLOYER_B, "ids.csv:3"),
    ]
    assert refused == [
        "line 5: NSSO number must contain only digits (dots, dashes, slashes and spaces are "
        "allowed)",
        "line 6: NSSO number cannot be zero: no employer is registered under it",
        "line 7: enterprise number check digits do not match the rest of the number",
        "line 8: expected 2 columns (nsso, enterprise), got 3",
    ]


async def test_through_the_worker_a_dimona_and_a_dmfa_under_either_number_count_once(
    kafka_bootstrap: str, database_url: str, tmp_path: Path
) -> None:
    pipeline = Pipeline(
        kafka_bootstrap, database_url, extra_env={"STUDENTWORK_QUOTA_HOURS": '{"2026": 475}'}
    )
    with WorkerProcess(pipeline, tmp_path / "worker.log"):
        b = pipeline.kafka_bootstrap
        await publish(
            b,
            [
                Outgoing.json(
                    pipeline.topic(DIMONA),
                    STUDENT,
                    both_numbers(dimona_in("a-300", hours=300)),
                    ON_TIME,
                ),
                Outgoing.json(
                    pipeline.topic(DIMONA),
                    STUDENT,
                    dimona_in("b-200", employer=EMPLOYER_B, hours=200),
                    ON_TIME,
                ),
            ],
        )
        await collect(b, pipeline.topic(ACKS), count=2)
        await publish(
            b,
            [
                Outgoing.json(
                    pipeline.topic(DMFA), STUDENT, nsso_only(dmfa("a-dmfa", hours=280)), AFTER_Q3
                )
            ],
        )
        acks = await collect(b, pipeline.topic(ACKS), count=3)
        ledger = latest_by_key(
            await collect(b, pipeline.topic("student.ledger"), count=2, settle=1.0)
        )
    got = {a["value"]["inReplyTo"]: a["value"] for a in acks}
    assert (got["a-dmfa"]["status"], got["a-dmfa"]["employer"]) == ("A", EMPLOYER_A)
    record = ledger[f"{STUDENT}:2026"]
    assert (record["used"], record["reducedHours"], record["ordinaryHours"]) == (480, 475, 5)
    assert [
        (t["employer"], t["source"], t["hours"], t["reducedHours"], t["ordinaryHours"])
        for t in record["terms"]
    ] == [(EMPLOYER_A, "dmfa", 280, 280, 0), (EMPLOYER_B, "planned", 200, 195, 5)]


async def test_the_operator_command_imports_and_reports_every_refused_line(
    kafka_bootstrap: str, database_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "ids.csv"
    path.write_text("nsso,enterprise\n0197412345,0123.456.749\n12A,0123456749\n")
    env = {**os.environ, **Pipeline(kafka_bootstrap, database_url).env()}

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "infra", "employer-ids", "import", str(path)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    first = await asyncio.to_thread(run)
    assert first.returncode == 1
    assert first.stderr.splitlines() == [
        "refused: line 3: NSSO number must contain only digits (dots, dashes, slashes and "
        "spaces are allowed)"
    ]
    assert first.stdout.splitlines() == [
        "learned 1, already known 0, refused 1; 0 students merged, 0 balances re-published"
    ]
    path.write_text("0197412345,0403170701\n197412345,0123456749\n")
    second = await asyncio.to_thread(run)
    assert second.returncode == 1
    assert second.stderr.splitlines() == [
        "refused: ids.csv:1: NSSO 197412345 already belongs to another enterprise than "
        "0403170701; not changed"
    ]
    assert second.stdout.splitlines() == [
        "learned 0, already known 1, refused 1; 0 students merged, 0 balances re-published"
    ]
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT nsso_id, enterprise_number, source, origin FROM employer_ids"
        )
    finally:
        await conn.close()
    assert [tuple(r) for r in rows] == [("NSSO197412345", EMPLOYER_A, "operator", "ids.csv:2")]
