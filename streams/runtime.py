"""The worker's runtime: consume a batch, apply it in one transaction, then commit.

This is the one place that owns what happens between the broker and the system of
record, for every input topic. Each *lane* is an aiokafka consumer (its own consumer
group) that reads some input topics and hands each batch to the handler of its topic.
Offsets are committed only after the handler returned, which means after its database
transaction committed; nothing that was raised can lead to a commit.

Why not faust agents: faust's ``take_events`` acknowledges every buffered event in a
``finally:`` block, so an exception (or a cancellation) while a batch is applied commits
offsets of records that were never applied. Owning the loop on aiokafka makes the rule
"commit after the transaction" true by construction, keeps per-record overhead low, and
puts a student's Dimona and DmfA partitions (same key, same partition number) in one
consumer of one group. faust still hosts the process (lifecycle, signals, web, the
leader's crontab).

Failures are classified (:func:`is_transient`). Transient ones (connection lost,
serialization failure, deadlock, broker unavailable) are retried with backoff: the
batch waits, nothing is decided without the ledger. Every other error is permanent for
the data that caused it: the batch is split in halves, in order, until the offending
record is alone; that record is quarantined (the handler refuses it and dead-letters
it, with the reason and the exception type) and the rest of the batch is applied.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.errors import IllegalStateError, KafkaError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_never,
    wait_exponential_jitter,
)

from schemas.settings import Settings
from streams import metrics
from streams.logs import CURRENT_BATCH, record_fields
from streams.messages import printable

log = logging.getLogger(__name__)

T = TypeVar("T")

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class RawRecord:
    """A consumed record, as the broker delivered it (``topic`` is the logical name)."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()

    @property
    def origin(self) -> str:
        """Where the record came from, for logs and for naming it in answers."""
        return f"{self.topic}[{self.partition}]@{self.offset}"


class RecordHandler(Protocol):
    """What a lane needs of the code that applies one input topic."""

    async def apply(self, records: Sequence[RawRecord]) -> object:
        """Apply the records in one transaction (all or nothing); may raise."""

    async def quarantine(self, record: RawRecord, error: BaseException) -> None:
        """Refuse one record that cannot be applied: dead letter (and answer), once."""


# --------------------------------------------------------------------------------------
# Failure classification and retries
# --------------------------------------------------------------------------------------

#: SQLSTATE classes and codes that say "try again": connection exceptions (08),
#: serialization failure and deadlock (40), insufficient resources (53), operator
#: intervention such as a restarting server (57P01-57P03), lock not available (55P03)
#: and system errors (58).
_TRANSIENT_SQLSTATE_PREFIXES = ("08", "40", "53", "57P", "58", "55P03")


def is_transient(error: BaseException) -> bool:
    """Whether retrying the same work later may succeed (else the data is at fault)."""
    if isinstance(error, asyncpg.PostgresError):
        state = getattr(error, "sqlstate", None) or ""
        return state.startswith(_TRANSIENT_SQLSTATE_PREFIXES)
    if isinstance(error, asyncpg.exceptions._base.DataError):
        # Client-side encoding of a query argument (an int beyond int32, say): the data.
        return False
    if isinstance(error, asyncpg.InterfaceError):
        # Connection closed, pool closing, connection lost mid-query.
        return True
    if isinstance(error, KafkaError):
        return bool(getattr(error, "retriable", False))
    return isinstance(error, OSError | TimeoutError)


def _log_retry(what: str) -> Callable[[RetryCallState], None]:
    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0
        log.warning("%s failed (%r); retrying in %.1f s", what, error, delay)

    return before_sleep


