"""``studentwork dead-letters``: list, show, export and replay, on a real pipeline.

A declaration is refused under the contract of the day (a period starting more than
``STUDENTWORK_DECLARATION_HORIZON_DAYS`` after its reception), sent with an
``idempotency-key`` header; garbage comes beside it. The contract then changes (the
worker restarts with a longer horizon), the operator replays the letter: the record is
answered once, ``A``, under its original idempotency key (the header came back with
it), the balance counts it once, and replaying it again changes nothing.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from schemas.topics import ACKS, DIMONA, REJECTED
from tests.support import (
    REPO,
    STUDENT,
    Pipeline,
    WorkerProcess,
    brussels_millis,
    collect,
    dimona_in,
    read_topic,
)

pytestmark = pytest.mark.integration

JUNE = brussels_millis(date(2026, 6, 1))


def cli(pipeline: Pipeline, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "infra", "dead-letters", *args],
        cwd=REPO,
        env={**os.environ, **pipeline.env()},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done


async def consumed(pipeline: Pipeline, count: int) -> None:
    """Wait until the worker has consumed ``count`` Dimona records and sent its outbox."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{pipeline.web_port}") as http:
        for _ in range(300):
            found = {
                (s.name, s.labels.get("topic")): s.value
                for family in text_string_to_metric_families((await http.get("/metrics")).text)
                for s in family.samples
            }
            records = found.get(("studentwork_records_consumed_total", pipeline.topic(DIMONA)))
            if records == count and found.get(("studentwork_outbox_backlog", None)) == 0:
                return
            await asyncio.sleep(0.2)
    raise AssertionError(f"the worker did not consume {count} records")


async def used_hours(database_url: str) -> list[tuple[int, int]]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT year, used FROM balances WHERE ssin = $1", STUDENT)
        return [(r["year"], r["used"]) for r in rows]
    finally:
        await conn.close()


async def test_list_show_export_and_replay_after_a_contract_change(
    kafka_bootstrap: str, database_url: str, tmp_path: Path
) -> None:
    pipeline = Pipeline(
        kafka_bootstrap,
        database_url,
        extra_env={"STUDENTWORK_DECLARATION_HORIZON_DAYS": "30"},
    )
    body = dimona_in("far-ahead", start="2026-09-01", end="2026-09-30", hours=40)
    raw = json.dumps(body).encode()
    with WorkerProcess(pipeline, tmp_path / "first.log"):
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=True)
        await producer.start()
        try:
            await producer.send_and_wait(
                pipeline.topic(DIMONA),
                raw,
                key=STUDENT.encode(),
                headers=[("idempotency-key", b"hdr-1")],
                timestamp_ms=JUNE,
            )
            await producer.send_and_wait(
                pipeline.topic(DIMONA), b"{garbage", key=STUDENT.encode(), timestamp_ms=JUNE
            )
        finally:
            await producer.stop()
        await consumed(pipeline, 2)
    refused = await collect(kafka_bootstrap, pipeline.topic(ACKS), count=1)
    assert [(a["value"]["status"], a["value"]["anomalies"][0]["code"]) for a in refused] == [
        ("B", "DATE_OUT_OF_RANGE")
    ]

    listed = [json.loads(line) for line in cli(pipeline, "list", "--json").stdout.splitlines()]
    assert sorted(line["reasonCode"] for line in listed) == ["DATE_OUT_OF_RANGE", "INVALID_MESSAGE"]
    only = cli(pipeline, "list", "--json", "--reason", "date_out_of_range").stdout.splitlines()
    assert len(only) == 1
    letter_id = json.loads(only[0])["eventId"]
    record = refused[0]["value"]["record"]
    origin = f"{pipeline.topic(DIMONA)}[{record['partition']}]@{record['offset']}"
    assert json.loads(only[0])["origin"] == origin
    assert cli(pipeline, "list", "--json", "--since", "2999-01-01").stdout == ""

    shown: dict[str, Any] = json.loads(cli(pipeline, "show", letter_id).stdout)
    assert shown["raw"] == body
    assert shown["key"] == STUDENT
    assert shown["headers"] == {"idempotency-key": "hdr-1"}
    assert shown["reason"].startswith("DATE_OUT_OF_RANGE: the period starts 2026-09-01")
    assert shown["topic"] == pipeline.topic(DIMONA)

    out = tmp_path / "letters.jsonl"
    cli(pipeline, "export", "--out", str(out))
    exported = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(exported) == 2
    by_code = {e["reasonCode"]: e for e in exported}
    assert base64.b64decode(by_code["DATE_OUT_OF_RANGE"]["letter"]["rawBase64"]) == raw
    assert base64.b64decode(by_code["INVALID_MESSAGE"]["letter"]["rawBase64"]) == b"{garbage"

    # The contract changes: periods may start up to two years ahead.
    pipeline.extra_env["STUDENTWORK_DECLARATION_HORIZON_DAYS"] = "731"
    with WorkerProcess(pipeline, tmp_path / "second.log"):
        replayed = cli(pipeline, "replay", letter_id).stdout
        assert replayed.startswith(f"{letter_id}: replayed {pipeline.topic(DIMONA)}[")
        await consumed(pipeline, 1)
        assert await used_hours(database_url) == [(2026, 40)]
        cli(pipeline, "replay", letter_id)
        await consumed(pipeline, 2)
    answers = [m["value"] for m in await read_topic(kafka_bootstrap, pipeline.topic(ACKS))]
    assert [(a["status"], a["inReplyTo"], a.get("reducedHours")) for a in answers] == [
        ("B", "far-ahead", refused[0]["value"].get("reducedHours")),
        ("A", "hdr-1", 40),
    ]
    assert await used_hours(database_url) == [(2026, 40)]
    letters = await read_topic(kafka_bootstrap, pipeline.topic(REJECTED))
    assert len(letters) == 2  # neither replay was refused
