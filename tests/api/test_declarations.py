"""``POST /v1/declarations``: every payroll package's bodies over HTTP, answered in the
Dimona REST shape, each declarant reading its own answers only (issue 9 items 5-6), and
no employer token reaching another employer's answer or a student's wages through any
endpoint (issue 8, privacy).

A real worker and a real API process on real Kafka and PostgreSQL; the bodies are those
of tests/fixtures/payroll_bodies.json, as each package builds them.
"""

from __future__ import annotations

import asyncio
import copy
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import create_app, endpoints
from api.auth import Role, mint_token
from schemas.declarations import DimonaDeclaration
from tests.streams.test_payroll_shapes import QUOTA, SHAPES, fill, remaining
from tests.support import (
    EMPLOYER_A,
    EMPLOYER_B,
    REPO,
    ApiProcess,
    Pipeline,
    WorkerProcess,
    valid_enterprise_number,
    valid_ssin,
)

pytestmark = pytest.mark.integration

SECRETARIAT = valid_enterprise_number(12_345_678)


@pytest.fixture(scope="module")
def pipeline(kafka_bootstrap: str, module_database_url: str) -> Pipeline:
    # LogAppendTime, as in production: these July 2027 periods are declared on time.
    return Pipeline(
        kafka_bootstrap,
        module_database_url,
        extra_env={"STUDENTWORK_INPUT_TIMESTAMP_TYPE": "LogAppendTime"},
    )


@pytest.fixture(scope="module")
def processes(pipeline: Pipeline, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    logs = tmp_path_factory.mktemp("declarations")
    with WorkerProcess(pipeline, logs / "worker.log"), ApiProcess(pipeline, logs / "api.log"):
        yield


@pytest.fixture
async def http(pipeline: Pipeline, processes: None) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=pipeline.api_url, timeout=30) as client:
        yield client


def auth(pipeline: Pipeline, role: Role, subject: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(pipeline.settings(), role, subject)}", **headers}


def employer_of(body: dict[str, Any]) -> str:
    """The employer id a declare body names (what its employer's token names)."""
    declaration = DimonaDeclaration.model_validate(body)
    assert declaration.employer is not None
    return declaration.employer.employer_id