async def retry_transient(what: str, work: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Run ``work`` until it succeeds or fails permanently.

    Transient failures are retried without limit (exponential backoff from 0.5 s up to
    10 s, with jitter): a database outage delays a batch, it never skips it. Permanent
    ones are raised.
    """
    retrying = AsyncRetrying(
        retry=retry_if_exception(is_transient),
        wait=wait_exponential_jitter(multiplier=0.5, max=10.0, jitter=0.5),
        stop=stop_never,
        before_sleep=_log_retry(what),
        reraise=True,
    )
    result: T = await retrying(work, *args)
    return result


def describe_error(error: BaseException) -> str:
    """The exception as one line of printable text, for a dead letter's reason."""
    return printable(f"{type(error).__name__}: {error}", limit=1000)


async def apply_isolating(handler: RecordHandler, records: Sequence[RawRecord], what: str) -> int:
    """Apply ``records``; isolate and quarantine the records that fail permanently.

    Halves are applied in order (left before right), so the order in which a partition
    delivered its records is the order in which they are applied, also around a poison
    record. Returns the number of records quarantined.
    """
    if not records:
        return 0
    try:
        await retry_transient(what, handler.apply, records)
        return 0
    except Exception as error:
        if len(records) > 1:
            log.warning(
                "%s of %d records failed (%s); splitting it to isolate the cause",
                what,
                len(records),
                describe_error(error),
            )
            middle = len(records) // 2
            left = await apply_isolating(handler, records[:middle], what)
            return left + await apply_isolating(handler, records[middle:], what)
        record = records[0]
        log.error(
            "%s: %s cannot be applied: %s",
            what,
            record.origin,
            describe_error(error),
            extra=record_fields(record.topic, record.partition, record.offset),
        )
        metrics.QUARANTINED.labels(record.topic).inc()
        try:
            await retry_transient(
                f"quarantine of {record.origin}", handler.quarantine, record, error
            )
        except Exception as last:
            # The refusal itself failed: log the whole record so an operator can act.
            log.critical(
                "could not quarantine %s (%s); record key=%s value=%s",
                record.origin,
                describe_error(last),
                base64.b64encode(record.key or b"").decode(),
                base64.b64encode(record.value or b"").decode(),
            )
        return 1


# --------------------------------------------------------------------------------------
# Shared state of a worker process
# --------------------------------------------------------------------------------------


class WorkerState:
    """What every part of a worker shares: settings, clock and the database pool."""

    def __init__(self, settings: Settings, clock: Clock = utc_now) -> None:
        self.settings = settings
        self.clock = clock
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()

    async def pool(self) -> asyncpg.Pool:
        """The pool, created on first use (retrying while the database is away)."""
        async with self._lock:
            if self._pool is None:
                self._pool = await retry_transient("connecting to the database", self._connect)
            return self._pool

    async def _connect(self) -> asyncpg.Pool:
        pool: asyncpg.Pool = await asyncpg.create_pool(
            self.settings.database_url,
            min_size=1,
            max_size=self.settings.database_pool_size,
            # Offsets are committed once a transaction reports its commit: that report
            # must mean durable, whatever the server's default.
            server_settings={"synchronous_commit": "on"},
        )
        metrics.watch_pool(pool)
        return pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


# --------------------------------------------------------------------------------------
# Lanes: consume, apply, commit
# --------------------------------------------------------------------------------------


class _WaitForBatch(ConsumerRebalanceListener):  # type: ignore[misc]
    """Hands partitions over only between batches, after their offsets are committed."""

    def __init__(self, lane: InputLane) -> None:
        self._lane = lane

    async def on_partitions_revoked(self, revoked: Any) -> None:
        async with self._lane.in_flight:
            # Records held back for the merge were not applied, hence not committed:
            # whoever is assigned the partitions next reads them again from the
            # committed offsets (aiokafka resets positions on every assignment).
            self._lane.drop_held()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        lane = self._lane
        metrics.PROGRESS.assigned(
            lane.name, lane.group_id, [(tp.topic, tp.partition) for tp in assigned]
        )
        consumer = lane._consumer
        if consumer is not None:
            # Where each partition starts: its committed offset (or the earliest one).
            for tp in assigned:
                try:
                    start = await consumer.position(tp)
                except Exception as error:  # only the lag gauge waits for the first batch
                    log.debug("lane %s: position of %s: %r", lane.name, tp, error)
                    continue
                metrics.PROGRESS.observe(
                    lane.name, lane.group_id, (tp.topic, tp.partition), start, None
                )
        log.info(
            "lane %s assigned %s",
            self._lane.name,
            ", ".join(sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned)) or "nothing",
        )


def _merge_key(record: Any, rank: int) -> tuple[int, int]:
    """Broker timestamp, then the topic's rank in the lane's mapping on a tie."""
    timestamp = record.timestamp if record.timestamp is not None else -1
    return (timestamp, rank)


#: Bytes a consumer fetches ahead per partition (the broker still returns a larger record).
_PARTITION_FETCH_BYTES = 256 * 1024


