"""Crash and restart in place: the local broker and database server come back on the
same address with the same data, as the fault tests need."""

from __future__ import annotations

import uuid

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from infra import LocalKafka, LocalPostgres
from tests.support import read_topic

pytestmark = pytest.mark.integration


async def test_postgres_crash_keeps_every_commit_and_the_address() -> None:
    server = LocalPostgres(crash_safe=True)
    dsn = server.start()
    try:
        conn = await asyncpg.connect(dsn)
        await conn.execute("CREATE TABLE committed (n int)")
        # One transaction each, the crash right after the last: none may be lost.
        for n in range(300):
            await conn.execute("INSERT INTO committed VALUES ($1)", n)
        server.crash()
        with pytest.raises((OSError, asyncpg.InterfaceError, asyncpg.PostgresError)):
            await conn.fetchval("SELECT 1")
        conn.terminate()
        with pytest.raises(OSError):
            await asyncpg.connect(dsn)

        assert server.resume() == dsn == server.dsn
        conn = await asyncpg.connect(dsn)
        try:
            assert await conn.fetchval("SELECT count(*) FROM committed") == 300
        finally:
            await conn.close()
        server.crash()
        server.crash()  # nothing left to stop
        assert server.restart() == dsn
        assert server.resume() == dsn  # already running
    finally:
        server.stop()
    with pytest.raises(RuntimeError):
        server.resume()


async def test_kafka_restart_keeps_messages_offsets_and_the_address() -> None:
    broker = LocalKafka()
    bootstrap = broker.start()
    topic, group = f"restart-{uuid.uuid4().hex[:8]}", f"group-{uuid.uuid4().hex[:8]}"
    try:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
        await producer.start()
        try:
            for n in range(10):
                await producer.send_and_wait(topic, str(n).encode(), key=b"k")
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            consumer.assign([TopicPartition(topic, 0)])
            await consumer.commit({TopicPartition(topic, 0): 4})
        finally:
            await consumer.stop()

        assert broker.restart() == bootstrap == broker.bootstrap

        assert [m["value"] for m in await read_topic(bootstrap, topic)] == list(range(10))
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            consumer.assign([TopicPartition(topic, 0)])
            assert await consumer.committed(TopicPartition(topic, 0)) == 4
        finally:
            await consumer.stop()
        assert broker.resume() == bootstrap  # already running
    finally:
        broker.stop()
    with pytest.raises(RuntimeError):
        broker.resume()
