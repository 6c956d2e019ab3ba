"""The ledger lane's merge keeps to the batch size, and to the order, on a real broker;
what it holds back stays bounded.

A backlog of Dimona and DmfA records on two partitions each (both topics held for the
merge) is read by an :class:`streams.runtime.InputLane` with batches of 100, applied by
a handler written here that records what each batch held. Every batch holds at most 100
records, every record is applied once, and a partition number's records come in
broker-timestamp order across batches (the merge's order; docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence

import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import REGISTRY

from schemas.settings import Settings
from schemas.topics import DIMONA, DMFA
from streams.admin import ensure_topics
from streams.runtime import InputLane, RawRecord

pytestmark = pytest.mark.integration

BATCH = 100
PER_PARTITION = 600  # per topic and partition: 2,400 records, two dozen batches at least
T0 = 1_750_000_000_000


class Recorder:
    """A :class:`streams.runtime.RecordHandler` that keeps every batch it is given, and
    how many records the lane held back for the merge when it was given each."""

    def __init__(self) -> None:
        self.batches: list[list[RawRecord]] = []
        self.held: list[float] = []

    async def apply(self, records: Sequence[RawRecord]) -> object:
        self.batches.append(list(records))
        held = REGISTRY.get_sample_value("studentwork_held_records", {"lane": "ledger"})
        self.held.append(-1.0 if held is None else held)
        return None

    async def quarantine(self, record: RawRecord, error: BaseException) -> None:
        raise AssertionError(f"nothing here fails: {error!r}")


async def replay(
    kafka_bootstrap: str, partitions: int, timestamp: Callable[[str, int], int]
) -> Recorder:
    """Publish ``PER_PARTITION`` records per topic and partition (record ``n`` of a topic
    at ``timestamp(topic, n)``), then apply them all with a ledger lane."""
    name = uuid.uuid4().hex[:8]
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=f"merge{name}.",
        app_id=f"merge-{name}",
        partitions=partitions,
        input_timestamp_type="CreateTime",
        batch_size=BATCH,
    )
    await ensure_topics(settings)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=20)
    await producer.start()
    try:
        sent = []
        for n in range(PER_PARTITION):
            for partition in range(partitions):
                for topic in (DIMONA, DMFA):
                    value = f"{topic}:{partition}:{n}".encode()
                    sent.append(
                        await producer.send(
                            settings.topic(topic),
                            value,
                            key=b"k",
                            partition=partition,
                            timestamp_ms=timestamp(topic, n),
                        )
                    )
        await asyncio.gather(*sent)
    finally:
        await producer.stop()

    handler = Recorder()
    lane = InputLane("ledger", settings, {DIMONA: handler, DMFA: handler})
    task = asyncio.create_task(lane.run())
    total = 2 * partitions * PER_PARTITION
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
    assert sum(len(b) for b in handler.batches) == total
    return handler


async def test_a_merged_backlog_is_applied_in_batches_of_the_batch_size_in_order(
    kafka_bootstrap: str,
) -> None:
    # Interleaved in time: Dimona at even, DmfA at odd milliseconds.
    handler = await replay(
        kafka_bootstrap, 2, lambda topic, n: T0 + 2 * n + (0 if topic == DIMONA else 1)
    )
    sizes = [len(b) for b in handler.batches]
    assert max(sizes) <= BATCH, sizes
    for partition in (0, 1):
        applied = [r.value for b in handler.batches for r in b if r.partition == partition]
        assert applied == [
            f"{topic}:{partition}:{n}".encode()
            for n in range(PER_PARTITION)
            for topic in (DIMONA, DMFA)
        ]


async def test_what_the_merge_holds_back_is_bounded_by_twice_a_partitions_share_and_a_fetch(
    kafka_bootstrap: str,
) -> None:
    # Every DmfA later than every Dimona: the DmfA records wait while the Dimona ones
    # are applied, and fetches bring both. Four partitions share a batch of 100, 25
    # records each: each of the eight held queues is paused once it holds 50, and a
    # queue below that may get one more fetch (at most a batch) before the merge pauses
    # it, so 8 x (49 + 100) at most; without the pause all 4,800 would be held.
    handler = await replay(
        kafka_bootstrap, 4, lambda topic, n: T0 + n + (0 if topic == DIMONA else 10_000)
    )
    assert min(handler.held) >= 0, "the lane publishes studentwork_held_records"
    assert max(handler.held) <= 8 * (2 * (BATCH // 4) - 1 + BATCH), handler.held
    assert handler.held[-1] == 0
    for partition in range(4):
        applied = [r.value for b in handler.batches for r in b if r.partition == partition]
        assert applied == [
            f"{topic}:{partition}:{n}".encode()
            for topic in (DIMONA, DMFA)
            for n in range(PER_PARTITION)
        ]
