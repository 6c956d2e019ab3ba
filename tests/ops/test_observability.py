"""What an operator sees of a running worker: /metrics, the monitor, the logs.

One real worker (subprocess, real Kafka and PostgreSQL) is fed a known set of Dimona
records: valid ones, one over the quota, refusals by the rules and by the contract, and
garbage. Its ``/metrics`` must count exactly those answers and dead letters, its lag must
return to 0, ``studentwork monitor --once --json`` must report the same figures, and its
log (JSON lines, debug level) must not hold any of the published SSINs.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import date
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from schemas.topics import ACKS, DIMONA
from tests.support import (
    EMPLOYER_A,
    REPO,
    Outgoing,
    Pipeline,
    WorkerProcess,
    brussels_millis,
    collect,
    dimona_in,
    publish,
    valid_ssin,
)

pytestmark = pytest.mark.integration

SSINS = [valid_ssin("950101", serial) for serial in range(11, 17)]
JUNE = brussels_millis(date(2026, 6, 1))


def _records(pipeline: Pipeline) -> list[Outgoing]:
    topic = pipeline.topic(DIMONA)
    valid = dimona_in("obs-a", ssin=SSINS[0], hours=30)
    over = dimona_in("obs-w", ssin=SSINS[1], hours=700)
    zero = dimona_in("obs-zero", ssin=SSINS[2], hours=0)
    too_many = dimona_in("obs-range", ssin=SSINS[3], hours=3000)
    wrong_key = dimona_in("obs-key", ssin=SSINS[4], hours=20)
    return [
        Outgoing.json(topic, SSINS[0], valid, JUNE),
        Outgoing.json(topic, SSINS[1], over, JUNE),
        Outgoing.json(topic, SSINS[2], zero, JUNE),
        Outgoing.json(topic, SSINS[3], too_many, JUNE),
        Outgoing(topic, SSINS[5].encode(), b"\x00 not json at all", JUNE),
        Outgoing.json(topic, "not-an-ssin", wrong_key, JUNE),
    ]


#: What the six records must be counted as.
ANSWERS = {"A": 1.0, "W": 1.0, "B": 3.0}
ANOMALIES = {
    "QUOTA_EXCEEDED": 1.0,
    "ZERO_HOURS": 1.0,
    "HOURS_OUT_OF_RANGE": 1.0,
    "INVALID_KEY": 1.0,
}
DEAD_LETTERS = {"HOURS_OUT_OF_RANGE": 1.0, "INVALID_MESSAGE": 1.0, "INVALID_KEY": 1.0}


@pytest.fixture(scope="module")
def pipeline(kafka_bootstrap: str, module_database_url: str) -> Pipeline:
    return Pipeline(
        kafka_bootstrap,
        module_database_url,
        extra_env={"STUDENTWORK_LOG_FORMAT": "json", "STUDENTWORK_LOG_LEVEL": "debug"},
    )


@pytest.fixture(scope="module")
def worker(pipeline: Pipeline, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    log = tmp_path_factory.mktemp("observability") / "worker.log"
    with WorkerProcess(pipeline, log) as running:
        yield running


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every sample of an exposition by sample name (parsed by prometheus-client)."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def by_label(
    found: dict[str, list[tuple[dict[str, str], float]]], name: str, label: str
) -> dict[str, float]:
    return {labels[label]: value for labels, value in found.get(name, []) if value}


@pytest.fixture(scope="module")
async def settled(pipeline: Pipeline, worker: WorkerProcess) -> AsyncIterator[str]:
    """The worker's /metrics once the six records are consumed and the outbox is empty."""
    await publish(pipeline.kafka_bootstrap, _records(pipeline))
    # Five answers out on dimona.acks: the relay has published what the batch queued.
    await collect(pipeline.kafka_bootstrap, pipeline.topic(ACKS), count=5)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{pipeline.web_port}") as http:
        for _ in range(300):
            text = (await http.get("/metrics")).text
            found = samples(text)
            consumed = sum(
                v
                for labels, v in found.get("studentwork_records_consumed_total", [])
                if labels["topic"] == pipeline.topic(DIMONA)
            )
            backlog = found.get("studentwork_outbox_backlog", [({}, -1.0)])[0][1]
            if consumed == 6 and backlog == 0:
                yield text
                return
            await asyncio.sleep(0.2)
    raise AssertionError(f"the worker did not settle:\n{text}")


