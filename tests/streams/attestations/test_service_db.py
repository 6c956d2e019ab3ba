"""AttestationService on a real PostgreSQL and a real PDF process pool.

A batch's PDFs are saved as they are ready, in as many transactions as they finished in
groups; what a batch guarantees must not depend on that grouping: every request of the
batch ends issued, refused or dead-lettered exactly once, each issued one with exactly
one ``attestations.issued`` and one ``ebox.deliveries`` message carrying its PDF, and the
same batch delivered again changes nothing.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime

import asyncpg
import pytest

from db.migrate import migrate
from schemas.attestations import AttestationRequest
from schemas.settings import Settings
from schemas.topics import ATTESTATION_REQUESTS, ATTESTATIONS_ISSUED, EBOX_DELIVERIES
from streams.attestation_pdf import PdfRenderer
from streams.attestations import AccessCodes, AttestationService
from streams.runtime import RawRecord, WorkerState
from tests.support import valid_ssin

pytestmark = pytest.mark.integration

TODAY = date(2026, 11, 30)
NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
STUDENTS = [valid_ssin("030405", serial) for serial in range(21, 41, 2)]  # ten students


def request(n: int, ssin: str, year: int = 2026) -> AttestationRequest:
    return AttestationRequest(
        event_id=f"request-{n}",
        attestation_id=f"attestation-{n}",
        ssin=ssin,
        year=year,
        requested_at=NOW,
    )


def record(offset: int, value: bytes) -> RawRecord:
    return RawRecord(
        topic=ATTESTATION_REQUESTS,
        partition=0,
        offset=offset,
        timestamp_ms=None,
        key=None,
        value=value,
    )


@pytest.fixture
async def service(
    database_url: str,
) -> AsyncIterator[tuple[AttestationService, asyncpg.Pool, WorkerState]]:
    await migrate(database_url)
    settings = Settings(database_url=database_url, today=TODAY, pdf_processes=2)
    state = WorkerState(settings, clock=lambda: NOW)
    renderer = PdfRenderer(settings.pdf_processes)
    await renderer.warm_up()
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        yield AttestationService(state, AccessCodes(settings), renderer), pool, state
    finally:
        renderer.close()
        await pool.close()
        await state.close()


async def test_a_batch_saved_as_its_pdfs_are_ready_issues_each_request_once(
    service: tuple[AttestationService, asyncpg.Pool, WorkerState],
) -> None:
    attestations, db, _ = service
    wanted = [request(n, ssin) for n, ssin in enumerate(STUDENTS)]
    records = [record(n, r.to_json_bytes()) for n, r in enumerate(wanted)]
    records.append(record(10, wanted[3].to_json_bytes()))  # the same request twice
    records.append(record(11, request(11, STUDENTS[0], year=2027).to_json_bytes()))
    records.append(record(12, b'{"event_id": "not an attestation request"}'))

    report = await attestations.process(records)
    assert (report.issued, report.refused, report.failed, report.replayed, report.rejected) == (
        10,
        1,
        0,
        0,
        1,
    )
    assert sorted(report.attestation_ids) == sorted(r.attestation_id for r in wanted)

    async with db.acquire() as conn:
        rows = await conn.fetch(
            "SELECT attestation_id, ssin, status, pdf, sha256 FROM attestations"
            " ORDER BY attestation_id"
        )
        outbox = await conn.fetch("SELECT topic, key, value FROM outbox ORDER BY id")
    statuses = {r["attestation_id"]: r["status"] for r in rows}
    assert statuses == {r.attestation_id: "issued" for r in wanted} | {"attestation-11": "refused"}
    pdfs = {r["attestation_id"]: bytes(r["pdf"]) for r in rows if r["status"] == "issued"}
    for row in rows:
        if row["status"] == "issued":
            assert pdfs[row["attestation_id"]].startswith(b"%PDF-")
            assert row["sha256"] == hashlib.sha256(pdfs[row["attestation_id"]]).hexdigest()

    issued = [json.loads(m["value"]) for m in outbox if m["topic"] == ATTESTATIONS_ISSUED]
    deliveries = [json.loads(m["value"]) for m in outbox if m["topic"] == EBOX_DELIVERIES]
    assert sorted(m["attestationId"] for m in issued) == sorted(pdfs)
    assert sorted(m["attestationId"] for m in deliveries) == sorted(pdfs)
    for message in issued:
        assert message["sha256"] == hashlib.sha256(pdfs[message["attestationId"]]).hexdigest()
    for message in deliveries:
        assert base64.b64decode(message["pdfBase64"]) == pdfs[message["attestationId"]]
    # Each message keyed by its student, and nothing else queued but the dead letter.
    by_id = {r.attestation_id: r.ssin.encode() for r in wanted}
    for m in outbox:
        if m["topic"] in (ATTESTATIONS_ISSUED, EBOX_DELIVERIES):
            assert bytes(m["key"]) == by_id[json.loads(m["value"])["attestationId"]]
    assert len(outbox) == 2 * len(wanted) + 1

    # Delivered again (a lost commit, a rebalance): nothing changes.
    again = await attestations.process(records)
    assert (again.issued, again.refused, again.failed, again.replayed, again.rejected) == (
        0,
        0,
        0,
        11,
        0,
    )
    async with db.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM outbox") == len(outbox)
        assert await conn.fetchval("SELECT count(*) FROM attestations") == len(rows)


async def test_a_batch_stopped_half_way_is_completed_by_its_redelivery_once_each(
    service: tuple[AttestationService, asyncpg.Pool, WorkerState],
) -> None:
    attestations, db, state = service
    wanted = [request(n, ssin) for n, ssin in enumerate(STUDENTS)]
    records = [record(n, r.to_json_bytes()) for n, r in enumerate(wanted)]

    async def saved() -> int:
        async with db.acquire() as conn:
            return int(await conn.fetchval("SELECT count(*) FROM attestations"))

    async def first_saved() -> None:
        while True:
            if await saved():
                return
            await asyncio.sleep(0.01)

    # The worker stops while the batch is half rendered: its renderer closes under it.
    batch = asyncio.ensure_future(attestations.process(records))
    await asyncio.wait_for(first_saved(), timeout=120)  # a bound against a hang
    attestations.renderer.close()
    try:
        first = await batch
    except asyncio.CancelledError:
        first = None  # stopped: nothing committed its offsets, the batch comes again
    kept = await saved()

    renderer = PdfRenderer(2)
    try:
        redelivered = AttestationService(state, attestations.codes, renderer)
        again = await redelivered.process(records)
    finally:
        renderer.close()
    done = kept if first is None else first.issued
    assert done == kept
    assert (again.issued, again.replayed) == (len(wanted) - kept, kept)

    async with db.acquire() as conn:
        statuses = await conn.fetch("SELECT attestation_id, status FROM attestations")
        topics = await conn.fetch("SELECT topic, value FROM outbox")
    assert {r["attestation_id"]: r["status"] for r in statuses} == {
        r.attestation_id: "issued" for r in wanted
    }
    for topic in (ATTESTATIONS_ISSUED, EBOX_DELIVERIES):
        ids = [json.loads(m["value"])["attestationId"] for m in topics if m["topic"] == topic]
        assert sorted(ids) == sorted(r.attestation_id for r in wanted)
