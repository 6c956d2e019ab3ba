"""The faust worker: agents that feed input topics to the batch processor.

Every agent reads raw bytes (parsing is ours, so a malformed message becomes a refusal
and a dead letter instead of a consumer error) in batches with ``take_events``, and
hands each batch to :class:`streams.processor.BatchProcessor`. Offsets are acknowledged
only after the batch's transaction committed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import asyncpg
import faust

from producers.relay import OutboxRelay
from schemas.settings import Settings
from schemas.topics import DIMONA, DMFA, QUOTA_CHANGES
from streams.processor import BatchProcessor, BatchReport, Clock, RawRecord, utc_now

log = logging.getLogger(__name__)

_RETRY_SECONDS = (0.5, 1, 2, 5, 10)

T = TypeVar("T")


class WorkerState:
    """What the agents share: the database pool and the processor, opened lazily."""

    def __init__(self, settings: Settings, clock: Clock = utc_now) -> None:
        self.settings = settings
        self.clock = clock
        self._pool: asyncpg.Pool | None = None
        self._processor: BatchProcessor | None = None
        self._lock = asyncio.Lock()
        self.relay = OutboxRelay(settings)

    async def processor(self) -> BatchProcessor:
        async with self._lock:
            if self._processor is None:
                self._pool = await asyncpg.create_pool(
                    self.settings.database_url,
                    min_size=1,
                    max_size=self.settings.database_pool_size,
                )
                self._processor = BatchProcessor(self._pool, self.settings, self.clock)
            return self._processor

    async def pool(self) -> asyncpg.Pool:
        await self.processor()
        assert self._pool is not None
        return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()


def raw_record(topic: str, event: Any) -> RawRecord:
    message = event.message
    return RawRecord(
        topic=topic,
        partition=message.partition,
        offset=message.offset,
        timestamp_ms=int(message.timestamp * 1000) if message.timestamp else None,
        key=message.key,
        value=message.value,
    )


async def with_retries(what: str, work: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Run ``work`` until it succeeds: a batch is never skipped, only delayed.

    A database outage stalls the partition (correct: nothing can be decided without the
    ledger) and resumes by itself when the database is back.
    """
    attempt = 0
    while True:
        try:
            return await work(*args)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            delay = _RETRY_SECONDS[min(attempt, len(_RETRY_SECONDS) - 1)]
            log.warning("%s failed (%s); retrying in %s s", what, error, delay)
            attempt += 1
            await asyncio.sleep(delay)


def create_app(settings: Settings, *, clock: Clock = utc_now) -> tuple[faust.App, WorkerState]:
    """The faust app with its agents, and the shared state they use."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{host.strip()}" for host in settings.kafka_bootstrap.split(",")],
        store="memory://",
        datadir=str(settings.data_dir / f"{settings.app_id}-data"),
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        stream_wait_empty=False,
        broker_commit_interval=1.0,
        broker_session_timeout=settings.session_timeout_seconds,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_seconds / 3),
        web_enabled=True,
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        web_in_thread=False,
    )
    state = WorkerState(settings, clock)

    def batched(logical_topic: str) -> Callable[[Any], Any]:
        async def agent(stream: Any) -> AsyncIterator[BatchReport]:
            async for events in stream.take_events(settings.batch_size, settings.batch_within):
                records = [raw_record(logical_topic, e) for e in events]
                processor = await state.processor()
                yield await with_retries(f"batch of {logical_topic}", processor.process, records)

        agent.__name__ = logical_topic.replace(".", "_")
        return agent

    for logical in (DIMONA, DMFA):
        topic = app.topic(
            settings.topic(logical), key_type=bytes, value_type=bytes, allow_empty=True
        )
        app.agent(topic, name=logical.replace(".", "_"))(batched(logical))

    quota_topic = app.topic(
        settings.topic(QUOTA_CHANGES), key_type=bytes, value_type=bytes, allow_empty=True
    )

    @app.agent(quota_topic, name="quota_changes")
    async def quota_changes(stream: Any) -> AsyncIterator[int]:
        async for event in stream.events():
            record = raw_record(QUOTA_CHANGES, event)
            processor = await state.processor()
            yield await with_retries("quota change", processor.process_quota_change, record)

    if settings.relay_in_worker:

        async def outbox_relay() -> None:
            try:
                await state.relay.run()
            finally:
                state.relay.stop()

        app.task(outbox_relay)

    from streams import attestations, consents
    from streams.web import register_views

    attestations.register_agents(app, state)
    consents.register_agents(app, state)
    register_views(app, state)

    app.studentwork_state = state  # type: ignore[attr-defined]
    return app, state


def run_worker(app: faust.App, settings: Settings, extra: Sequence[Any] = ()) -> None:
    """Run the faust worker in the foreground until SIGINT/SIGTERM."""
    worker = faust.Worker(app, *extra, loglevel=settings.log_level, quiet=True)
    worker.execute_from_commandline()
