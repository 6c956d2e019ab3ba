"""Side-by-side benchmark: every figure beside its baseline, measured in one run.

    .venv/bin/python bench/run.py [--students 2000] [--partitions 4] [--out FILE.json]
    .venv/bin/python bench/run.py --rotation-students 10000 100000 700000 [--rotation-unhashed]

On one Kafka broker and one PostgreSQL server (started here, or KAFKA_BOOTSTRAP /
DATABASE_URL), with one simulated year (``producers.simulator``) published before each
measure:

* ``raw``: the ceiling, a plain aiokafka loop that consumes the records, parses each
  JSON body and produces it again (no database);
* ``one worker`` / ``two workers``: ``studentwork worker`` processes (own consumer group,
  own database) from the records already on Kafka until the group committed every
  record and the outbox is drained;
* ``relay``: the outbox messages the one-worker run published (read back from its
  topics, since the relay deletes a row once it is published; at most
  :data:`RELAY_SAMPLE`), put back in the outbox and
  published again by one relay process (``studentwork relay``), then by two sharing it as
  two shards (``STUDENTWORK_RELAY_SHARDS=2``), beside a plain producer sending the same
  rows (its ceiling, and the records/s one relay carries at the run's messages per
  record);
* ``recompute``: quota changes for the year over the balances the one-worker run left,
  each recomputed by the per-partition commands it writes (``recompute_share``, chunked,
  as the workers' ``quota.recompute`` lanes run them): all shares in one process, and
  split over two processes at once (runs in the order 1 2 2 1, averaged);
  ``--recompute-copies K`` first copies the stored ledgers K times (students
  ``<ssin>-<n>``), to measure 10 x the students without replaying them;
* ``rotation``: a month of access codes for every student of that database
  (``rotate_partition`` per partition, as the rotation lane runs them);
  ``--rotation-students N [N ...]`` measures only this, on PostgreSQL alone, once per N on
  a new database whose ``students`` table is filled directly with N valid SSINs the way
  the pipeline inserts them (the growth curve, without replaying a year);
  ``--rotation-unhashed`` fills them without their key hash, as rows from before migration
  0013 are, so the first rotation's filling them in is measured too;
* ``design bound``: the most of the raw rate one worker could reach, by its own CPU per
  record, and on this machine's cores whatever it cost, from the relay's CPU per message
  and the CPU per record of PostgreSQL and the broker (a local one: its process is found
  by its port) in the one-worker run (:func:`design_bound`);
* ``attestations``: the configured PDF process pool (``PdfRenderer``, warm): one
  document alone, ``--pdfs`` documents submitted at once (the burst), and ``--pdfs``
  documents arriving steadily at ``--pdf-rate`` per second (open loop: achieved rate,
  median and p95 from a document's arrival to its PDF); and ``attestation service``: the
  same steady rate through ``AttestationService`` on its own database, from a request's
  arrival to the commit that stored its PDF (the attestation lane without Kafka).

Figures are only comparable within one run (the machine is shared): the table gives each
one with its ratio to the baseline measured in the same run (raw for the pipeline, one
worker for two). ``--students`` sets the scale; the default runs in a few minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import asyncpg  # noqa: E402
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient  # noqa: E402

from db.reads import relay_backlog  # noqa: E402
from producers.simulator import SimulatedRecord, generate, publish_records  # noqa: E402
from schemas.settings import Settings  # noqa: E402
from schemas.topics import ACKS, BALANCES, DIMONA, DMFA, LEDGER, REJECTED  # noqa: E402

INPUTS = (DIMONA, DMFA)


@dataclass(frozen=True)
class Bench:
    """The services and the published year a measure runs on."""

    kafka_bootstrap: str
    admin_dsn: str
    records: list[SimulatedRecord]
    partitions: int
    year: int
    recompute_copies: int = 1

    def settings(self, prefix: str, database_url: str) -> Settings:
        return Settings(
            kafka_bootstrap=self.kafka_bootstrap,
            database_url=database_url,
            topic_prefix=prefix,
            app_id=f"bench-{prefix.rstrip('.')}",
            partitions=self.partitions,
            input_timestamp_type="CreateTime",
            development=True,
        )


@contextmanager
def database(admin_dsn: str) -> Iterator[str]:
    """A new database on the server, dropped afterwards."""
    name = f"bench_{uuid.uuid4().hex[:12]}"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(admin_dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    try:
        yield urlsplit(admin_dsn)._replace(path=f"/{name}").geturl()
    finally:
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def published(bench: Bench, settings: Settings) -> dict[TopicPartition, int]:
    """Prepare the topics and database, publish the year; the input end offsets."""
    from streams.admin import prepare

    await prepare(settings)
    await publish_records(bench.records, settings)
    tps = [
        TopicPartition(settings.topic(topic), p)
        for topic in INPUTS
        for p in range(bench.partitions)
    ]
    consumer = AIOKafkaConsumer(bootstrap_servers=bench.kafka_bootstrap, group_id=None)
    await consumer.start()
    try:
        consumer.assign(tps)
        ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
        return ends
    finally:
        await consumer.stop()


# --------------------------------------------------------------------------------------
# The raw ceiling
# --------------------------------------------------------------------------------------


async def _raw(
    bench: Bench, settings: Settings, ends: dict[TopicPartition, int]
) -> tuple[float, float, float | None]:
    """Wall and CPU seconds of the passthrough (CPU: this process, all its threads), and
    the broker's CPU seconds meanwhile (None when the broker is not on this machine)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bench.kafka_bootstrap, group_id=None, enable_auto_commit=False
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bench.kafka_bootstrap,
        enable_idempotence=True,
        linger_ms=5,
        max_batch_size=256 * 1024,
    )
    await consumer.start()
    await producer.start()
    out = settings.topic("bench.raw")
    try:
        consumer.assign(list(ends))
        await consumer.seek_to_beginning(*ends)
        # The output topic is created by this first message, before the clock starts.
        await (await producer.send(out, b"{}"))
        broker = _listener_pid(bench.kafka_bootstrap)
        ready_broker = _cpu_seconds(broker) if broker else 0.0
        start, cpu = time.perf_counter(), time.process_time()
        left = sum(ends.values())
        pending: list[asyncio.Future[Any]] = []
        while left:
            batch = await consumer.getmany(timeout_ms=200, max_records=1000)
            for records in batch.values():
                for record in records:
                    body = json.loads(record.value)
                    pending.append(
                        await producer.send(out, json.dumps(body).encode(), key=record.key)
                    )
                left -= len(records)
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        broker_cpu = _cpu_seconds(broker) - ready_broker if broker else None
        return seconds, cpu, broker_cpu
    finally:
        await producer.stop()
        await consumer.stop()


def bench_raw(bench: Bench) -> dict[str, Any]:
    prefix = f"raw{uuid.uuid4().hex[:6]}."
    with database(bench.admin_dsn) as url:
        settings = bench.settings(prefix, url)
        ends = asyncio.run(published(bench, settings))
        seconds, cpu, broker_cpu = asyncio.run(_raw(bench, settings, ends))
    count = sum(ends.values())
    return {
        "records": count,
        "seconds": round(seconds, 2),
        "per_second": round(count / seconds),
        "cpu_ms_per_record": round(1000 * cpu / count, 3),
        # The broker's CPU over the run (a broker on this machine only).
        "broker_cpu_ms_per_record": _per_record(broker_cpu, count),
    }