async def test_metrics_count_exactly_what_was_published(pipeline: Pipeline, settled: str) -> None:
    found = samples(settled)
    assert (
        by_label(found, "studentwork_answers_total", "status"),
        by_label(found, "studentwork_answer_anomalies_total", "code"),
        by_label(found, "studentwork_dead_letters_total", "reason"),
    ) == (ANSWERS, ANOMALIES, DEAD_LETTERS)
    consumed = [
        value
        for labels, value in found["studentwork_records_consumed_total"]
        if labels["topic"] == pipeline.topic(DIMONA)
    ]
    assert sum(consumed) == 6
    lag = [
        (labels, value)
        for labels, value in found["studentwork_consumer_lag"]
        if labels["topic"] == pipeline.topic(DIMONA)
    ]
    assert sorted(labels["partition"] for labels, _ in lag) == ["0", "1"]
    assert [value for _, value in lag] == [0.0, 0.0]
    # Every record was in exactly one batch of the ledger lane.
    sizes = {labels["lane"]: value for labels, value in found["studentwork_batch_records_sum"]}
    batches = {labels["lane"]: value for labels, value in found["studentwork_batch_records_count"]}
    durations = {
        labels["lane"]: value for labels, value in found["studentwork_batch_duration_seconds_count"]
    }
    assert sizes["ledger"] == 6
    assert 1 <= batches["ledger"] <= 6
    assert durations["ledger"] == batches["ledger"]
    # Two changed balances (the valid and the over-quota declarations).
    assert found["studentwork_balances_changed_total"][0][1] == 2
    assert found["studentwork_outbox_oldest_unsent_age_seconds"][0][1] == 0
    # acks, letters, public balances, internal ledger records
    assert found["studentwork_relay_published_total"][0][1] == 5 + 3 + 2 + 2
    pool = by_label(found, "studentwork_db_pool_connections", "state")
    assert pool["max"] == 8  # STUDENTWORK_DATABASE_POOL_SIZE
    # No SSIN, enterprise number or event id in any label.
    for name, series in found.items():
        for labels, _ in series:
            for value in labels.values():
                assert not any(s in value for s in SSINS), (name, labels)
                assert EMPLOYER_A not in value and "obs-" not in value, (name, labels)


async def test_ready_and_live(pipeline: Pipeline, settled: str) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{pipeline.web_port}") as http:
        live = await http.get("/health/live")
        ready = await http.get("/health/ready")
        health = await http.get("/health")
    assert (live.status_code, live.json()) == (200, {"status": "alive"})
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["status"] == "ready" and body["reasons"] == []
    assert body["lanes"]["ledger"] == [
        *(f"{pipeline.topic(t)}[{p}]" for t in (DIMONA, "dmfa.declarations") for p in (0, 1)),
    ]
    # Quota changes have a lane of their own (a recompute runs beside the batches).
    assert body["lanes"]["quota.changes"] == [f"{pipeline.topic('quota.changes')}[0]"]
    # And the recompute commands it writes, one per partition, a lane too.
    assert body["lanes"]["quota.recompute"] == [
        f"{pipeline.topic('quota.recompute')}[{p}]" for p in (0, 1)
    ]
    assert health.status_code == 200 and health.json()["status"] == "ok"


