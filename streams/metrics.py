"""Every Prometheus metric of the project, and what the health checks know of consumers.

Defined here, in the lowest layer that records them, so that the stream worker, the
outbox relay, the eBox consumer and the HTTP tier (``api/``) all import one set of
definitions (prometheus-client's default registry; one process, one ``/metrics``). The
worker serves them on its web port (:mod:`streams.health`), the standalone relay and the
eBox consumer with prometheus-client's own HTTP server (:func:`serve`,
``STUDENTWORK_METRICS_PORT``).

Names follow Prometheus conventions (``_total`` counters, base units in the name:
``_seconds``, ``_records``). Labels have low cardinality on purpose: topic, partition,
lane, status, anomaly or reason code, route template. Never an SSIN, an enterprise
number or an event id.

:class:`ConsumerProgress` keeps, per lane and partition, the committed offset, the high
watermark and when the partition last moved; it gives the lag gauge its values and
``/health/ready`` its "stuck partition" rule.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    start_http_server,
)

from db import reads
from schemas.settings import Settings

# The ``_created`` series double every counter's lines and no dashboard here uses them.
disable_created_metrics()  # type: ignore[no-untyped-call]

__all__ = ["CONTENT_TYPE_LATEST", "PROGRESS", "ConsumerProgress", "exposition", "serve"]

# -- the worker's lanes ------------------------------------------------------------------

RECORDS_CONSUMED = Counter(
    "studentwork_records_consumed_total",
    "Input records consumed and applied (or refused), by topic and partition.",
    ["topic", "partition"],
)
CONSUMER_LAG = Gauge(
    "studentwork_consumer_lag",
    "Records of a partition not yet committed by its consumer group: end offset (high "
    "watermark) minus committed offset.",
    ["group", "topic", "partition"],
)
ASSIGNED_PARTITIONS = Gauge(
    "studentwork_assigned_partitions",
    "Partitions a lane of this worker holds.",
    ["lane"],
)
HELD_RECORDS = Gauge(
    "studentwork_held_records",
    "Records fetched and held back by a lane's Dimona and DmfA merge until their order "
    "with the other topic is known (neither applied nor committed yet).",
    ["lane"],
)
BATCH_RECORDS = Histogram(
    "studentwork_batch_records",
    "Records per batch applied in one transaction.",
    ["lane"],
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000),
)
BATCH_DURATION = Histogram(
    "studentwork_batch_duration_seconds",
    "Time to apply and commit one batch.",
    ["lane"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
STUCK_PARTITIONS = Gauge(
    "studentwork_stuck_partitions",
    "Partitions with lag whose committed offset has not moved for "
    "STUDENTWORK_STUCK_PARTITION_SECONDS (as /health/ready judges them).",
)
DATABASE_UP = Gauge(
    "studentwork_database_up",
    "1 when the last scrape could read the outbox from PostgreSQL, else 0.",
)
QUARANTINED = Counter(
    "studentwork_records_quarantined_total",
    "Records isolated from their batch because applying them failed.",
    ["topic"],
)

# -- what the ledger decided -------------------------------------------------------------

ANSWERS = Counter(
    "studentwork_answers_total",
    "Answers to employers on dimona.acks, by status (A, W, B).",
    ["status"],
)
ANOMALIES = Counter(
    "studentwork_answer_anomalies_total",
    "Anomalies named in answers, by code (QUOTA_EXCEEDED, LATE_DECLARATION, ...).",
    ["code"],
)
DEAD_LETTERS = Counter(
    "studentwork_dead_letters_total",
    "Dead letters written to declarations.rejected, by reason class (the refusal code).",
    ["reason"],
)
BALANCES_CHANGED = Counter(
    "studentwork_balances_changed_total",
    "Balances stored with a new value and published on student.balances.",
)
QUOTA_RECOMPUTATIONS = Counter(
    "studentwork_quota_recomputations_total",
    "Years whose balances were all recomputed, by cause (change: quota.changes; "
    "reconcile: configuration at start).",
    ["cause"],
)
ACCESS_CODE_ROTATIONS = Counter(
    "studentwork_access_code_rotations_total",
    "Partitions whose students got the month's access codes.",
)
ATTESTATION_RENDERS = Counter(
    "studentwork_attestation_renders_total",
    "Attestation PDFs rendered, by outcome (ok, failed).",
    ["outcome"],
)
ATTESTATION_RENDER_DURATION = Histogram(
    "studentwork_attestation_render_duration_seconds",
    "Time to render one attestation PDF.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)

# -- outbox and relay --------------------------------------------------------------------

OUTBOX_BACKLOG = Gauge(
    "studentwork_outbox_backlog",
    "Outbox rows waiting for the relay (failed rows excluded).",
)
OUTBOX_OLDEST_AGE = Gauge(
    "studentwork_outbox_oldest_unsent_age_seconds",
    "Age of the oldest outbox row not yet published (0 when none waits).",
)
OUTBOX_FAILED = Gauge(
    "studentwork_outbox_failed",
    "Outbox rows the broker refused for good, kept for an operator.",
)
RELAY_PUBLISHED = Counter(
    "studentwork_relay_published_total",
    "Outbox rows the relay published and the broker acknowledged.",
)
RELAY_SHARDS = Gauge(
    "studentwork_relay_shards_held",
    "Outbox shards this process's relay publishes now (0: a hot standby; "
    "STUDENTWORK_RELAY_SHARDS, all of them shared by the relays running).",
)
RELAY_ERRORS = Counter(
    "studentwork_relay_errors_total",
    "Relay failures, by kind (refused: a row the broker never takes, marked failed; "
    "transient: broker or database trouble, retried).",
    ["kind"],
)

# -- eBox consumer -----------------------------------------------------------------------

EBOX_DELIVERIES = Counter(
    "studentwork_ebox_deliveries_total",
    "eBox deliveries handled, by outcome (stored, duplicate, dead_letter).",
    ["outcome"],
)
EBOX_PURGED = Counter(
    "studentwork_ebox_purged_total",
    "Expired, non-archived eBox documents deleted.",
)

# -- HTTP tier (recorded by api/) --------------------------------------------------------

API_REQUESTS = Counter(
    "studentwork_api_requests_total",
    "HTTP requests, by route template (/v1/me/years/{year}, never the filled path) and "
    "status code.",
    ["route", "status"],
)
API_REQUEST_DURATION = Histogram(
    "studentwork_api_request_duration_seconds",
    "Time to answer an HTTP request, by route template.",
    ["route"],
)
API_LOOKUP_FAILURES = Counter(
    "studentwork_api_lookup_failures_total",
    "Employer look-ups with an unknown, expired or malformed access code.",
)
API_RATE_LIMITED = Counter(
    "studentwork_api_rate_limit_refusals_total",
    "Requests refused with 429, by route template.",
    ["route"],
)

# -- database pool -----------------------------------------------------------------------

DB_POOL = Gauge(
    "studentwork_db_pool_connections",
    "Connections of the process's database pool, by state (in_use, idle, max).",
    ["state"],
)


def watch_pool(pool: asyncpg.Pool) -> None:
    """Report ``pool``'s use at every scrape (read from the pool, never stale)."""
    DB_POOL.labels("in_use").set_function(lambda: pool.get_size() - pool.get_idle_size())
    DB_POOL.labels("idle").set_function(pool.get_idle_size)
    DB_POOL.labels("max").set_function(pool.get_max_size)


