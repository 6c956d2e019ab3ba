"""Shared parts of the resilience tests ("never stall, never drop").

A deterministic stream of declarations, a fleet of worker and relay subprocesses that a
test kills and restarts, waits on conditions in the database (never on durations), and
the end checks: the ledger equals the pure core's uninterrupted run, every declaration
is answered, the outbox is empty.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import re
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from quota import QuotaRules, period_id_for
from schemas.declarations import DimonaDeclaration
from schemas.topics import ACKS, BALANCES, DIMONA, DMFA
from streams.messages import dimona_command
from tests.support import (
    Outgoing,
    Pipeline,
    WorkerProcess,
    brussels_millis,
    dimona_cancel,
    dimona_in,
    dimona_update,
    dmfa,
    expected_answers,
    expected_balances,
    free_port,
    read_topic,
    valid_enterprise_number,
    valid_ssin,
)

#: The year the stream declares, and its quota: small enough that many students go over.
YEAR = 2026
QUOTA = 475
#: Generous bound on any one wait: a loaded two-core machine is slow, never stuck.
DEADLINE_SECONDS = 300.0

ON_TIME = brussels_millis(date(YEAR, 6, 1))
UPDATED = brussels_millis(date(YEAR, 6, 15))
DAY = 24 * 3600 * 1000
WAGES_REPORTED = brussels_millis(date(YEAR, 10, 20))

APPLIED = "SELECT count(*) FROM applied_events"
UNSENT = "SELECT count(*) FROM outbox WHERE sent_at IS NULL"
SENT = "SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL"


def pipeline_env(**extra: str) -> dict[str, str]:
    """Worker settings of the resilience tests: the stream's quota, small batches (many
    commits, so a kill lands between some of them), plus ``extra``."""
    return {
        "STUDENTWORK_QUOTA_HOURS": json.dumps({str(YEAR): QUOTA}),
        "STUDENTWORK_BATCH_SIZE": "50",
        **extra,
    }


def quota_rules(pipeline: Pipeline) -> QuotaRules:
    """The rules the workers of :func:`pipeline_env` apply."""
    return pipeline.settings().quota_rules.with_quota(YEAR, QUOTA)


# --------------------------------------------------------------------------------------
# The stream
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeclarationStream:
    """Dimona records (ins, updates, cancels), then DmfA lines, in publishing order.

    The relative order of Dimona and DmfA across their two topics is not defined, so a
    test feeds them in two phases, the second after every Dimona is answered; within a
    topic one student's records keep their order (one key, one partition).
    """

    dimona: list[Outgoing]
    dmfa: list[Outgoing]

    @property
    def messages(self) -> list[Outgoing]:
        return [*self.dimona, *self.dmfa]

    @property
    def students(self) -> int:
        return len({m.key for m in self.messages})


def _students(count: int, rng: random.Random) -> list[str]:
    found: dict[str, None] = {}
    while len(found) < count:
        birth = f"0{rng.randint(1, 4)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
        found[valid_ssin(birth, rng.randint(1, 997))] = None
    return list(found)


def declaration_stream(
    pipeline: Pipeline, *, dimona_records: int, seed: int = 2026
) -> DeclarationStream:
    """A deterministic year of quarter-3 declarations for about 20 records per student.

    Mostly Dimona In (some late), with updates and cancels of periods declared earlier in
    the stream (their period ids are derived from the declaring event, as the worker
    derives them), a few updates of unknown periods (refused), then a DmfA line for most
    pairs of student and employer. Hours are drawn so that many students exceed the
    quota, which makes the answers depend on the order of each student's records.
    """
    rng = random.Random(seed)
    students = _students(max(10, dimona_records // 20), rng)
    employers = [valid_enterprise_number(2_000_000 + 7 * i) for i in range(4)]
    topic = pipeline.topic(DIMONA)
    dimona_out: list[Outgoing] = []
    # ssin, employer, period id, month, when the declaration was received
    periods: list[tuple[str, str, str, int, int]] = []
    pairs: dict[tuple[str, str], None] = {}
    for i in range(dimona_records):
        event = f"d{i}"
        roll = rng.random()
        if roll < 0.12 and periods:
            ssin, employer, period, month, declared = rng.choice(periods)
            body = dimona_update(
                event,
                period,
                ssin=ssin,
                employer=employer,
                end=f"{YEAR}-{month:02d}-{rng.randint(10, 28):02d}",
                hours=rng.randint(1, 60),
            )
            dimona_out.append(Outgoing.json(topic, ssin, body, max(UPDATED, declared + DAY)))
        elif roll < 0.16 and periods:
            ssin, employer, period, _month, declared = periods.pop(rng.randrange(len(periods)))
            body = dimona_cancel(event, period, ssin=ssin, employer=employer)
            dimona_out.append(Outgoing.json(topic, ssin, body, max(UPDATED, declared + DAY)))
        elif roll < 0.17:
            ssin = rng.choice(students)
            body = dimona_update(event, f"no-such-period-{i}", ssin=ssin, employer=employers[0])
            dimona_out.append(Outgoing.json(topic, ssin, body, UPDATED))
        else:
            ssin, employer = rng.choice(students), rng.choice(employers)
            month = rng.choice([7, 8, 9])
            body = dimona_in(
                event,
                ssin=ssin,
                employer=employer,
                start=f"{YEAR}-{month:02d}-01",
                end=f"{YEAR}-{month:02d}-20",
                hours=rng.randint(4, 60),
            )
            late = rng.random() < 0.05
            received = brussels_millis(date(YEAR, month, 3)) if late else ON_TIME
            declaration = DimonaDeclaration.model_validate(body)
            command = dimona_command(declaration, datetime.fromtimestamp(received / 1000, UTC))
            periods.append((ssin, employer, period_id_for(command.event_id), month, received))
            pairs[(ssin, employer)] = None
            dimona_out.append(Outgoing.json(topic, ssin, body, received))
    dmfa_out = []
    ordered = list(pairs)
    rng.shuffle(ordered)
    # Some employers have not reported yet (their planned hours still count); the others
    # report about what was planned, so that many students still exceed the quota.
    reported = ordered[: len(ordered) * 17 // 20]
    for j, (ssin, employer) in enumerate(reported):
        body = dmfa(
            f"w{j}",
            ssin=ssin,
            employer=employer,
            year=YEAR,
            quarter=3,
            hours=rng.randint(0, 260),
            wage_cents=rng.randint(10_000, 900_000),
        )
        dmfa_out.append(Outgoing.json(pipeline.topic(DMFA), ssin, body, WAGES_REPORTED))
    return DeclarationStream(dimona_out, dmfa_out)


def chunks(messages: list[Outgoing], parts: int) -> list[list[Outgoing]]:
    """``messages`` cut in ``parts`` consecutive slices of (nearly) equal size."""
    size = -(-len(messages) // parts)
    return [messages[i : i + size] for i in range(0, len(messages), size)]


# --------------------------------------------------------------------------------------
# Worker and relay processes
# --------------------------------------------------------------------------------------


@dataclass
class Fleet:
    """The worker and relay processes of one pipeline, started, killed and counted.

    Each process gets its own log file, web port and faust data directory (two workers
    of one pipeline may run side by side); all share the pipeline's topics, consumer
    group and database. :meth:`check_alive` fails a wait as soon as a process that
    nobody killed has exited.
    """

    pipeline: Pipeline
    logs: Path
    alive: list[WorkerProcess] = field(default_factory=list)
    started: int = 0
    kills: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    stops: int = 0

    def start(self, command: str = "worker", *, ready: bool = True) -> WorkerProcess:
        """Start a ``worker`` (waiting until it is ready) or a ``relay`` (which logs
        nothing when it starts: the outbox draining shows that it works)."""
        self.started += 1
        number = self.started
        data_dir = self.logs / f"data-{number}"
        pipeline = dataclasses.replace(
            self.pipeline,
            web_port=free_port(),
            extra_env={**self.pipeline.extra_env, "STUDENTWORK_DATA_DIR": str(data_dir)},
        )
        process = WorkerProcess(pipeline, self.logs / f"{command}-{number}.log", command=command)
        process.start()
        self.alive.append(process)
        if ready and command == "worker":
            process.wait_ready(timeout=DEADLINE_SECONDS)
        return process

    def kill(self, process: WorkerProcess) -> None:
        """SIGKILL: no clean-up, no leaving the consumer group, a transaction cut short."""
        self.alive.remove(process)
        process.kill()
        self.kills[process.command] += 1

    def stop(self, process: WorkerProcess) -> int | None:
        """SIGTERM: the process finishes its batch, leaves the group and exits."""
        self.alive.remove(process)
        process.stop()
        self.stops += 1
        return process.proc.returncode if process.proc is not None else None

    def stop_all(self) -> None:
        for process in self.alive:
            process.stop()
        self.alive.clear()

    def check_alive(self) -> None:
        for process in self.alive:
            if process.proc is not None and process.proc.poll() is not None:
                text = process.log_path.read_text(errors="replace")
                raise AssertionError(
                    f"{process.log_path.name} exited by itself with code "
                    f"{process.proc.returncode}:\n{text[-4000:]}"
                )


# --------------------------------------------------------------------------------------
# Waiting on the database
# --------------------------------------------------------------------------------------


async def scalar(database_url: str, query: str) -> int | None:
    """One integer from the database, or None while it cannot be reached (restarting)."""
    try:
        conn = await asyncpg.connect(database_url, timeout=10)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
        return None
    try:
        return int(await conn.fetchval(query))
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
        return None
    finally:
        conn.terminate()


async def wait_until(
    fleet: Fleet,
    what: str,
    query: str,
    target: int,
    *,
    within: float = DEADLINE_SECONDS,
) -> int:
    """Poll ``query`` until it returns at least ``target``; return the value seen.

    Fails early if a process of ``fleet`` died by itself, and after ``within`` seconds
    with the last value: a stall, which is what these tests exist to catch.
    """
    deadline = time.monotonic() + within
    last: int | None = None
    while True:
        fleet.check_alive()
        value = await scalar(fleet.pipeline.database_url, query)
        if value is not None:
            last = value
            if value >= target:
                return value
        if time.monotonic() > deadline:
            state = await diagnose(fleet.pipeline)
            raise AssertionError(f"stalled waiting for {what}: {last} of {target}\n{state}")
        await asyncio.sleep(0.05)


async def diagnose(pipeline: Pipeline) -> str:
    """What a stall looks like: the ledger group's committed offsets against the end of
    each input partition (all committed but records missing is a drop, not a stall),
    progress counts, every other database session and the relay's lock."""
    return f"{await _group_offsets(pipeline)}\n{await _database_state(pipeline.database_url)}"


