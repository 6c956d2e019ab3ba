"""The student API end to end: declarations on Kafka, a real worker, answers over HTTP
from the real API process (``studentwork api``).

One worker and one API serve the whole module (starting one takes seconds); the scenario is
published once and every test reads it. "Today" is pinned to 26 November 2026.

The scenario (quota 650 hours in 2026), in order of acceptance:

=====  ==========  ===============  =====  =============================================
 seq   employer    days             hours  what happens next
=====  ==========  ===============  =====  =============================================
 1     A           1-31 July        300    DmfA Q3: 280 hours worked, EUR 4,200.00
 2     B           3-7 August       40     updated to 3-6 August, 32 hours; no DmfA
 3     B           14-15 September  16     cancelled
 4     B           5-9 October      24     received 6 October: late
 5     A           1-5 December     20     (quarter not over)
=====  ==========  ===============  =====  =============================================

So: used = 280 (A Q3, DmfA) + 32 (B Q3, planned) + 20 (A Q4, planned) = 332, remaining 318.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from api.app import create_app, endpoints
from api.auth import Role, mint_token
from quota.calendar import BRUSSELS
from schemas.settings import Settings
from tests.support import (
    EMPLOYER_A,
    EMPLOYER_B,
    STUDENT,
    ApiProcess,
    Outgoing,
    Pipeline,
    WorkerProcess,
    brussels_millis,
    collect,
    dimona_cancel,
    dimona_in,
    dimona_update,
    dmfa,
    publish,
    valid_ssin,
)

pytestmark = pytest.mark.integration

TODAY = "2026-11-26"
OTHER = valid_ssin("020304", 56)
DIMONA = "dimona.declarations"
A_SHOWN = "0123.456.749"
B_SHOWN = "0403.170.701"


@dataclass(frozen=True)
class Scenario:
    """Period ids of the published declarations, by event id."""

    periods: dict[str, str]


@pytest.fixture(scope="module")
def pipeline(kafka_bootstrap: str, module_database_url: str) -> Pipeline:
    return Pipeline(kafka_bootstrap, module_database_url, extra_env={"STUDENTWORK_TODAY": TODAY})


@pytest.fixture(scope="module")
def worker(pipeline: Pipeline, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    log = tmp_path_factory.mktemp("student-api") / "worker.log"
    with WorkerProcess(pipeline, Path(log)) as process:
        yield process


@pytest.fixture(scope="module")
async def scenario(pipeline: Pipeline, worker: WorkerProcess) -> Scenario:
    b, t = pipeline.kafka_bootstrap, pipeline.topic(DIMONA)
    on_time = brussels_millis(date(2026, 6, 1))
    await publish(
        b,
        [
            Outgoing.json(t, STUDENT, dimona_in("a-jul", hours=300), on_time),
            Outgoing.json(
                t,
                STUDENT,
                dimona_in(
                    "b-aug", employer=EMPLOYER_B, start="2026-08-03", end="2026-08-07", hours=40
                ),
                on_time,
            ),
            Outgoing.json(
                t,
                STUDENT,
                dimona_in(
                    "b-sep", employer=EMPLOYER_B, start="2026-09-14", end="2026-09-15", hours=16
                ),
                on_time,
            ),
            Outgoing.json(
                t,
                STUDENT,
                dimona_in(
                    "b-late", employer=EMPLOYER_B, start="2026-10-05", end="2026-10-09", hours=24
                ),
                brussels_millis(date(2026, 10, 6)),
            ),
            Outgoing.json(
                t,
                STUDENT,
                dimona_in("a-dec", start="2026-12-01", end="2026-12-05", hours=20),
                brussels_millis(date(2026, 11, 20)),
            ),
            Outgoing.json(t, OTHER, dimona_in("o-jul", ssin=OTHER, hours=40), on_time),
        ],
    )
    acks = await collect(b, pipeline.topic("dimona.acks"), count=6)
    periods = {a["value"]["inReplyTo"]: a["value"]["periodId"] for a in acks}
    await publish(
        b,
        [
            Outgoing.json(
                t,
                STUDENT,
                dimona_update(
                    "b-aug-32", periods["b-aug"], employer=EMPLOYER_B, end="2026-08-06", hours=32
                ),
                on_time,
            ),
            Outgoing.json(
                t, STUDENT, dimona_cancel("b-sep-x", periods["b-sep"], employer=EMPLOYER_B), on_time
            ),
            Outgoing.json(
                pipeline.topic("dmfa.declarations"),
                STUDENT,
                dmfa("dmfa-a-q3", hours=280, wage_cents=420_000),
                brussels_millis(date(2026, 10, 20)),
            ),
            # The operators raise the quota of next year: the overview must show it.
            Outgoing.json(
                pipeline.topic("quota.changes"),
                "2027",
                {
                    "eventId": "quota-2027",
                    "year": 2027,
                    "hours": 700,
                    "requestedAt": "2026-11-20T10:00:00+01:00",
                },
            ),
        ],
    )
    acks = await collect(b, pipeline.topic("dimona.acks"), count=9)
    statuses = {a["value"]["inReplyTo"]: a["value"]["status"] for a in acks}
    assert statuses == {
        "a-jul": "A",
        "b-aug": "A",
        "b-sep": "A",
        "b-late": "W",
        "a-dec": "A",
        "o-jul": "A",
        "b-aug-32": "A",
        "b-sep-x": "A",
        "dmfa-a-q3": "A",
    }
    return Scenario(periods)


@pytest.fixture(scope="module")
def api(
    pipeline: Pipeline, worker: WorkerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiProcess]:
    log = tmp_path_factory.mktemp("student-api") / "api.log"
    with ApiProcess(pipeline, Path(log)) as process:
        yield process


@pytest.fixture
async def client(pipeline: Pipeline, api: ApiProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=pipeline.api_url) as http:
        yield http


@pytest.fixture
async def worker_http(
    pipeline: Pipeline, worker: WorkerProcess
) -> AsyncIterator[httpx.AsyncClient]:
    """The worker's own web server, which answers /health only."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{pipeline.web_port}") as http:
        yield http