async def answered(
    http: httpx.AsyncClient, location: str, headers: dict[str, str]
) -> dict[str, Any]:
    """GET the location until the worker decided (202 until then)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while True:
        response = await http.get(location, headers=headers)
        if response.status_code == 200:
            body: dict[str, Any] = response.json()
            return body
        assert response.status_code == 202, response.text
        assert response.json()["status"] == "pending"
        if loop.time() > deadline:
            raise TimeoutError(f"{location}: no answer")
        await asyncio.sleep(0.2)


async def post(
    http: httpx.AsyncClient, body: dict[str, Any], headers: dict[str, str]
) -> tuple[str, int]:
    """POST a declaration: (its location, its id); checks the 201."""
    response = await http.post("/v1/declarations", json=body, headers=headers)
    assert response.status_code == 201, response.text
    location = response.headers["Location"]
    assert response.json()["location"] == location
    declaration_id = response.json()["declarationId"]
    assert location == f"/v1/declarations/{declaration_id}"
    assert len(str(declaration_id)) == 12
    return location, declaration_id


async def test_every_package_declares_updates_and_cancels_over_http(
    pipeline: Pipeline, http: httpx.AsyncClient
) -> None:
    for n, (name, shape) in enumerate(SHAPES.items()):
        ssin = valid_ssin("970304", 11 + 2 * n)
        declare = fill(shape.declare, ssin)
        own = auth(pipeline, Role.EMPLOYER, employer_of(declare))

        location, declaration_id = await post(http, declare, own)
        answer = await answered(http, location, own)
        assert answer == {
            "declarationStatus": {
                "declarationId": declaration_id,
                "result": "A",
                # The Location's id is the period's: Odoo sends it back as the reference.
                "period": {"id": declaration_id},
                "anomalies": [],
                "anomaliesCollection": [],
                "informationsCollection": [],
                "reducedHours": 30,
                "ordinaryHours": 0,
            }
        }, name
        assert await remaining(pipeline, ssin) == QUOTA - 30, name

        # Another employer reads nothing of it and cannot follow it up.
        other = auth(pipeline, Role.EMPLOYER, EMPLOYER_B)
        hidden = await http.get(location, headers=other)
        assert (hidden.status_code, hidden.json()) == (404, {"error": "no such declaration"})
        foreign = await http.post(
            "/v1/declarations", json=fill(shape.cancel, ssin, declaration_id, shape), headers=other
        )
        assert foreign.status_code == 404, name

        period = answer["declarationStatus"]["period"]["id"]
        location, _ = await post(http, fill(shape.update, ssin, period, shape), own)
        update = (await answered(http, location, own))["declarationStatus"]
        assert (update["result"], update["period"], update["anomalies"]) == (
            "A",
            {"id": period},
            [],
        ), name
        hours = 30 if shape.updated_hours is None else shape.updated_hours
        assert await remaining(pipeline, ssin) == QUOTA - hours, name

        location, _ = await post(http, fill(shape.cancel, ssin, period, shape), own)
        cancel = (await answered(http, location, own))["declarationStatus"]
        assert (cancel["result"], cancel["period"]) == ("A", {"id": period}), name
        assert await remaining(pipeline, ssin) == QUOTA, name


async def test_refusals_are_answered_with_their_codes_in_french_and_dutch(
    pipeline: Pipeline, http: httpx.AsyncClient
) -> None:
    ssin = valid_ssin("970304", 91)
    declare = fill(SHAPES["dimona-rest-v2"].declare, ssin)
    own = auth(pipeline, Role.EMPLOYER, employer_of(declare))
    location, declaration_id = await post(http, declare, own)
    await answered(http, location, own)
    # Cancelled twice: the second is refused by the worker, B with its anomaly.
    cancel = {"dimonaCancel": {"periodId": declaration_id}}
    await answered(http, (await post(http, cancel, own))[0], own)
    again = await post(http, cancel, {**own, "Idempotency-Key": "second-cancel"})
    refused = (await answered(http, again[0], own))["declarationStatus"]
    assert refused["result"] == "B"
    assert [(a["code"], a["descriptionFr"], a["descriptionNl"]) for a in refused["anomalies"]] == [
        ("PERIOD_CANCELLED", "Période déjà annulée.", "Periode al geannuleerd.")
    ]
    assert refused["anomaliesCollection"] == refused["anomalies"]

    # A rule of the domain: decided by the worker, B with the zero-hours anomaly.
    zero = copy.deepcopy(declare)
    zero["dimonaIn"]["plannedHoursNumber"] = 0
    refused = (await answered(http, (await post(http, zero, own))[0], own))["declarationStatus"]
    assert (refused["result"], [a["code"] for a in refused["anomalies"]]) == ("B", ["ZERO_HOURS"])
    assert refused["anomalies"][0]["descriptionNl"] == "Gepland aantal uren ontbreekt of is nul."

    # What the contract refuses never reaches the worker: 400 with the code and reason.
    endless = copy.deepcopy(declare)
    del endless["dimonaIn"]["endDate"]
    bad = await http.post("/v1/declarations", json=endless, headers=own)
    assert bad.status_code == 400
    assert bad.json()["error"].startswith("MISSING_END_DATE: ")
    unknown = await http.post(
        "/v1/declarations", json={"dimonaCancel": {"periodId": 123456789012}}, headers=own
    )
    assert (unknown.status_code, unknown.json()) == (
        404,
        {"error": "unknown period 123456789012"},
    )
    student = await http.post(
        "/v1/declarations", json=declare, headers=auth(pipeline, Role.STUDENT, ssin)
    )
    assert student.status_code == 403


async def test_an_idempotency_key_returns_the_same_declaration(
    pipeline: Pipeline, http: httpx.AsyncClient
) -> None:
    ssin = valid_ssin("970304", 93)
    declare = fill(SHAPES["dimona-rest-v2"].declare, ssin)
    keyed = auth(pipeline, Role.EMPLOYER, employer_of(declare), **{"Idempotency-Key": "run-9"})
    first = await post(http, declare, keyed)
    assert await post(http, declare, keyed) == first
    other = copy.deepcopy(declare)
    other["dimonaIn"]["plannedHoursNumber"] = 12
    conflict = await http.post("/v1/declarations", json=other, headers=keyed)
    assert conflict.status_code == 409
    assert "run-9" in conflict.json()["error"]
    # Without a key, the same body twice is one declaration too (as on Kafka).
    unkeyed = auth(pipeline, Role.EMPLOYER, employer_of(declare))
    assert await post(http, other, unkeyed) == await post(http, other, unkeyed)
    await answered(http, first[0], keyed)
    await answered(http, (await post(http, other, unkeyed))[0], unkeyed)
    # 30 (keyed) + 12 (unkeyed): each applied once.
    assert await remaining(pipeline, ssin) == QUOTA - 42


async def test_a_social_secretariat_declares_under_a_mandate_only(
    pipeline: Pipeline, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    ssin = valid_ssin("970304", 95)
    declare = fill(SHAPES["dimona-rest-v2"].declare, ssin)
    secretariat = auth(pipeline, Role.SOCIAL_SECRETARIAT, SECRETARIAT)
    refused = await http.post("/v1/declarations", json=declare, headers=secretariat)
    assert refused.status_code == 403
    assert "no mandate" in refused.json()["error"]

    csv = tmp_path / "mandates.csv"
    csv.write_text(f"secretariat,employer\n{SECRETARIAT},0123.456.749\n")
    bad = tmp_path / "bad.csv"
    bad.write_text(f"secretariat,employer\n{SECRETARIAT},0123.456.748\n")
    env = pipeline.env()
    command = [sys.executable, "-m", "infra", "mandates", "import"]
    wrong = await asyncio.to_thread(
        subprocess.run,
        [*command, str(bad)],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )
    assert wrong.returncode == 2
    assert "line 2" in wrong.stderr
    loaded = await asyncio.to_thread(
        subprocess.run,
        [*command, str(csv)],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )
    assert loaded.returncode == 0, loaded.stderr
    assert "loaded 1 mandates" in loaded.stdout

    location, declaration_id = await post(http, declare, secretariat)
    assert (await answered(http, location, secretariat))["declarationStatus"]["result"] == "A"
    # The employer it declared for reads the answer too; the follow-up needs no employer.
    employer = auth(pipeline, Role.EMPLOYER, EMPLOYER_A)
    assert (await http.get(location, headers=employer)).status_code == 200
    cancel = await post(http, {"dimonaCancel": {"periodId": declaration_id}}, secretariat)
    assert (await answered(http, cancel[0], secretariat))["declarationStatus"]["result"] == "A"


async def test_an_employer_token_reaches_no_one_else_s_answer_nor_any_wages(
    pipeline: Pipeline, http: httpx.AsyncClient
) -> None:
    """Every endpoint of the application, found by iterating over its routes, with the
    ids of another employer's declaration and of a student with wages."""
    ssin = valid_ssin("970304", 97)
    declare = fill(SHAPES["dimona-rest-v2"].declare, ssin)
    location, declaration_id = await post(
        http, declare, auth(pipeline, Role.EMPLOYER, employer_of(declare))
    )
    await answered(http, location, auth(pipeline, Role.EMPLOYER, EMPLOYER_A))
    values = {
        "ssin": ssin,
        "year": "2027",
        "attestation_id": str(uuid.uuid4()),
        "document_id": str(uuid.uuid4()),
        "agency": EMPLOYER_A,
        "declaration_id": str(declaration_id),
    }
    intruder = auth(pipeline, Role.EMPLOYER, EMPLOYER_B)
    checked = 0
    for route in endpoints(create_app(pipeline.settings())):
        if route.path == "/v1/openapi.json":
            continue
        path = route.path.format(**{name: values[name] for name in route.param_convertors})
        for method in route.methods:
            if method == "POST" and route.path == "/v1/declarations":
                # Its own declarations only: following A's period up is an unknown period.
                body: Any = {"dimonaCancel": {"periodId": declaration_id}}
            else:
                body = {"agency": EMPLOYER_A, "year": 2027}
            response = await http.request(method, path, json=body, headers=intruder)
            assert response.status_code in (400, 403, 404), (method, path, response.text)
            assert response.json().keys() == {"error"}, (method, path)
            checked += 1
    assert checked >= 17
