"""Two workers in one consumer group share the stream and hand partitions over cleanly.

Two worker processes with the same settings (same app id, so the same consumer group;
4 partitions, so both get some) read one stream of declarations. Mid-stream one is
stopped (SIGTERM) and started again, which moves partitions twice; later one is
SIGKILLed, so its partitions move only once its session expires, and its outbox relay
(each worker runs one, one at a time) is taken over by the other. The end must equal a
single uninterrupted run (the pure domain core), and every declaration is answered.
STUDENTWORK_FAULT_RECORDS sets the number of Dimona records (default 3000).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from schemas.topics import DIMONA, DMFA
from tests.streams.resilience import (
    APPLIED,
    DEADLINE_SECONDS,
    Fleet,
    check_end_state,
    chunks,
    declaration_stream,
    pipeline_env,
    wait_answered,
    wait_until,
)
from tests.support import Pipeline, WorkerProcess, publish

pytestmark = [pytest.mark.integration, pytest.mark.long]

RECORDS = int(os.environ.get("STUDENTWORK_FAULT_RECORDS", "3000"))
PARTITIONS = 4

_ASSIGNED = re.compile(r"lane ledger assigned (.*?) *$", re.MULTILINE)


def ledger_partitions(worker: WorkerProcess) -> set[str]:
    """The ledger lane's partitions as the worker last logged them."""
    found = _ASSIGNED.findall(worker.log_path.read_text(errors="replace"))
    if not found or found[-1] == "nothing":
        return set()
    return set(found[-1].split(", "))


def wait_for_split(fleet: Fleet, workers: list[WorkerProcess], pipeline: Pipeline) -> None:
    """Until the workers' newest assignments share out every declaration partition, each
    worker holding some and none held twice: a settled group of this many members."""
    declarations = {
        f"{pipeline.topic(topic)}[{p}]" for topic in (DIMONA, DMFA) for p in range(PARTITIONS)
    }
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        fleet.check_alive()
        held = [ledger_partitions(w) for w in workers]
        union: set[str] = set().union(*held)
        if all(held) and sum(map(len, held)) == len(union) and declarations <= union:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the group did not settle: {held}")
        time.sleep(0.2)


async def test_two_workers_end_with_the_single_worker_ledger(
    kafka_bootstrap: str, database_url: str, tmp_path: Path
) -> None:
    began = time.monotonic()
    pipeline = Pipeline(
        kafka_bootstrap,
        database_url,
        extra_env=pipeline_env(STUDENTWORK_PARTITIONS=str(PARTITIONS)),
    )
    stream = declaration_stream(pipeline, dimona_records=RECORDS, seed=4)
    n, m = len(stream.dimona), len(stream.dmfa)
    fleet = Fleet(pipeline, tmp_path)
    at: dict[str, int] = {}
    split: list[int] = []
    try:
        first = fleet.start("worker")
        second = fleet.start("worker")
        wait_for_split(fleet, [first, second], pipeline)
        split = [len(ledger_partitions(w)) for w in (first, second)]
        parts = chunks(stream.dimona, 2)

        await publish(pipeline.kafka_bootstrap, parts[0])
        at["second stopped"] = await wait_until(fleet, "applied records", APPLIED, n // 5)
        assert fleet.stop(second) == 0, second.log_path.read_text()[-3000:]
        second = fleet.start("worker")

        await publish(pipeline.kafka_bootstrap, parts[1])
        at["first killed"] = await wait_until(fleet, "applied records", APPLIED, 3 * n // 5)
        fleet.kill(first)
        first = fleet.start("worker")
        await wait_answered(fleet, n)

        # DmfA once every Dimona is answered; a graceful hand-over in the middle of it.
        await publish(pipeline.kafka_bootstrap, stream.dmfa)
        at["second stopped again"] = await wait_until(fleet, "applied DmfA", APPLIED, n + m // 3)
        assert fleet.stop(second) == 0, second.log_path.read_text()[-3000:]
        second = fleet.start("worker")
        await wait_answered(fleet, n + m)
        figures = await check_end_state(pipeline, stream.messages)
    finally:
        fleet.stop_all()

    print(
        f"\ntwo workers: {n} Dimona + {m} DmfA records for {stream.students} students on "
        f"{PARTITIONS} partitions (ledger partitions split {split}); "
        f"{fleet.stops} SIGTERM restarts, {fleet.kills['worker']} SIGKILL; applied records "
        f"at each change: {at}; {figures['answers']} answers on the topic "
        f"({figures['duplicate_answers']} republished copies), {figures['balances']} "
        f"balances; {time.monotonic() - began:.0f} s"
    )
