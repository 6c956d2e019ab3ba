"""The ledger lane's merge keeps to the batch size, and to the order, on a real broker.

A backlog of Dimona and DmfA records on two partitions each (both topics held for the
merge) is read by an :class:`streams.runtime.InputLane` with batches of 100, applied by
a handler written here that records what each batch held. Every batch holds at most 100
records, every record is applied once, and a partition number's records come in
broker-timestamp order across batches (the merge's order; docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import pytest
from aiokafka import AIOKafkaProducer

from schemas.settings import Settings
from schemas.topics import DIMONA, DMFA
from streams.admin import ensure_topics
from streams.runtime import InputLane, RawRecord

pytestmark = pytest.mark.integration

BATCH = 100
PER_PARTITION = 600  # per topic and partition: 2,400 records, two dozen batches at least
T0 = 1_750_000_000_000


class Recorder:
    """A :class:`streams.runtime.RecordHandler` that keeps every batch it is given."""

    def __init__(self) -> None:
        self.batches: list[list[RawRecord]] = []

    async def apply(self, records: Sequence[RawRecord]) -> object:
        self.batches.append(list(records))
        return None

    async def quarantine(self, record: RawRecord, error: BaseException) -> None:
        raise AssertionError(f"nothing here fails: {error!r}")


async def test_a_merged_backlog_is_applied_in_batches_of_the_batch_size_in_order(
    kafka_bootstrap: str,
) -> None:
    name = uuid.uuid4().hex[:8]
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=f"merge{name}.",
        app_id=f"merge-{name}",
        partitions=2,
        input_timestamp_type="CreateTime",
        batch_size=BATCH,
    )
    await ensure_topics(settings)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=20)
    await producer.start()
    try:
        sent = []
        for n in range(PER_PARTITION):
            for partition in (0, 1):
                # Interleaved in time: Dimona at even, DmfA at odd milliseconds.
                for topic, tick in ((DIMONA, 0), (DMFA, 1)):
                    value = f"{topic}:{partition}:{n}".encode()
                    sent.append(
                        await producer.send(
                            settings.topic(topic),
                            value,
                            key=b"k",
                            partition=partition,
                            timestamp_ms=T0 + 2 * n + tick,
                        )
                    )
        await asyncio.gather(*sent)
    finally:
        await producer.stop()

    handler = Recorder()
    lane = InputLane("ledger", settings, {DIMONA: handler, DMFA: handler})
    task = asyncio.create_task(lane.run())
    total = 4 * PER_PARTITION
    try:
        for _ in range(1200):
            if sum(len(b) for b in handler.batches) >= total:
                break
            if task.done():
                task.result()
            await asyncio.sleep(0.05)
    finally:
        lane.stop()
        await asyncio.wait_for(task, 60)

    sizes = [len(b) for b in handler.batches]
    assert sum(sizes) == total, sizes
    assert max(sizes) <= BATCH, sizes
    for partition in (0, 1):
        applied = [r.value for b in handler.batches for r in b if r.partition == partition]
        assert applied == [
            f"{topic}:{partition}:{n}".encode()
            for n in range(PER_PARTITION)
            for topic in (DIMONA, DMFA)
        ]