async def _group_offsets(pipeline: Pipeline) -> str:
    group = f"{pipeline.env()['STUDENTWORK_APP_ID']}.ledger"
    admin = AIOKafkaAdminClient(bootstrap_servers=pipeline.kafka_bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=pipeline.kafka_bootstrap, group_id=None)
    try:
        await admin.start()
        await consumer.start()
        committed = await admin.list_consumer_group_offsets(group)
        ends = await consumer.end_offsets(list(committed))
    except Exception as error:
        return f"(offsets of {group} not available: {error!r})"
    finally:
        await consumer.stop()
        await admin.close()
    return "\n".join(
        f"{tp.topic}[{tp.partition}]: committed {committed[tp].offset} of {ends[tp]}"
        for tp in sorted(committed)
    )


async def _database_state(database_url: str) -> str:
    try:
        conn = await asyncpg.connect(database_url, timeout=10)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as error:
        return f"(database not reachable: {error!r})"
    try:
        counts = await conn.fetchrow(
            f"SELECT ({APPLIED}) AS applied, ({UNSENT}) AS unsent, ({SENT}) AS sent"
        )
        sessions = await conn.fetch(
            "SELECT pid, application_name, state, wait_event_type, wait_event,"
            " now() - state_change AS for, left(query, 120) AS query"
            " FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid()"
        )
        locks = await conn.fetch(
            "SELECT locktype, objid, pid, granted FROM pg_locks WHERE locktype = 'advisory'"
        )
    finally:
        await conn.close()
    lines = [f"applied={counts['applied']} unsent={counts['unsent']} sent={counts['sent']}"]
    lines += [f"session {dict(r)}" for r in sessions]
    lines += [f"advisory lock {dict(r)}" for r in locks]
    return "\n".join(lines)


