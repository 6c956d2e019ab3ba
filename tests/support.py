"""Helpers for integration tests: a worker subprocess, publishing, collecting outputs, and
what an uninterrupted run must end with (computed by the pure domain core)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from datetime import time as dtime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from quota import QuotaRules, StudentLedger, apply_batch, compute_balance
from quota.batch import BatchResult
from quota.calendar import BRUSSELS
from schemas.declarations import DimonaDeclaration, DmfaDeclaration
from schemas.settings import Settings
from schemas.topics import DIMONA
from streams.admin import read_to_end
from streams.messages import dimona_command, dmfa_command

REPO = Path(__file__).resolve().parent.parent

EMPLOYER_A = "0123456749"
EMPLOYER_B = "0403170701"  # any enterprise number with valid check digits
STUDENT = "93051822361"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def valid_enterprise_number(base8: int) -> str:
    return f"{base8:08d}{97 - base8 % 97:02d}"


def valid_ssin(yymmdd: str, serial: int) -> str:
    base = int(f"{yymmdd}{serial:03d}")
    return f"{yymmdd}{serial:03d}{97 - base % 97:02d}"


def brussels_millis(day: date, hour: int = 9) -> int:
    """Epoch milliseconds of ``hour`` o'clock in Brussels on ``day``."""
    return int(datetime.combine(day, dtime(hour), BRUSSELS).timestamp() * 1000)


