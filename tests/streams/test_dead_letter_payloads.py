"""A dead letter always fits what the broker takes: large raw bytes stay in PostgreSQL.

Every builder of dead letters (the batch processor, quota changes, consents, the eBox
consumer, attestation requests) is driven against a real PostgreSQL with a small inline
limit; the last test sends a 900 KB invalid declaration through a real worker and broker.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from pathlib import Path

import asyncpg
import pytest
from pydantic import ValidationError

from consumers.ebox import EboxStore
from db import store
from schemas.answers import DeadLetter
from schemas.settings import Settings
from schemas.topics import (
    ACCESS_CODES_ROTATE,
    CONSENTS,
    DIMONA,
    EBOX_DELIVERIES,
    QUOTA_CHANGES,
    REJECTED,
)
from streams.attestations import reject_records
from streams.consents import ConsentApplier
from streams.messages import dead_letter
from streams.processor import BatchProcessor, RawRecord
from tests.support import (
    STUDENT,
    Outgoing,
    Pipeline,
    WorkerProcess,
    brussels_millis,
    collect,
    dimona_in,
    publish,
)

pytestmark = pytest.mark.integration

T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
LIMIT = 1024


def letter_fields(raw: bytes, limit: int) -> tuple[DeadLetter, store.DeadLetterPayload | None]:
    return dead_letter(
        event_id="rejected:dimona.declarations:0:7",
        topic="dimona.declarations",
        partition=0,
        offset=7,
        timestamp=None,
        key=b"k",
        raw=raw,
        reason="bad",
        now=T0,
        inline_limit=limit,
    )


def test_raw_bytes_up_to_the_limit_travel_inline() -> None:
    letter, payload = letter_fields(b"x" * LIMIT, LIMIT)
    assert payload is None
    assert base64.b64decode(letter.raw_base64 or "") == b"x" * LIMIT
    assert letter.raw_ref is None and letter.raw_sha256 is None


def test_raw_bytes_above_the_limit_are_referenced_with_their_digest() -> None:
    raw = b"y" * (LIMIT + 1)
    letter, payload = letter_fields(raw, LIMIT)
    assert payload == store.DeadLetterPayload(
        letter.event_id, raw, hashlib.sha256(raw).hexdigest(), len(raw)
    )
    assert letter.raw_base64 is None
    assert letter.raw_ref == f"dead_letter_payloads:{letter.event_id}"
    assert (letter.raw_sha256, letter.raw_size) == (payload.sha256, len(raw))
    wire = json.loads(letter.to_json_bytes())
    assert "rawBase64" not in wire
    assert {"rawRef", "rawSha256", "rawSize"} <= wire.keys()
    assert DeadLetter.from_json_bytes(letter.to_json_bytes()) == letter


def test_a_dead_letter_carries_its_bytes_one_way_exactly() -> None:
    common = {"eventId": "e", "topic": "t", "reason": "r", "rejectedAt": T0.isoformat()}
    with pytest.raises(ValidationError, match="exactly one"):
        DeadLetter.model_validate(common)
    with pytest.raises(ValidationError, match="exactly one"):
        DeadLetter.model_validate({**common, "rawBase64": "", "rawRef": "x"})
    with pytest.raises(ValidationError, match="rawSha256"):
        DeadLetter.model_validate({**common, "rawRef": "x"})


# ------------------------------------------------------------- every builder, on PostgreSQL


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, dead_letter_inline_bytes=LIMIT)


def big_invalid(topic: str, offset: int) -> RawRecord:
    body = json.dumps({"eventId": f"big-{offset}", "padding": "z" * (3 * LIMIT)}).encode()
    return RawRecord(topic, 0, offset, None, STUDENT.encode(), body)


async def assert_stored(pool: asyncpg.Pool, record: RawRecord) -> None:
    """The record's dead letter is in the outbox by reference, its bytes beside it."""
    values = [
        DeadLetter.from_json_bytes(r["value"])
        for r in await pool.fetch("SELECT value FROM outbox WHERE topic = $1", REJECTED)
    ]
    assert len(values) == 1
    letter = values[0]
    assert letter.raw_base64 is None
    assert letter.raw_sha256 == hashlib.sha256(record.value or b"").hexdigest()
    async with pool.acquire() as conn:
        payload = await store.dead_letter_payload(conn, letter.event_id)
    assert payload is not None
    assert payload.raw == record.value
    assert (payload.sha256, payload.size) == (letter.raw_sha256, letter.raw_size)


