"""The eBox end to end: ``ebox.deliveries`` -> ``studentwork ebox`` -> PostgreSQL -> API.

The eBox consumer and the worker (which serves the API and relays dead letters) run as
real subprocesses against real Kafka and PostgreSQL, one of each for the whole module;
the tests run in order and the last one restarts the consumer.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from api.auth import Role, mint_token
from consumers.ebox import READY_MESSAGE, consumer_group, purge
from db import ebox as ebox_db
from tests.support import (
    EMPLOYER_A,
    ApiProcess,
    Outgoing,
    Pipeline,
    WorkerProcess,
    publish,
    valid_ssin,
)

pytestmark = pytest.mark.integration

T = TypeVar("T")

STUDENT = valid_ssin("030405", 41)
OTHER = valid_ssin("020304", 88)
TOPIC = "ebox.deliveries"


def tiny_pdf(text: str) -> bytes:
    """A minimal, well-formed one-page PDF (bytes differ with ``text``)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def delivery(event_id: str, ssin: str, pdf: bytes, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "eventId": event_id,
        "attestationId": f"att-{event_id}",
        "ssin": ssin,
        "year": 2026,
        "title": "Attestation student@work 2026",
        "fileName": "attestation-2026.pdf",
        "contentType": "application/pdf",
        "pdfBase64": base64.b64encode(pdf).decode(),
        "issuedAt": "2026-11-26T10:00:00+01:00",
    }
    body.update(changes)
    return body


class EboxProcess(WorkerProcess):
    """``studentwork ebox`` as a subprocess; ready once it says so in its log."""

    def __init__(self, pipeline: Pipeline, log_path: Path) -> None:
        super().__init__(pipeline, log_path, command="ebox")

    def wait_ready(self, timeout: float = 60) -> None:
        wait_for_log(self, READY_MESSAGE, timeout)