async def wait_for_output(fleet: Fleet, topic: str, at_least: int) -> int:
    """Poll ``topic``'s end offsets until it holds ``at_least`` messages; return the count.

    Polls fast, so that a relay can be killed while it is still publishing one batch
    of outbox rows: the broker has some of them, none is marked sent yet.
    """
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=fleet.pipeline.kafka_bootstrap, group_id=None
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + DEADLINE_SECONDS
        while True:
            fleet.check_alive()
            partitions = sorted(consumer.assignment())
            total = sum((await consumer.end_offsets(partitions)).values()) if partitions else 0
            if total >= at_least:
                return total
            if time.monotonic() > deadline:
                raise AssertionError(f"stalled: {total} of {at_least} messages on {topic}")
            await asyncio.sleep(0.01)
    finally:
        await consumer.stop()


async def wait_answered(fleet: Fleet, records: int) -> None:
    """Until ``records`` records are applied and every outbox row is published.

    One statement reads both counts in one snapshot, and a batch writes its applied ids
    and its outbox rows in one transaction: once both hold, every answer of those records
    is on its topic.
    """
    query = f"SELECT CASE WHEN ({APPLIED}) >= {records} AND ({UNSENT}) = 0 THEN 1 ELSE 0 END"
    await wait_until(fleet, f"{records} records applied and published", query, 1)


