"""The worker's ``GET /health``: is the broker reachable, the database, the outbox backlog.

The only view the stream worker serves itself; the ``/v1`` API is the HTTP tier's.
No token: it is for operators and load balancers.
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
from schemas.health import Health, ServiceCheck

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


def register(app: faust.App, state: WorkerState) -> None:
    """Mount ``/health`` and close its broker probe when the worker stops."""
    app.page("/health", name="health")(HealthView)

    async def close_probe(*_args: Any, **_kwargs: Any) -> None:
        probe = _PROBES.pop(state, None)
        if probe is not None:
            await probe.close()

    app.on_before_shutdown.connect(close_probe)
