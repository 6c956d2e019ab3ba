"""The worker process, assembled: faust hosts it, the runtime's lanes consume.

faust gives the process its lifecycle (start, signals, clean stop), the web server of
``/health``, the
leader's crontab and timers. Every input topic is read by a lane of
:mod:`streams.runtime`, which commits offsets only after the batch's transaction
committed. This module only wires the parts together; what the parts do is in
:mod:`streams.runtime`, :mod:`streams.processor`, :mod:`streams.attestations` and
:mod:`streams.consents`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

import faust

from schemas.settings import Settings
from schemas.topics import DIMONA, DMFA, QUOTA_CHANGES, QUOTA_RECOMPUTE
from streams.processor import BatchProcessor, OneByOne
from streams.runtime import Clock, InputLane, RecordHandler, WorkerState, utc_now

log = logging.getLogger(__name__)

#: How long a stopping worker lets its lanes finish the batch in hand.
_STOP_GRACE_SECONDS = 15.0


def create_lanes(
    settings: Settings, processor: BatchProcessor, extra: dict[str, tuple[RecordHandler, int]]
) -> list[InputLane]:
    """One lane for the ledger (Dimona and DmfA: co-partitioned, so one consumer holds
    a student's partitions of both declaration topics, merged in timestamp order), one
    for quota changes and one for the recompute commands they write (a recompute runs in
    chunks beside the ledger's batches, never in front of them, shared by the workers
    by partition), one per other input, so a slow PDF batch never holds a declaration
    back."""
    handlers: dict[str, RecordHandler] = {DIMONA: processor, DMFA: processor}
    lanes = [
        InputLane("ledger", settings, handlers),
        InputLane(
            QUOTA_CHANGES,
            settings,
            {QUOTA_CHANGES: OneByOne(processor, processor.process_quota_change)},
        ),
        # One command at a time: a share of a big year is minutes of chunks.
        InputLane(
            QUOTA_RECOMPUTE,
            settings,
            {QUOTA_RECOMPUTE: OneByOne(processor, processor.process_recompute)},
            max_batch=1,
        ),
    ]
    for topic, (handler, batch) in extra.items():
        lanes.append(InputLane(topic, settings, {topic: handler}, max_batch=batch))
    return lanes


def tune_collector(threshold: int) -> None:
    """Collect cycles every ``threshold`` allocations (0: as the interpreter does), and
    leave the objects alive now, which live as long as the worker, out of every
    collection (:func:`gc.freeze`)."""
    if threshold == 0:
        return
    gc.collect()
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(threshold, middle, old)
    frozen = gc.get_freeze_count()
    log.info("cycle collector every %d allocations, %d objects frozen", threshold, frozen)


def create_app(
    settings: Settings,
    *,
    clock: Clock = utc_now,
    services: Sequence[Callable[[], Coroutine[Any, Any, None]]] = (),
    publish_rotation: Callable[..., Awaitable[list[int]]] | None = None,
) -> tuple[faust.App, WorkerState]:
    """The faust app hosting the lanes, ``services`` (run as tasks) and ``/health``.

    ``publish_rotation`` is the access-code scheduler's publisher, given by the caller
    that assembles the worker (the scheduler lives above this package).
    """
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

    from streams import attestations, consents, health, retention

    async def no_rotation(*_: Any, **__: Any) -> list[int]:
        log.warning("no access-code scheduler in this worker; rotation is not published")
        return []

    extra = attestations.register_agents(app, state, publish_rotation or no_rotation)
    retention.register_purge(app, state)
    extra.update({topic: (h, settings.batch_size) for topic, h in consents.handlers(state).items()})

    async def run_lanes() -> None:
        # The ledger's handlers need the pool; waiting for it here (retrying while the
        # database is away) keeps every lane from consuming before it could apply.
        processor = BatchProcessor(await state.pool(), settings, state.clock)
        tune_collector(settings.gc_threshold)
        lanes = create_lanes(settings, processor, extra)
        consuming = [asyncio.create_task(lane.run(), name=f"lane {lane.name}") for lane in lanes]
        others = [asyncio.create_task(service(), name="service") for service in services]
        try:
            await asyncio.gather(*consuming, *others)
        finally:
            # Let each lane finish and commit the batch in hand, then stop what is left.
            for lane in lanes:
                lane.stop()
            _done, pending = await asyncio.wait(consuming, timeout=_STOP_GRACE_SECONDS)
            for task in [*pending, *others]:
                task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.gather(*pending, *others, return_exceptions=True)
            await state.close()

    app.task(run_lanes)
    # The worker's web server answers /health only; the /v1 API is its own process (api/).
    health.register(app, state)

    app.studentwork_state = state  # type: ignore[attr-defined]
    return app, state


def run_worker(app: faust.App, settings: Settings, extra: Sequence[Any] = ()) -> None:
    """Run the faust worker in the foreground until SIGINT/SIGTERM."""
    from streams.logs import logging_config

    # faust replaces the root handlers at start: hand it ours (text or JSON lines).
    worker = faust.Worker(
        app,
        *extra,
        loglevel=settings.log_level,
        logging_config=logging_config(settings),
        quiet=True,
    )
    worker.execute_from_commandline()
