"""The eBox consumer: puts every delivered attestation in the student's eBox, once.

The attestation agent publishes each issued attestation on ``ebox.deliveries`` (key:
SSIN) through the outbox, which may publish a message more than once. This consumer
reads that topic with its own consumer group (``<app_id>-ebox``), so it keeps its own
position and can be stopped, scaled or replayed without touching the worker.

Effectively once, the same way as the worker:

- a batch of records is stored in **one** PostgreSQL transaction: the documents
  (``INSERT ... ON CONFLICT DO NOTHING``), the delivery event ids in ``applied_events``
  (namespace ``ebox:``), and a dead letter in the outbox for each invalid record;
- offsets are committed **after** that transaction, so a crash redelivers a batch that
  the applied ids turn into a no-op;
- an invalid record (not JSON, not the contract, not a PDF) is logged and dead-lettered
  on ``declarations.rejected``: the partition never stalls on it.

A document stays available ``ebox_retention_months`` months after its delivery date
(Europe/Brussels) unless the student archives it; :func:`purge` deletes the expired
ones, at start and then every ``purge_every`` seconds. It stops gracefully on SIGTERM
or SIGINT: the batch in hand is finished and committed, then the group is left.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, TypeVar

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from pydantic import ValidationError

from db import ebox as ebox_db
from db import store
from db.store import DeadLetterPayload, OutboxMessage
from schemas.attestations import EboxDelivery
from schemas.identifiers import normalize_ssin
from schemas.settings import Settings
from schemas.topics import EBOX_DELIVERIES
from streams import metrics
from streams.messages import describe_validation_error
from streams.processor import Clock, RawRecord, Rejection, dead_letter_message, utc_now

log = logging.getLogger(__name__)

#: Delivery event ids get their own namespace in ``applied_events``.
EVENT_PREFIX = "ebox:"
#: What the consumer logs once it has joined its group; tests and operators wait for it.
READY_MESSAGE = "eBox consumer ready"
PDF_CONTENT_TYPE = "application/pdf"
DEFAULT_PURGE_EVERY = 3600.0

_RETRY_SECONDS = (0.5, 1, 2, 5, 10)
_SAFE_FILE_NAME = re.compile(r"[^A-Za-z0-9._-]+")

T = TypeVar("T")


def consumer_group(settings: Settings) -> str:
    """The eBox consumer's own group: its offsets are independent of the worker's."""
    return f"{settings.app_id}-ebox"


@dataclass
class BatchReport:
    """What one batch did; the consumer also keeps running totals of these."""

    stored: int = 0
    duplicates: int = 0
    rejected: int = 0

    def add(self, other: BatchReport) -> None:
        self.stored += other.stored
        self.duplicates += other.duplicates
        self.rejected += other.rejected


def safe_file_name(name: str, year: int) -> str:
    """A file name safe in a Content-Disposition header: no path, quotes or controls."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = _SAFE_FILE_NAME.sub("-", base).strip(".-")[:120]
    if not cleaned:
        cleaned = f"attestation-{year}"
    if not cleaned.lower().endswith(".pdf"):
        cleaned += ".pdf"
    return cleaned


