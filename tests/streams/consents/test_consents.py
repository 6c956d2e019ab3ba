"""Agency consent end to end: student API -> outbox -> ``consents`` -> agent -> agency view.

One worker subprocess serves the whole module (real Kafka, real PostgreSQL); every test
uses its own students so they do not depend on each other.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from api.auth import Role, mint_token
from tests.support import (
    EMPLOYER_A,
    EMPLOYER_B,
    ApiProcess,
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

T = TypeVar("T")

AGENCY = EMPLOYER_A  # 0123.456.749
OTHER_AGENCY = EMPLOYER_B
ON_TIME = brussels_millis(date(2026, 6, 1))


@pytest.fixture(scope="module")
def pipeline(kafka_bootstrap: str, module_database_url: str) -> Pipeline:
    return Pipeline(
        kafka_bootstrap, module_database_url, extra_env={"STUDENTWORK_TODAY": "2026-11-26"}
    )


@pytest.fixture(scope="module")
def worker(pipeline: Pipeline, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    log = tmp_path_factory.mktemp("consents") / "worker.log"
    with WorkerProcess(pipeline, log) as process:
        yield process


@pytest.fixture(scope="module")
def api(
    pipeline: Pipeline, worker: WorkerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiProcess]:
    log = tmp_path_factory.mktemp("consents") / "api.log"
    with ApiProcess(pipeline, log) as process:
        yield process


@pytest.fixture
async def http(pipeline: Pipeline, api: ApiProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=pipeline.api_url, timeout=10) as client:
        yield client


def auth(pipeline: Pipeline, role: Role, subject: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(pipeline.settings(), role, subject)}"}


async def eventually(
    probe: Callable[[], Awaitable[T]], ok: Callable[[T], bool], *, within: float = 30.0
) -> T:
    """Call ``probe`` until ``ok`` holds for its result (bounded), and return that result."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        result = await probe()
        if ok(result):
            return result
        if asyncio.get_running_loop().time() >= deadline:
            raise AssertionError(f"condition not reached in {within} s; last result: {result}")
        await asyncio.sleep(0.2)


async def test_agency_sees_remaining_hours_only_while_the_student_consents(
    pipeline: Pipeline, http: httpx.AsyncClient
) -> None:
    student = valid_ssin("040506", 17)
    student_auth = auth(pipeline, Role.STUDENT, student)
    agency_auth = auth(pipeline, Role.AGENCY, AGENCY)
    balance_url = f"/v1/agency/students/{student}/balance"

    async def balance() -> httpx.Response:
        return await http.get(balance_url, headers=agency_auth)

    # No consent yet.
    assert (await balance()).status_code == 403
    assert (await http.get("/v1/consents", headers=student_auth)).json() == {"consents": []}

    granted = await http.post(
        "/v1/consents", json={"agency": "BE 0123.456.749"}, headers=student_auth
    )
    assert granted.status_code == 202, granted.text
    assert granted.json()["agency"] == "0123.456.749"
    assert granted.json()["action"] == "grant"

    # Applied asynchronously: the full quota of 2026, no declaration yet.
    answer = await eventually(balance, lambda r: r.status_code == 200)
    assert answer.json() == {"ssin": student, "year": 2026, "remainingHours": 650}
    assert answer.headers["Cache-Control"] == "no-store"

    # Another agency still gets nothing.
    other = await http.get(balance_url, headers=auth(pipeline, Role.AGENCY, OTHER_AGENCY))
    assert other.status_code == 403

    # 30 hours declared on time for July: 620 remain, and only that figure is shown.
    await publish(
        pipeline.kafka_bootstrap,
        [
            Outgoing.json(
                pipeline.topic("dimona.declarations"),
                student,
                dimona_in(f"consent-{student}", ssin=student, hours=30),
                ON_TIME,
            )
        ],
    )
    answer = await eventually(balance, lambda r: r.json().get("remainingHours") == 620)
    assert answer.json() == {"ssin": student, "year": 2026, "remainingHours": 620}

    listed = (await http.get("/v1/consents", headers=student_auth)).json()["consents"]
    assert len(listed) == 1
    assert listed[0]["agency"] == "0123.456.749"
    assert listed[0]["active"] is True
    assert listed[0]["status"] == "active"
    assert listed[0]["grantedAt"] is not None
    assert listed[0]["revokedAt"] is None

    revoked = await http.delete("/v1/consents/0123.456.749", headers=student_auth)
    assert revoked.status_code == 202, revoked.text
    assert revoked.json()["action"] == "revoke"
    await eventually(balance, lambda r: r.status_code == 403)

    listed = (await http.get("/v1/consents", headers=student_auth)).json()["consents"]
    assert [(c["agency"], c["active"], c["status"]) for c in listed] == [
        ("0123.456.749", False, "revoked")
    ]
    assert listed[0]["grantedAt"] is not None
    assert listed[0]["revokedAt"] is not None

    # Granting again restores access.
    regranted = await http.post("/v1/consents", json={"agency": AGENCY}, headers=student_auth)
    assert regranted.status_code == 202
    answer = await eventually(balance, lambda r: r.status_code == 200)
    assert answer.json()["remainingHours"] == 620