@dataclass
class Pipeline:
    """Settings of one isolated pipeline: own topics, own consumer group, own database."""

    kafka_bootstrap: str
    database_url: str
    prefix: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:8]}.")
    web_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    extra_env: dict[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        return {
            "KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "DATABASE_URL": self.database_url,
            "STUDENTWORK_TOPIC_PREFIX": self.prefix,
            "STUDENTWORK_APP_ID": f"sw-{self.prefix.rstrip('.')}",
            "STUDENTWORK_PARTITIONS": "2",
            "STUDENTWORK_INPUT_TIMESTAMP_TYPE": "CreateTime",
            "STUDENTWORK_BATCH_WITHIN": "0.1",
            "STUDENTWORK_RELAY_POLL_SECONDS": "0.2",
            "STUDENTWORK_WEB_PORT": str(self.web_port),
            "STUDENTWORK_API_PORT": str(self.api_port),
            "STUDENTWORK_LOG_LEVEL": "info",
            # A SIGKILLed worker's partitions move to its successor after this long.
            "STUDENTWORK_SESSION_TIMEOUT_SECONDS": "8",
            "STUDENTWORK_DEVELOPMENT": "true",
            # The standalone relay's and eBox consumer's /metrics would all take the
            # default port 9464, also those of another test running beside this one.
            "STUDENTWORK_METRICS_PORT": "0",
            **self.extra_env,
        }

    def settings(self) -> Settings:
        env = self.env()
        return Settings(
            kafka_bootstrap=env["KAFKA_BOOTSTRAP"],
            database_url=env["DATABASE_URL"],
            topic_prefix=self.prefix,
            app_id=env["STUDENTWORK_APP_ID"],
            partitions=2,
            input_timestamp_type="CreateTime",
            development=True,
        )

    def topic(self, name: str) -> str:
        return f"{self.prefix}{name}"

    @property
    def api_url(self) -> str:
        """Base URL of this pipeline's HTTP API (:class:`ApiProcess`)."""
        return f"http://127.0.0.1:{self.api_port}"


class WorkerProcess:
    """``studentwork worker`` as a real subprocess, so tests can SIGKILL it."""

    def __init__(self, pipeline: Pipeline, log_path: Path, command: str = "worker") -> None:
        self.pipeline = pipeline
        self.log_path = log_path
        self.command = command
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        env = {**os.environ, **self.pipeline.env()}
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "infra", self.command],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        """Wait until the faust worker says it is ready."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            if "Worker]: Ready" in text:
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{text[-3000:]}")
            time.sleep(0.2)
        raise TimeoutError(f"worker not ready:\n{self.log_path.read_text()[-3000:]}")

    def __enter__(self) -> WorkerProcess:
        """Started and ready; stopped (SIGTERM) when the block ends."""
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


class ApiProcess(WorkerProcess):
    """``studentwork api`` (the HTTP tier) as a real subprocess.

    Ready once it serves ``/v1/openapi.json``: uvicorn answers only after the lifespan
    (migrations, pool) completed.
    """

    def __init__(self, pipeline: Pipeline, log_path: Path) -> None:
        super().__init__(pipeline, log_path, command="api")

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        url = f"{self.pipeline.api_url}/v1/openapi.json"
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if self.proc is not None and self.proc.poll() is not None:
                text = self.log_path.read_text(errors="replace")
                raise RuntimeError(f"api exited early:\n{text[-3000:]}")
            time.sleep(0.2)
        raise TimeoutError(f"api not ready:\n{self.log_path.read_text()[-3000:]}")


def dimona_in(
    event_id: str,
    *,
    ssin: str = STUDENT,
    employer: str = EMPLOYER_A,
    start: str = "2026-07-01",
    end: str = "2026-07-31",
    hours: int = 30,
    worker_type: str = "STU",
) -> dict[str, Any]:
    return {
        "eventId": event_id,
        "submittedAt": "2026-06-01T09:00:00+02:00",
        "declarant": {"kind": "employer", "enterpriseNumber": employer},
        "employer": {"enterpriseNumber": employer},
        "worker": {"ssin": ssin},
        "dimonaIn": {
            "startingDate": start,
            "endingDate": end,
            "dimonaFeatures": {"jointCommissionNumber": "302", "workerType": worker_type},
            "plannedHoursNumber": hours,
        },
    }


def dimona_update(
    event_id: str,
    period_id: str,
    *,
    ssin: str = STUDENT,
    employer: str = EMPLOYER_A,
    end: str = "2026-07-31",
    hours: int = 26,
    start: str | None = None,
) -> dict[str, Any]:
    update: dict[str, Any] = {"periodId": period_id, "endingDate": end, "plannedHoursNumber": hours}
    if start:
        update["startingDate"] = start
    return {
        "eventId": event_id,
        "submittedAt": "2026-06-02T09:00:00+02:00",
        "employer": {"enterpriseNumber": employer},
        "worker": {"ssin": ssin},
        "dimonaUpdate": update,
    }


def dimona_cancel(
    event_id: str, period_id: str, *, ssin: str = STUDENT, employer: str = EMPLOYER_A
) -> dict[str, Any]:
    return {
        "eventId": event_id,
        "submittedAt": "2026-06-02T09:00:00+02:00",
        "employer": {"enterpriseNumber": employer},
        "worker": {"ssin": ssin},
        "dimonaCancel": {"periodId": period_id},
    }


def dmfa(
    event_id: str,
    *,
    ssin: str = STUDENT,
    employer: str = EMPLOYER_A,
    year: int = 2026,
    quarter: int = 3,
    hours: int = 26,
    wage_cents: int = 35_000,
) -> dict[str, Any]:
    return {
        "eventId": event_id,
        "submittedAt": "2026-10-20T09:00:00+02:00",
        "employer": {"enterpriseNumber": employer},
        "worker": {"ssin": ssin},
        "year": year,
        "quarter": quarter,
        "hoursWorked": hours,
        "grossWageCents": wage_cents,
    }


@dataclass(frozen=True)
class Outgoing:
    topic: str
    key: bytes | None
    value: bytes
    timestamp_ms: int | None = None

    @staticmethod
    def json(
        topic: str, key: str | None, body: Mapping[str, Any], timestamp_ms: int | None = None
    ) -> Outgoing:
        return Outgoing(
            topic,
            key.encode() if key is not None else None,
            json.dumps(body).encode(),
            timestamp_ms,
        )


async def publish(bootstrap: str, messages: Iterable[Outgoing]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        futures = [
            await producer.send(m.topic, m.value, key=m.key, timestamp_ms=m.timestamp_ms)
            for m in messages
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def _decoded(record: Any) -> dict[str, Any]:
    """A consumed JSON message as the tests read it."""
    return {
        "key": record.key.decode(errors="replace") if record.key else None,
        "value": json.loads(record.value) if record.value else None,
        "partition": record.partition,
        "offset": record.offset,
    }


async def collect(
    bootstrap: str, topic: str, *, count: int, wait: float = 60.0, settle: float = 0.0
) -> list[dict[str, Any]]:
    """Read ``topic`` from the beginning until ``count`` messages (then ``settle`` s more)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    out: list[dict[str, Any]] = []
    try:
        deadline = asyncio.get_running_loop().time() + wait
        settle_until: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            if len(out) >= count and settle_until is None:
                settle_until = now + settle
            if settle_until is not None and now >= settle_until:
                break
            if now >= deadline:
                raise TimeoutError(f"{topic}: got {len(out)} of {count} messages: {out}")
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                out.extend(_decoded(r) for r in records)
        return out
    finally:
        await consumer.stop()


