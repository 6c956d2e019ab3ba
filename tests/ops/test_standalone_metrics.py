"""``/metrics`` of the processes without the worker's web: the relay and the eBox consumer.

Each serves prometheus-client's own HTTP server on ``STUDENTWORK_METRICS_PORT``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from schemas.topics import ACKS, EBOX_DELIVERIES
from tests.support import REPO, STUDENT, Outgoing, Pipeline, WorkerProcess, free_port, publish

pytestmark = pytest.mark.integration


async def scrape_until(
    port: int, wanted: dict[tuple[str, str], float]
) -> dict[tuple[str, str], float]:
    """Poll ``/metrics`` until every (sample name, label values) in ``wanted`` has its value."""
    found: dict[tuple[str, str], float] = {}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        for _ in range(300):
            try:
                text = (await http.get("/metrics")).text
            except httpx.TransportError:
                await asyncio.sleep(0.2)
                continue
            found = {
                (s.name, ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text)
                for s in family.samples
            }
            if all(found.get(key) == value for key, value in wanted.items()):
                return found
            await asyncio.sleep(0.2)
    raise AssertionError(f"never saw {wanted}; last: {found}")


def studentwork(pipeline: Pipeline, *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "infra", *args],
        cwd=REPO,
        env={**os.environ, **pipeline.env()},
        check=True,
        capture_output=True,
        timeout=120,
    )


async def test_the_standalone_relay_serves_its_metrics(
    kafka_bootstrap: str, database_url: str, tmp_path: Path
) -> None:
    port = free_port()
    pipeline = Pipeline(
        kafka_bootstrap, database_url, extra_env={"STUDENTWORK_METRICS_PORT": str(port)}
    )
    await asyncio.to_thread(studentwork, pipeline, "migrate")
    await asyncio.to_thread(studentwork, pipeline, "topics")
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO outbox (topic, key, value) VALUES ($1, $2, $3), ($1, $2, $3)",
            ACKS,
            b"0123456749",
            b'{"answer": 1}',
        )
    finally:
        await conn.close()
    relay = WorkerProcess(pipeline, tmp_path / "relay.log", command="relay").start()
    try:
        await scrape_until(
            port,
            {
                ("studentwork_relay_published_total", ""): 2.0,
                # The one shard of the outbox (STUDENTWORK_RELAY_SHARDS: 1).
                ("studentwork_relay_shards_held", ""): 1.0,
                ("studentwork_outbox_backlog", ""): 0.0,
                ("studentwork_outbox_oldest_unsent_age_seconds", ""): 0.0,
            },
        )
    finally:
        relay.stop()


async def test_the_ebox_consumer_serves_its_metrics(
    kafka_bootstrap: str, database_url: str, tmp_path: Path
) -> None:
    port = free_port()
    pipeline = Pipeline(
        kafka_bootstrap, database_url, extra_env={"STUDENTWORK_METRICS_PORT": str(port)}
    )
    ebox = WorkerProcess(pipeline, tmp_path / "ebox.log", command="ebox").start()
    try:
        await scrape_until(port, {("studentwork_ebox_purged_total", ""): 0.0})
        await publish(
            kafka_bootstrap,
            [Outgoing(pipeline.topic(EBOX_DELIVERIES), STUDENT.encode(), b"not a delivery")],
        )
        await scrape_until(
            port,
            {
                ("studentwork_ebox_deliveries_total", "outcome=dead_letter"): 1.0,
                ("studentwork_ebox_deliveries_total", "outcome=stored"): 0.0,
                ("studentwork_dead_letters_total", "reason=INVALID_MESSAGE"): 1.0,
            },
        )
    finally:
        ebox.stop()