async def test_agency_reads_are_listed_for_the_student(
    pipeline: Pipeline, http: httpx.AsyncClient
) -> None:
    student = valid_ssin("040506", 19)
    student_auth = auth(pipeline, Role.STUDENT, student)
    agency_auth = auth(pipeline, Role.AGENCY, AGENCY)
    balance_url = f"/v1/agency/students/{student}/balance"
    # A refused read (no consent) reads nothing and is not listed.
    assert (await http.get(balance_url, headers=agency_auth)).status_code == 403
    granted = await http.post("/v1/consents", json={"agency": AGENCY}, headers=student_auth)
    assert granted.status_code == 202, granted.text
    await eventually(
        lambda: http.get(balance_url, headers=agency_auth), lambda r: r.status_code == 200
    )
    assert (await http.get(balance_url, headers=agency_auth)).status_code == 200

    seen = await http.get("/v1/me/lookups", headers=student_auth)
    assert seen.status_code == 200
    reads = seen.json()["lookups"]
    assert [(r["employer"], r["by"], r["via"], r["codeMonth"]) for r in reads] == [
        ("0123.456.749", "agency", "consent", None),
        ("0123.456.749", "agency", "consent", None),
    ]
    assert reads[0]["lookedUpAt"] >= reads[1]["lookedUpAt"]
    # Another student's list does not show them.
    theirs = await http.get(
        "/v1/me/lookups", headers=auth(pipeline, Role.STUDENT, valid_ssin("040506", 21))
    )
    assert theirs.json() == {"lookups": []}


async def test_who_may_call_what(pipeline: Pipeline, http: httpx.AsyncClient) -> None:
    student = valid_ssin("050607", 22)
    student_auth = auth(pipeline, Role.STUDENT, student)
    agency_auth = auth(pipeline, Role.AGENCY, AGENCY)
    balance_url = f"/v1/agency/students/{student}/balance"

    # A student (even the student concerned) or an employer is not an agency.
    assert (await http.get(balance_url, headers=student_auth)).status_code == 403
    employer = auth(pipeline, Role.EMPLOYER, AGENCY)
    assert (await http.get(balance_url, headers=employer)).status_code == 403
    assert (await http.get(balance_url)).status_code == 401

    malformed = await http.get("/v1/agency/students/12345678901/balance", headers=agency_auth)
    assert malformed.status_code == 400
    assert "ssin" in malformed.json()["error"]

    # Agencies cannot manage consents; students give a valid enterprise number.
    assert (
        await http.post("/v1/consents", json={"agency": AGENCY}, headers=agency_auth)
    ).status_code == 403
    bad = await http.post("/v1/consents", json={"agency": "0123.456.748"}, headers=student_auth)
    assert bad.status_code == 400
    assert "check digits" in bad.json()["error"]
    assert (
        await http.post("/v1/consents", content=b"{not json", headers=student_auth)
    ).status_code == 400
    assert (
        await http.post("/v1/consents", json={"agent": AGENCY}, headers=student_auth)
    ).status_code == 400
    assert (await http.delete("/v1/consents/12", headers=student_auth)).status_code == 400


async def test_invalid_consent_message_is_dead_lettered_and_the_partition_goes_on(
    pipeline: Pipeline, http: httpx.AsyncClient
) -> None:
    student = valid_ssin("060708", 31)
    topic = pipeline.topic("consents")

    def change(ssin: str, event_id: str) -> dict[str, Any]:
        return {
            "eventId": event_id,
            "ssin": ssin,
            "agency": AGENCY,
            "action": "grant",
            "changedAt": "2026-11-26T10:00:00+01:00",
        }

    bad = change("93051822362", "bad-ssin")  # check digits do not match
    # Same key as the valid change after it: same partition, so it must not stall it.
    await publish(
        pipeline.kafka_bootstrap,
        [
            Outgoing.json(topic, student, bad),
            Outgoing(topic, student.encode(), b"\xff not json"),
            Outgoing.json(topic, student, change(student, "good-grant")),
        ],
    )
    answer = await eventually(
        lambda: http.get(
            f"/v1/agency/students/{student}/balance", headers=auth(pipeline, Role.AGENCY, AGENCY)
        ),
        lambda r: r.status_code == 200,
    )
    assert answer.json()["remainingHours"] == 650

    letters = await collect(
        pipeline.kafka_bootstrap, pipeline.topic("declarations.rejected"), count=2, settle=0.5
    )
    assert len(letters) == 2
    assert {m["value"]["topic"] for m in letters} == {topic}
    raws = [base64.b64decode(m["value"]["rawBase64"]) for m in letters]
    assert json.loads(raws[0])["eventId"] == "bad-ssin"
    assert "ssin" in letters[0]["value"]["reason"]
    assert raws[1] == b"\xff not json"


def test_module_log_has_no_tracebacks(worker: WorkerProcess) -> None:
    """Nothing in this module made the worker fail in a way the tests did not see."""
    text = Path(worker.log_path).read_text(errors="replace")
    assert "Traceback" not in text, text[-4000:]
