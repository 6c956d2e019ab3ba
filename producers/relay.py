"""The outbox relay: publishes the outbox to Kafka, in order, and deletes what was sent.

The worker writes every outgoing message into the ``outbox`` table in the same
transaction as the ledger change that caused it; this relay is the only path from there
to Kafka. It publishes with an idempotent producer (acks=all) and deletes rows (or marks
them sent, ``STUDENTWORK_RELAY_KEEP_SENT_HOURS``) only after the broker acknowledged
them, so a crash between the two republishes a few messages (consumers deduplicate on
event id) but never loses one.

The outbox is cut into ``STUDENTWORK_RELAY_SHARDS`` shards by a hash of each row's key
(one by default, at most :data:`BUCKETS`), and each shard is published by one relay at a
time (a PostgreSQL advisory lock per shard), in outbox order: every message of a key is
in one shard, so the order of a key's messages, the only order Kafka keeps for a key, is
the outbox's (one shard: the order of the whole outbox, as before the shards). The
relays running share the shards evenly between them, each counting the others by their
membership lock; a relay without a shard waits as a hot standby. A relay wakes on
NOTIFY from the outbox trigger and polls as a fallback.

A row the broker can never take (too large, an illegal topic name) must not hold up
everything behind it: the relay marks it failed in the outbox (value kept for an
operator) and, in the same transaction, enqueues a small dead letter describing it for
``declarations.rejected``, then moves on. Trouble that passes (broker unavailable,
leader elections, a missing topic) leaves every unacknowledged row pending and the relay
retries later, as before.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    CorruptRecordException,
    InvalidTimestampError,
    InvalidTopicError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from db import store
from db.store import OutboxMessage
from schemas.answers import DeadLetter
from schemas.partitioning import KeyHashPartitioner
from schemas.settings import Settings
from schemas.topics import REJECTED
from streams import metrics

log = logging.getLogger(__name__)

#: The advisory lock of shard ``s`` is ``s << 32 | _RELAY_LOCK_KEY`` (shard 0: the lock
#: of the single relay of before the shards).
_RELAY_LOCK_KEY = 0x5245_4C41  # "RELA"
#: Every relay holds ``shards << 32 | _RELAY_MEMBER_KEY`` shared while it runs: how the
#: relays count each other, and see one configured with another shard count.
_RELAY_MEMBER_KEY = 0x5245_4C4D  # "RELM"
#: Advisory locks are per database; pg_locks shows those of every database.
_THIS_DATABASE = "(SELECT oid FROM pg_database WHERE datname = current_database())"
#: The relays running, per shard count, and the shard locks they hold (pg_locks shows a
#: bigint advisory key as classid = high half, objid = low half, objsubid = 1).
_RELAYS_SQL = f"""
SELECT m.classid::int AS shards, count(DISTINCT m.pid) AS relays, count(s.pid) AS held
FROM pg_locks m
LEFT JOIN pg_locks s ON s.pid = m.pid AND s.locktype = 'advisory' AND s.granted
    AND s.database = m.database AND s.objsubid = 1 AND s.objid::bigint = $2
WHERE m.locktype = 'advisory' AND m.granted AND m.objsubid = 1 AND m.objid::bigint = $1
    AND m.database = {_THIS_DATABASE}
