"""``/health/ready`` tells the truth: database down, a stuck partition, and back.

A real worker on the session's broker and on a PostgreSQL server of this test's own,
which it stops (``pg_ctl stop -m immediate``) and starts again. A stuck consumer is made
the way it happens in production: the worker is alive, in its group, broker and
database answer, but its batch cannot commit (here: another session holds an exclusive
lock on the table every batch writes), so the partition has lag and does not move.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from infra.errors import MissingTool
from infra.postgres import LocalPostgres
from schemas.topics import ACKS, DIMONA
from tests.support import (
    STUDENT,
    Outgoing,
    Pipeline,
    WorkerProcess,
    brussels_millis,
    collect,
    dimona_in,
    publish,
)

pytestmark = pytest.mark.integration

STUCK_AFTER = 2.0


@pytest.fixture
def postgres() -> Iterator[LocalPostgres]:
    server = LocalPostgres(crash_safe=True)
    try:
        server.start()
    except MissingTool as missing:
        pytest.skip(str(missing))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def worker(
    kafka_bootstrap: str, postgres: LocalPostgres, tmp_path: Path
) -> AsyncIterator[tuple[Pipeline, WorkerProcess]]:
    admin = await asyncpg.connect(postgres.dsn)
    try:
        await admin.execute('CREATE DATABASE "ready"')
    finally:
        await admin.close()
    pipeline = Pipeline(
        kafka_bootstrap,
        postgres.dsn.rsplit("/", 1)[0] + "/ready",
        extra_env={"STUDENTWORK_STUCK_PARTITION_SECONDS": str(STUCK_AFTER)},
    )
    with WorkerProcess(pipeline, tmp_path / "worker.log") as running:
        yield pipeline, running


async def ready_until(
    pipeline: Pipeline, wanted: Callable[[int, dict[str, Any]], bool], wait: float = 90.0
) -> dict[str, Any]:
    """Poll ``/health/ready`` until ``wanted(status, body)``; return that body."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    last: tuple[int, Any] = (0, None)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{pipeline.web_port}") as http:
        while loop.time() < deadline:
            try:
                response = await http.get("/health/ready", timeout=10)
                last = (response.status_code, response.json())
                if wanted(*last):
                    return dict(last[1])
            except httpx.TransportError as error:
                last = (0, repr(error))
            await asyncio.sleep(0.3)
    raise AssertionError(f"/health/ready never matched; last answer {last}")


async def test_not_ready_while_the_database_is_down_then_ready_again(
    worker: tuple[Pipeline, WorkerProcess], postgres: LocalPostgres
) -> None:
    pipeline, _ = worker
    body = await ready_until(pipeline, lambda status, _: status == 200)
    assert body["status"] == "ready" and body["reasons"] == []

    await asyncio.to_thread(postgres.crash)
    down = await ready_until(pipeline, lambda status, _: status == 503)
    assert down["status"] == "not-ready"
    assert down["database"]["ok"] is False and down["broker"]["ok"] is True
    assert [r for r in down["reasons"] if r.startswith("database unreachable: ")] != []

    await asyncio.to_thread(postgres.resume)
    back = await ready_until(pipeline, lambda status, _: status == 200)
    assert back["reasons"] == [] and back["database"]["ok"] is True


async def test_a_partition_that_cannot_progress_is_reported_stuck(
    worker: tuple[Pipeline, WorkerProcess],
) -> None:
    pipeline, _ = worker
    await ready_until(pipeline, lambda status, _: status == 200)
    blocker = await asyncpg.connect(pipeline.database_url)
    try:
        transaction = blocker.transaction()
        await transaction.start()
        await blocker.execute("LOCK TABLE applied_events IN ACCESS EXCLUSIVE MODE")
        body = dimona_in("stuck-1", hours=30)
        june = brussels_millis(date(2026, 6, 1))
        await publish(
            pipeline.kafka_bootstrap, [Outgoing.json(pipeline.topic(DIMONA), STUDENT, body, june)]
        )
        stuck = await ready_until(
            pipeline, lambda status, b: status == 503 and any("stuck" in r for r in b["reasons"])
        )
        reasons = [r for r in stuck["reasons"] if "stuck" in r]
        assert len(reasons) == 1
        assert reasons[0].startswith(f"{pipeline.topic(DIMONA)}[")
        assert (
            f"of group {pipeline.env()['STUDENTWORK_APP_ID']}.ledger is stuck: lag 1,"
            in (reasons[0])
        )
        assert stuck["database"]["ok"] is True and stuck["broker"]["ok"] is True
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{pipeline.web_port}") as http:
            exposition = (await http.get("/metrics")).text
        assert "studentwork_stuck_partitions 1.0" in exposition.splitlines()
        await transaction.rollback()
    finally:
        await blocker.close()
    await ready_until(pipeline, lambda status, _: status == 200)
    answers = await collect(pipeline.kafka_bootstrap, pipeline.topic(ACKS), count=1, settle=1.0)
    assert [(a["value"]["inReplyTo"], a["value"]["status"]) for a in answers] == [("stuck-1", "A")]