def _per_record(cpu_seconds: float | None, count: int) -> float | None:
    return None if cpu_seconds is None else round(1000 * cpu_seconds / count, 3)


# --------------------------------------------------------------------------------------
# The pipeline, one or two workers
# --------------------------------------------------------------------------------------


class _Progress:
    """How many input records the ledger group committed, and the outbox backlog, read
    on one admin client and one connection kept open for the whole run: the benchmark
    stays out of what it measures (a new connection every poll cost PostgreSQL a
    backend each time, counted in its CPU per record), and the backlog is counted only
    once every record is committed (before that the run cannot have ended)."""

    def __init__(self, bench: Bench, settings: Settings, ends: dict[TopicPartition, int]) -> None:
        self._bench, self._settings, self._ends = bench, settings, ends
        self._count = sum(ends.values())
        self._runner = asyncio.Runner()
        self._admin: AIOKafkaAdminClient | None = None
        self._conn: asyncpg.Connection | None = None

    def __enter__(self) -> _Progress:
        self._runner.run(self._open())
        return self

    def __exit__(self, *exc: object) -> None:
        self._runner.run(self._close())
        self._runner.close()

    def read(self) -> tuple[int, int | None]:
        """(records committed, outbox backlog or None while records are uncommitted)."""
        return self._runner.run(self._read())

    async def _open(self) -> None:
        self._admin = AIOKafkaAdminClient(bootstrap_servers=self._bench.kafka_bootstrap)
        await self._admin.start()
        self._conn = await asyncpg.connect(self._settings.database_url)

    async def _close(self) -> None:
        if self._admin is not None:
            await self._admin.close()
        if self._conn is not None:
            await self._conn.close()

    async def _read(self) -> tuple[int, int | None]:
        assert self._admin is not None and self._conn is not None
        offsets = await self._admin.list_consumer_group_offsets(f"{self._settings.app_id}.ledger")
        committed = sum(
            min(max(offsets[tp].offset, 0), end) for tp, end in self._ends.items() if tp in offsets
        )
        if committed < self._count:
            return committed, None
        return committed, await relay_backlog(self._conn)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    """User and system CPU a running process has used (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _listener_pid(address: str) -> int | None:
    """The local process listening on the port of ``address`` (``host:port``, the first
    of a list), found through ``/proc/net/tcp`` and the processes' socket descriptors
    (Linux); None when no process of this machine that can be read listens there."""
    port = int(address.split(",")[0].rpartition(":")[2])
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # local_address is hex ip:port; state 0A is LISTEN.
            if int(fields[1].rpartition(":")[2], 16) == port and fields[3] == "0A":
                inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) in inodes:
                    return int(entry.name)
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return None


def _rss_megabytes(pid: int, field: str = "VmRSS") -> float:
    """Resident memory of a running process, in MiB (Linux ``/proc``); ``VmHWM`` for
    its peak so far."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _process_tree_cpu(pid: int) -> float:
    """CPU a process and all its children have used, the exited ones included: the kernel
    adds a child's CPU to its parent's ``cutime`` and ``cstime`` when the parent reaps it
    (Linux ``/proc``)."""
    tick = os.sysconf("SC_CLK_TCK")
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    spent = sum(int(f) for f in fields[11:15]) / tick
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or entry.name == str(pid):
            continue
        try:
            child = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:  # gone meanwhile
            continue
        if int(child[1]) == pid:
            spent += (int(child[11]) + int(child[12])) / tick
    return spent


def _parent_pid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])


async def _postmaster_pid(url: str) -> int:
    """The server process, as the parent of a backend (read while that backend lives)."""
    conn = await asyncpg.connect(url)
    try:
        backend = int(await conn.fetchval("SELECT pg_backend_pid()"))
        return await asyncio.to_thread(_parent_pid, backend)
    finally:
        await conn.close()


def _server_cpu(url: str) -> float:
    """CPU seconds the PostgreSQL server serving ``url`` has used in all, read from
    ``/proc`` (the server must run on this machine).

    The whole server and not the backends of the workers' connections: a backend that
    ends during a run (a connection the pool closed) took its CPU with it, one that
    starts during it (autovacuum) was counted whole, and the checkpointer and WAL writer
    work for the workers too (the backends' figure for one worker moved from 0.126 to
    0.326 ms a record between runs). It includes the benchmark's own progress queries
    (:class:`_Progress`: one connection, the backlog counted once all is committed).
    """
    return _process_tree_cpu(asyncio.run(_postmaster_pid(url)))