def parse(record: RawRecord) -> ebox_db.NewDocument | Rejection:
    """The document a record delivers, or why it delivers none."""
    if record.value is None:
        return Rejection(record, "empty message (no value)")
    try:
        delivery = EboxDelivery.model_validate_json(record.value)
    except ValidationError as error:
        return Rejection(record, describe_validation_error(error))
    if not delivery.event_id or len(delivery.event_id) > 128:
        return Rejection(record, "eventId: must have 1 to 128 characters")
    if not delivery.attestation_id or len(delivery.attestation_id) > 128:
        return Rejection(record, "attestationId: must have 1 to 128 characters")
    try:
        ssin = normalize_ssin(delivery.ssin)
    except ValueError as error:
        return Rejection(record, f"ssin: {error}")
    if not 2000 <= delivery.year <= 2100:
        return Rejection(record, f"year: {delivery.year} is out of range")
    if not delivery.title.strip():
        return Rejection(record, "title: must not be empty")
    if delivery.content_type != PDF_CONTENT_TYPE:
        return Rejection(record, f"contentType: the eBox takes {PDF_CONTENT_TYPE} only")
    try:
        content = base64.b64decode(delivery.pdf_base64, validate=True)
    except (binascii.Error, ValueError) as error:
        return Rejection(record, f"pdfBase64: not valid base64 ({error})")
    if not content.startswith(b"%PDF-"):
        return Rejection(record, "pdfBase64: the document is not a PDF (no %PDF- header)")
    return ebox_db.NewDocument(
        event_id=delivery.event_id,
        attestation_id=delivery.attestation_id,
        ssin=ssin,
        year=delivery.year,
        title=delivery.title.strip()[:300],
        file_name=safe_file_name(delivery.file_name, delivery.year),
        content_type=PDF_CONTENT_TYPE,
        content=content,
        sha256=hashlib.sha256(content).hexdigest(),
        issued_at=delivery.issued_at,
    )


class EboxStore:
    """Applies batches of delivery records to PostgreSQL; independent of Kafka."""

    def __init__(self, pool: asyncpg.Pool, settings: Settings, clock: Clock = utc_now) -> None:
        self._pool = pool
        self._settings = settings
        self._clock = clock

    async def apply(self, records: Sequence[RawRecord]) -> BatchReport:
        """Store one batch in one transaction; return what it did."""
        report = BatchReport()
        parsed = [parse(r) for r in records]
        ids = [
            item.dedupe_id if isinstance(item, Rejection) else EVENT_PREFIX + item.event_id
            for item in parsed
        ]
        now = self._clock()
        delivered_on = self._settings.today_in_brussels(now)
        available_until = ebox_db.add_months_clamped(
            delivered_on, self._settings.ebox_retention_months
        )
        async with self._pool.acquire() as conn, conn.transaction():
            seen = await store.already_applied(conn, ids)
            documents: list[ebox_db.NewDocument] = []
            letters: list[OutboxMessage] = []
            payloads: list[DeadLetterPayload] = []
            new_ids: list[str] = []
            for item, event_id in zip(parsed, ids, strict=True):
                if event_id in seen:
                    report.duplicates += 1
                    continue
                seen.add(event_id)
                new_ids.append(event_id)
                if isinstance(item, Rejection):
                    report.rejected += 1
                    letter, payload = dead_letter_message(item, self._settings, now)
                    letters.append(letter)
                    if payload is not None:
                        payloads.append(payload)
                else:
                    documents.append(item)
            stored = await ebox_db.insert_documents(
                conn, documents, delivered_at=now, available_until=available_until
            )
            # Same attestation under another event id: already in the eBox.
            report.duplicates += len(documents) - stored
            report.stored += stored
            await store.record_applied(conn, new_ids)
            await store.save_dead_letter_payloads(conn, payloads)
            await store.enqueue(conn, letters)
        for item in parsed:
            if isinstance(item, Rejection) and item.dedupe_id in new_ids:
                metrics.DEAD_LETTERS.labels(item.code.value).inc()
        return report

    async def purge(self, today: date | None = None) -> int:
        """Delete expired, non-archived documents; ``today`` defaults to Brussels' today."""
        day = today or self._settings.today_in_brussels(self._clock())
        async with self._pool.acquire() as conn, conn.transaction():
            deleted = await ebox_db.purge_expired(conn, day)
        metrics.EBOX_PURGED.inc(deleted)
        if deleted:
            log.info("purged %d expired eBox documents (today %s)", deleted, day)
        return deleted


async def purge(settings: Settings, today: date | None = None) -> int:
    """Run one purge against ``settings.database_url`` (the ``--purge-once`` command)."""
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=1)
    try:
        return await EboxStore(pool, settings).purge(today)
    finally:
        await pool.close()