async def refresh_outbox(conn: asyncpg.Connection) -> tuple[int, float]:
    """Read the outbox backlog, the age of its oldest unsent row and the failed rows into
    their gauges; return (backlog, oldest age in seconds)."""
    state = await reads.outbox_state(conn)
    OUTBOX_BACKLOG.set(state.backlog)
    OUTBOX_OLDEST_AGE.set(state.oldest_age_seconds)
    OUTBOX_FAILED.set(state.failed)
    return state.backlog, state.oldest_age_seconds


def record_outcomes(
    answers: dict[str, int], anomalies: dict[str, int], dead_letters: dict[str, int]
) -> None:
    """Count what one committed transaction answered and dead-lettered."""
    for status, count in answers.items():
        ANSWERS.labels(status).inc(count)
    for code, count in anomalies.items():
        ANOMALIES.labels(code).inc(count)
    for reason, count in dead_letters.items():
        DEAD_LETTERS.labels(reason).inc(count)


# -- consumer progress -------------------------------------------------------------------


@dataclass
class PartitionProgress:
    """Where one partition of one lane stands."""

    committed: int | None = None
    end: int | None = None
    #: Monotonic moment of the last progress: the committed offset moved, or the lag
    #: appeared (a partition idle without lag is never stuck).
    moved_at: float = field(default_factory=time.monotonic)

    @property
    def lag(self) -> int | None:
        if self.end is None or self.committed is None:
            return None
        return max(0, self.end - self.committed)


