"""``studentwork monitor``'s recent answers and dead letters, read from a topic by
timestamp on a real broker: the window, the newest first, the cap per snapshot."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from ops.monitor import _recent

pytestmark = pytest.mark.integration


async def test_recent_records_are_those_of_the_window_newest_first_within_the_cap(
    kafka_bootstrap: str,
) -> None:
    topic = f"recent-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    finally:
        await admin.close()
    now = int(time.time() * 1000)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        # Two hours old: outside the window of an hour.
        await producer.send_and_wait(topic, b'{"n": -1}', partition=0, timestamp_ms=now - 7_200_000)
        for n in range(6):
            await producer.send_and_wait(
                topic, json.dumps({"n": n}).encode(), partition=n % 2, timestamp_ms=now - 60_000 + n
            )
        await producer.send_and_wait(topic, b"not json", partition=1, timestamp_ms=now)
        await producer.send_and_wait(topic, b"[1, 2]", partition=0, timestamp_ms=now)
    finally:
        await producer.stop()

    tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=None)
    await consumer.start()
    try:
        everything = await _recent(consumer, tps, 3600)
        # At most 4 read, spread over the 2 partitions: the 2 newest of each (the records
        # that are not JSON objects count as read and are skipped).
        capped = await _recent(consumer, tps, 3600, limit=4)
        # Nothing in the last second but the two that are not objects.
        none = await _recent(consumer, tps, 0.5)
    finally:
        await consumer.stop()
    assert [v["n"] for v in everything] == [5, 4, 3, 2, 1, 0]
    assert [v["n"] for v in capped] == [5, 4]
    assert none == []