class EboxConsumer:
    """Reads ``ebox.deliveries`` in its own group and stores documents until stopped."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock = utc_now,
        purge_every: float = DEFAULT_PURGE_EVERY,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._purge_every = purge_every
        self._stopping = asyncio.Event()
        self.totals = BatchReport()

    def stop(self) -> None:
        """Ask the consumer to finish the batch in hand and stop (signal-handler safe)."""
        self._stopping.set()

    async def run(self) -> BatchReport:
        """Consume until :meth:`stop`; return the totals of this run."""
        pool = await asyncpg.create_pool(self._settings.database_url, min_size=1, max_size=2)
        ebox = EboxStore(pool, self._settings, self._clock)
        topic = self._settings.topic(EBOX_DELIVERIES)
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=self._settings.kafka_bootstrap,
            group_id=consumer_group(self._settings),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self._settings.batch_size,
        )
        purger = asyncio.create_task(self._purge_periodically(ebox))
        try:
            await consumer.start()
            log.info(
                "%s (topic %s, group %s)", READY_MESSAGE, topic, consumer_group(self._settings)
            )
            while not self._stopping.is_set():
                batch = await consumer.getmany(
                    timeout_ms=500, max_records=self._settings.batch_size
                )
                if batch:
                    await self._handle(consumer, ebox, batch)
        finally:
            purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await purger
            with contextlib.suppress(Exception):
                await consumer.stop()
            await pool.close()
            log.info(
                "eBox consumer stopped: stored=%d duplicates=%d rejected=%d",
                self.totals.stored,
                self.totals.duplicates,
                self.totals.rejected,
            )
        return self.totals

    async def _handle(
        self, consumer: AIOKafkaConsumer, ebox: EboxStore, batch: dict[TopicPartition, list[Any]]
    ) -> None:
        records = [
            RawRecord(
                topic=EBOX_DELIVERIES,
                partition=m.partition,
                offset=m.offset,
                timestamp_ms=m.timestamp,
                key=m.key,
                value=m.value,
            )
            for messages in batch.values()
            for m in messages
        ]
        report = await self._retrying("eBox batch", ebox.apply, records)
        if report is None:
            return  # stopping during a database outage: not committed, redelivered later
        self.totals.add(report)
        metrics.EBOX_DELIVERIES.labels("stored").inc(report.stored)
        metrics.EBOX_DELIVERIES.labels("duplicate").inc(report.duplicates)
        metrics.EBOX_DELIVERIES.labels("dead_letter").inc(report.rejected)
        for tp, messages in batch.items():
            metrics.RECORDS_CONSUMED.labels(tp.topic, str(tp.partition)).inc(len(messages))
        log.info(
            "eBox batch: stored=%d duplicates=%d rejected=%d",
            report.stored,
            report.duplicates,
            report.rejected,
        )
        offsets = {tp: messages[-1].offset + 1 for tp, messages in batch.items() if messages}
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as error:
            # A rebalance took the partitions away: their new owner re-reads the batch,
            # and the applied ids make that a no-op.
            log.warning("eBox offsets not committed (%s); the batch will be redelivered", error)

    async def _retrying(self, what: str, work: Callable[..., Awaitable[T]], *args: Any) -> T | None:
        """Run ``work`` until it succeeds, or None once stopping: a batch is never skipped."""
        attempt = 0
        while True:
            try:
                return await work(*args)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
                if self._stopping.is_set():
                    return None
                delay = _RETRY_SECONDS[min(attempt, len(_RETRY_SECONDS) - 1)]
                log.warning("%s failed (%s); retrying in %s s", what, error, delay)
                attempt += 1
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)

    async def _purge_periodically(self, ebox: EboxStore) -> None:
        while not self._stopping.is_set():
            try:
                await ebox.purge()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
                log.warning("eBox purge failed (%s); trying again later", error)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._purge_every)
