"""How the batch processor reads one record: keys, timestamps, horizons, refusal ids.

Parsing needs no database; the processor is built without a pool here.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pytest

from quota import AnomalyCode
from schemas.settings import Settings
from streams.messages import body_digest, idempotency_key
from streams.processor import BatchProcessor, Intake, Rejection
from streams.runtime import RawRecord
from tests.support import EMPLOYER_A, STUDENT, brussels_millis, dimona_in, dmfa

NOW = datetime(2026, 6, 1, 7, 0, tzinfo=UTC)
ON_TIME = brussels_millis(date(2026, 6, 1))


def parse(
    body: object,
    *,
    key: bytes | None = STUDENT.encode(),
    timestamp_ms: int | None = ON_TIME,
    topic: str = "dimona.declarations",
    offset: int = 0,
) -> Intake | Rejection:
    processor = BatchProcessor(None, Settings(development=True), lambda: NOW)
    value = body if isinstance(body, bytes) else json.dumps(body).encode()
    return processor.parse(RawRecord(topic, 0, offset, timestamp_ms, key, value))


def refusal_code(item: Intake | Rejection) -> AnomalyCode:
    assert isinstance(item, Rejection), item
    return item.code


def test_a_valid_declaration_carries_its_idempotency_key_and_digest() -> None:
    item = parse(dimona_in("e-1"))
    assert isinstance(item, Intake)
    assert item.command.event_id == idempotency_key("dimona", EMPLOYER_A, "e-1")
    assert item.reply_to == "e-1"
    assert item.digest == body_digest(json.dumps(dimona_in("e-1")).encode())


def test_a_dmfa_key_is_in_its_own_namespace() -> None:
    item = parse(dmfa("e-1"), topic="dmfa.declarations")
    assert isinstance(item, Intake)
    assert item.command.event_id == f"dmfa:{EMPLOYER_A}:e-1"


def test_the_digest_ignores_the_submission_moment_and_the_layout() -> None:
    first = dimona_in("e-1")
    again = {**first, "submittedAt": "2026-06-02T12:00:00Z"}
    assert body_digest(json.dumps(first).encode()) == body_digest(
        json.dumps(again, indent=2).encode()
    )
    other = dimona_in("e-1", hours=31)
    assert body_digest(json.dumps(first).encode()) != body_digest(json.dumps(other).encode())


@pytest.mark.parametrize(
    "key",
    [
        STUDENT.encode() + b"\xff",
        b"93.05.18-223.61",
        b" " + STUDENT.encode(),
        "٩٣٠٥١٨٢٢٣٦١".encode(),  # Arabic-Indic digits: digits, but not ASCII
        None,
        b"93051822362",  # another SSIN than the worker's
    ],
)
def test_the_key_must_be_the_ssin_in_ascii_digits(key: bytes | None) -> None:
    assert refusal_code(parse(dimona_in("e-1"), key=key)) is AnomalyCode.INVALID_KEY


@pytest.mark.parametrize("timestamp_ms", [253_402_300_800_000, 10**18, 946_684_799_000])
def test_a_timestamp_outside_2000_to_2099_is_refused(timestamp_ms: int) -> None:
    item = parse(dimona_in("e-1"), timestamp_ms=timestamp_ms)
    assert refusal_code(item) is AnomalyCode.INVALID_TIMESTAMP


def test_a_record_without_timestamp_is_received_now() -> None:
    item = parse(dimona_in("e-1"), timestamp_ms=None)
    assert isinstance(item, Intake)
    assert item.command.received_at == NOW


def test_a_period_more_than_the_horizon_ahead_is_refused() -> None:
    ok = parse(dimona_in("e-1", start="2028-05-01", end="2028-05-31"))
    assert isinstance(ok, Intake)
    far = parse(dimona_in("e-1", start="2028-07-01", end="2028-07-31"))
    assert refusal_code(far) is AnomalyCode.DATE_OUT_OF_RANGE


def test_refusal_ids_are_stable_per_record_and_unique_across_recreated_topics() -> None:
    first = parse(b"garbage", offset=7)
    again = parse(b"garbage", offset=7)
    assert isinstance(first, Rejection) and isinstance(again, Rejection)
    assert first.dedupe_id == again.dedupe_id
    # The topic was recreated: offset 7 now holds another record, or the same bytes later.
    other_bytes = parse(b"garbage!", offset=7)
    later = parse(b"garbage", offset=7, timestamp_ms=ON_TIME + 1)
    assert isinstance(other_bytes, Rejection) and isinstance(later, Rejection)
    assert len({first.dedupe_id, other_bytes.dedupe_id, later.dedupe_id}) == 3
    # And no sender's id can take the form of a refusal's key.
    assert not first.dedupe_id.startswith(("dimona:", "dmfa:"))
