"""Retention (issue 8, item 10): the purge removes exactly what its rules name.

Real PostgreSQL, real Kafka topics (the applied ids' horizon is read from the brokers).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from datetime import UTC, date, datetime, timedelta

import asyncpg
import pytest

from schemas.settings import Settings
from streams.admin import ensure_topics, record_lifetimes_ms
from streams.retention import APPLIED_IDS_MARGIN, applied_ids_horizon, purge
from tests.support import STUDENT

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)


def settings_for(kafka_bootstrap: str, database_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "kafka_bootstrap": kafka_bootstrap,
        "database_url": database_url,
        "topic_prefix": f"r{uuid.uuid4().hex[:8]}.",
        "partitions": 1,
        "input_timestamp_type": "LogAppendTime",
        "development": True,
        "lookup_audit_months": 3,
        **overrides,
    }
    return Settings.model_validate(values)


async def attestation(
    pool: asyncpg.Pool,
    attestation_id: str,
    issued_on: date,
    *,
    ebox_until: date | None = None,
    archived: bool = False,
    status: str = "issued",
) -> None:
    issued_at = datetime.combine(issued_on, datetime.min.time(), UTC)
    await pool.execute(
        "INSERT INTO attestations (attestation_id, ssin, year, status, event_id, requested_at,"
        " issued_at, issued_on, pdf) VALUES ($1, $2, 2026, $3, $1, $4, $5, $6, $7)",
        attestation_id,
        STUDENT,
        status,
        issued_at,
        issued_at if status == "issued" else None,
        issued_on if status == "issued" else None,
        b"%PDF-1.7 " + attestation_id.encode() if status == "issued" else None,
    )
    if ebox_until is not None:
        await pool.execute(
            "INSERT INTO ebox_documents (id, event_id, attestation_id, ssin, year, title,"
            " file_name, content_type, content, sha256, issued_at, delivered_at,"
            " available_until, archived_at) VALUES ($1, $2, $3, $4, 2026, 't', 'f.pdf',"
            " 'application/pdf', 'x', 'h', $5, $5, $6, $7)",
            uuid.uuid4(),
            f"ebox:{attestation_id}",
            attestation_id,
            STUDENT,
            issued_at,
            ebox_until,
            issued_at if archived else None,
        )


async def test_purge_removes_expired_pdfs_and_keeps_archived_ones(
    pool: asyncpg.Pool, kafka_bootstrap: str, database_url: str
) -> None:
    settings = settings_for(kafka_bootstrap, database_url)
    await ensure_topics(settings)
    await attestation(pool, "a-expired", date(2026, 9, 1), ebox_until=date(2026, 11, 1))
    await attestation(
        pool, "a-archived", date(2026, 9, 1), ebox_until=date(2026, 11, 1), archived=True
    )
    await attestation(pool, "a-running", date(2026, 11, 15), ebox_until=date(2027, 1, 15))
    await attestation(pool, "a-no-ebox", date(2026, 9, 10))
    await attestation(pool, "a-no-ebox-recent", date(2026, 10, 5))
    await attestation(pool, "a-pending", date(2026, 9, 1), status="pending")

    dry = await purge(pool, settings, NOW, dry_run=True)
    assert (dry.pdfs, dry.ebox_documents) == (["a-expired", "a-no-ebox"], 1)
    assert await pool.fetchval("SELECT count(*) FROM attestations WHERE pdf IS NOT NULL") == 5

    report = await purge(pool, settings, NOW)
    assert (report.pdfs, report.ebox_documents) == (["a-expired", "a-no-ebox"], 1)
    rows = await pool.fetch(
        "SELECT attestation_id, status, pdf IS NOT NULL AS kept, pdf_purged_at IS NOT NULL"
        " AS purged FROM attestations ORDER BY 1"
    )
    assert [tuple(r) for r in rows] == [
        ("a-archived", "issued", True, False),
        ("a-expired", "issued", False, True),
        ("a-no-ebox", "issued", False, True),
        ("a-no-ebox-recent", "issued", True, False),
        ("a-pending", "pending", False, False),
        ("a-running", "issued", True, False),
    ]
    documents = await pool.fetch("SELECT attestation_id FROM ebox_documents ORDER BY 1")
    assert [r["attestation_id"] for r in documents] == ["a-archived", "a-running"]
    # A second run finds nothing more.
    again = await purge(pool, settings, NOW)
    assert (again.pdfs, again.ebox_documents) == ([], 0)


async def test_lookups_older_than_the_audit_months_go(
    pool: asyncpg.Pool, kafka_bootstrap: str, database_url: str
) -> None:
    settings = settings_for(kafka_bootstrap, database_url)
    await ensure_topics(settings)
    moments = {
        "old": datetime(2026, 9, 1, 21, 59, tzinfo=UTC),  # 1 September, 23:59 in Brussels
        "edge": datetime(2026, 9, 1, 22, 0, tzinfo=UTC),  # 2 September, 00:00 in Brussels
        "recent": datetime(2026, 12, 1, 9, 0, tzinfo=UTC),
    }
    for employer, moment in moments.items():
        await pool.execute(
            "INSERT INTO access_code_lookups (ssin, employer, looked_up_at, code_month)"
            " VALUES ($1, $2, $3, '2026-09-01')",
            STUDENT,
            employer,
            moment,
        )
    report = await purge(pool, settings, NOW)
    assert report.lookups == 1
    rows = await pool.fetch("SELECT employer FROM access_code_lookups ORDER BY looked_up_at")
    assert [r["employer"] for r in rows] == ["edge", "recent"]


async def test_applied_ids_younger_than_the_topics_retention_stay(
    pool: asyncpg.Pool, kafka_bootstrap: str, database_url: str
) -> None:
    settings = settings_for(kafka_bootstrap, database_url)
    await ensure_topics(settings)
    lifetimes = await record_lifetimes_ms(settings)
    assert None not in lifetimes.values()
    horizon, reason = applied_ids_horizon(settings, lifetimes)
    assert reason is None and horizon is not None
    longest = timedelta(milliseconds=max(v or 0 for v in lifetimes.values()))
    assert horizon == longest + APPLIED_IDS_MARGIN
    ages = {
        "older-than-the-horizon": horizon + timedelta(hours=1),
        "just-younger": horizon - timedelta(hours=1),
        "yesterday": timedelta(days=1),
    }
    for event_id, age in ages.items():
        await pool.execute(
            "INSERT INTO applied_events (event_id, applied_at) VALUES ($1, $2)",
            event_id,
            NOW - age,
        )

    dry = await purge(pool, settings, NOW, dry_run=True)
    assert dry.applied_ids == 1
    assert await pool.fetchval("SELECT count(*) FROM applied_events") == 3

    report = await purge(pool, settings, NOW)
    assert (report.applied_ids, report.applied_ids_before) == (1, NOW - horizon)
    rows = await pool.fetch("SELECT event_id FROM applied_events ORDER BY applied_at")
    assert [r["event_id"] for r in rows] == ["just-younger", "yesterday"]

    # A configured retention shorter than the topics keep records is refused.
    short = settings.model_copy(update={"applied_events_retention_days": 1})
    refused = await purge(pool, short, NOW + timedelta(days=365))
    assert refused.applied_ids == 0
    assert refused.applied_ids_kept_because is not None
    assert "shorter than the" in refused.applied_ids_kept_because
    assert await pool.fetchval("SELECT count(*) FROM applied_events") == 2


async def test_applied_ids_stay_while_a_topic_keeps_records_forever(
    pool: asyncpg.Pool, kafka_bootstrap: str, database_url: str
) -> None:
    # Replays (CreateTime) keep input records without time limit.
    settings = settings_for(kafka_bootstrap, database_url, input_timestamp_type="CreateTime")
    await ensure_topics(settings)
    await pool.execute(
        "INSERT INTO applied_events (event_id, applied_at) VALUES ('ancient', $1)",
        NOW - timedelta(days=3650),
    )
    report = await purge(pool, settings, NOW)
    assert report.applied_ids == 0
    assert report.applied_ids_kept_because is not None
    assert "dimona.declarations" in report.applied_ids_kept_because
    assert await pool.fetchval("SELECT count(*) FROM applied_events") == 1


async def test_the_purge_command_reports_a_dry_run_and_deletes_nothing(
    pool: asyncpg.Pool, kafka_bootstrap: str, database_url: str
) -> None:
    settings = settings_for(kafka_bootstrap, database_url)
    await ensure_topics(settings)
    await attestation(pool, "a-expired", date(2026, 9, 1), ebox_until=date(2026, 11, 1))
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP": kafka_bootstrap,
        "DATABASE_URL": database_url,
        "STUDENTWORK_TOPIC_PREFIX": settings.topic_prefix,
        "STUDENTWORK_INPUT_TIMESTAMP_TYPE": "LogAppendTime",
        "STUDENTWORK_DEVELOPMENT": "true",
        "STUDENTWORK_TODAY": "2026-12-02",
    }
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "infra", "purge", "--dry-run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:2] == [
        "would purge: 1 attestation PDFs, 1 eBox documents, 0 look-ups, 0 applied ids",
        "  attestation a-expired",
    ]
    assert lines[2].startswith("applied ids before ")
    assert await pool.fetchval("SELECT count(*) FROM attestations WHERE pdf IS NOT NULL") == 1