GROUP BY m.classid
"""
#: Buckets of the outbox (migration 0015: the first byte of the SHA-256 of the row's key,
#: no key: of the empty key, modulo this). Shard ``s`` of ``n`` is every bucket ``b`` with
#: ``b % n == s``, so a key's bucket never moves when the shard count changes.
BUCKETS = 32
#: The pending rows of some buckets, each bucket's first in id order (index
#: ``outbox_unsent_bucket``): a range scan per bucket, where one filtered query would
#: sort every pending row of the shard.
_PENDING_IN_BUCKETS = """
SELECT o.id, o.topic, o.key, o.value, o.partition, o.bucket
FROM unnest($1::smallint[]) AS b(bucket)
CROSS JOIN LATERAL (
    SELECT id, topic, key, value, partition, outbox.bucket FROM outbox
    WHERE sent_at IS NULL AND failed_at IS NULL AND outbox.bucket = b.bucket
    ORDER BY id LIMIT $2
) AS o
ORDER BY o.id
"""
#: Seconds between two looks at which relays run (to take or hand over shards).
_CLAIM_SECONDS = 1.0
_CHANNEL = "studentwork_outbox"
#: Sent rows are purged at most this often (seconds).
_PURGE_EVERY_SECONDS = 60.0

#: Seconds between two readings of the outbox gauges while the relay drains a backlog.
_GAUGE_SECONDS = 5.0

#: Largest record the relay sends (key, value and record overhead). The broker's default
#: ``message.max.bytes`` is 1 MB + 12 bytes; staying at or below it means a record too
#: large is refused here, before it takes a sequence number, rather than by the broker.
MAX_REQUEST_BYTES = 1024 * 1024

#: Refusals that are about the record itself, so no retry of it can ever succeed. Not
#: every error aiokafka calls non-retriable: ``KafkaTimeoutError`` is one, and a broker
#: outage must never mark rows failed. A missing topic (``UnknownTopicOrPartitionError``)
#: is transient too: it is a deployment problem that ends when the topic is created.
_PERMANENT_ERRORS: tuple[type[Exception], ...] = (
    MessageSizeTooLargeError,
    RecordTooLargeError,
    RecordListTooLargeError,
    InvalidTopicError,
    CorruptRecordException,
    InvalidTimestampError,
)

_LEGAL_TOPIC = re.compile(r"[a-zA-Z0-9._-]{1,249}")

#: Event ids of the dead letters the relay writes for refused rows.
REFUSED_EVENT_PREFIX = "outbox-refused:"

#: A dead letter for a refused row repeats the row's key only up to this size: a huge
#: key may be what the broker refused, and the letter must fit.
_MAX_LETTER_KEY_BYTES = 4096


def bucket_of(key: bytes | None) -> int:
    """The outbox bucket of a message with this key (what migration 0015 stores)."""
    return hashlib.sha256(key or b"").digest()[0] % BUCKETS


def shard_of(key: bytes | None, shards: int) -> int:
    """The outbox shard of a message with this key, out of ``shards``."""
    return bucket_of(key) % shards


def _shard_lock(shard: int) -> int:
    return shard << 32 | _RELAY_LOCK_KEY


def is_permanent(error: BaseException) -> bool:
    """Whether a send failed because of the record itself (retrying it cannot help)."""
    return isinstance(error, _PERMANENT_ERRORS) and not getattr(error, "retriable", False)


def describe_error(error: BaseException) -> str:
    """The error as logged and stored: its class name always, the detail when it has one."""
    text = str(error)
    name = type(error).__name__
    if not text:
        return name
    return text if name in text else f"{name}: {text}"


def refused_row_letter(
    row_id: int, topic: str, key: bytes | None, value: bytes, reason: str, now: datetime
) -> OutboxMessage:
    """The small dead letter that stands for an outbox row the broker refused.

    It names the row (``rawRef`` ``outbox:<id>``) with the size and SHA-256 of its value
    rather than carrying the value, which stays in the outbox for an operator.
    """
    small_key = key if key is None or len(key) <= _MAX_LETTER_KEY_BYTES else None
    letter = DeadLetter(
        event_id=f"{REFUSED_EVENT_PREFIX}{row_id}",
        topic=topic,
        key_base64=base64.b64encode(small_key).decode() if small_key is not None else None,
        raw_ref=f"outbox:{row_id}",
        raw_sha256=hashlib.sha256(value).hexdigest(),
        raw_size=len(value),
        reason=reason,
        rejected_at=now,
    )
    return OutboxMessage(REJECTED, small_key, letter.to_json_bytes())


def _is_refused_row_letter(topic: str, value: bytes) -> bool:
    """Whether an outbox row is itself the relay's dead letter for a refused row."""
    if topic != REJECTED:
        return False
    try:
        event_id = json.loads(value).get("eventId", "")
    except (ValueError, AttributeError):
        return False
    return isinstance(event_id, str) and event_id.startswith(REFUSED_EVENT_PREFIX)


class _ProducerReset(Exception):
    """The broker refused a batch: start a new producer at once.

    The idempotent producer numbered the refused batch, which the broker never appended;
    every later batch of that producer on the partition would be out of sequence.
    """