def _monitor(pipeline: Pipeline, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "infra", "monitor", *args],
        cwd=REPO,
        env={**os.environ, **pipeline.env()},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_monitor_once_json_reports_the_same_figures(pipeline: Pipeline, settled: str) -> None:
    done = await asyncio.to_thread(_monitor, pipeline, "--once", "--json", "--interval", "0.5")
    assert done.returncode == 0, done.stderr
    snapshot: dict[str, Any] = json.loads(done.stdout)
    dimona = next(t for t in snapshot["topics"] if t["topic"] == pipeline.topic(DIMONA))
    assert dimona["endOffset"] == 6
    ledger_group = f"{pipeline.env()['STUDENTWORK_APP_ID']}.ledger"
    assert dimona["lag"][ledger_group] == 0
    assert snapshot["answersLastMinute"] == {"A": 1, "W": 1, "B": 3}
    assert snapshot["deadLettersLastHour"]["byReason"] == {
        "HOURS_OUT_OF_RANGE": 1,
        "INVALID_MESSAGE": 1,
        "INVALID_KEY": 1,
    }
    assert len(snapshot["deadLettersLastHour"]["newest"]) == 3
    assert snapshot["outbox"] == {"backlog": 0, "failed": 0, "oldestAgeSeconds": 0.0}
    group = next(g for g in snapshot["groups"] if g["group"] == ledger_group)
    assert len(group["members"]) == 1
    assert sorted(group["members"][0]["partitions"]) == [
        *(f"{pipeline.topic(t)}[{p}]" for t in (DIMONA, "dmfa.declarations") for p in (0, 1)),
    ]
    quota_group = next(
        g for g in snapshot["groups"] if g["group"] == f"{ledger_group[:-6]}quota.changes"
    )
    assert [m["partitions"] for m in quota_group["members"]] == [
        [f"{pipeline.topic('quota.changes')}[0]"]
    ]


async def test_the_log_holds_no_ssin(worker: WorkerProcess, settled: str) -> None:
    text = worker.log_path.read_text(errors="replace")
    for ssin in SSINS:
        assert ssin not in text
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert len(lines) > 20
    rejected = [line for line in lines if line["message"].startswith("rejected ")]
    assert {(r["topic"], r["level"]) for r in rejected} == {(DIMONA, "WARNING"), (DIMONA, "DEBUG")}
    assert all(isinstance(r["partition"], int) and isinstance(r["offset"], int) for r in rejected)
    assert all(r["batch"].startswith("ledger#") for r in rejected)


async def test_monitor_view_renders_the_snapshot(pipeline: Pipeline, settled: str) -> None:
    """The interactive view, drawn on rich's recording console from a real snapshot."""
    from rich.console import Console
    from rich.live import Live

    from ops.monitor import render, run_live, snapshot

    snap = await snapshot(pipeline.settings(), 0.2)
    console = Console(record=True, width=200, force_terminal=False)
    console.print(render(snap))
    text = "\n".join(" ".join(line.split()) for line in console.export_text().splitlines())
    ledger = f"{pipeline.env()['STUDENTWORK_APP_ID']}.ledger"
    assert "answers (last minute): A 1 W 1 B 3" in text
    assert "dead letters (last hour): HOURS_OUT_OF_RANGE 1 INVALID_KEY 1 INVALID_MESSAGE 1" in text
    assert "outbox: backlog 0 failed 0 oldest 0.0 s" in text
    row = next(
        line for line in text.splitlines() if pipeline.topic(DIMONA) in line and ledger in line
    )
    cells = [cell.strip() for cell in row.split("│")[1:-1]]
    assert cells == [pipeline.topic(DIMONA), "6", "0.0", ledger, "0", "0.0"]

    # The live loop: two refreshes on a recording console, then stopped.
    frames: list[str] = []
    live_console = Console(record=True, width=200, force_terminal=True)

    class Recorded(Live):
        def update(self, renderable: Any, *, refresh: bool = False) -> None:
            super().update(renderable, refresh=refresh)
            frames.append(live_console.export_text(clear=False))
            if len(frames) == 2:
                raise asyncio.CancelledError

    def live(renderable: Any, **options: Any) -> Live:
        return Recorded(renderable, console=live_console, **options)

    with pytest.raises(asyncio.CancelledError):
        await run_live(pipeline.settings(), 0.2, live=live)
    assert len(frames) == 2 and "newest dead letters" in frames[-1]