# --------------------------------------------------------------------------------------
# End checks
# --------------------------------------------------------------------------------------


def _comparable(answer: Mapping[str, Any]) -> str:
    """An answer without its timestamp, so a republished copy compares equal."""
    return json.dumps({k: v for k, v in answer.items() if k != "answeredAt"}, sort_keys=True)


def check_answers(acks: Iterable[Mapping[str, Any]], expected: Mapping[str, Any]) -> int:
    """Every declaration answered, every copy of an answer the same, the pure core's.

    ``expected`` is :func:`tests.support.expected_answers`. Returns how many duplicate
    copies (republished by a relay that died before marking rows sent) were seen.
    """
    by_reply: dict[str, set[str]] = defaultdict(set)
    seen: dict[str, tuple[str, int, int]] = {}
    copies = 0
    for ack in acks:
        answer = ack["value"]
        reply = answer["inReplyTo"]
        copies += 1
        by_reply[reply].add(_comparable(answer))
        seen[reply] = (answer["status"], answer["reducedHours"], answer["ordinaryHours"])
    missing = sorted(set(expected) - set(seen))
    unexpected = sorted(set(seen) - set(expected))
    assert not missing and not unexpected, (
        f"{len(missing)} declarations unanswered (e.g. {missing[:5]}), "
        f"{len(unexpected)} answers to nothing sent (e.g. {unexpected[:5]})"
    )
    differing = {reply: answers for reply, answers in by_reply.items() if len(answers) > 1}
    assert not differing, f"{len(differing)} declarations answered differently: {differing}"
    wrong = {r: (seen[r], expected[r]) for r in expected if seen[r] != expected[r]}
    assert not wrong, f"{len(wrong)} answers differ from the uninterrupted run: {wrong}"
    return copies - len(seen)


async def check_end_state(pipeline: Pipeline, messages: list[Outgoing]) -> dict[str, int]:
    """The end of a disturbed run equals the uninterrupted one, in every output.

    * the balances table, row for row, equals the pure core's balances;
    * every declaration has an answer on ``dimona.acks`` (after de-duplication by
      ``inReplyTo``), all copies of it identical and equal to the pure core's decision;
    * the newest version of each balance on ``student.balances`` is the stored one;
    * no outbox row is left unsent, and each record was applied once.

    Returns figures for the test's report.
    """
    rules = quota_rules(pipeline)
    conn = await asyncpg.connect(pipeline.database_url)
    try:
        rows = await conn.fetch("SELECT ssin, year, used, remaining, version FROM balances")
        unsent = await conn.fetchval(UNSENT)
        applied = await conn.fetchval(APPLIED)
    finally:
        await conn.close()
    assert unsent == 0
    assert applied == len(messages)
    stored = {(r["ssin"], r["year"]): (r["used"], r["remaining"]) for r in rows}
    expected = expected_balances(messages, rules)
    mismatched = {k: (stored.get(k), v) for k, v in expected.items() if stored.get(k) != v}
    assert stored.keys() == expected.keys() and not mismatched, (
        f"{len(mismatched)} balances differ from the uninterrupted run (stored, expected): "
        f"{dict(list(mismatched.items())[:10])}; extra rows: {set(stored) - set(expected)}"
    )

    acks = await read_topic(pipeline.kafka_bootstrap, pipeline.topic(ACKS))
    duplicates = check_answers(acks, expected_answers(messages, rules))

    newest: dict[str, tuple[int, tuple[int, int]]] = {}
    for m in await read_topic(pipeline.kafka_bootstrap, pipeline.topic(BALANCES)):
        match = re.fullmatch(r"balance:(\d+):(\d+):(\d+)", m["value"]["eventId"])
        assert match is not None, m["value"]["eventId"]
        version = int(match[3])
        if version >= newest.get(m["key"], (0, (0, 0)))[0]:
            newest[m["key"]] = (version, (m["value"]["used"], m["value"]["remaining"]))
    versions = {f"{r['ssin']}:{r['year']}": r["version"] for r in rows}
    assert {k: v[0] for k, v in newest.items()} == versions
    assert {k: v[1] for k, v in newest.items()} == {
        f"{ssin}:{year}": value for (ssin, year), value in stored.items()
    }
    return {"answers": len(acks), "duplicate_answers": duplicates, "balances": len(rows)}