@dataclass
class _BatchResult:
    """What became of the rows of one send: outbox ids, or rows with their error."""

    acknowledged: list[int] = field(default_factory=list)
    refused: list[tuple[asyncpg.Record, BaseException]] = field(default_factory=list)
    suspects: list[int] = field(default_factory=list)
    transient: BaseException | None = None
    broker_refused: bool = False


def _append(batch: BatchBuilder, row: asyncpg.Record) -> object:
    """Add a row's record to a batch (stamped now, as a send is); None when it is full."""
    return batch.append(timestamp=None, key=row["key"], value=row["value"])


class OutboxRelay:
    """Moves outbox rows to Kafka until stopped."""

    def __init__(self, settings: Settings, *, sent_retention_hours: float | None = None) -> None:
        self._settings = settings
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        self._sent_retention_hours = (
            settings.relay_keep_sent_hours if sent_retention_hours is None else sent_retention_hours
        )
        #: When (monotonic) sent rows were last purged: a purge per minute at most.
        self._purged_at: float | None = None
        # Rows in a batch the broker refused whole: each is sent alone next, so that only
        # the row at fault is marked failed, never its innocent neighbours.
        self._suspects: set[int] = set()
        self._shards = settings.relay_shards
        #: The shards this relay holds the lock of, so publishes.
        self._held: set[int] = set()
        #: Why this relay holds no shard although it could, as last logged.
        self._waiting: str | None = None
        #: Whether the last batch left rows pending behind it (so no pause before the next).
        self._more = False
        #: Places the keyed rows as Kafka's default partitioner does, keeping the hashes
        #: of the last keys (an employer's answers, a balance on two topics).
        self._partitioner = KeyHashPartitioner()
        self.published = 0
        self.failed = 0

    @property
    def held_shards(self) -> frozenset[int]:
        """The shards of the outbox this relay publishes now."""
        return frozenset(self._held)

    async def run(self) -> None:
        """Publish until :meth:`stop` is called. Retries on broker or database trouble."""
        while not self._stopping.is_set():
            try:
                await self._run_once()
            except _ProducerReset:
                log.info("outbox relay starts a new producer after a refused batch")
            except Exception as error:
                if self._stopping.is_set():
                    break
                log.warning("outbox relay interrupted (%s); retrying in 1 s", error)
                await self._sleep(1.0)

    def stop(self) -> None:
        self._stopping.set()
        self._wakeup.set()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), seconds)
        self._wakeup.clear()

    async def _run_once(self) -> None:
        conn: asyncpg.Connection = await asyncpg.connect(self._settings.database_url)
        producer: AIOKafkaProducer | None = None
        try:
            await conn.execute(
                "SELECT pg_advisory_lock_shared($1)", self._shards << 32 | _RELAY_MEMBER_KEY
            )
            if self._shards > 1:
                # The pending rows are hot, in memory: at the default random_page_cost (4)
                # the planner would rather walk the id index, filtering the other buckets
                # out, than read each bucket's rows through its own index (4 x slower at a
                # backlog of 100,000 rows). Only this session's outbox queries see it.
                await conn.execute("SET random_page_cost = 1.1")
            await conn.add_listener(_CHANNEL, self._on_notify)
            drained = 0
            refreshed = claimed = -_CLAIM_SECONDS
            while not self._stopping.is_set():
                now = asyncio.get_running_loop().time()
                if now - claimed >= _CLAIM_SECONDS:
                    # Between two batches: a shard handed over has nothing in flight.
                    await self._claim(conn)
                    claimed = now
                if not self._held:
                    await self._sleep(min(self._settings.relay_poll_seconds, _CLAIM_SECONDS))
                    continue
                if producer is None:
                    producer = AIOKafkaProducer(
                        bootstrap_servers=self._settings.kafka_bootstrap,
                        enable_idempotence=True,
                        acks="all",
                        linger_ms=5,
                        max_batch_size=256 * 1024,
                        max_request_size=MAX_REQUEST_BYTES,
                    )
                    await producer.start()
                drained += await self.drain(conn, producer)
                if not self._more or now - refreshed >= _GAUGE_SECONDS:
                    # The outbox gauges: when idle, and every few seconds of a long drain.
                    await metrics.refresh_outbox(conn)
                    refreshed = now
                if not self._more:
                    if drained:
                        await self._purge_sent(conn)
                        drained = 0
                    await self._sleep(min(self._settings.relay_poll_seconds, _CLAIM_SECONDS))
        finally:
            self._held.clear()
            metrics.RELAY_SHARDS.set(0)
            if producer is not None:
                with contextlib.suppress(Exception):
                    await producer.stop()
            with contextlib.suppress(Exception):
                # Closing the session releases its locks: the shards go to the others.
                await conn.close()

    async def _claim(self, conn: asyncpg.Connection) -> None:
        """Take or hand over shards so that the relays running share them evenly.

        Each relay takes at most its share (the shard count divided by the relays with
        that count, rounded up) and hands back what is beyond it, so a relay that joins
        gets shards within a second or so and one that stops leaves its shards to the
        others. Relays configured with different shard counts would cut the outbox
        differently, so never publish side by side: the one with the fewest shards
        publishes, once the others have let theirs go.
        """
        running = {
            int(r["shards"]): (int(r["relays"]), int(r["held"]))
            for r in await conn.fetch(_RELAYS_SQL, _RELAY_MEMBER_KEY, _RELAY_LOCK_KEY)
        }
        others = {count: held for count, (_, held) in running.items() if count != self._shards}
        if any(count < self._shards for count in others):
            await self._release(conn, set(self._held))
            self._wait(
                f"a relay with STUDENTWORK_RELAY_SHARDS={min(others)} runs (this one has "
                f"{self._shards}): it publishes; give every relay the same value"
            )
            return
        if any(others.values()):
            self._wait(
                f"relays with STUDENTWORK_RELAY_SHARDS={max(others)} still hold shards "
                f"(this one has {self._shards}): waiting for them to let go"
            )
            return
        # This relay holds its membership lock, so it counts itself.
        relays = running.get(self._shards, (1, 0))[0]
        share = -(-self._shards // relays)
        if len(self._held) > share:
            await self._release(conn, set(sorted(self._held)[share:]))
        for shard in range(self._shards):
            if len(self._held) >= share:
                break
            if shard not in self._held and await conn.fetchval(
                "SELECT pg_try_advisory_lock($1)", _shard_lock(shard)
            ):
                self._held.add(shard)
                log.info("outbox relay publishes shard %d of %d", shard, self._shards)
        metrics.RELAY_SHARDS.set(len(self._held))
        if self._held:
            self._waiting = None
        else:
            self._wait("every shard is held by another relay: waiting as a hot standby")

    async def _release(self, conn: asyncpg.Connection, shards: set[int]) -> None:
        for shard in sorted(shards):
            await conn.execute("SELECT pg_advisory_unlock($1)", _shard_lock(shard))
            self._held.discard(shard)
            log.info("outbox relay hands shard %d of %d over", shard, self._shards)
        metrics.RELAY_SHARDS.set(len(self._held))

    def _wait(self, reason: str) -> None:
        if reason != self._waiting:
            log.info("outbox relay publishes nothing: %s", reason)
            self._waiting = reason

    def _on_notify(self, *_: Any) -> None:
        self._wakeup.set()

    async def drain(self, conn: asyncpg.Connection, producer: AIOKafkaProducer) -> int:
        """Publish one batch of pending rows; return how many were handled.

        Handled means published and marked sent, or refused for good and marked failed
        with a dead letter in its place. Acknowledged rows are marked sent even when
        others of the batch failed, so they are not sent again. A transient failure is
        raised after that (the caller retries later with a new producer). A send that
        fails at once stops the batch there, so no later row overtakes it; a send the
        broker fails makes the producer fail every later batch of that partition, so
        only rows of other partitions (never ordered against it) can be ahead of it.
        """
        if self._shards == 1:
            rows = await conn.fetch(
                "SELECT id, topic, key, value, partition FROM outbox"
                " WHERE sent_at IS NULL AND failed_at IS NULL ORDER BY id LIMIT $1",
                self._settings.relay_batch,
            )
            self._more = len(rows) >= self._settings.relay_batch
        else:
            buckets = [b for b in range(BUCKETS) if b % self._shards in self._held]
            per_bucket = -(-self._settings.relay_batch // max(len(buckets), 1))
            rows = await conn.fetch(_PENDING_IN_BUCKETS, buckets, per_bucket)
            # More is pending where a bucket gave all it was asked for.
            self._more = max(Counter(row["bucket"] for row in rows).values(), default=0) >= (
                per_bucket
            )
        if not rows:
            return 0
        isolated = self._isolate_suspect(rows)
        self._more = self._more or len(isolated) < len(rows)
        rows = isolated
        result = await self._publish(producer, rows, alone=len(rows) == 1)
        await self._record(conn, result)
        self._suspects.difference_update(result.acknowledged)
        self._suspects.difference_update(row["id"] for row, _ in result.refused)
        self._suspects.update(result.suspects)
        self.published += len(result.acknowledged)
        self.failed += len(result.refused)
        metrics.RELAY_PUBLISHED.inc(len(result.acknowledged))
        metrics.RELAY_ERRORS.labels("refused").inc(len(result.refused))
        if result.transient is not None:
            metrics.RELAY_ERRORS.labels("transient").inc()
            raise result.transient
        if result.broker_refused:
            raise _ProducerReset()
        return len(result.acknowledged) + len(result.refused)

    def _isolate_suspect(self, rows: Sequence[asyncpg.Record]) -> list[asyncpg.Record]:
        """The rows before the first suspect, or the suspect alone if it comes first."""
        for index, row in enumerate(rows):
            if row["id"] in self._suspects:
                return list(rows[: index or 1])
        return list(rows)

    async def _publish(
        self, producer: AIOKafkaProducer, rows: Sequence[asyncpg.Record], *, alone: bool
    ) -> _BatchResult:
        """Send the rows in record batches built here, one open batch per partition.

        Each row goes into the open batch of its topic and partition, in outbox order; a
        full batch is sent and the partition gets a new one, and the open batches are
        sent at the end. ``producer.send`` for each row cost four times the CPU (8.6
        against 2.2 µs a message, aiokafka's per-message future and lookups): the relay
        was 7.5 % of a worker's py-spy samples. The broker takes or refuses whole batches, as it
        did the batches the producer made of single sends.
        """
        result = _BatchResult()
        open_batches: dict[tuple[str, int], tuple[BatchBuilder, list[asyncpg.Record]]] = {}
        sent: list[tuple[list[asyncpg.Record], asyncio.Future[Any]]] = []
        partitions: dict[str, list[int]] = {}

        async def send(place: tuple[str, int]) -> None:
            batch, members = open_batches.pop(place)
            topic, partition = place
            sent.append((members, await producer.send_batch(batch, topic, partition=partition)))

        try:
            for row in rows:
                topic = self._settings.topic(row["topic"])
                try:
                    place = (topic, await self._partition(producer, topic, row, partitions))
                except Exception as error:
                    if is_permanent(error):
                        # Refused before it was queued (too large, illegal topic): this
                        # row alone is at fault and the producer is unharmed.
                        result.refused.append((row, error))
                        continue
                    result.transient = error
                    break
                opened = open_batches.get(place)
                if opened is not None and _append(opened[0], row) is None:
                    await send(place)
                    opened = None
                if opened is None:
                    opened = open_batches[place] = (producer.create_batch(), [])
                    _append(opened[0], row)  # an empty batch takes any record
                opened[1].append(row)
            for place in list(open_batches):
                await send(place)
        except Exception as error:  # queueing a batch failed (closed, timed out)
            result.transient = error
        outcomes = await asyncio.gather(*(f for _, f in sent), return_exceptions=True)
        for (members, _), outcome in zip(sent, outcomes, strict=True):
            if not isinstance(outcome, BaseException):
                result.acknowledged.extend(row["id"] for row in members)
                continue
            if is_permanent(outcome):
                result.broker_refused = True
                # The broker refuses whole record batches: only a row sent alone is
                # known to be the one at fault.
                if alone:
                    result.refused.extend((row, outcome) for row in members)
                else:
                    result.suspects.extend(row["id"] for row in members)
            elif result.transient is None:
                result.transient = outcome
        return result

    async def _partition(
        self,
        producer: AIOKafkaProducer,
        topic: str,
        row: asyncpg.Record,
        partitions: dict[str, list[int]],
    ) -> int:
        """Where a row goes: the partition it names, folded onto the topic's partitions (a
        topic given fewer partitions than the worker was configured with must not stall
        the relay on a row it cannot place), else its key's, as the default partitioner
        places it. Raises what the producer would have raised before queueing it."""
        if not _LEGAL_TOPIC.fullmatch(topic) or topic in (".", ".."):
            # The client would wait for metadata that never comes, then call the topic
            # unknown (transient) and stall the relay on this row forever.
            raise InvalidTopicError(f"{topic!r} is not a legal topic name")
        size = DefaultRecordBatchBuilder.estimate_size_in_bytes(row["key"], row["value"], [])
        if size > MAX_REQUEST_BYTES:
            raise MessageSizeTooLargeError(
                f"The message is {size} bytes when serialized which is larger than the "
                f"maximum request size of {MAX_REQUEST_BYTES} bytes"
            )
        known = partitions.get(topic)
        if known is None:
            known = partitions[topic] = sorted(await producer.partitions_for(topic))
        wanted: int | None = row["partition"]
        if wanted is not None:
            return known[wanted % len(known)]
        return self._partitioner(row["key"], known, known)

    async def _record(self, conn: asyncpg.Connection, result: _BatchResult) -> None:
        """Mark what was acknowledged sent, and what was refused failed, in one go."""
        now = datetime.now(UTC)
        letters: list[OutboxMessage] = []
        failures: list[str] = []
        for row, error in result.refused:
            topic = self._settings.topic(row["topic"])
            reason = (
                f"outbox row {row['id']} for {topic} ({len(row['value'])} bytes) cannot be "
                f"published: {describe_error(error)}"
            )
            failures.append(reason)
            if _is_refused_row_letter(row["topic"], row["value"]):
                # Never a dead letter for a dead letter about a row: that could loop.
                log.error("%s; kept in the outbox as failed", reason)
                continue
            log.error(
                "%s; kept in the outbox as failed, a dead letter on %s stands for it",
                reason,
                self._settings.topic(REJECTED),
            )
            letters.append(
                refused_row_letter(row["id"], topic, row["key"], row["value"], reason, now)
            )
        async with conn.transaction():
            if result.acknowledged and not self._sent_retention_hours:
                # Nothing kept: delete instead of marking sent and purging later.
                await conn.execute(
                    "DELETE FROM outbox WHERE id = ANY($1::bigint[])", result.acknowledged
                )
            elif result.acknowledged:
                await conn.execute(
                    "UPDATE outbox SET sent_at = now() WHERE id = ANY($1::bigint[])",
                    result.acknowledged,
                )
            if result.refused:
                await conn.execute(
                    "UPDATE outbox o SET failed_at = now(), failure = f.failure"
                    " FROM unnest($1::bigint[], $2::text[]) AS f(id, failure)"
                    " WHERE o.id = f.id",
                    [row["id"] for row, _ in result.refused],
                    failures,
                )
                await store.enqueue(conn, letters)

    async def _purge_sent(self, conn: asyncpg.Connection) -> None:
        """Delete the sent rows older than the retention (index ``outbox_sent``), at
        most once a minute: after every drain it cost the database a scan each time."""
        now = time.monotonic()
        if not self._sent_retention_hours or (
            self._purged_at is not None and now - self._purged_at < _PURGE_EVERY_SECONDS
        ):
            return
        self._purged_at = now
        await conn.execute(
            "DELETE FROM outbox WHERE sent_at < now() - make_interval(secs => $1)",
            self._sent_retention_hours * 3600,
        )


async def relays_publishing(conn: asyncpg.Connection) -> int:
    """How many relays hold a shard of the outbox now (the others are hot standbys)."""
    count: int = await conn.fetchval(
        "SELECT count(DISTINCT pid) FROM pg_locks WHERE locktype = 'advisory' AND granted"
        f" AND objsubid = 1 AND objid::bigint = $1 AND database = {_THIS_DATABASE}",
        _RELAY_LOCK_KEY,
    )
    return count


async def pending_count(database_url: str) -> int:
    """How many outbox rows wait to be published (the relay backlog; failed rows excluded)."""
    conn: asyncpg.Connection = await asyncpg.connect(database_url)
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM outbox WHERE sent_at IS NULL AND failed_at IS NULL"
        )
        return count
    finally:
        await conn.close()


async def failed_count(database_url: str) -> int:
    """How many outbox rows the broker refused for good (kept for an operator)."""
    conn: asyncpg.Connection = await asyncpg.connect(database_url)
    try:
        count: int = await conn.fetchval("SELECT count(*) FROM outbox WHERE failed_at IS NOT NULL")
        return count
    finally:
        await conn.close()