def bench_pipeline(
    bench: Bench, workers: int, keep: list[str] | None = None, repo: Path = REPO
) -> dict[str, Any]:
    """``workers`` worker processes from the published year to an empty outbox.

    ``keep`` receives the database URL when the caller wants to measure more on it (the
    database is then left for the caller's ``database`` block). ``repo``: the checkout
    the workers run from (another commit's, to compare two in one run).
    """
    prefix = f"w{workers}{uuid.uuid4().hex[:6]}."
    with database(bench.admin_dsn) as url, tempfile.TemporaryDirectory() as workdir:
        settings = bench.settings(prefix, url)
        ends = asyncio.run(published(bench, settings))
        logs = [Path(workdir) / f"worker-{n}.log" for n in range(workers)]
        processes = []
        for n, log in enumerate(logs):
            env = {
                **os.environ,
                "KAFKA_BOOTSTRAP": bench.kafka_bootstrap,
                "DATABASE_URL": url,
                "STUDENTWORK_TOPIC_PREFIX": prefix,
                "STUDENTWORK_APP_ID": settings.app_id,
                "STUDENTWORK_PARTITIONS": str(bench.partitions),
                "STUDENTWORK_INPUT_TIMESTAMP_TYPE": "CreateTime",
                "STUDENTWORK_WEB_PORT": str(_free_port()),
                "STUDENTWORK_DATA_DIR": str(Path(workdir) / f"data-{n}"),
                "STUDENTWORK_LOG_LEVEL": "info",
                "STUDENTWORK_DEVELOPMENT": "true",
            }
            with log.open("wb") as out:
                # BENCH_MEMRAY=prefix: what the workers' memory holds at the end (memray's
                # aggregated capture; `memray flamegraph --leaks` reads it). memray is
                # not a dependency: `uv pip install memray` first.
                memray = os.environ.get("BENCH_MEMRAY")
                worker = ["-m", "infra", "worker"]
                launcher = [sys.executable, *worker]
                if memray:
                    capture = f"{memray}-{workers}-{n}.bin"
                    launcher = [sys.executable, "-m", "memray", "run", "--aggregate", "-q"]
                    launcher += ["-f", "-o", capture, *worker]
                processes.append(
                    subprocess.Popen(
                        launcher,
                        env=env,
                        cwd=repo,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                )
        # BENCH_PY_SPY=prefix: where the workers' time goes, py-spy's collapsed stacks
        # (BENCH_PY_SPY_RATE samples a second, 50 unless told: more for a short run).
        profile = os.environ.get("BENCH_PY_SPY")
        spies = [
            subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "py-spy"),
                    "record",
                    "--format",
                    "raw",
                    "--rate",
                    os.environ.get("BENCH_PY_SPY_RATE", "50"),
                    "--pid",
                    str(p.pid),
                    "-o",
                    f"{profile}-{workers}-{n}.txt",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for n, p in enumerate(processes)
            if profile
        ]
        try:
            # The clock starts when the first worker is ready: it consumes from then on.
            start: float | None = None
            while not all("Worker]: Ready" in log.read_text(errors="replace") for log in logs):
                for process, log in zip(processes, logs, strict=True):
                    if process.poll() is not None:
                        raise RuntimeError(log.read_text()[-3000:])
                    if start is None and "Worker]: Ready" in log.read_text(errors="replace"):
                        start = time.perf_counter()
                time.sleep(0.05)
            if start is None:
                start = time.perf_counter()
            ready_cpu = sum(_cpu_seconds(process.pid) for process in processes)
            ready_server = _server_cpu(url)
            broker = _listener_pid(bench.kafka_bootstrap)
            ready_broker = _cpu_seconds(broker) if broker else 0.0
            count = sum(ends.values())
            # Worker memory as the replay goes: (records committed, largest worker RSS),
            # to tell a bound (flat once batches are full) from growth with the students.
            curve: list[tuple[int, float]] = []
            # A long replay says where it is once a minute (on stderr, beside the figures).
            shown = time.perf_counter()
            with _Progress(bench, settings, ends) as progress:
                while True:
                    committed, backlog = progress.read()
                    curve.append((committed, max(_rss_megabytes(p.pid) for p in processes)))
                    if committed >= count and backlog == 0:
                        break
                    if time.perf_counter() - shown >= 60:
                        shown = time.perf_counter()
                        print(
                            f"  {workers} worker(s): {committed:,} of {count:,} records"
                            f" committed in {shown - start:.0f} s,"
                            f" outbox {'not read yet' if backlog is None else f'{backlog:,}'},"
                            f" worker RSS {curve[-1][1]:.1f} MiB",
                            file=sys.stderr,
                            flush=True,
                        )
                    for process, log in zip(processes, logs, strict=True):
                        if process.poll() is not None:
                            raise RuntimeError(f"worker exited: {log.read_text()[-3000:]}")
                    time.sleep(0.25)
            seconds = time.perf_counter() - start
            cpu = sum(_cpu_seconds(process.pid) for process in processes) - ready_cpu
            rss = max(_rss_megabytes(process.pid) for process in processes)
            peak = max(_rss_megabytes(process.pid, "VmHWM") for process in processes)
            database_cpu = _server_cpu(url) - ready_server
            broker_cpu = _cpu_seconds(broker) - ready_broker if broker else None
        finally:
            for spy in spies:
                spy.send_signal(signal.SIGINT)
                spy.wait(60)
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(60)
        result = {
            "records": count,
            "workers": workers,
            "seconds": round(seconds, 2),
            "per_second": round(count / seconds),
            # What the machine's load changes least: the workers' own CPU per record.
            "worker_cpu_ms_per_record": round(1000 * cpu / count, 3),
            "worker_rss_mb": round(rss, 1),
            "worker_peak_rss_mb": round(peak, 1),
            # RSS once a quarter, half, three quarters of the records were committed.
            "worker_rss_mb_by_quarter": [
                round(next(mb for done, mb in curve if done >= count * q / 4), 1)
                for q in (1, 2, 3, 4)
            ],
            # The whole PostgreSQL server's CPU over the run (local PostgreSQL only).
            "database_cpu_ms_per_record": round(1000 * database_cpu / count, 3),
            # The broker's CPU over the run (a broker on this machine only).
            "broker_cpu_ms_per_record": _per_record(broker_cpu, count),
        }
        if keep is not None:
            # The next measures run on this database before it is dropped.
            result.update(after_pipeline(bench, settings))
    return result


# --------------------------------------------------------------------------------------
# Recompute and rotation, on the database the one-worker run left
# --------------------------------------------------------------------------------------


#: The ledger tables copied by ``--recompute-copies``, with the columns given new values.
_LEDGER_COPIES = {
    "students": {"ssin": "ssin || '-' || $1::text"},
    "periods": {"ssin": "ssin || '-' || $1::text", "period_id": "period_id || '-' || $1::text"},
    "wage_reports": {"ssin": "ssin || '-' || $1::text"},
    "balances": {"ssin": "ssin || '-' || $1::text"},
}


async def _copy_ledgers(pool: asyncpg.Pool, copies: int) -> None:
    """Make the stored ledgers ``copies`` times as many (students ``<ssin>-<n>``, same
    periods and reports), so a recompute is measured at scale without replaying it."""
    async with pool.acquire() as conn, conn.transaction():
        for table, replaced in _LEDGER_COPIES.items():
            columns = [
                r["column_name"]
                for r in await conn.fetch(
                    "SELECT column_name FROM information_schema.columns"
                    " WHERE table_name = $1 ORDER BY ordinal_position",
                    table,
                )
            ]
            chosen = ", ".join(replaced.get(c, c) for c in columns)
            for n in range(1, copies):
                await conn.execute(
                    f"INSERT INTO {table} ({', '.join(columns)}) SELECT {chosen} FROM {table}"
                    " WHERE position('-' in ssin) = 0",
                    str(n),
                )


def _recompute_shares(settings: Settings, commands: list[str]) -> tuple[int, float]:
    """Run recompute commands one after another, as one worker's recompute lane does;
    return the balances changed and the process's CPU seconds. Also the body of each
    process of the parallel measure (spawned: a fresh interpreter, as a worker is)."""
    from schemas.answers import QuotaRecompute
    from streams.processor import BatchProcessor

    async def run() -> int:
        pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
        try:
            processor = BatchProcessor(pool, settings)
            changed = 0
            for body in commands:
                changed += await processor.recompute_share(QuotaRecompute.model_validate_json(body))
            return changed
        finally:
            await pool.close()

    cpu = time.process_time()
    changed = asyncio.run(run())
    return changed, time.process_time() - cpu