def latest_by_key(messages: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    latest: dict[str, dict[str, Any]] = {}
    for m in messages:
        latest[m["key"]] = m["value"]
    return latest


def now_utc() -> datetime:
    return datetime.now(UTC)


async def accept_any_timestamp(
    pipeline: Pipeline, names: Iterable[str] = ("dimona.declarations",)
) -> None:
    """Let input topics take timestamps far in the future, as Kafka before 4.0 did by
    default (``message.timestamp.after.max.ms``): a sender's clock at the year 10000
    then reaches the worker, which must refuse it itself."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    from schemas.topics import TOPICS
    from streams.admin import wanted_configs

    unbounded = str(2**63 - 1)
    admin = AIOKafkaAdminClient(bootstrap_servers=pipeline.kafka_bootstrap)
    await admin.start()
    try:
        for logical in names:
            spec = next(spec for spec in TOPICS if spec.name == logical)
            configs = {
                **wanted_configs(spec, pipeline.settings()),
                "message.timestamp.after.max.ms": unbounded,
            }
            name = pipeline.topic(logical)
            await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, name, configs)])
            # The broker applies an alteration a moment later: wait until it reads back.
            for _ in range(100):
                responses = await admin.describe_configs(
                    [ConfigResource(ConfigResourceType.TOPIC, name)]
                )
                values = {
                    entry["config_names"]: entry["config_value"]
                    for response in responses
                    for found in response.to_object()["resources"]
                    for entry in found["config_entries"]
                }
                if values.get("message.timestamp.after.max.ms") == unbounded:
                    break
                await asyncio.sleep(0.1)
    finally:
        await admin.close()


async def read_topic(bootstrap: str, topic: str, *, wait: float = 120.0) -> list[dict[str, Any]]:
    """Every message of ``topic`` up to its end offsets as they are when this is called.

    Unlike :func:`collect`, it needs no expected count and no settling time: once the
    producers are known to be done (say, the outbox has no unsent row), reading to the
    end offsets sees every message, duplicates included. ``wait`` only bounds a broker
    that does not answer.
    """
    return [_decoded(r) for r in await read_to_end(bootstrap, topic, wait=wait)]


def _uninterrupted_run(
    messages: Iterable[Outgoing], rules: QuotaRules
) -> tuple[dict[str, StudentLedger], BatchResult, dict[str, str]]:
    """Apply ``messages`` in order, in one batch, with the pure domain core.

    Returns the ledgers, the batch result and, for every command's idempotency key, the
    sender's event id (what answers name in ``inReplyTo``).
    """
    ledgers: dict[str, StudentLedger] = {}
    commands = []
    reply_to: dict[str, str] = {}
    for m in messages:
        received = datetime.fromtimestamp((m.timestamp_ms or 0) / 1000, UTC)
        if m.topic.endswith(DIMONA):
            d = DimonaDeclaration.model_validate_json(m.value)
            command = dimona_command(d, received)
            commands.append((d.worker.ssin, command))
            reply_to[command.event_id] = d.event_id
        else:
            w = DmfaDeclaration.model_validate_json(m.value)
            wages = dmfa_command(w, received)
            commands.append((w.worker.ssin, wages))
            reply_to[wages.event_id] = w.event_id
    result = apply_batch(ledgers, commands, set(), rules)
    return ledgers, result, reply_to


def expected_balances(
    messages: list[Outgoing], rules: QuotaRules
) -> dict[tuple[str, int], tuple[int, int]]:
    """What an uninterrupted run must end with, computed by the pure domain core.

    Maps (ssin, year) to (used, remaining). The order of ``messages`` is the order in
    which one student's records are applied: keep it to what the topics guarantee
    (one key, one topic, or topics fed in separate phases).
    """
    ledgers, _result, _reply_to = _uninterrupted_run(messages, rules)
    return {
        (ssin, year): (bal.used, bal.remaining)
        for ssin, ledger in ledgers.items()
        for year in ledger.years()
        for bal in [compute_balance(ledger, year, rules)]
    }


def expected_answers(
    messages: list[Outgoing], rules: QuotaRules
) -> dict[str, tuple[str, int, int]]:
    """The answer an uninterrupted run gives to each message, by the pure domain core.

    Maps the sender's event id (``inReplyTo``) to (status, reducedHours, ordinaryHours),
    the fields of an answer that the ledger decides; ordering rules as for
    :func:`expected_balances`.
    """
    _ledgers, result, reply_to = _uninterrupted_run(messages, rules)
    return {
        reply_to[o.command.event_id]: (
            o.decision.status.value,
            o.decision.reduced_hours,
            o.decision.ordinary_hours,
        )
        for o in result.outcomes
    }
