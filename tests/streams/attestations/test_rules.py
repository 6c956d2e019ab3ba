"""The pure rules of attestations and access codes: no broker, no database, no clock."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from aiokafka.partitioner import DefaultPartitioner

from producers.access_code_scheduler import rotation_commands
from quota.access_codes import code_validity, is_code_valid_on
from quota.attestations import attestation_years, year_refusal
from schemas.partitioning import key_hash, partition_of_key, student_key_hash
from streams.attestation_pdf import format_day, format_ssin
from streams.attestations import code_valid_on, partition_of
from tests.support import valid_ssin


@pytest.mark.parametrize(
    ("today", "years"),
    [
        (date(2026, 1, 1), (2026,)),
        (date(2026, 6, 15), (2026,)),
        (date(2026, 11, 30), (2026,)),
        (date(2026, 12, 1), (2026, 2027)),
        (date(2026, 12, 31), (2026, 2027)),
        (date(2027, 1, 1), (2027,)),
    ],
)
def test_years_that_can_be_attested(today: date, years: tuple[int, ...]) -> None:
    assert attestation_years(today) == years


def test_next_year_is_refused_on_30_november_with_the_date_it_opens() -> None:
    reason = year_refusal(2027, date(2026, 11, 30))
    assert reason is not None
    assert "1 December 2026" in reason
    assert year_refusal(2027, date(2026, 12, 1)) is None
    assert year_refusal(2026, date(2026, 12, 1)) is None


@pytest.mark.parametrize("year", [2025, 2028, 1999])
def test_other_years_are_refused_with_a_reason(year: int) -> None:
    reason = year_refusal(year, date(2026, 12, 1))
    assert reason is not None
    assert str(year) in reason
    assert "2026 or 2027" in reason


def test_a_code_is_valid_three_months_from_its_month_start_and_not_a_day_more() -> None:
    # Issued any day of November 2026: valid 1 November 2026 up to and including 31 January.
    valid_from, valid_until = code_validity(date(2026, 11, 30), 3)
    assert (valid_from, valid_until) == (date(2026, 11, 1), date(2027, 1, 31))
    assert not code_valid_on(valid_from, valid_until, date(2026, 10, 31))
    assert code_valid_on(valid_from, valid_until, date(2026, 11, 1))
    assert code_valid_on(valid_from, valid_until, date(2027, 1, 31))
    assert not code_valid_on(valid_from, valid_until, date(2027, 2, 1))
    # The stored window and the calendar rule agree on every day around it.
    day = date(2026, 10, 1)
    while day < date(2027, 3, 1):
        assert code_valid_on(valid_from, valid_until, day) == is_code_valid_on(
            date(2026, 11, 1), day, 3
        )
        day += timedelta(days=1)


def test_validity_is_configurable() -> None:
    assert code_validity(date(2026, 12, 5), 1) == (date(2026, 12, 1), date(2026, 12, 31))
    assert code_validity(date(2026, 12, 5), 2) == (date(2026, 12, 1), date(2027, 1, 31))


def test_partition_of_is_kafkas_default_partitioner() -> None:
    partitioner = DefaultPartitioner()
    for serial in range(1, 400, 7):
        ssin = valid_ssin("030405", serial)
        for partitions in (1, 2, 3, 8, 12):
            expected = partitioner(ssin.encode(), list(range(partitions)), [])
            assert partition_of(ssin, partitions) == expected


@pytest.mark.parametrize(
    ("key", "partition"),
    # What Kafka's Java producer (org.apache.kafka.clients.producer.Partitioner) gives these
    # keys among 1,000 partitions: the compatibility values its Python clients test against.
    [(b"", 681), (b"a", 524), (b"ab", 434), (b"abc", 107), (b"123456789", 566), (b"\x00 ", 742)],
)
def test_the_key_hash_is_the_java_partitioners(key: bytes, partition: int) -> None:
    assert 0 <= key_hash(key) < 2**31
    assert partition_of_key(key_hash(key), 1000) == partition


def test_the_stored_key_hash_gives_the_partition_for_any_partition_count() -> None:
    partitioner = DefaultPartitioner()
    for serial in range(1, 998, 37):
        for yymmdd in ("000101", "991231", "054012"):  # 20th and 21st century, a BIS number
            ssin = valid_ssin(yymmdd, serial)
            stored = student_key_hash(ssin)
            assert stored == key_hash(ssin.encode())
            for partitions in (1, 2, 3, 4, 7, 12, 64):
                expected = partitioner(ssin.encode(), list(range(partitions)), [])
                assert partition_of_key(stored, partitions) == expected
                assert partition_of(ssin, partitions) == expected


def test_a_topic_without_partitions_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one partition"):
        partition_of_key(123, 0)


def test_partition_of_spreads_students() -> None:
    counts = [0] * 8
    for serial in range(1, 998, 2):
        counts[partition_of(valid_ssin("020202", serial), 8)] += 1
    assert min(counts) > 30


def test_rotation_commands_one_per_partition_with_stable_ids() -> None:
    now = datetime(2026, 12, 1, 0, 0, tzinfo=UTC)
    commands = rotation_commands(date(2026, 12, 17), 4, now)
    assert [c.partition for c in commands] == [0, 1, 2, 3]
    assert {c.month for c in commands} == {date(2026, 12, 1)}
    assert {c.partitions for c in commands} == {4}
    assert len({c.event_id for c in commands}) == 4
    assert commands == rotation_commands(date(2026, 12, 1), 4, now)
    assert [c.partition for c in rotation_commands(date(2026, 12, 1), 4, now, [3, 1])] == [1, 3]


def test_printed_forms() -> None:
    assert format_ssin("93051822361") == "93.05.18-223.61"
    assert format_day(date(2027, 1, 31)) == "31/01/2027"
