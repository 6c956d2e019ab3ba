"""The worker's operator views: ``/health``, ``/health/live``, ``/health/ready``, ``/metrics``.

The only views the stream worker serves itself; the ``/v1`` API is the HTTP tier's.
No token: they are for operators, load balancers, orchestrators and Prometheus.

- ``/health`` (as before): broker, database, relay backlog; 503 when degraded.
- ``/health/live``: the process and its event loop answer (a liveness probe restarts a
  worker only when this fails, never because a dependency is down).
- ``/health/ready``: broker and database reachable, every lane in its consumer group,
  and no *stuck* partition: one with lag whose committed offset has not moved for
  ``STUDENTWORK_STUCK_PARTITION_SECONDS``, the failure faust users report most (a
  consumer alive in its group that no longer makes progress). 503 with the reasons.
- ``/metrics``: :mod:`streams.metrics` in the Prometheus text format, the outbox gauges
  read from the database at each scrape.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from typing import TYPE_CHECKING, Any

import faust
from aiokafka.client import AIOKafkaClient
from faust import web

from db import reads
from schemas.health import Health, Readiness, ServiceCheck
from streams import metrics

if TYPE_CHECKING:
    from streams.runtime import WorkerState

#: Seconds each dependency check of ``/health`` may take.
HEALTH_TIMEOUT = 2.0


class BrokerProbe:
    """A cheap, reused Kafka metadata request telling whether the broker answers.

    One client is kept between checks (no new TCP connection per probe); on any failure
    it is dropped and the next check bootstraps a fresh one.
    """

    def __init__(self, bootstrap: str, timeout: float = HEALTH_TIMEOUT) -> None:
        self.bootstrap = bootstrap
        self.timeout = timeout
        self._client: AIOKafkaClient | None = None
        self._lock = asyncio.Lock()

    async def check(self) -> ServiceCheck:
        async with self._lock:
            try:
                return await asyncio.wait_for(self._probe(), self.timeout)
            except Exception as error:  # any failure means: not usable now
                await self.close()
                reason = str(error) or type(error).__name__
                return ServiceCheck(ok=False, detail=f"{self.bootstrap}: {reason}")

    async def _probe(self) -> ServiceCheck:
        if self._client is None:
            client = AIOKafkaClient(
                bootstrap_servers=self.bootstrap,
                client_id="studentwork-health",
                request_timeout_ms=int(self.timeout * 1000),
            )
            self._client = client
            await client.bootstrap()
        metadata = await self._client.fetch_all_metadata()
        brokers = len(metadata.brokers())
        if not brokers:
            raise ConnectionError("the cluster reported no brokers")
        return ServiceCheck(ok=True, detail=f"{brokers} broker(s) reachable at {self.bootstrap}")

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            # Closing a broken client must not fail the check.
            with contextlib.suppress(Exception):
                await client.close()


_PROBES: weakref.WeakKeyDictionary[WorkerState, BrokerProbe] = weakref.WeakKeyDictionary()


def broker_probe(state: WorkerState) -> BrokerProbe:
    """The probe of one worker (created on first use, inside the running loop)."""
    probe = _PROBES.get(state)
    if probe is None:
        probe = _PROBES[state] = BrokerProbe(state.settings.kafka_bootstrap)
    return probe


async def database_health(state: WorkerState) -> tuple[ServiceCheck, int | None]:
    """``SELECT 1`` and the relay backlog, within :data:`HEALTH_TIMEOUT`."""

    async def probe() -> tuple[ServiceCheck, int | None]:
        pool = await state.pool()
        async with pool.acquire() as conn:
            ok = await reads.ping(conn)
            backlog = await reads.relay_backlog(conn)
        return ServiceCheck(ok=ok, detail="select 1 answered" if ok else "wrong answer"), backlog

    try:
        return await asyncio.wait_for(probe(), HEALTH_TIMEOUT)
    except Exception as error:  # any failure means: not usable now
        return ServiceCheck(ok=False, detail=str(error) or type(error).__name__), None


class HealthView(web.View):
    """``GET /health``: broker, database and relay backlog; 200 if all ok, else 503.

    The backlog is reported, not judged: a burst of declarations makes it grow for a
    while without anything being wrong.
    """

    async def get(self, request: web.Request) -> web.Response:
        (database, backlog), broker = await asyncio.gather(
            database_health(self.state), broker_probe(self.state).check()
        )
        ok = broker.ok and database.ok
        health = Health(
            status="ok" if ok else "degraded",
            broker=broker,
            database=database,
            relay_backlog=backlog,
        )
        return self.json(health.model_dump(mode="json", by_alias=True), status=200 if ok else 503)

    @property
    def state(self) -> WorkerState:
        state: WorkerState = self.app.studentwork_state  # type: ignore[attr-defined]
        return state


class LiveView(web.View):
    """``GET /health/live``: 200 as long as the process serves requests."""

    async def get(self, request: web.Request) -> web.Response:
        return self.json({"status": "alive"})


async def readiness(state: WorkerState) -> Readiness:
    """The readiness of this worker, with every reason it is not ready."""
    (database, _backlog), broker = await asyncio.gather(
        database_health(state), broker_probe(state).check()
    )
    reasons = []
    if not broker.ok:
        reasons.append(f"broker unreachable: {broker.detail}")
    if not database.ok:
        reasons.append(f"database unreachable: {database.detail}")
    lanes = metrics.PROGRESS.lanes
    if not lanes:
        reasons.append("no lane has started consuming yet")
    for name, lane in sorted(lanes.items()):
        if not lane.joined:
            reasons.append(f"lane {name} has no partition assignment from group {lane.group}")
    reasons.extend(metrics.PROGRESS.stuck(state.settings.stuck_partition_seconds))
    return Readiness(
        status="not-ready" if reasons else "ready",
        reasons=reasons,
        broker=broker,
        database=database,
        lanes={
            name: [f"{topic}[{partition}]" for topic, partition in sorted(lane.partitions)]
            for name, lane in sorted(lanes.items())
        },
    )


class ReadyView(web.View):
    """``GET /health/ready``: 200 when ready, else 503; the reasons in the body."""

    async def get(self, request: web.Request) -> web.Response:
        state: WorkerState = self.app.studentwork_state  # type: ignore[attr-defined]
        ready = await readiness(state)
        body = ready.model_dump(mode="json", by_alias=True)
        return self.json(body, status=200 if ready.status == "ready" else 503)


class MetricsView(web.View):
    """``GET /metrics``: every metric of this process, Prometheus text format."""

    async def get(self, request: web.Request) -> web.Response:
        state: WorkerState = self.app.studentwork_state  # type: ignore[attr-defined]

        async def outbox() -> None:
            pool = await state.pool()
            async with pool.acquire() as conn:
                await metrics.refresh_outbox(conn)

        # A scrape while the database is down still reports everything else.
        try:
            await asyncio.wait_for(outbox(), HEALTH_TIMEOUT)
            metrics.DATABASE_UP.set(1)
        except Exception:
            metrics.DATABASE_UP.set(0)
        stuck = metrics.PROGRESS.stuck(state.settings.stuck_partition_seconds)
        metrics.STUCK_PARTITIONS.set(len(stuck))
        # aiohttp takes no charset in content_type; the full header goes as a header.
        return self.bytes(
            metrics.exposition(), headers={"Content-Type": metrics.CONTENT_TYPE_LATEST}
        )


def register(app: faust.App, state: WorkerState) -> None:
    """Mount the operator views and close the broker probe when the worker stops."""
    app.page("/health", name="health")(HealthView)
    app.page("/health/live", name="health-live")(LiveView)
    app.page("/health/ready", name="health-ready")(ReadyView)
    app.page("/metrics", name="metrics")(MetricsView)

    async def close_probe(*_args: Any, **_kwargs: Any) -> None:
        probe = _PROBES.pop(state, None)
        if probe is not None:
            await probe.close()

    app.on_before_shutdown.connect(close_probe)