def bearer(pipeline: Pipeline, role: Role = Role.STUDENT, subject: str = STUDENT) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(pipeline.settings(), role, subject)}"}


async def eventually(
    fetch: Callable[[], Awaitable[httpx.Response]],
    ready: Callable[[httpx.Response], bool],
    wait: float = 60.0,
) -> httpx.Response:
    """Poll until ``ready`` holds (the worker applies and relays asynchronously)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        response = await fetch()
        if ready(response) or loop.time() > deadline:
            return response
        await asyncio.sleep(0.2)


def brussels_day(iso: str) -> date:
    return datetime.fromisoformat(iso).astimezone(BRUSSELS).date()


def without_received_at(body: Any) -> Any:
    """``body`` minus the receivedAt instants (checked separately, as Brussels dates)."""
    if isinstance(body, dict):
        return {
            k: without_received_at(v)
            for k, v in body.items()
            if k not in {"receivedAt", "dmfaReceivedAt"}
        }
    if isinstance(body, list):
        return [without_received_at(v) for v in body]
    return body


# ------------------------------------------------------------------------------ figures


async def test_balance_of_previous_current_and_next_year(
    scenario: Scenario, pipeline: Pipeline, client: httpx.AsyncClient
) -> None:
    response = await eventually(
        lambda: client.get("/v1/me/balance", headers=bearer(pipeline)),
        lambda r: r.status_code == 200 and r.json()["years"][2]["quota"] == 700,
    )
    assert response.status_code == 200
    assert response.json() == {
        "ssin": STUDENT,
        "today": TODAY,
        "currentYear": 2026,
        "years": [
            {"year": 2025, "quota": 650, "used": 0, "remaining": 650},
            {"year": 2026, "quota": 650, "used": 332, "remaining": 318},
            {"year": 2027, "quota": 700, "used": 0, "remaining": 700},
        ],
    }
    # The same through the explicit SSIN, written with separators.
    own = await client.get("/v1/students/93.05.18-223.61/balance", headers=bearer(pipeline))
    assert own.status_code == 200
    assert own.json() == response.json()


async def test_detailed_view_is_exact(
    scenario: Scenario, pipeline: Pipeline, client: httpx.AsyncClient
) -> None:
    p = scenario.periods
    response = await client.get("/v1/me/years/2026", headers=bearer(pipeline))
    assert response.status_code == 200
    body = response.json()

    def declaration(
        event: str,
        start: str,
        end: str,
        hours: int,
        *,
        late: bool = False,
        cancelled: bool = False,
        counted: bool = True,
        reduced: int = 0,
        ordinary: int = 0,
    ) -> dict[str, Any]:
        return {
            "periodId": p[event],
            "start": start,
            "end": end,
            "plannedHours": hours,
            "late": late,
            "cancelled": cancelled,
            "counted": counted,
            "reducedHours": reduced,
            "ordinaryHours": ordinary,
            "neutralisedHours": 0,
            "usingEmployer": None,
        }

    assert without_received_at(body) == {
        "ssin": STUDENT,
        "year": 2026,
        "today": TODAY,
        "quota": 650,
        "used": 332,
        "remaining": 318,
        "reducedHours": 332,
        "ordinaryHours": 0,
        "neutralisedHours": 0,
        "lateHours": 24,
        "explanation": "2026: quota 650 hours, 332 hours used (280 + 32 + 20), 318 hours "
        "remaining. 24 hours declared late are outside the quota.",
        "employers": [
            {
                "employer": EMPLOYER_A,
                "employerDisplay": A_SHOWN,
                "plannedHours": 320,
                "workedHours": 280,
                "toWorkHours": 20,
                "lateHours": 0,
                "cancelledHours": 0,
                "countedHours": 300,
                "grossWageCents": 420_000,
                "quarters": [
                    {
                        "quarter": 3,
                        "plannedHours": 300,
                        "lateHours": 0,
                        "cancelledHours": 0,
                        "actualHours": 280,
                        "toWorkHours": 0,
                        "grossWageCents": 420_000,
                        "dmfaStatus": "received",
                        "dmfaDueBy": "2026-10-31",
                        "countedHours": 280,
                        "reducedHours": 280,
                        "ordinaryHours": 0,
                        "declarations": [
                            declaration("a-jul", "2026-07-01", "2026-07-31", 300, counted=False)
                        ],
                    },
                    {
                        "quarter": 4,
                        "plannedHours": 20,
                        "lateHours": 0,
                        "cancelledHours": 0,
                        "actualHours": None,
                        "toWorkHours": 20,
                        "grossWageCents": None,
                        "dmfaStatus": "awaiting",
                        "dmfaDueBy": "2027-01-31",
                        "countedHours": 20,
                        "reducedHours": 20,
                        "ordinaryHours": 0,
                        "declarations": [
                            declaration("a-dec", "2026-12-01", "2026-12-05", 20, reduced=20)
                        ],
                    },
                ],
            },
            {
                "employer": EMPLOYER_B,
                "employerDisplay": B_SHOWN,
                "plannedHours": 56,
                "workedHours": 0,
                "toWorkHours": 56,
                "lateHours": 24,
                "cancelledHours": 16,
                "countedHours": 32,
                "grossWageCents": 0,
                "quarters": [
                    {
                        "quarter": 3,
                        "plannedHours": 32,
                        "lateHours": 0,
                        "cancelledHours": 16,
                        "actualHours": None,
                        "toWorkHours": 32,
                        "grossWageCents": None,
                        "dmfaStatus": "missing",
                        "dmfaDueBy": "2026-10-31",
                        "countedHours": 32,
                        "reducedHours": 32,
                        "ordinaryHours": 0,
                        "declarations": [
                            declaration("b-aug", "2026-08-03", "2026-08-06", 32, reduced=32),
                            declaration(
                                "b-sep",
                                "2026-09-14",
                                "2026-09-15",
                                16,
                                cancelled=True,
                                counted=False,
                            ),
                        ],
                    },
                    {
                        "quarter": 4,
                        "plannedHours": 24,
                        "lateHours": 24,
                        "cancelledHours": 0,
                        "actualHours": None,
                        "toWorkHours": 24,
                        "grossWageCents": None,
                        "dmfaStatus": "awaiting",
                        "dmfaDueBy": "2027-01-31",
                        "countedHours": 0,
                        "reducedHours": 0,
                        "ordinaryHours": 0,
                        "declarations": [
                            declaration(
                                "b-late",
                                "2026-10-05",
                                "2026-10-09",
                                24,
                                late=True,
                                counted=False,
                                ordinary=24,
                            )
                        ],
                    },
                ],
            },
        ],
        "terms": [
            {
                "employer": EMPLOYER_A,
                "employerDisplay": A_SHOWN,
                "quarter": 3,
                "source": "dmfa",
                "hours": 280,
                "plannedHours": 300,
                "lateHours": 0,
                "lateDeductedHours": 0,
                "dmfaHours": 280,
                "grossWageCents": 420_000,
                "neutralisedHours": 0,
                "countedHours": 280,
                "reducedHours": 280,
                "ordinaryHours": 0,
                "text": f"Employer {A_SHOWN}, Q3: 280 hours worked (DmfA) replace 300 planned; "
                "gross wage EUR 4,200.00; 280 hours counted",
            },
            {
                "employer": EMPLOYER_B,
                "employerDisplay": B_SHOWN,
                "quarter": 3,
                "source": "planned",
                "hours": 32,
                "plannedHours": 32,
                "lateHours": 0,
                "lateDeductedHours": 0,
                "dmfaHours": None,
                "grossWageCents": None,
                "neutralisedHours": 0,
                "countedHours": 32,
                "reducedHours": 32,
                "ordinaryHours": 0,
                "text": f"Employer {B_SHOWN}, Q3: 32 hours planned count until the DmfA "
                "arrives; 32 hours counted; 16 hours cancelled, not counted",
            },
            {
                "employer": EMPLOYER_B,
                "employerDisplay": B_SHOWN,
                "quarter": 4,
                "source": "planned",
                "hours": 0,
                "plannedHours": 0,
                "lateHours": 24,
                "lateDeductedHours": 0,
                "dmfaHours": None,
                "grossWageCents": None,
                "neutralisedHours": 0,
                "countedHours": 0,
                "reducedHours": 0,
                "ordinaryHours": 0,
                "text": f"Employer {B_SHOWN}, Q4: nothing counted; 24 hours declared late are "
                "outside the quota (ordinary contributions)",
            },
            {
                "employer": EMPLOYER_A,
                "employerDisplay": A_SHOWN,
                "quarter": 4,
                "source": "planned",
                "hours": 20,
                "plannedHours": 20,
                "lateHours": 0,
                "lateDeductedHours": 0,
                "dmfaHours": None,
                "grossWageCents": None,
                "neutralisedHours": 0,
                "countedHours": 20,
                "reducedHours": 20,
                "ordinaryHours": 0,
                "text": f"Employer {A_SHOWN}, Q4: 20 hours planned count until the DmfA "
                "arrives; 20 hours counted",
            },
        ],
        "checks": [
            {
                "kind": "planned_above_actual",
                "employer": EMPLOYER_A,
                "employerDisplay": A_SHOWN,
                "quarter": 3,
                "hours": 20,
                "periodId": None,
                "message": f"Employer {A_SHOWN}, Q3 2026: 300 hours declared but 280 worked "
                "according to the DmfA. The employer never lowered its declaration, so 20 "
                "hours stayed booked until the DmfA arrived.",
            },
            {
                "kind": "dmfa_missing",
                "employer": EMPLOYER_B,
                "employerDisplay": B_SHOWN,
                "quarter": 3,
                "hours": 32,
                "periodId": None,
                "message": f"Employer {B_SHOWN}, Q3 2026: no DmfA (quarterly wage declaration) "
                "although it was due by 31 October 2026; its 32 hours planned still count "
                "against your quota. If you worked fewer hours, ask the employer to send its "
                "DmfA or to update the declaration.",
            },
            {
                "kind": "late_declaration",
                "employer": EMPLOYER_B,
                "employerDisplay": B_SHOWN,
                "quarter": 4,
                "hours": 24,
                "periodId": p["b-late"],
                "message": f"Employer {B_SHOWN} declared 5 October 2026 to 9 October 2026 "
                "(24 hours) late, on 6 October 2026, after work had started: these hours are "
                "outside the quota (ordinary contributions) and the declaration cannot be "
                "updated.",
            },
        ],
    }

    received = {
        d["periodId"]: brussels_day(d["receivedAt"])
        for e in body["employers"]
        for q in e["quarters"]
        for d in q["declarations"]
    }
    assert received == {
        p["a-jul"]: date(2026, 6, 1),
        p["b-aug"]: date(2026, 6, 1),
        p["b-sep"]: date(2026, 6, 1),
        p["b-late"]: date(2026, 10, 6),
        p["a-dec"]: date(2026, 11, 20),
    }
    dmfa_received = [
        q["dmfaReceivedAt"] and brussels_day(q["dmfaReceivedAt"])
        for e in body["employers"]
        for q in e["quarters"]
    ]
    assert dmfa_received == [date(2026, 10, 20), None, None, None]


async def test_calendar_lists_the_days_of_every_period_in_force(
    scenario: Scenario, pipeline: Pipeline, client: httpx.AsyncClient
) -> None:
    p = scenario.periods
    response = await client.get("/v1/me/years/2026/calendar", headers=bearer(pipeline))
    assert response.status_code == 200

    def days(first: date, count: int) -> list[str]:
        return [(first + timedelta(days=n)).isoformat() for n in range(count)]

    july, december = days(date(2026, 7, 1), 31), days(date(2026, 12, 1), 5)
    august, october = days(date(2026, 8, 3), 4), days(date(2026, 10, 5), 5)
    assert response.json() == {
        "ssin": STUDENT,
        "year": 2026,
        "employers": [
            {
                "employer": EMPLOYER_A,
                "employerDisplay": A_SHOWN,
                "days": july + december,
                "periods": [
                    {
                        "periodId": p["a-jul"],
                        "start": "2026-07-01",
                        "end": "2026-07-31",
                        "declaredHours": 300,
                        "late": False,
                        "days": july,
                    },
                    {
                        "periodId": p["a-dec"],
                        "start": "2026-12-01",
                        "end": "2026-12-05",
                        "declaredHours": 20,
                        "late": False,
                        "days": december,
                    },
                ],
            },
            {
                "employer": EMPLOYER_B,
                "employerDisplay": B_SHOWN,
                "days": august + october,
                "periods": [
                    {
                        "periodId": p["b-aug"],
                        "start": "2026-08-03",
                        "end": "2026-08-06",
                        "declaredHours": 32,
                        "late": False,
                        "days": august,
                    },
                    {
                        "periodId": p["b-late"],
                        "start": "2026-10-05",
                        "end": "2026-10-09",
                        "declaredHours": 24,
                        "late": True,
                        "days": october,
                    },
                ],
            },
        ],
    }


async def test_a_year_without_data_is_empty_with_the_full_quota(
    scenario: Scenario, pipeline: Pipeline, client: httpx.AsyncClient
) -> None:
    detail = await client.get("/v1/me/years/2027", headers=bearer(pipeline))
    assert detail.status_code == 200
    body = detail.json()
    assert (body["quota"], body["used"], body["remaining"]) == (700, 0, 700)
    assert (body["employers"], body["terms"], body["checks"]) == ([], [], [])
    calendar = await client.get("/v1/me/years/2017/calendar", headers=bearer(pipeline))
    assert calendar.status_code == 200
    assert calendar.json() == {"ssin": STUDENT, "year": 2017, "employers": []}
    # The other student sees only their own hours.
    theirs = await client.get("/v1/me/years/2026", headers=bearer(pipeline, subject=OTHER))
    assert [(e["employer"], e["plannedHours"]) for e in theirs.json()["employers"]] == [
        (EMPLOYER_A, 40)
    ]


# ------------------------------------------------------------------------------- errors


async def test_tokens_that_do_not_authenticate_give_401(
    pipeline: Pipeline, client: httpx.AsyncClient
) -> None:
    settings = pipeline.settings()
    forged = Settings(jwt_secret=SecretStr("someone-else-s-secret-0123456789abcdef0123"))
    tokens = {
        "missing": None,
        "garbage": "Bearer not.a.token",
        "not bearer": f"Basic {mint_token(settings, Role.STUDENT, STUDENT)}",
        "wrong signature": f"Bearer {mint_token(forged, Role.STUDENT, STUDENT)}",
        "expired": "Bearer "
        + mint_token(settings, Role.STUDENT, STUDENT, ttl=timedelta(seconds=-1)),
        "issued long ago": "Bearer "
        + mint_token(settings, Role.STUDENT, STUDENT, now=datetime.now(UTC) - timedelta(days=2)),
    }
    for path in [
        "/v1/me/balance",
        "/v1/me/years/2026",
        "/v1/me/years/2026/calendar",
        f"/v1/students/{STUDENT}/balance",
    ]:
        for what, header in tokens.items():
            headers: dict[str, str] = {"Authorization": header} if header else {}
            response = await client.get(path, headers=headers)
            assert response.status_code == 401, (path, what, response.text)
            assert response.json()["error"], (path, what)
    expired = await client.get("/v1/me/balance", headers={"Authorization": str(tokens["expired"])})
    assert "expired" in expired.json()["error"]


async def test_wrong_role_or_someone_else_s_ssin_give_403(
    pipeline: Pipeline, client: httpx.AsyncClient
) -> None:
    employer = bearer(pipeline, Role.EMPLOYER, EMPLOYER_A)
    for path in ["/v1/me/balance", "/v1/me/years/2026", f"/v1/students/{STUDENT}/balance"]:
        response = await client.get(path, headers=employer)
        assert response.status_code == 403, path
        assert "student" in response.json()["error"]
    other = await client.get(f"/v1/students/{OTHER}/balance", headers=bearer(pipeline))
    assert other.status_code == 403
    assert set(other.json()) == {"error"}
    # A valid SSIN of nobody known is refused the same way: nothing to learn from it.
    nobody = await client.get(
        f"/v1/students/{valid_ssin('991231', 998)}/balance", headers=bearer(pipeline)
    )
    assert (nobody.status_code, nobody.json()) == (403, other.json())


async def test_malformed_parameters_give_400_with_a_reason(
    pipeline: Pipeline, client: httpx.AsyncClient
) -> None:
    token = bearer(pipeline)
    cases = {
        "/v1/me/years/abc": "whole number",
        "/v1/me/years/2026.5": "whole number",
        "/v1/me/years/2016": "2017 to 2027",
        "/v1/me/years/2028": "2017 to 2027",
        "/v1/me/years/2028/calendar": "2017 to 2027",
        "/v1/me/years/x1/calendar": "whole number",
        "/v1/students/93051822362/balance": "check digits",
        "/v1/students/12345/balance": "11 digits",
    }
    for path, reason in cases.items():
        response = await client.get(path, headers=token)
        assert response.status_code == 400, path
        assert reason in response.json()["error"], (path, response.json())


# ------------------------------------------------------------------- health and OpenAPI


async def test_health_is_ok_with_an_empty_backlog_once_settled(
    scenario: Scenario, worker_http: httpx.AsyncClient
) -> None:
    response = await eventually(
        lambda: worker_http.get("/health"),
        lambda r: r.status_code == 200 and r.json()["relayBacklog"] == 0,
    )
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["broker"]["ok"] is True
    assert body["database"]["ok"] is True
    assert body["relayBacklog"] == 0


async def test_openapi_lists_every_endpoint_with_its_schema(
    pipeline: Pipeline, client: httpx.AsyncClient
) -> None:
    response = await client.get("/v1/openapi.json")
    assert response.status_code == 200
    doc = response.json()
    assert doc["openapi"].startswith("3.1")
    paths = doc["paths"]
    expected = {
        "/v1/me/balance": "BalanceOverview",
        "/v1/me/years/{year}": "YearDetail",
        "/v1/me/years/{year}/calendar": "YearCalendar",
        "/v1/students/{ssin}/balance": "BalanceOverview",
    }
    for path, model in expected.items():
        ok = paths[path]["get"]["responses"]["200"]["content"]["application/json"]
        assert ok["schema"] == {"$ref": f"#/components/schemas/{model}"}
        assert model in doc["components"]["schemas"]
    assert "/v1/openapi.json" in paths
    assert paths["/v1/me/years/{year}"]["get"]["parameters"][0]["name"] == "year"
    assert paths["/v1/me/balance"]["get"]["security"] == [{"bearerAuth": []}]
    # /health is the worker's own, not part of the /v1 API.
    assert "/health" not in paths
    # Every route of the application is listed, each with its answer's schema.
    routes = {
        (route.path, method.lower())
        for route in endpoints(create_app(pipeline.settings()))
        for method in route.methods
    }
    assert routes == {(path, method) for path, methods in paths.items() for method in methods}
    for route_path, methods in paths.items():
        for method, operation in methods.items():
            answered = {k: v for k, v in operation["responses"].items() if k.startswith("2")}
            assert answered, (method, route_path)
            for status, answer in answered.items():
                assert answer["content"], (method, route_path, status)
                for content in answer["content"].values():
                    assert content["schema"], (method, route_path, status)
    detail = doc["components"]["schemas"]["YearDetail"]["properties"]
    assert {"remaining", "terms", "checks", "employers"} <= set(detail)
    quarter = doc["components"]["schemas"]["QuarterDetail"]["properties"]
    assert quarter["dmfaStatus"]["enum"] == ["received", "awaiting", "missing", "not_expected"]


async def test_metrics_count_requests_by_route_template_and_status(
    pipeline: Pipeline, client: httpx.AsyncClient
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    def requests_of(text: str, route: str, status: str) -> float:
        for family in text_string_to_metric_families(text):
            if family.name == "studentwork_api_requests":
                for sample in family.samples:
                    if sample.name.endswith("_total") and sample.labels == {
                        "route": route,
                        "status": status,
                    }:
                        return sample.value
        return 0.0

    before = (await client.get("/metrics")).text
    for _ in range(2):
        assert (await client.get("/v1/me/years/2026", headers=bearer(pipeline))).status_code == 200
    assert (await client.get("/v1/me/years/1990", headers=bearer(pipeline))).status_code == 400
    response = await client.get("/metrics")
    assert response.status_code == 200
    after = response.text
    route = "/v1/me/years/{year}"
    assert requests_of(after, route, "200") - requests_of(before, route, "200") == 2
    assert requests_of(after, route, "400") - requests_of(before, route, "400") == 1
    # Templates only: neither the filled path nor the student's SSIN is ever a label.
    assert "/v1/me/years/2026" not in after
    assert STUDENT not in after