Apply = Callable[[asyncpg.Pool, Settings, RawRecord], Awaitable[object]]


async def via_batch(pool: asyncpg.Pool, settings: Settings, record: RawRecord) -> object:
    return await BatchProcessor(pool, settings, lambda: T0).apply([record])


async def via_quota_change(pool: asyncpg.Pool, settings: Settings, record: RawRecord) -> object:
    return await BatchProcessor(pool, settings, lambda: T0).process_quota_change(record)


async def via_consents(pool: asyncpg.Pool, settings: Settings, record: RawRecord) -> object:
    return await ConsentApplier(pool, settings, lambda: T0).apply([record])


async def via_ebox(pool: asyncpg.Pool, settings: Settings, record: RawRecord) -> object:
    return await EboxStore(pool, settings, lambda: T0).apply([record])


async def via_reject_records(pool: asyncpg.Pool, settings: Settings, record: RawRecord) -> object:
    return await reject_records(pool, settings, [(record, "not a rotation command")], T0)


@pytest.mark.parametrize(
    ("topic", "apply"),
    [
        (DIMONA, via_batch),
        (QUOTA_CHANGES, via_quota_change),
        (CONSENTS, via_consents),
        (EBOX_DELIVERIES, via_ebox),
        (ACCESS_CODES_ROTATE, via_reject_records),
    ],
)
async def test_every_builder_keeps_large_raw_bytes_in_the_same_transaction(
    pool: asyncpg.Pool, settings: Settings, topic: str, apply: Apply
) -> None:
    record = big_invalid(topic, 3)
    await apply(pool, settings, record)
    await assert_stored(pool, record)
    # A redelivery writes neither a second letter nor a second payload.
    await apply(pool, settings, record)
    await assert_stored(pool, record)
    assert await pool.fetchval("SELECT count(*) FROM dead_letter_payloads") == 1


# ------------------------------------------------------------------- end to end, 900 KB


@pytest.fixture
def pipeline(kafka_bootstrap: str, database_url: str) -> Pipeline:
    return Pipeline(kafka_bootstrap, database_url)


async def test_a_900_kb_invalid_declaration_is_dead_lettered_by_reference(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    b = pipeline.kafka_bootstrap
    on_time = brussels_millis(date(2026, 6, 1))
    huge = dimona_in("huge", ssin="93051822362")  # wrong check digits: invalid
    huge["padding"] = "p" * 900_000
    sent = Outgoing.json(pipeline.topic(DIMONA), "93051822362", huge, on_time)
    assert 900_000 < len(sent.value) < 1_000_000  # the broker's limit is about 1 MB
    with WorkerProcess(pipeline, tmp_path / "worker.log"):
        await publish(
            b,
            [sent, Outgoing.json(pipeline.topic(DIMONA), STUDENT, dimona_in("after"), on_time)],
        )
        acks = await collect(b, pipeline.topic("dimona.acks"), count=2)
        letters = await collect(b, pipeline.topic(REJECTED), count=1, settle=1.0)
    answers = {a["value"]["inReplyTo"]: a["value"]["status"] for a in acks}
    assert answers == {"huge": "B", "after": "A"}
    assert len(letters) == 1
    letter = DeadLetter.model_validate(letters[0]["value"])
    assert letter.raw_base64 is None
    assert letter.raw_ref == f"dead_letter_payloads:{letter.event_id}"
    assert letter.raw_sha256 == hashlib.sha256(sent.value).hexdigest()
    assert letter.raw_size == len(sent.value)
    conn: asyncpg.Connection = await asyncpg.connect(pipeline.database_url)
    try:
        payload = await store.dead_letter_payload(conn, letter.event_id)
        failed = await conn.fetchval("SELECT count(*) FROM outbox WHERE failed_at IS NOT NULL")
    finally:
        await conn.close()
    assert payload is not None and payload.raw == sent.value
    assert failed == 0