def wait_for_log(process: WorkerProcess, text: str, timeout: float = 30) -> str:
    """The process's log once it contains ``text`` (bounded wait)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = process.log_path.read_text(errors="replace")
        if text in content:
            return content
        if process.proc is not None and process.proc.poll() is not None:
            raise RuntimeError(f"{process.command} exited early:\n{content[-3000:]}")
        time.sleep(0.1)
    raise TimeoutError(f"{text!r} not in log:\n{process.log_path.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def pipeline(kafka_bootstrap: str, module_database_url: str) -> Pipeline:
    return Pipeline(
        kafka_bootstrap,
        module_database_url,
        extra_env={
            "STUDENTWORK_TODAY": "2026-11-26",
            # The dead letters are read back from the outbox once published.
            "STUDENTWORK_RELAY_KEEP_SENT_HOURS": "24",
        },
    )


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ebox")


@pytest.fixture(scope="module")
def worker(pipeline: Pipeline, logs: Path) -> Iterator[WorkerProcess]:
    with WorkerProcess(pipeline, logs / "worker.log") as process:
        yield process


@pytest.fixture(scope="module")
def consumer(pipeline: Pipeline, logs: Path, worker: WorkerProcess) -> Iterator[EboxProcess]:
    """The first eBox consumer run; the last test stops it and starts another."""
    process = EboxProcess(pipeline, logs / "ebox-1.log")
    process.start()
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def api(pipeline: Pipeline, logs: Path, worker: WorkerProcess) -> Iterator[ApiProcess]:
    with ApiProcess(pipeline, logs / "api.log") as process:
        yield process


@pytest.fixture
async def http(
    pipeline: Pipeline, consumer: EboxProcess, api: ApiProcess
) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=pipeline.api_url, timeout=10) as client:
        yield client


@pytest.fixture
async def db(pipeline: Pipeline) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(pipeline.database_url)
    try:
        yield conn
    finally:
        await conn.close()


def auth(pipeline: Pipeline, ssin: str, role: Role = Role.STUDENT) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(pipeline.settings(), role, ssin)}"}


async def send(pipeline: Pipeline, *messages: tuple[str | None, bytes | None]) -> None:
    await publish(
        pipeline.kafka_bootstrap,
        [
            Outgoing(pipeline.topic(TOPIC), key.encode() if key else None, value)  # type: ignore[arg-type]
            for key, value in messages
        ],
    )


def as_json(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()


async def eventually(
    probe: Callable[[], Awaitable[T]], ok: Callable[[T], bool], *, within: float = 30.0
) -> T:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        result = await probe()
        if ok(result):
            return result
        if asyncio.get_running_loop().time() >= deadline:
            raise AssertionError(f"condition not reached in {within} s; last result: {result}")
        await asyncio.sleep(0.2)


async def stored(db: asyncpg.Connection, *event_ids: str) -> None:
    """Wait until every given delivery was applied by the consumer."""
    wanted = [f"ebox:{e}" for e in event_ids]
    await eventually(
        lambda: db.fetchval(
            "SELECT count(*) FROM applied_events WHERE event_id = ANY($1::text[])", wanted
        ),
        lambda n: n == len(wanted),
    )


async def test_a_delivery_published_twice_is_stored_once_with_its_exact_bytes(
    pipeline: Pipeline, http: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    pdf = tiny_pdf("remaining hours: 620")
    first = as_json(delivery("d1", STUDENT, pdf))
    # The relay's at-least-once: the same message twice; d2 behind them on the same
    # partition tells when both were consumed.
    await send(
        pipeline,
        (STUDENT, first),
        (STUDENT, first),
        (STUDENT, as_json(delivery("d2", STUDENT, tiny_pdf("second")))),
    )
    await stored(db, "d1", "d2")

    assert await db.fetchval("SELECT count(*) FROM ebox_documents WHERE ssin = $1", STUDENT) == 2
    listed = (await http.get("/v1/ebox", headers=auth(pipeline, STUDENT))).json()["documents"]
    assert sorted(d["id"] for d in listed) == sorted(
        str(ebox_db.document_id(e)) for e in ("d1", "d2")
    )
    d1 = next(d for d in listed if d["id"] == str(ebox_db.document_id("d1")))
    assert d1["title"] == "Attestation student@work 2026"
    assert d1["year"] == 2026
    assert d1["deliveredAt"].startswith("20")
    assert d1["availableUntil"] == "2027-01-26"  # pinned today 2026-11-26 + 2 months
    assert d1["archived"] is False
    assert d1["size"] == len(pdf)

    download = await http.get(f"/v1/ebox/{d1['id']}", headers=auth(pipeline, STUDENT))
    assert download.status_code == 200
    assert download.headers["content-type"].startswith("application/pdf")
    assert download.content == pdf
    assert 'filename="attestation-2026.pdf"' in download.headers["content-disposition"]

    # Nobody else can read it, and nothing tells them it exists.
    assert (await http.get("/v1/ebox", headers=auth(pipeline, OTHER))).json() == {"documents": []}
    other = await http.get(f"/v1/ebox/{d1['id']}", headers=auth(pipeline, OTHER))
    assert other.status_code == 404
    assert (
        await http.get("/v1/ebox/not-a-uuid", headers=auth(pipeline, STUDENT))
    ).status_code == 404
    assert (await http.get(f"/v1/ebox/{d1['id']}")).status_code == 401
    employer = auth(pipeline, EMPLOYER_A, Role.EMPLOYER)
    assert (await http.get("/v1/ebox", headers=employer)).status_code == 403


async def test_archived_documents_outlive_the_purge(
    pipeline: Pipeline, http: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    await send(
        pipeline,
        (OTHER, as_json(delivery("keep", OTHER, tiny_pdf("keep me")))),
        (OTHER, as_json(delivery("expire", OTHER, tiny_pdf("let me go")))),
    )
    await stored(db, "keep", "expire")
    keep, expire = ebox_db.document_id("keep"), ebox_db.document_id("expire")

    archived = await http.post(f"/v1/ebox/{keep}/archive", headers=auth(pipeline, OTHER))
    assert archived.status_code == 200
    assert archived.json()["archived"] is True
    assert archived.json()["availableUntil"] is None
    # Archiving again changes nothing; another student cannot archive it.
    again = await http.post(f"/v1/ebox/{keep}/archive", headers=auth(pipeline, OTHER))
    assert again.json()["archivedAt"] == archived.json()["archivedAt"]
    foreign = await http.post(f"/v1/ebox/{expire}/archive", headers=auth(pipeline, STUDENT))
    assert foreign.status_code == 404

    # Available through 26 January 2027: nothing goes on that day.
    settings = pipeline.settings()
    assert await purge(settings, today=date(2027, 1, 26)) == 0
    # The day after, an expired document is hidden even before the purge runs...
    later = await ebox_db.list_documents(db, OTHER, date(2027, 1, 27))
    assert [d.id for d in later] == [keep]
    # ...and the purge deletes every expired, non-archived one (STUDENT's two as well).
    assert await purge(settings, today=date(2027, 1, 27)) == 3
    rows = await db.fetch("SELECT id FROM ebox_documents ORDER BY id")
    assert [r["id"] for r in rows] == [keep]
    listed = (await http.get("/v1/ebox", headers=auth(pipeline, OTHER))).json()["documents"]
    assert [(d["id"], d["archived"]) for d in listed] == [(str(keep), True)]
    gone = await http.get(f"/v1/ebox/{expire}", headers=auth(pipeline, OTHER))
    assert gone.status_code == 404


async def test_garbage_is_dead_lettered_and_does_not_stall_the_consumer(
    pipeline: Pipeline, http: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    bad_ssin = as_json(delivery("bad-ssin", "93051822362", tiny_pdf("x")))
    not_pdf = as_json(delivery("not-pdf", STUDENT, b"<html>hello</html>"))
    not_base64 = as_json(delivery("not-b64", STUDENT, b"", pdfBase64="***"))
    garbage = b"\x00\xff{not json"
    await send(
        pipeline,
        (STUDENT, garbage),
        (STUDENT, bad_ssin),
        (STUDENT, not_pdf),
        (STUDENT, not_base64),
        (STUDENT, None),
        (STUDENT, as_json(delivery("after-garbage", STUDENT, tiny_pdf("still here")))),
    )
    await stored(db, "after-garbage")
    listed = (await http.get("/v1/ebox", headers=auth(pipeline, STUDENT))).json()["documents"]
    assert [d["id"] for d in listed] == [str(ebox_db.document_id("after-garbage"))]

    # Each invalid message became one dead letter with its raw bytes and the reason.
    def letters_ready(rows: list[asyncpg.Record]) -> bool:
        return len(rows) == 5 and all(r["sent_at"] is not None for r in rows)

    rows = await eventually(
        lambda: db.fetch(
            "SELECT value, sent_at FROM outbox WHERE topic = 'declarations.rejected' ORDER BY id"
        ),
        letters_ready,
    )
    letters = [json.loads(r["value"]) for r in rows]
    assert {letter["topic"] for letter in letters} == {pipeline.topic(TOPIC)}
    raws = [base64.b64decode(letter["rawBase64"]) for letter in letters]
    assert raws == [garbage, bad_ssin, not_pdf, not_base64, b""]
    reasons = [letter["reason"] for letter in letters]
    assert "ssin" in reasons[1]
    assert "not a PDF" in reasons[2]
    assert "base64" in reasons[3]
    assert "empty" in reasons[4]


async def committed_offsets(pipeline: Pipeline) -> tuple[dict[int, int], dict[int, int]]:
    """(committed offset, end offset) per partition of the eBox group."""
    settings = pipeline.settings()
    probe = AIOKafkaConsumer(
        bootstrap_servers=pipeline.kafka_bootstrap,
        group_id=consumer_group(settings),
        enable_auto_commit=False,
    )
    await probe.start()
    try:
        parts = [TopicPartition(pipeline.topic(TOPIC), p) for p in range(2)]
        committed = {tp.partition: await probe.committed(tp) or 0 for tp in parts}
        ends = {tp.partition: o for tp, o in (await probe.end_offsets(parts)).items()}
        return committed, ends
    finally:
        await probe.stop()


async def test_a_restart_resumes_from_committed_offsets(
    pipeline: Pipeline,
    consumer: EboxProcess,
    logs: Path,
    db: asyncpg.Connection,
) -> None:
    consumer.stop()  # SIGTERM: finishes, commits, leaves the group
    assert consumer.proc is not None and consumer.proc.returncode == 0
    first_run = wait_for_log(consumer, "eBox consumer stopped")
    # d1 twice + d2, keep, expire, 5 invalid, after-garbage: 11 records, one duplicate.
    assert "stored=5 duplicates=1 rejected=5" in first_run
    committed, ends = await committed_offsets(pipeline)
    assert committed == ends
    assert sum(ends.values()) == 11

    # Published while no consumer runs: a purged delivery again, and a new one.
    await send(
        pipeline,
        (OTHER, as_json(delivery("expire", OTHER, tiny_pdf("let me go")))),
        (OTHER, as_json(delivery("while-down", OTHER, tiny_pdf("new")))),
    )
    second = EboxProcess(pipeline, logs / "ebox-2.log")
    second.start()
    try:
        second.wait_ready()
        await stored(db, "while-down")
    finally:
        second.stop()
    second_run = wait_for_log(second, "eBox consumer stopped")
    # Only the two new records were read; the purged one did not come back.
    assert "stored=1 duplicates=1 rejected=0" in second_run
    ids = {r["id"] for r in await db.fetch("SELECT id FROM ebox_documents")}
    assert ids == {ebox_db.document_id(e) for e in ("keep", "after-garbage", "while-down")}
    committed, ends = await committed_offsets(pipeline)
    assert committed == ends
    for log in (first_run, second_run):
        assert "Traceback" not in log