@dataclass
class LaneProgress:
    group: str
    joined: bool = False
    partitions: dict[tuple[str, int], PartitionProgress] = field(default_factory=dict)


class ConsumerProgress:
    """Per lane: has it joined its group, which partitions it holds, how they move."""

    def __init__(self) -> None:
        self.lanes: dict[str, LaneProgress] = {}

    def lane(self, name: str, group: str) -> LaneProgress:
        found = self.lanes.get(name)
        if found is None:
            found = self.lanes[name] = LaneProgress(group)
        return found

    def assigned(self, name: str, group: str, partitions: Iterable[tuple[str, int]]) -> None:
        lane = self.lane(name, group)
        lane.joined = True
        held = set(partitions)
        for gone in set(lane.partitions) - held:
            del lane.partitions[gone]
            _forget_lag(group, gone)
        for tp in held - set(lane.partitions):
            lane.partitions[tp] = PartitionProgress()
        ASSIGNED_PARTITIONS.labels(name).set(len(held))

    def left(self, name: str) -> None:
        """The lane's consumer stopped (restart or shutdown): it holds nothing now."""
        lane = self.lanes.get(name)
        if lane is None:
            return
        lane.joined = False
        for tp in lane.partitions:
            _forget_lag(lane.group, tp)
        lane.partitions.clear()
        ASSIGNED_PARTITIONS.labels(name).set(0)

    def observe(
        self, name: str, group: str, tp: tuple[str, int], committed: int | None, end: int | None
    ) -> None:
        """Record a partition's committed offset and end offset (None: unknown yet)."""
        lane = self.lane(name, group)
        progress = lane.partitions.setdefault(tp, PartitionProgress())
        before_lag = progress.lag
        moved = committed is not None and committed != progress.committed
        if committed is not None:
            progress.committed = committed
        if end is not None:
            progress.end = end
        lag = progress.lag
        if moved or (lag and not before_lag):
            progress.moved_at = time.monotonic()
        if lag is not None:
            CONSUMER_LAG.labels(group, *_labels(tp)).set(lag)

    def stuck(self, after_seconds: float) -> list[str]:
        """Each partition with lag that has not moved for ``after_seconds``, described."""
        now = time.monotonic()
        found = []
        for lane in self.lanes.values():
            for (topic, partition), progress in sorted(lane.partitions.items()):
                idle = now - progress.moved_at
                if progress.lag and idle >= after_seconds:
                    found.append(
                        f"{topic}[{partition}] of group {lane.group} is stuck: lag "
                        f"{progress.lag}, committed offset {progress.committed} has not "
                        f"moved for {idle:.0f} s"
                    )
        return found


def _labels(tp: tuple[str, int]) -> tuple[str, str]:
    return tp[0], str(tp[1])


def _forget_lag(group: str, tp: tuple[str, int]) -> None:
    """Drop a partition's lag series: another worker reports it now."""
    with contextlib.suppress(KeyError):  # never observed
        CONSUMER_LAG.remove(group, *_labels(tp))


#: The progress of this process's lanes (one worker process, one set of lanes).
PROGRESS = ConsumerProgress()


def exposition() -> bytes:
    """Every metric of this process in the Prometheus text format."""
    return generate_latest()


def serve(settings: Settings) -> Any:
    """Serve ``/metrics`` on ``STUDENTWORK_METRICS_HOST:PORT`` in a thread (processes
    without the worker's web server); nothing when the port is 0."""
    if settings.metrics_port == 0:
        return None
    return start_http_server(settings.metrics_port, addr=settings.metrics_host)
