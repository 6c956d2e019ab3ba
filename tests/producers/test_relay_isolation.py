"""The relay isolates an outbox row the broker refuses, and everything else goes on.

The relay runs in this process against the session's real broker and a migrated
throwaway database; rows are put in the outbox with :func:`db.store.enqueue`, as the
worker does.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    InvalidTopicError,
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotEnoughReplicasError,
    OutOfOrderSequenceNumber,
    RecordListTooLargeError,
    UnknownTopicOrPartitionError,
)

from db import store
from db.migrate import migrate
from db.store import OutboxMessage
from producers.relay import OutboxRelay, failed_count, is_permanent, pending_count
from schemas.answers import DeadLetter
from schemas.partitioning import key_hash, partition_of_key
from schemas.settings import Settings
from schemas.topics import ACKS, QUOTA_RECOMPUTE, REJECTED
from tests.support import STUDENT, collect

pytestmark = pytest.mark.integration

KEY = STUDENT.encode()


def small(n: int) -> bytes:
    return json.dumps({"n": n}).encode()


def padded(size: int) -> bytes:
    """A JSON value of exactly ``size`` bytes."""
    return b'{"pad":"' + b"x" * (size - 10) + b'"}'


async def enqueue(database_url: str, messages: list[OutboxMessage]) -> list[int]:
    conn: asyncpg.Connection = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            await store.enqueue(conn, messages)
        return [r["id"] for r in await conn.fetch("SELECT id FROM outbox ORDER BY id")]
    finally:
        await conn.close()


async def outbox_rows(database_url: str) -> dict[int, asyncpg.Record]:
    conn: asyncpg.Connection = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT id, topic, sent_at, failed_at, failure FROM outbox")
        return {r["id"]: r for r in rows}
    finally:
        await conn.close()


async def relay_until_settled(
    settings: Settings, failed: int, sent_retention_hours: float | None = None
) -> OutboxRelay:
    """Run a relay until nothing is pending and ``failed`` rows are marked failed."""
    relay = OutboxRelay(settings, sent_retention_hours=sent_retention_hours)
    task = asyncio.create_task(relay.run())
    try:
        for _ in range(600):
            if task.done():
                task.result()
            if (
                await pending_count(settings.database_url) == 0
                and await failed_count(settings.database_url) >= failed
            ):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"outbox not settled: {await outbox_rows(settings.database_url)}")
    finally:
        relay.stop()
        await asyncio.wait_for(task, 30)
    return relay


def letter_of(messages: list[dict[str, Any]]) -> DeadLetter:
    assert len(messages) == 1, messages
    return DeadLetter.model_validate(messages[0]["value"])


def test_only_refusals_about_the_record_itself_are_permanent() -> None:
    assert is_permanent(MessageSizeTooLargeError("too big"))
    assert is_permanent(RecordListTooLargeError())
    assert is_permanent(InvalidTopicError())
    # Outages and broker states pass: the rows wait, none is marked failed.
    assert not is_permanent(KafkaTimeoutError())
    assert not is_permanent(KafkaConnectionError())
    assert not is_permanent(UnknownTopicOrPartitionError())
    assert not is_permanent(NotEnoughReplicasError())
    assert not is_permanent(OutOfOrderSequenceNumber())
    assert not is_permanent(OSError("connection reset"))


@pytest.mark.parametrize(
    "keep_sent_hours", [24.0, 0.0], ids=["sent-rows-kept", "sent-rows-deleted"]
)
async def test_a_row_too_large_is_isolated_and_the_rows_around_it_published_once(
    settings: Settings, keep_sent_hours: float
) -> None:
    big = padded(1_200_000)
    ids = await enqueue(
        settings.database_url,
        [
            OutboxMessage(ACKS, KEY, small(1)),
            OutboxMessage(ACKS, KEY, big),
            OutboxMessage(ACKS, KEY, small(2)),
        ],
    )
    relay = await relay_until_settled(settings, failed=1, sent_retention_hours=keep_sent_hours)

    b = settings.kafka_bootstrap
    acks = await collect(b, settings.topic(ACKS), count=2, settle=1.0)
    assert [m["value"] for m in acks] == [{"n": 1}, {"n": 2}]  # once each, in order
    rows = await outbox_rows(settings.database_url)
    if keep_sent_hours:
        assert rows[ids[0]]["sent_at"] is not None and rows[ids[2]]["sent_at"] is not None
    else:  # the default: a published row is deleted with its acknowledgement
        assert ids[0] not in rows and ids[2] not in rows
    failed = rows[ids[1]]
    assert failed["sent_at"] is None and failed["failed_at"] is not None
    assert "MessageSizeTooLargeError" in failed["failure"]
    assert str(len(big)) in failed["failure"]

    letter = letter_of(await collect(b, settings.topic(REJECTED), count=1, settle=1.0))
    assert letter.event_id == f"outbox-refused:{ids[1]}"
    assert letter.topic == settings.topic(ACKS)
    assert letter.raw_ref == f"outbox:{ids[1]}"
    assert letter.raw_size == len(big)
    assert letter.raw_sha256 == hashlib.sha256(big).hexdigest()
    assert letter.raw_base64 is None
    assert letter.key_base64 is not None
    assert "MessageSizeTooLargeError" in letter.reason
    assert (relay.published, relay.failed) == (3, 1)  # two rows and the dead letter
    assert await pending_count(settings.database_url) == 0
    assert await failed_count(settings.database_url) == 1


async def test_a_batch_the_broker_refuses_costs_only_the_row_at_fault(
    settings: Settings,
) -> None:
    # The topic takes less than the producer sends: the broker refuses the whole record
    # batch, neighbours included, and the relay must find the one row at fault.
    name = "limited.topic"
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(settings.topic(name), 1, 1, topic_configs={"max.message.bytes": "20000"})]
        )
    finally:
        await admin.close()
    big = padded(50_000)
    ids = await enqueue(
        settings.database_url,
        [
            OutboxMessage(name, KEY, small(1)),
            OutboxMessage(name, KEY, big),
            OutboxMessage(name, KEY, small(2)),
            OutboxMessage(ACKS, KEY, small(3)),
        ],
    )
    await relay_until_settled(settings, failed=1)

    b = settings.kafka_bootstrap
    delivered = await collect(b, settings.topic(name), count=2, settle=1.0)
    assert [m["value"] for m in delivered] == [{"n": 1}, {"n": 2}]
    acks = await collect(b, settings.topic(ACKS), count=1, settle=0.5)
    assert [m["value"] for m in acks] == [{"n": 3}]
    rows = await outbox_rows(settings.database_url)
    # Published rows are deleted (the default): the failed one alone is left.
    assert [i for i in ids if i in rows and rows[i]["failed_at"] is not None] == [ids[1]]
    assert "TooLarge" in rows[ids[1]]["failure"]
    letter = letter_of(await collect(b, settings.topic(REJECTED), count=1, settle=1.0))
    assert letter.raw_ref == f"outbox:{ids[1]}"
    assert letter.raw_sha256 == hashlib.sha256(big).hexdigest()


async def test_an_illegal_topic_name_is_isolated_rather_than_waited_for(
    settings: Settings,
) -> None:
    ids = await enqueue(
        settings.database_url,
        [
            OutboxMessage(ACKS, KEY, small(1)),
            OutboxMessage("no spaces allowed!", KEY, small(2)),
            OutboxMessage(ACKS, KEY, small(3)),
        ],
    )
    await relay_until_settled(settings, failed=1)

    b = settings.kafka_bootstrap
    acks = await collect(b, settings.topic(ACKS), count=2, settle=0.5)
    assert [m["value"] for m in acks] == [{"n": 1}, {"n": 3}]
    rows = await outbox_rows(settings.database_url)
    assert "InvalidTopicError" in rows[ids[1]]["failure"]
    letter = letter_of(await collect(b, settings.topic(REJECTED), count=1, settle=0.5))
    assert letter.topic == settings.topic("no spaces allowed!")


async def test_a_row_naming_its_partition_is_published_there(settings: Settings) -> None:
    # The quota lane's recompute commands: one per partition, whatever their keys hash to.
    # A partition past the topic's count (a topic created smaller than configured) is
    # folded onto it rather than left to stall the relay.
    assert settings.partitions == 2
    await enqueue(
        settings.database_url,
        [
            OutboxMessage(QUOTA_RECOMPUTE, b"same", small(0), partition=0),
            OutboxMessage(QUOTA_RECOMPUTE, b"same", small(1), partition=1),
            OutboxMessage(QUOTA_RECOMPUTE, b"same", small(3), partition=3),
            OutboxMessage(QUOTA_RECOMPUTE, b"same", small(9)),
        ],
    )
    await relay_until_settled(settings, failed=0)
    published = await collect(
        settings.kafka_bootstrap, settings.topic(QUOTA_RECOMPUTE), count=4, settle=0.5
    )
    by_value = {m["value"]["n"]: m["partition"] for m in published}
    by_key = partition_of_key(key_hash(b"same"), 2)
    assert by_value == {0: 0, 1: 1, 3: 1, 9: by_key}


async def test_rows_filling_several_batches_keep_each_keys_order(settings: Settings) -> None:
    # The relay builds one record batch per partition and sends it when full (256 KiB):
    # with values of 100 kB a partition's rows take several batches, and small rows of
    # other keys and topics, and a row without a key, fall between them.
    keys = [b"%011d" % n for n in range(5)]
    messages: list[OutboxMessage] = []
    for n in range(30):
        key = keys[n % len(keys)]
        value = padded(100_000) if n % 3 == 0 else small(n)
        messages.append(OutboxMessage(ACKS, key, value))
        if n % 4 == 0:
            messages.append(OutboxMessage(REJECTED, key, small(1000 + n)))
    messages.append(OutboxMessage(ACKS, None, small(99)))
    await enqueue(settings.database_url, messages)
    await relay_until_settled(settings, failed=0)

    b = settings.kafka_bootstrap
    acks = await collect(b, settings.topic(ACKS), count=31, settle=1.0)
    rejected = await collect(b, settings.topic(REJECTED), count=8, settle=0.5)
    for topic, published in ((ACKS, acks), (REJECTED, rejected)):
        sent = [m for m in messages if m.topic == topic]
        assert len(published) == len(sent)  # each once
        for key in keys:
            of_key = [m for m in published if m["key"] == key.decode()]
            assert [m["value"] for m in of_key] == [
                json.loads(m.value) for m in sent if m.key == key
            ]
            assert {m["partition"] for m in of_key} == {
                partition_of_key(key_hash(key), settings.partitions)
            }
    assert [m["value"] for m in acks if m["key"] is None] == [{"n": 99}]


async def test_an_unreachable_broker_fails_no_row(database_url: str) -> None:
    await migrate(database_url)
    settings = Settings(database_url=database_url, kafka_bootstrap="127.0.0.1:9")
    await enqueue(database_url, [OutboxMessage(ACKS, KEY, small(1))])
    relay = OutboxRelay(settings)
    task = asyncio.create_task(relay.run())
    await asyncio.sleep(3)  # a few attempts; what matters is what they leave behind
    relay.stop()
    await asyncio.wait_for(task, 30)
    assert await pending_count(database_url) == 1
    assert await failed_count(database_url) == 0