class InputLane:
    """One consumer group reading some input topics, each applied by its handler.

    ``handlers`` maps logical topic names (``dimona.declarations``) to handlers; the
    order of the mapping is the order in which the handlers of one fetch are applied.

    Topics that share one handler (the ledger's Dimona and DmfA) are one ordered stream:
    partition *p* of each is merged with partition *p* of the others in broker-timestamp
    order (ties: mapping order, then offset), so a student's declarations are applied in
    the same order whatever the batching, the timing or the number of workers. A record
    is taken only once the next record of every other topic of the merge is known (held
    here), or that topic is read up to its high watermark; otherwise it is held back, at
    most ``merge_wait_seconds``, while the lagging partition is fetched. Held records
    are neither applied nor committed; a rebalance drops them (they are read again from
    the committed offsets). A partition holding twice its share of a batch (the batch
    size over the partition numbers assigned) is paused, so that fetching goes to the
    lagging ones and what is held stays about four batches whatever the partition count
    (held records were the worker's largest buffer). The range assignor gives partition
    *p* of every topic to the same member, so a merge always has both sides.
    """

    def __init__(
        self,
        name: str,
        settings: Settings,
        handlers: Mapping[str, RecordHandler],
        *,
        max_batch: int | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self.handlers = dict(handlers)
        self.max_batch = max_batch or settings.batch_size
        self.in_flight = asyncio.Lock()
        self._logical = {settings.topic(t): t for t in handlers}
        self._stopping = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._batches = itertools.count(1)
        # Physical topic names merged together, keyed by the handler they share.
        merged: dict[int, list[str]] = {}
        for logical, handler in self.handlers.items():
            merged.setdefault(id(handler), []).append(settings.topic(logical))
        self._merges = [topics for topics in merged.values() if len(topics) > 1]
        self._merge_rank = {
            topic: rank for group in self._merges for rank, topic in enumerate(group)
        }
        #: Fetched records of merged topics not applied yet, per partition.
        self._held: dict[TopicPartition, deque[Any]] = {}
        #: Since when (monotonic) a merged partition number waits for a lagging topic.
        self._waiting_since: dict[tuple[int, int], float] = {}
        #: The partitions that merges wait for, fetched first.
        self._lagging: set[TopicPartition] = set()
        #: Whether the last merge left records it could have taken (its batch was full):
        #: the next fetch then waits for nothing.
        self._left_over = False

    def drop_held(self) -> None:
        """Forget the records held back for the merge (they were not committed)."""
        self._left_over = False
        self._held.clear()
        metrics.HELD_RECORDS.labels(self.name).set(0)
        self._waiting_since.clear()
        self._lagging.clear()

    @property
    def group_id(self) -> str:
        return f"{self.settings.app_id}.{self.name}"

    def _new_consumer(self) -> AIOKafkaConsumer:
        timeout_ms = int(self.settings.session_timeout_seconds * 1000)
        return AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=self.group_id,
            client_id=f"{self.group_id}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=timeout_ms,
            heartbeat_interval_ms=min(3000, timeout_ms // 3),
            max_poll_records=self.max_batch,
            # What the fetcher keeps ahead per partition, beside what the merge holds:
            # aiokafka's 1 MiB is some 2,500 records a partition, more than the share of
            # a batch a partition gives (a quarter of 4,000 records on four partitions).
            max_partition_fetch_bytes=_PARTITION_FETCH_BYTES,
            # Range first: partition p of every topic to one member, which the merge
            # needs; round robin (the former default) lets a group of older members
            # agree during a rolling upgrade.
            partition_assignment_strategy=(RangePartitionAssignor, RoundRobinPartitionAssignor),
            # A database outage holds a batch in retries; the consumer stays in its group.
            max_poll_interval_ms=max(300_000, timeout_ms * 10),
            # How long the broker waits for every member to rejoin in a rebalance: a member
            # rejoins only once its batch is committed (``_WaitForBatch``). aiokafka's
            # default is the session timeout; a batch held longer (a merge waiting for a
            # lagging topic, a database retry) got its member dropped from the round, and
            # the two workers of a test then took turns evicting each other for minutes.
            # The Java client's value: the poll interval.
            rebalance_timeout_ms=max(300_000, timeout_ms * 10),
        )

    async def run(self) -> None:
        """Consume until :meth:`stop`; reconnects after broker trouble."""
        while not self._stopping.is_set():
            consumer = self._new_consumer()
            self._consumer = consumer
            try:
                await consumer.start()
                consumer.subscribe(list(self._logical), listener=_WaitForBatch(self))
                while not self._stopping.is_set():
                    fetched = await self._fetch(consumer)
                    self._observe_ends(consumer, fetched)
                    if fetched or self._held:
                        async with self.in_flight:
                            await self._apply(consumer, fetched)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if self._stopping.is_set():
                    break
                log.warning("lane %s interrupted (%r); restarting in 1 s", self.name, error)
                await asyncio.sleep(1.0)
            finally:
                self._consumer = None
                metrics.PROGRESS.left(self.name)
                try:
                    await consumer.stop()
                except Exception as error:
                    log.debug("lane %s: consumer stop: %r", self.name, error)

    def stop(self) -> None:
        self._stopping.set()

    def _observe_ends(self, consumer: AIOKafkaConsumer, fetched: Mapping[Any, Any]) -> None:
        """The end offsets the last fetch reported, for the lag and the stuck rule."""
        for tp in fetched or consumer.assignment():
            end = consumer.highwater(tp)
            if end is not None:
                metrics.PROGRESS.observe(
                    self.name, self.group_id, (tp.topic, tp.partition), None, end
                )

    async def _fetch(self, consumer: AIOKafkaConsumer) -> dict[TopicPartition, list[Any]]:
        """The next records: first those of the partitions a merge waits for, asked by
        name (else a big fetched block of another partition, returned ``max_batch`` at a
        time, would keep them waiting for seconds), then whatever else is fetched."""
        timeout_ms = int(self.settings.batch_within * 1000)
        fetched: dict[TopicPartition, list[Any]] = {}
        # One partition at a time: aiokafka fills ``max_records`` from its buffers in
        # the order they were fetched, so one call for all could return one of them only.
        for tp in sorted(self._lagging & consumer.assignment()):
            for got, messages in (
                await consumer.getmany(tp, timeout_ms=0, max_records=self._hold_limit(consumer))
            ).items():
                fetched.setdefault(got, []).extend(messages)
        more = await consumer.getmany(
            timeout_ms=0 if fetched or self._left_over else timeout_ms,
            max_records=self.max_batch,
        )
        for tp, messages in more.items():
            fetched.setdefault(tp, []).extend(messages)
        return fetched

    def _raw(self, message: Any) -> RawRecord:
        return RawRecord(
            topic=self._logical[message.topic],
            partition=message.partition,
            offset=message.offset,
            timestamp_ms=message.timestamp,
            key=message.key,
            value=message.value,
            headers=tuple(message.headers or ()),
        )

    async def _apply(self, consumer: AIOKafkaConsumer, fetched: Mapping[Any, Any]) -> None:
        started = time.perf_counter()
        CURRENT_BATCH.set(f"{self.name}#{next(self._batches)}")
        by_topic: dict[str, list[RawRecord]] = {t: [] for t in self.handlers}
        offsets: dict[TopicPartition, int] = {}
        for tp, messages in fetched.items():
            if tp.topic in self._merge_rank:
                self._held.setdefault(tp, deque()).extend(messages)
                continue
            by_topic[self._logical[tp.topic]].extend(self._raw(m) for m in messages)
            if messages:
                offsets[tp] = messages[-1].offset + 1
        # Counted once applied, not when fetched: a record held for the merge is not
        # consumed yet (an operator waiting for the count waits for its answer).
        applied: collections.Counter[tuple[str, int]] = collections.Counter()
        batches: list[tuple[str, list[RawRecord]]] = []
        self._left_over = False
        for group in self._merges:
            merged = await self._merge(consumer, group, offsets)
            if merged:
                # The handler of a merge is the one of each of its topics.
                batches.append((merged[0].topic, merged))
        batches += [(logical, records) for logical, records in by_topic.items() if records]
        for logical, records in batches:
            await apply_isolating(self.handlers[logical], records, f"batch of {logical}")
            applied.update((self.settings.topic(r.topic), r.partition) for r in records)
        for (topic, partition), count in applied.items():
            metrics.RECORDS_CONSUMED.labels(topic, str(partition)).inc(count)
        if offsets:
            try:
                await consumer.commit(offsets)
            except KafkaError as error:
                # Applied and committed in PostgreSQL: whoever reads these records again
                # finds their ids applied, so a lost commit only costs a redelivery.
                log.warning("lane %s: offsets not committed (%r)", self.name, error)
            else:
                for tp, offset in offsets.items():
                    metrics.PROGRESS.observe(
                        self.name,
                        self.group_id,
                        (tp.topic, tp.partition),
                        offset,
                        consumer.highwater(tp),
                    )
        if applied:
            metrics.BATCH_RECORDS.labels(self.name).observe(applied.total())
            metrics.BATCH_DURATION.labels(self.name).observe(time.perf_counter() - started)
        CURRENT_BATCH.set(None)

    def _hold_limit(self, consumer: AIOKafkaConsumer) -> int:
        """Records a merged partition holds before it is paused (a fetch may add more).

        Held records were the worker's largest buffer (memray at 30,000 students: 64,000
        of them, a batch's worth per partition and a fetch more). Twice its share of a
        batch is enough for a partition: a batch takes at most one share of it, and it is
        fetched again (resumed) while that batch is applied. The share of the partition
        numbers assigned, not held: while few are held yet, theirs would be larger, and
        what they hold of the later topic waits for all of the earlier one.
        """
        assigned = {tp.partition for tp in consumer.assignment() if tp.topic in self._merge_rank}
        return 2 * -(-self.max_batch // max(1, len(assigned)))

    async def _read_to_end(self, consumer: AIOKafkaConsumer, tp: TopicPartition) -> bool:
        """Whether every record of ``tp`` on the broker (as of its last fetch) was
        fetched: then no record of it can come before the ones held of the others."""
        highwater = consumer.highwater(tp)
        if highwater is None:
            return False
        try:
            position = await consumer.position(tp)
        except IllegalStateError:
            return True  # not ours: nothing of it will ever be read here
        return bool(position >= highwater)

    async def _merge(
        self,
        consumer: AIOKafkaConsumer,
        group: Sequence[str],
        offsets: dict[TopicPartition, int],
    ) -> list[RawRecord]:
        """Take, per partition number, the held records of ``group`` that can be
        ordered now (see the class), in broker-timestamp order; note their offsets."""
        out: list[RawRecord] = []
        self._lagging -= {tp for tp in self._lagging if tp.topic in group}
        numbers = sorted({tp.partition for tp in self._held if tp.topic in group})
        wait = self.settings.merge_wait_seconds
        # The batch size holds for a merge too, shared by the partition numbers held: the
        # held queues of eight partitions made batches of several thousand records, and a
        # batch's memory is its students' ledgers. What is left stays held, in order.
        share = -(-self.max_batch // max(1, len(numbers)))
        for number in numbers:
            tps = [TopicPartition(topic, number) for topic in group]
            queues = [self._held.setdefault(tp, deque()) for tp in tps]
            waiting_key = (id(group), number)
            forced = False
            taken = 0
            while any(queues) and taken < share:
                if not forced:
                    lagging = False
                    for tp, queue in zip(tps, queues, strict=True):
                        if not queue and not await self._read_to_end(consumer, tp):
                            lagging = True
                            self._lagging.add(tp)
                            break
                    if lagging:
                        since = self._waiting_since.setdefault(waiting_key, time.monotonic())
                        if time.monotonic() - since < wait:
                            break
                        # Apply what is held: its order with the lagging topic is lost.
                        log.warning(
                            "lane %s: partition %d of %s lagging for %.1f s (%s); applying "
                            "the records held for it without waiting further",
                            self.name,
                            number,
                            ", ".join(group),
                            wait,
                            "; ".join(
                                f"{tp.topic}: {len(q)} held, high watermark "
                                f"{consumer.highwater(tp)}"
                                f"{', paused' if tp in consumer.paused() else ''}"
                                for tp, q in zip(tps, queues, strict=True)
                            ),
                        )
                        forced = True
                    self._waiting_since.pop(waiting_key, None)
                # Every topic's next record is known (or it has none): take the earliest.
                rank = min(
                    (r for r, q in enumerate(queues) if q),
                    key=lambda r: _merge_key(queues[r][0], r),
                )
                message = queues[rank].popleft()
                out.append(self._raw(message))
                offsets[tps[rank]] = message.offset + 1
                taken += 1
            if taken >= share and any(queues):
                self._left_over = True
        for tp in [tp for tp, queue in self._held.items() if not queue]:
            del self._held[tp]
        limit = self._hold_limit(consumer)
        full = {tp for tp, queue in self._held.items() if tp.topic in group and len(queue) >= limit}
        paused = consumer.paused()
        if full - paused:
            consumer.pause(*(full - paused))
        resume = {tp for tp in paused if tp.topic in group and tp not in full}
        if resume:
            consumer.resume(*resume)
        metrics.HELD_RECORDS.labels(self.name).set(sum(map(len, self._held.values())))
        return out