async def _recompute(settings: Settings, year: int, copies: int = 1) -> dict[str, Any]:
    """Quota changes of the year, each recomputed by its per-partition commands (the
    ``quota.recompute`` lane's work, without Kafka): all shares in one process, then
    the shares split over two processes at once, then again in the other order (A B B A:
    the second of two runs finds warmer caches). Each change moves every balance, and
    each run starts with an empty outbox and vacuumed tables."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from schemas.answers import QuotaChange
    from schemas.topics import QUOTA_RECOMPUTE
    from streams.processor import BatchProcessor

    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=8)
    loop = asyncio.get_running_loop()
    quota = settings.quota_rules.quota(year)
    runs: dict[int, list[float]] = {1: [], 2: []}
    try:
        if copies > 1:
            await _copy_ledgers(pool, copies)
        balances = int(await pool.fetchval("SELECT count(*) FROM balances WHERE year = $1", year))
        with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as executor:
            # Started (and their imports done) before anything is timed.
            await asyncio.gather(
                *(loop.run_in_executor(executor, time.sleep, 0.5) for _ in range(2))
            )
            for n, processes in enumerate((1, 2, 2, 1)):
                change = QuotaChange(
                    event_id=f"bench-{uuid.uuid4().hex[:8]}",
                    year=year,
                    hours=quota - 25 * (1 - n % 2),
                    requested_at=datetime.now(UTC),
                )
                await BatchProcessor(pool, settings).change_quota(change)
                commands = [
                    bytes(r["value"]).decode()
                    for r in await pool.fetch(
                        "DELETE FROM outbox WHERE topic = $1 RETURNING value", QUOTA_RECOMPUTE
                    )
                ]
                start = time.perf_counter()
                done = await asyncio.gather(
                    *(
                        loop.run_in_executor(
                            executor, _recompute_shares, settings, commands[k::processes]
                        )
                        for k in range(processes)
                    )
                )
                runs[processes].append(time.perf_counter() - start)
                changed = sum(c for c, _ in done)
                if changed != balances:
                    raise RuntimeError(f"{changed} of {balances} balances recomputed")
                # Untimed: what a relay would have published meanwhile (its ceiling is
                # measured apart) and what autovacuum would have reclaimed, so each run
                # starts from the same tables, not behind the 1.4 million outbox rows and
                # the dead row versions of every run before it (the fourth run took
                # 1.8 x the first with them).
                await pool.execute("DELETE FROM outbox")
                await pool.execute("VACUUM ANALYZE balances, outbox")
        if copies > 1:  # the next measures run on the ledgers the pipeline stored
            async with pool.acquire() as conn, conn.transaction():
                for table in reversed(_LEDGER_COPIES):
                    await conn.execute(f"DELETE FROM {table} WHERE position('-' in ssin) > 0")
    finally:
        await pool.close()
    one, two = statistics.mean(runs[1]), statistics.mean(runs[2])
    return {
        "balances": balances,
        "changed": balances,
        "seconds": round(one, 2),
        "per_second": round(balances / one),
        "two_processes_seconds": round(two, 2),
        "two_processes_per_second": round(balances / two),
        "runs_seconds": {str(k): [round(x, 2) for x in v] for k, v in runs.items()},
    }


async def _rotation(settings: Settings) -> dict[str, Any]:
    from quota.access_codes import month_start
    from schemas.attestations import AccessCodeRotation
    from streams.attestations import AccessCodes, rotate_partition

    today = date.today()
    month = month_start(date(today.year + (today.month == 12), today.month % 12 + 1, 1))
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=4)
    try:
        students = await pool.fetchval("SELECT count(*) FROM students")
        codes = AccessCodes(settings)
        start = time.perf_counter()
        created = 0
        for partition in range(settings.partitions):
            command = AccessCodeRotation(
                event_id=f"bench-rotation:{partition}",
                month=month,
                partition=partition,
                partitions=settings.partitions,
                requested_at=datetime.now(UTC),
            )
            created += await rotate_partition(pool, codes, command, datetime.now(UTC))
        seconds = time.perf_counter() - start
        # Every student exactly one code: a figure for codes nobody got would mean nothing.
        owners = await pool.fetchval(
            "SELECT count(DISTINCT ssin) FROM access_codes WHERE month = $1", month
        )
    finally:
        await pool.close()
    if created != students or owners != students:
        raise RuntimeError(f"{students} students but {created} codes for {owners} of them")
    return {
        "students": int(students),
        "codes": created,
        "seconds": round(seconds, 2),
        "per_second": round(created / seconds) if seconds else 0,
    }


def _relay_processes(settings: Settings, shards: int, workdir: Path) -> dict[str, Any]:
    """Every row of ``outbox_bench`` put back in the outbox at once and published by
    ``shards`` relay processes (``studentwork relay``, ``STUDENTWORK_RELAY_SHARDS``), from
    the commit that inserts them until none is pending; the relays start, and settle on
    one shard each, before."""
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "DATABASE_URL": settings.database_url,
        "STUDENTWORK_TOPIC_PREFIX": settings.topic_prefix,
        "STUDENTWORK_RELAY_SHARDS": str(shards),
        "STUDENTWORK_RELAY_KEEP_SENT_HOURS": "0",
        "STUDENTWORK_RELAY_POLL_SECONDS": "0.1",
        "STUDENTWORK_LOG_LEVEL": "info",
        "STUDENTWORK_DEVELOPMENT": "true",
    }
    from producers.relay import relays_publishing

    processes = []
    for n in range(shards):
        with (workdir / f"relay-{shards}-{n}.log").open("wb") as out:
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "infra", "relay"],
                    env={**env, "STUDENTWORK_METRICS_PORT": str(_free_port())},
                    cwd=REPO,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )

    async def ready() -> None:
        conn = await asyncpg.connect(settings.database_url)
        try:
            # Each relay holds a shard (pg_locks: the relay shard locks, by process).
            while await relays_publishing(conn) < shards:
                for process in processes:
                    if process.poll() is not None:
                        raise RuntimeError(f"relay exited: see {workdir}")
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.5)  # past a second look at each other: shards settled
        finally:
            await conn.close()

    async def publish() -> tuple[float, int]:
        conn = await asyncpg.connect(settings.database_url)
        try:
            async with conn.transaction():
                count = await conn.fetchval(
                    "WITH put AS (INSERT INTO outbox (topic, key, value)"
                    " SELECT topic, key, value FROM outbox_bench ORDER BY id"
                    " RETURNING 1) SELECT count(*) FROM put"
                )
            start = time.perf_counter()
            while True:
                left = await conn.fetchval(
                    "SELECT count(*) FROM outbox WHERE sent_at IS NULL AND failed_at IS NULL"
                )
                if not left:
                    break
                await asyncio.sleep(0.05)
            return time.perf_counter() - start, int(count)
        finally:
            await conn.close()

    try:
        asyncio.run(ready())
        ready_cpu = sum(_cpu_seconds(process.pid) for process in processes)
        seconds, count = asyncio.run(publish())
        cpu = sum(_cpu_seconds(process.pid) for process in processes) - ready_cpu
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(60)
    return {
        "processes": shards,
        "seconds": round(seconds, 2),
        "per_second": round(count / seconds) if seconds else 0,
        "cpu_ms_per_message": round(1000 * cpu / count, 4) if count else 0,
    }


#: What the pipeline's outbox publishes while it replays a year.
_PUBLISHED_TOPICS = (ACKS, BALANCES, LEDGER, REJECTED)

#: At most this many of them are replayed (a year of a million students publishes some
#: 22 million): the first of each partition, as many from each.
RELAY_SAMPLE = 500_000


async def _published(
    settings: Settings, limit: int = RELAY_SAMPLE
) -> tuple[list[tuple[str, bytes | None, bytes]], int]:
    """The messages of :data:`_PUBLISHED_TOPICS` on the broker (logical topic, key,
    value), at most ``limit``, by broker timestamp, then topic and offset: the order the
    relay published them in, as near as the topics tell; and how many there are."""
    from streams.admin import topic_partitions

    logical = {settings.topic(t): t for t in _PUBLISHED_TOPICS}
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        tps = await topic_partitions(admin, list(logical))
    finally:
        await admin.close()
    if not tps:
        return [], 0
    each = max(1, limit // len(tps))
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
        found: list[tuple[int, str, int, int, bytes | None, bytes]] = []
        taken = dict.fromkeys(tps, 0)
        left = {tp for tp in tps if ends[tp] > 0}
        while left:
            for tp, messages in (await consumer.getmany(*left, timeout_ms=1000)).items():
                messages = messages[: each - taken[tp]]
                taken[tp] += len(messages)
                found += [
                    (m.timestamp, tp.topic, tp.partition, m.offset, m.key, m.value)
                    for m in messages
                ]
            for tp in list(left):
                if taken[tp] >= each or await consumer.position(tp) >= ends[tp]:
                    left.discard(tp)
    finally:
        await consumer.stop()
    found.sort(key=lambda m: m[:4])
    total = sum(ends[tp] - starts[tp] for tp in tps)
    return [(logical[t], key, value) for _, t, _, _, key, value in found], total


async def _relay(settings: Settings, records: int) -> dict[str, Any]:
    """The outbox relay's ceiling: the messages the pipeline published (at most
    :data:`RELAY_SAMPLE`), published again by one relay process, then by two sharing the
    outbox as two shards (``STUDENTWORK_RELAY_SHARDS=2``), beside a plain producer sending
    the same rows from memory (the baseline)."""
    # The relay deleted each row once published: the messages are read back from their
    # topics, in the order they were published.
    rows, published = await _published(settings)
    conn = await asyncpg.connect(settings.database_url)
    try:
        # What each relay run publishes again; the outbox emptied until then.
        await conn.execute("DELETE FROM outbox")
        await conn.execute(
            "CREATE TABLE outbox_bench (id bigint, topic text, key bytea, value bytea)"
        )
        await conn.copy_records_to_table(
            "outbox_bench", records=[(n, *row) for n, row in enumerate(rows)]
        )
    finally:
        await conn.close()
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_idempotence=True,
        acks="all",
        linger_ms=5,
        max_batch_size=256 * 1024,
    )
    await producer.start()
    try:
        start = time.perf_counter()
        # This process's CPU, the plain sends' alone (nothing else runs in it meanwhile).
        cpu = time.process_time()
        pending = []
        for topic, key, value in rows:
            pending.append(await producer.send(settings.topic(topic), value=value, key=key))
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        plain = time.perf_counter() - start
        plain_cpu = time.process_time() - cpu
    finally:
        await producer.stop()
    with tempfile.TemporaryDirectory() as workdir:
        # In a thread: it runs its own event loop beside the relay processes.
        one = await asyncio.to_thread(_relay_processes, settings, 1, Path(workdir))
        two = await asyncio.to_thread(_relay_processes, settings, 2, Path(workdir))
    per_record = published / records if records else 0.0
    return {
        "messages": len(rows),
        "published": published,
        "messages_per_record": round(per_record, 2),
        "seconds": one["seconds"],
        "per_second": one["per_second"],
        "cpu_ms_per_message": one["cpu_ms_per_message"],
        "plain_producer_per_second": round(len(rows) / plain) if plain else 0,
        "plain_producer_cpu_ms_per_message": (
            round(plain_cpu * 1000 / len(rows), 4) if rows else None
        ),
        # The records/s one relay can carry at this mix of outgoing messages.
        "records_per_second": round(one["per_second"] / per_record) if per_record else 0,
        "two_shards": two,
    }


async def _fill_students(database_url: str, count: int, year: int, *, hashed: bool) -> None:
    """``count`` distinct valid SSINs (the simulator's) in ``students``, nothing else.

    ``hashed``: through ``db.store.lock_students``, as the pipeline inserts a student (key
    hash included); otherwise the SSIN alone, as rows from before migration 0013.
    """
    from db.migrate import migrate
    from db.store import lock_students
    from producers.simulator import _SsinSpace

    await migrate(database_url)
    space = _SsinSpace(year, 1)
    conn = await asyncpg.connect(database_url)
    try:
        for first in range(0, count, 10_000):
            ssins = [space.ssin(n, bis=False)[0] for n in range(first, min(count, first + 10_000))]
            async with conn.transaction():
                if hashed:
                    await lock_students(conn, ssins)
                else:
                    await conn.execute(
                        "INSERT INTO students (ssin) SELECT unnest($1::text[])", ssins
                    )
        await conn.execute("VACUUM ANALYZE students")
    finally:
        await conn.close()


def bench_rotation(
    admin_dsn: str, students: int, partitions: int, year: int, *, hashed: bool
) -> dict[str, Any]:
    """The rotation of ``students`` students filled in directly (no pipeline, no Kafka)."""
    with database(admin_dsn) as url:
        asyncio.run(_fill_students(url, students, year, hashed=hashed))
        settings = Settings(database_url=url, partitions=partitions, development=True)
        return asyncio.run(_rotation(settings)) | {"hashed": hashed, "partitions": partitions}


def rotation_only(args: argparse.Namespace) -> None:
    """``--rotation-students``: the rotation's growth curve on PostgreSQL alone."""
    from infra.postgres import LocalPostgres

    result: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
        "parameters": vars(args) | {"out": str(args.out)},
        "rotation": [],
    }
    named = os.environ.get("DATABASE_URL")
    server = None if named else LocalPostgres(settings=postgres_settings(args))
    admin_dsn = server.start() if server is not None else str(named)
    try:
        for students in args.rotation_students:
            figure = bench_rotation(
                admin_dsn, students, args.partitions, args.year, hashed=not args.rotation_unhashed
            )
            result["rotation"].append(figure)
            print(f"rotation:     {figure}", flush=True)
    finally:
        if server is not None:
            server.stop()
    lines = ["| students | partitions | seconds | codes/s |", "|---:|---:|---:|---:|"]
    lines += [
        f"| {r['students']:,} | {r['partitions']} | {r['seconds']} | {r['per_second']:,} |"
        for r in result["rotation"]
    ]
    result["table"] = "\n".join(lines)
    print(result["table"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {args.out}")


def after_pipeline(bench: Bench, settings: Settings) -> dict[str, Any]:
    return {
        "relay": asyncio.run(_relay(settings, len(bench.records))),
        "recompute": asyncio.run(_recompute(settings, bench.year, bench.recompute_copies)),
        "rotation": asyncio.run(_rotation(settings)),
    }


# --------------------------------------------------------------------------------------
# Attestations: the PDF process pool
# --------------------------------------------------------------------------------------


def _latencies(seconds: list[float]) -> dict[str, float]:
    """Median, p95 and worst of some latencies, in seconds.

    The p95 is the nearest rank (the smallest latency at least 95 % of them do not
    exceed), so with few latencies it is never below the median."""
    ordered = sorted(seconds)
    return {
        "median_seconds": round(statistics.median(ordered), 3),
        "p95_seconds": round(ordered[math.ceil(0.95 * len(ordered)) - 1], 3),
        "max_seconds": round(ordered[-1], 3),
    }


async def _attestations(count: int, processes: int, rate: float) -> dict[str, Any]:
    """The PDF pool three ways: one document alone, a burst, and a steady arrival rate.

    * alone: one document on the warm pool, nothing else running;
    * burst: ``count`` documents submitted at once (its p95 is mostly its size over the
      rate: the last ones wait for all the others);
    * open loop: ``count`` documents arriving at ``rate`` per second whatever the pool
      does (requests do not wait for answers). A document's latency runs from the moment
      it was due, not from when it was submitted, so a pool that falls behind shows it
      instead of slowing the arrivals down; the achieved rate is the documents over the
      time from the first arrival to the last PDF.
    """
    from streams.attestation_pdf import AttestationDocument, PdfRenderer

    def document(n: int) -> AttestationDocument:
        return AttestationDocument(
            attestation_id=f"bench-{n}",
            ssin="00010112345",
            year=2025,
            remaining_hours=300 + n % 300,
            quota=650,
            access_code="ABCD-EFGH-JKMN-PQRS",
            valid_from=date(2025, 6, 1),
            valid_until=date(2025, 6, 30),
            issued_on=date(2025, 6, 2),
        )

    renderer = PdfRenderer(processes)
    try:
        await renderer.warm_up()
        start = time.perf_counter()
        await renderer.render(document(-1))
        alone = time.perf_counter() - start

        async def timed(n: int, due: float) -> float:
            await asyncio.sleep(due - time.perf_counter())
            await renderer.render(document(n))
            return time.perf_counter() - due

        start = time.perf_counter()
        burst = await asyncio.gather(*(timed(n, start) for n in range(count)))
        burst_seconds = time.perf_counter() - start

        start = time.perf_counter()
        steady = await asyncio.gather(*(timed(n, start + n / rate) for n in range(count)))
        steady_seconds = time.perf_counter() - start
    finally:
        renderer.close()
    burst_figures = _latencies(burst)
    return {
        "documents": count,
        "processes": processes,
        "alone_seconds": round(alone, 3),
        # The burst (the figures first measured, kept under their names).
        "seconds": round(burst_seconds, 2),
        "per_second": round(count / burst_seconds, 1),
        "p95_seconds": burst_figures["p95_seconds"],
        "median_seconds": burst_figures["median_seconds"],
        "open_loop": {
            "rate": rate,
            "documents": count,
            "seconds": round(steady_seconds, 2),
            "per_second": round(count / steady_seconds, 1),
            **_latencies(steady),
        },
    }


def _student(n: int) -> str:
    """A distinct valid SSIN for each ``n`` below 13,972 (born in January 2004)."""
    first = f"0401{1 + n // 499 % 28:02d}{1 + 2 * (n % 499):03d}"
    return f"{first}{97 - int(first) % 97:02d}"


async def _attestation_service(
    settings: Settings, count: int, rate: float, today: date
) -> dict[str, Any]:
    """Requests arriving at ``rate`` through ``AttestationService`` to their stored PDF.

    The attestation lane's loop without Kafka: whatever requests arrived while the last
    batch ran form the next one (at most the lane's batch size), and a request's latency
    runs from its arrival to the commit that stored its PDF, codes created on demand and
    balances read as in the worker.
    """
    from db.migrate import migrate
    from schemas.attestations import AttestationRequest
    from schemas.topics import ATTESTATION_REQUESTS
    from streams.attestation_pdf import PdfRenderer
    from streams.attestations import AccessCodes, AttestationService
    from streams.runtime import RawRecord, WorkerState

    await migrate(settings.database_url)
    state = WorkerState(settings)
    renderer = PdfRenderer(settings.pdf_processes)
    service = AttestationService(state, AccessCodes(settings), renderer)
    batch_size = max(1, min(settings.batch_size, 4 * settings.pdf_processes))
    arrived: asyncio.Queue[tuple[float, RawRecord]] = asyncio.Queue()
    latencies: list[float] = []

    async def arrive() -> None:
        start = time.perf_counter()
        for n in range(count):
            due = start + n / rate
            await asyncio.sleep(due - time.perf_counter())
            request = AttestationRequest(
                event_id=f"bench-request-{n}",
                attestation_id=f"bench-{n}",
                ssin=_student(n),
                year=today.year,
                requested_at=datetime.now(UTC),
            )
            value = request.to_json_bytes()
            await arrived.put((due, RawRecord(ATTESTATION_REQUESTS, 0, n, None, None, value)))

    async def lane() -> None:
        while len(latencies) < count:
            batch = [await arrived.get()]
            while len(batch) < batch_size and not arrived.empty():
                batch.append(arrived.get_nowait())
            report = await service.process([record for _, record in batch])
            assert report.issued == len(batch), report
            done = time.perf_counter()
            latencies.extend(done - due for due, _ in batch)

    try:
        await renderer.warm_up()
        await state.pool()
        start = time.perf_counter()
        await asyncio.gather(arrive(), lane())
        seconds = time.perf_counter() - start
    finally:
        renderer.close()
        await state.close()
    return {
        "rate": rate,
        "documents": count,
        "seconds": round(seconds, 2),
        "per_second": round(count / seconds, 1),
        **_latencies(latencies),
    }


def bench_attestation_service(
    bench: Bench, count: int, processes: int, rate: float
) -> dict[str, Any]:
    """:func:`_attestation_service` on its own database, with ``processes`` renderers."""
    today = date.today()
    with database(bench.admin_dsn) as url:
        settings = bench.settings(f"att{uuid.uuid4().hex[:6]}.", url).model_copy(
            update={"pdf_processes": processes, "today": today}
        )
        return asyncio.run(_attestation_service(settings, count, rate, today))


# --------------------------------------------------------------------------------------


def cpu_ms_per_record(run: dict[str, Any]) -> float:
    """A pipeline run's CPU per record: the workers (their in-process relays included),
    PostgreSQL and the broker."""
    return float(
        run["worker_cpu_ms_per_record"]
        + run["database_cpu_ms_per_record"]
        + (run.get("broker_cpu_ms_per_record") or 0.0)
    )


def cores_busy(run: dict[str, Any]) -> float:
    """Cores a pipeline run kept busy, from its rate and CPU per record."""
    return run["per_second"] * cpu_ms_per_record(run) / 1000


def design_bound(result: dict[str, Any]) -> dict[str, float | None]:
    """The most of the raw rate one worker could reach, by three bounds from this run's CPU
    figures that no worker however fast gets past.

    * Its own CPU (``of_raw_by_worker_cpu``): a worker decides one batch after the other
      on one thread, so even on a core of its own it moves at most one record per its CPU
      per record.
    * The machine's cores (``of_raw_on_these_cores``): besides whatever the worker spends,
      each record costs the relay's publishing of its outbox rows (the run's messages per
      record at the relay's measured CPU per message), PostgreSQL's CPU for the batch's
      writes and the broker's CPU for the record in and the messages out. On ``cores``
      cores kept busy by nothing else, a worker that cost nothing would still reach at
      most ``cores`` over that sum. (Without a local broker its part is left out, so the
      bound is generous.)
    * A worker as cheap as the passthrough (``of_raw_with_passthrough_worker``): the
      same cores over that sum plus the passthrough's own CPU per record. A worker reads
      and parses every record as the passthrough does, and writes more than it does, so
      no worker costs less: this is what these cores allow of the one-worker goal.

    ``raw_cores_busy`` is how many cores the passthrough and the broker kept busy during
    the raw run: near ``cores``, the raw rate is the machine's, so both runs are bound by
    the same cores.

    ``one_worker_cores_busy`` is how many cores the one-worker run kept busy (the worker
    with its relay, PostgreSQL and the broker); every record of a second worker costs the
    same again, so ``two_workers_at_most`` (``cores`` over it, at most 2) is the most two
    workers can reach over one on these cores: what this machine allows of the
    two-worker goal, as far as one worker's run tells (:func:`two_worker_bound` adds what
    the two workers' own run tells).
    """
    raw = result["raw"]
    one = result["one_worker"]
    rate = raw["per_second"]
    cores = os.cpu_count() or 1
    relay_cpu = one["relay"]["cpu_ms_per_message"] * one["relay"]["messages_per_record"]
    database_cpu = one["database_cpu_ms_per_record"]
    broker_cpu = one.get("broker_cpu_ms_per_record") or 0.0
    raw_broker = raw.get("broker_cpu_ms_per_record")
    beside_worker = relay_cpu + database_cpu + broker_cpu
    one_busy = cores_busy(one)
    return {
        "cores": cores,
        "raw_cores_busy": (
            None
            if raw_broker is None
            else round(rate * (raw["cpu_ms_per_record"] + raw_broker) / 1000, 2)
        ),
        "relay_cpu_ms_per_record": round(relay_cpu, 4),
        "beside_worker_cpu_ms_per_record": round(beside_worker, 4),
        "of_raw_on_these_cores": round(1000 * cores / beside_worker / rate, 2),
        "of_raw_with_passthrough_worker": round(
            1000 * cores / (beside_worker + raw["cpu_ms_per_record"]) / rate, 2
        ),
        "of_raw_by_worker_cpu": round(1000 / one["worker_cpu_ms_per_record"] / rate, 2),
        "one_worker_cores_busy": round(one_busy, 2),
        "two_workers_at_most": round(min(2.0, cores / one_busy), 2),
    }


def two_worker_bound(result: dict[str, Any]) -> float:
    """The most two workers could reach over one on these cores, by the two-worker run's
    own CPU a record (workers, PostgreSQL, broker): the cores over it, as a ratio to one
    worker's rate. In the runs measured the two workers spent less CPU a record than one
    (why is not settled: not the batch's size, docs/ARCHITECTURE.md), so
    ``two_workers_at_most`` (from one worker's figures) can be lower than what they reach."""
    per_record = cpu_ms_per_record(result["two_workers"])
    return round(1000 * (os.cpu_count() or 1) / per_record / result["one_worker"]["per_second"], 2)


#: Seconds under which a two-worker run mostly measures the forming of its group.
SHORT_TWO_WORKER_RUN = 30.0


def table(result: dict[str, Any]) -> str:
    """The figures side by side, each with its ratio to the baseline of this run."""
    raw = result["raw"]["per_second"]
    one = result["one_worker"]
    raw_cpu = result["raw"]["cpu_ms_per_record"]
    rows = [
        ("raw aiokafka consume-parse-produce", f"{raw:,} records/s", "1.00 (baseline)"),
        ("  its CPU per record", f"{raw_cpu} ms", "1.00 (baseline)"),
        (
            "pipeline, one worker",
            f"{one['per_second']:,} records/s",
            f"{one['per_second'] / raw:.2f} of raw",
        ),
        (
            "  worker CPU per record",
            f"{one['worker_cpu_ms_per_record']} ms",
            f"{one['worker_cpu_ms_per_record'] / raw_cpu:.1f} x raw",
        ),
        (
            "  PostgreSQL CPU per record",
            f"{one['database_cpu_ms_per_record']} ms",
            f"{one['database_cpu_ms_per_record'] / raw_cpu:.1f} x raw",
        ),
        (
            "  worker memory at the end",
            f"{one['worker_rss_mb']} MiB RSS",
            f"peak {one['worker_peak_rss_mb']} MiB; by quarter of the records "
            + ", ".join(f"{mb}" for mb in one["worker_rss_mb_by_quarter"]),
        ),
    ]
    if one.get("broker_cpu_ms_per_record") is not None:
        raw_broker = result["raw"].get("broker_cpu_ms_per_record")
        rows.append(
            (
                "  broker CPU per record",
                f"{one['broker_cpu_ms_per_record']} ms",
                f"{one['broker_cpu_ms_per_record'] / raw_broker:.1f} x raw's ({raw_broker} ms)"
                if raw_broker
                else "",
            )
        )
    if "design_bound" in result:
        bound = result["design_bound"]
        rows.append(
            (
                "  relay CPU per record (outbox published)",
                f"{bound['relay_cpu_ms_per_record']} ms",
                f"{bound['relay_cpu_ms_per_record'] / raw_cpu:.1f} x raw",
            )
        )
        busy = (
            f"; the raw run kept {bound['raw_cores_busy']} cores busy"
            if bound["raw_cores_busy"] is not None
            else ""
        )
        rows.append(
            (
                "  relay + PostgreSQL + broker per record",
                f"{bound['beside_worker_cpu_ms_per_record']} ms",
                f"a worker costing nothing: at most {bound['of_raw_on_these_cores']:.2f} of raw "
                f"on these {bound['cores']} cores{busy}",
            )
        )
        rows.append(
            (
                "  a worker as cheap as the passthrough",
                f"{raw_cpu + bound['beside_worker_cpu_ms_per_record']:.4f} ms with the rest",
                f"at most {bound['of_raw_with_passthrough_worker']:.2f} of raw on these "
                f"{bound['cores']} cores: no worker reads, parses and writes for less",
            )
        )
        rows.append(
            (
                "  one worker by its own CPU",
                f"{1000 / one['worker_cpu_ms_per_record']:,.0f} records/s",
                f"at most {bound['of_raw_by_worker_cpu']:.2f} of raw, on a core of its own",
            )
        )
    if "two_workers" in result:
        two = result["two_workers"]["per_second"]
        allowed = ""
        if "design_bound" in result:
            bound = result["design_bound"]
            allowed = (
                f" (these {bound['cores']} cores allow {bound['two_workers_at_most']:.2f} x:"
                f" one worker's run kept {bound['one_worker_cores_busy']} busy"
            )
            if "two_workers_at_most_by_their_cpu" in bound:
                allowed += (
                    f"; {bound['two_workers_at_most_by_their_cpu']:.2f} x by the two"
                    " workers' own CPU a record"
                )
            allowed += ")"
        seconds = result["two_workers"]["seconds"]
        if seconds < SHORT_TWO_WORKER_RUN:
            # Forming the group (a rebalance, each member finishing its batch first) costs
            # seconds one worker does not pay: a short run shows that, not the scaling.
            allowed += f"; a run of {seconds} s, too short to tell (try --students 20000)"
        rows.append(
            (
                "pipeline, two workers",
                f"{two:,} records/s",
                f"{two / raw:.2f} of raw, {two / one['per_second']:.2f} x one worker{allowed}",
            )
        )
    rec = one["recompute"]
    rows.append(
        (
            f"quota recompute ({rec['balances']:,} balances), one process",
            f"{rec['per_second']:,} balances/s",
            f"{rec['seconds']} s (baseline)",
        )
    )
    rows.append(
        (
            "  its shares over two processes",
            f"{rec['two_processes_per_second']:,} balances/s",
            f"{rec['two_processes_seconds']} s, "
            f"{rec['two_processes_per_second'] / rec['per_second']:.2f} x one",
        )
    )
    relay = one["relay"]
    rows.append(
        (
            f"outbox relay, one process ({relay['messages']:,} messages)",
            f"{relay['per_second']:,} messages/s",
            f"{relay['per_second'] / max(relay['plain_producer_per_second'], 1):.2f} of a plain "
            f"producer ({relay['plain_producer_per_second']:,}/s); "
            f"{relay['messages_per_record']} per record: {relay['records_per_second']:,} records/s",
        )
    )
    if relay.get("plain_producer_cpu_ms_per_message"):
        rows.append(
            (
                "  relay CPU per message",
                f"{relay['cpu_ms_per_message']} ms",
                f"{relay['cpu_ms_per_message'] / relay['plain_producer_cpu_ms_per_message']:.2f}"
                f" x a plain producer's ({relay['plain_producer_cpu_ms_per_message']} ms, "
                "one producer.send a message)",
            )
        )
    sharded = relay["two_shards"]
    rows.append(
        (
            "  two relays, two shards (2 processes)",
            f"{sharded['per_second']:,} messages/s",
            f"{sharded['per_second'] / max(relay['per_second'], 1):.2f} x one relay; CPU per "
            f"message {sharded['cpu_ms_per_message']} ms against {relay['cpu_ms_per_message']}",
        )
    )
    rot = one["rotation"]
    rows.append(
        (
            f"access-code rotation ({rot['codes']:,} codes)",
            f"{rot['per_second']:,} codes/s",
            f"{rot['seconds']} s",
        )
    )
    if "attestation_service" in result:
        service = result["attestation_service"]
        rows.append(
            (
                f"attestations stored, {service['rate']:g}/s arriving",
                f"{service['per_second']} PDFs/s",
                f"p95 {service['p95_seconds']} s, median {service['median_seconds']} s",
            )
        )
    if "attestations" in result:
        att = result["attestations"]
        steady = att["open_loop"]
        rows.append(
            (
                f"attestations, {steady['rate']:g}/s arriving ({att['processes']} processes)",
                f"{steady['per_second']} PDFs/s",
                f"p95 {steady['p95_seconds']} s, median {steady['median_seconds']} s",
            )
        )
        rows.append(
            (
                f"attestations, burst of {att['documents']} at once",
                f"{att['per_second']} PDFs/s",
                f"p95 {att['p95_seconds']} s, alone {att['alone_seconds']} s",
            )
        )
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [
        f"| {'measure':<{width[0]}} | {'figure':<{width[1]}} | {'ratio':<{width[2]}} |",
        f"|{'-' * (width[0] + 2)}|{'-' * (width[1] + 2)}|{'-' * (width[2] + 2)}|",
    ]
    lines += [f"| {a:<{width[0]}} | {b:<{width[1]}} | {c:<{width[2]}} |" for a, b, c in rows]
    return "\n".join(lines)


def interleaved(records: list[SimulatedRecord]) -> list[SimulatedRecord]:
    """The records round-robin over the students: every student's first record, then
    every second one, and so on (a student's own records keep their order and their
    timestamps). A batch of consecutive records then holds as many students as records
    while enough students have a record of that rank, so each batch carries the ledgers
    of the most students it can, as the batches of a replay of far more students would."""
    by_student: dict[str, list[SimulatedRecord]] = {}
    for record in records:
        by_student.setdefault(record.key, []).append(record)
    queues = list(by_student.values())
    return [
        queue[rank]
        for rank in range(max(map(len, queues), default=0))
        for queue in queues
        if rank < len(queue)
    ]


def default_shared_buffers() -> str:
    """A quarter of the machine's memory, at most 4 GB: the usual first sizing of
    PostgreSQL's ``shared_buffers`` (its own default, 128 MB, holds a tenth of the
    ledgers of 700,000 students, so a recompute at that scale reads them from the OS)."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return f"{min(memory // 4, 4 << 30) >> 20}MB"


def postgres_settings(args: argparse.Namespace) -> dict[str, str]:
    """The settings of the PostgreSQL server the benchmark starts (none for DATABASE_URL's)."""
    return {"shared_buffers": f"'{args.shared_buffers}'"}


def year_options(parser: argparse.ArgumentParser, students: int) -> None:
    """The options of the simulated year a benchmark replays, the same in every command."""
    parser.add_argument(
        "--students", type=int, default=students, help="students of the simulated year"
    )
    parser.add_argument(
        "--year", type=int, default=2025, help="a past year: brokers refuse future timestamps"
    )
    parser.add_argument(
        "--seed", type=int, default=1, help="the simulator's seed (same seed, same records)"
    )
    parser.add_argument(
        "--partitions", type=int, default=4, help="partitions of each declaration topic"
    )


def results_option(parser: argparse.ArgumentParser, name: str) -> None:
    """``--out``: where a benchmark writes its figures as JSON (``bench/results/<name>``)."""
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO / "bench" / "results" / name,
        help="where the figures are written as JSON",
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    year_options(parser, students=2000)
    parser.add_argument(
        "--pdfs", type=int, default=100, help="attestations rendered (in the burst, then steadily)"
    )
    parser.add_argument(
        "--pdf-processes", type=int, default=2, help="processes of the attestation pool"
    )
    parser.add_argument(
        "--pdf-rate", type=float, default=30.0, help="attestation requests per second (open loop)"
    )
    parser.add_argument(
        "--skip-two-workers", action="store_true", help="measure the pipeline with one worker only"
    )
    parser.add_argument(
        "--interleave-students",
        action="store_true",
        help=(
            "publish the year's records round-robin over the students (each student's own "
            "records in their order): every batch then meets as many distinct students as "
            "it holds records, the most a batch can hold (memory at any scale)"
        ),
    )
    parser.add_argument(
        "--recompute-copies",
        type=int,
        default=1,
        metavar="K",
        help="recompute over K copies of the stored ledgers (K x the students)",
    )
    parser.add_argument(
        "--rotation-students",
        type=int,
        nargs="+",
        metavar="N",
        help="measure only the code rotation, for N students filled in directly (each N)",
    )
    parser.add_argument(
        "--rotation-unhashed",
        action="store_true",
        help="with --rotation-students: students without their key hash (pre-0013 rows)",
    )
    parser.add_argument(
        "--shared-buffers",
        default=default_shared_buffers(),
        metavar="SIZE",
        help=(
            "shared_buffers of the PostgreSQL server started here (default: a quarter of "
            "the memory, at most 4 GB; a server named by DATABASE_URL keeps its own)"
        ),
    )
    results_option(parser, "run.json")
    args = parser.parse_args()
    if args.rotation_students:
        rotation_only(args)
        return

    from infra import local_services

    records = list(generate(args.year, args.students, args.seed))
    print(f"simulated {len(records):,} records for {args.students:,} students", flush=True)
    if args.interleave_students:
        records = interleaved(records)
    result: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(),
        },
        "parameters": vars(args) | {"out": str(args.out)},
    }
    with local_services(
        log=lambda _line: None, postgres_settings=postgres_settings(args)
    ) as services:
        bench = Bench(
            services.kafka_bootstrap,
            services.database_url,
            records,
            args.partitions,
            args.year,
            args.recompute_copies,
        )
        result["raw"] = bench_raw(bench)
        print(f"raw:          {result['raw']}", flush=True)
        result["one_worker"] = bench_pipeline(bench, 1, keep=[])
        print(f"one worker:   {result['one_worker']}", flush=True)
        result["design_bound"] = design_bound(result)
        print(f"design bound: {result['design_bound']}", flush=True)
        if not args.skip_two_workers:
            result["two_workers"] = bench_pipeline(bench, 2)
            print(f"two workers:  {result['two_workers']}", flush=True)
            result["design_bound"]["two_workers_at_most_by_their_cpu"] = two_worker_bound(result)
        result["attestation_service"] = bench_attestation_service(
            bench, args.pdfs, args.pdf_processes, args.pdf_rate
        )
        print(f"attestation service: {result['attestation_service']}", flush=True)
    result["attestations"] = asyncio.run(
        _attestations(args.pdfs, args.pdf_processes, args.pdf_rate)
    )
    print(f"attestations: {result['attestations']}", flush=True)
    result["table"] = table(result)
    print(result["table"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
