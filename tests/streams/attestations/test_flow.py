"""End to end: attestations, access codes and employer look-ups across month boundaries.

One database and one set of topics for the whole module; the worker (``python -m infra
worker``, a real subprocess) is restarted with another pinned "today" when a test needs
another date, which is how the month boundaries are crossed: 30 November 2026, then
1 December 2026 (a boundary the first worker missed), then 1 February 2027 (the November
code expired). Tests run in file order, so each date's worker starts once; a test run
alone still starts the worker of its own date and creates what it needs.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest
from PIL import Image

from api.auth import Role, mint_token
from db.migrate import migrate
from producers.access_code_scheduler import publish_rotation
from quota.access_codes import format_code
from schemas.attestations import AttestationRequest
from schemas.topics import ACCESS_CODES_ROTATE
from streams.attestations import AccessCodes, partition_of
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
    dimona_in,
    publish,
    valid_enterprise_number,
    valid_ssin,
)

pytestmark = pytest.mark.integration

T = TypeVar("T")

NOV_30 = date(2026, 11, 30)
DEC_1 = date(2026, 12, 1)
FEB_1 = date(2027, 2, 1)
FAILURES_ALLOWED = 3
PARTITIONS = 2
#: Students declared besides STUDENT, so the rotation has a crowd to rotate.
CROWD = [valid_ssin("050607", serial) for serial in range(101, 161, 2)]
DECLARED_HOURS = (30, 45)  # STUDENT's two 2026 contracts: 650 - 75 = 575 remaining
CODE_PATTERN = re.compile(r"\b[2-9A-HJKMNP-Z]{4}(?:-[2-9A-HJKMNP-Z]{4}){3}\b")

needs_poppler = pytest.mark.skipif(
    shutil.which("pdftotext") is None or shutil.which("pdftoppm") is None,
    reason="pdftotext/pdftoppm (poppler-utils) are not installed; infra/test installs them",
)


async def eventually(
    probe: Callable[[], Awaitable[T | None]], *, what: str, within: float = 60.0
) -> T:
    """Poll ``probe`` until it returns something other than None."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = await probe()
        if result is not None:
            return result
        if loop.time() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


@dataclass
class World:
    """The module's pipeline, the worker of the current date and what earlier tests made."""

    pipeline: Pipeline
    logs: Path
    db: asyncpg.Pool
    worker: WorkerProcess | None = None
    api: ApiProcess | None = None
    today: date | None = None
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return self.pipeline.api_url

    async def on(self, day: date) -> None:
        """Make sure the running worker and API believe today is ``day``."""
        if self.today == day and self.worker is not None:
            return
        await self.stop()
        self.pipeline.extra_env["STUDENTWORK_TODAY"] = day.isoformat()
        worker = WorkerProcess(self.pipeline, self.logs / f"worker-{day}.log").start()
        self.worker, self.today = worker, day
        await asyncio.to_thread(worker.wait_ready)
        self.api = ApiProcess(self.pipeline, self.logs / f"api-{day}.log").start()
        await asyncio.to_thread(self.api.wait_ready)

    async def stop(self) -> None:
        """Stop the worker and the API of the current date."""
        for process in (self.api, self.worker):
            if process is not None:
                await asyncio.to_thread(process.stop)

    def headers(self, role: Role, subject: str) -> dict[str, str]:
        token = mint_token(self.pipeline.settings(), role, subject)
        return {"Authorization": f"Bearer {token}"}

    def client(self, local_address: str = "127.0.0.1") -> httpx.AsyncClient:
        transport = httpx.AsyncHTTPTransport(local_address=local_address)
        return httpx.AsyncClient(base_url=self.base_url, transport=transport, timeout=30)

    async def request_attestation(self, year: int, ssin: str = STUDENT) -> httpx.Response:
        async with self.client() as http:
            return await http.post(
                "/v1/attestations", json={"year": year}, headers=self.headers(Role.STUDENT, ssin)
            )

    async def attestation(self, year: int, ssin: str = STUDENT) -> tuple[str, bytes]:
        """Ask for an attestation and wait for its PDF: (attestation id, PDF bytes)."""
        answer = await self.request_attestation(year, ssin)
        assert answer.status_code == 202, answer.text
        body = answer.json()
        assert body["status"] == "pending"
        assert body["location"] == f"/v1/attestations/{body['attestationId']}"
        assert answer.headers["Location"] == body["location"]

        async def ready() -> bytes | None:
            async with self.client() as http:
                got = await http.get(body["location"], headers=self.headers(Role.STUDENT, ssin))
            if got.status_code == 202:
                assert got.json()["status"] == "pending"
                return None
            assert got.status_code == 200, got.text
            assert got.headers["content-type"].startswith("application/pdf")
            return got.content

        return body["attestationId"], await eventually(ready, what="the attestation PDF")

    async def lookup(
        self, code: str | None, employer: str = EMPLOYER_A, address: str = "127.0.0.1"
    ) -> httpx.Response:
        params = {"code": code} if code is not None else {}
        async with self.client(address) as http:
            return await http.get(
                "/v1/employer/balance",
                params=params,
                headers=self.headers(Role.EMPLOYER, employer),
            )

    async def forget_failures(self) -> None:
        """Start a test with clean failure counters (they are shared by the whole module)."""
        async with self.db.acquire() as conn:
            await conn.execute("DELETE FROM lookup_failures")

    async def code_of(self, ssin: str, month: date) -> str | None:
        """The student's code of a month, unsealed as the service does."""
        async with self.db.acquire() as conn:
            rows = await conn.fetch(
                "SELECT ssin, month, sealed, valid_from, valid_until FROM access_codes"
                " WHERE ssin = $1 AND month = $2",
                ssin,
                month,
            )
        if not rows:
            return None
        from db.attestations import StoredCode

        r = rows[0]
        stored = StoredCode(r["ssin"], r["month"], r["sealed"], r["valid_from"], r["valid_until"])
        return AccessCodes(self.pipeline.settings()).unseal(stored).code

    # -- what several tests build on -------------------------------------------------------

    async def declared(self) -> None:
        """STUDENT's declarations (and the crowd's) applied, balances computed."""
        if "declared" in self.facts:
            return
        topic = self.pipeline.topic("dimona.declarations")
        on_time = brussels_millis(date(2026, 6, 1))
        messages = [
            Outgoing.json(
                topic,
                STUDENT,
                dimona_in(f"s-{hours}", employer=employer, hours=hours),
                on_time,
            )
            for hours, employer in zip(DECLARED_HOURS, (EMPLOYER_A, EMPLOYER_B), strict=True)
        ]
        messages += [
            Outgoing.json(topic, ssin, dimona_in(f"c-{ssin}", ssin=ssin, hours=10), on_time)
            for ssin in CROWD
        ]
        await publish(self.pipeline.kafka_bootstrap, messages)

        async def applied() -> bool | None:
            async with self.db.acquire() as conn:
                n = await conn.fetchval("SELECT count(*) FROM balances WHERE year = 2026")
            return True if n == 1 + len(CROWD) else None

        await eventually(applied, what="the declarations' balances")
        self.facts["declared"] = True

    async def november(self) -> dict[str, Any]:
        """Two attestations of November 2026 for STUDENT."""
        if "november" not in self.facts:
            await self.on(NOV_30)
            await self.declared()
            first = await self.attestation(2026)
            second = await self.attestation(2026)
            code = await self.code_of(STUDENT, date(2026, 11, 1))
            assert code is not None
            self.facts["november"] = {"first": first, "second": second, "code": code}
        result: dict[str, Any] = self.facts["november"]
        return result


@pytest.fixture(scope="module")
async def world(
    kafka_bootstrap: str, module_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[World]:
    database_url = module_database_url
    await migrate(database_url)  # the worker would too; the tests read tables before it runs
    pipeline = Pipeline(
        kafka_bootstrap,
        database_url,
        extra_env={
            "STUDENTWORK_LOOKUP_FAILURES_ALLOWED": str(FAILURES_ALLOWED),
            "STUDENTWORK_PDF_PROCESSES": "1",
        },
    )
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=3)
    world = World(pipeline, tmp_path_factory.mktemp("attestation-workers"), pool)
    try:
        yield world
    finally:
        await world.stop()
        await pool.close()


def pdf_text(pdf: bytes, folder: Path) -> str:
    path = folder / f"{uuid.uuid4().hex}.pdf"
    path.write_bytes(pdf)
    return subprocess.run(
        ["pdftotext", "-layout", str(path), "-"], check=True, capture_output=True, text=True
    ).stdout


def first_page_png(pdf: bytes, folder: Path) -> tuple[int, int, int]:
    """Render page 1 at 50 dpi with pdftoppm: (width, height, number of dark pixels)."""
    pdf_path = folder / "attestation.pdf"
    pdf_path.write_bytes(pdf)
    subprocess.run(
        ["pdftoppm", "-png", "-r", "50", "-f", "1", "-l", "1", str(pdf_path), str(folder / "page")],
        check=True,
    )
    png = next(folder.glob("page*.png"))
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(png) as image:
        dark = sum(image.convert("L").histogram()[:128])
        return image.size[0], image.size[1], dark


def codes_in(text: str) -> set[str]:
    return set(CODE_PATTERN.findall(text))


# --- 30 November 2026 ------------------------------------------------------------------------


@needs_poppler
async def test_attestation_pdf_shows_identity_hours_and_code(world: World, tmp_path: Path) -> None:
    november = await world.november()
    attestation_id, pdf = november["first"]
    text = pdf_text(pdf, tmp_path)
    remaining = 650 - sum(DECLARED_HOURS)
    assert f"{remaining} hours" in text
    assert "93.05.18-223.61" in text
    assert "Attestation for the year 2026" in text
    assert format_code(november["code"]) in text
    assert codes_in(text) == {format_code(november["code"])}
    assert "Valid from 01/11/2026 until 31/01/2027" in text
    assert "30/11/2026" in text  # issue date

    width, height, dark = first_page_png(pdf, tmp_path)
    # A4 (210 x 297 mm) at 50 dpi, give or take rounding.
    assert abs(width - 413) <= 2
    assert abs(height - 585) <= 2
    assert dark > 2000, "the page looks blank"

    async with world.db.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT status, remaining, quota, code_month, code_valid_until, issued_on, sha256"
            " FROM attestations WHERE attestation_id = $1",
            attestation_id,
        )
    assert dict(row) == {
        "status": "issued",
        "remaining": remaining,
        "quota": 650,
        "code_month": date(2026, 11, 1),
        "code_valid_until": date(2027, 1, 31),
        "issued_on": NOV_30,
        "sha256": hashlib.sha256(pdf).hexdigest(),
    }


async def test_issued_and_ebox_messages_appear_once_each(world: World) -> None:
    november = await world.november()
    ids = {november["first"][0], november["second"][0]}
    pdfs = {
        november["first"][0]: november["first"][1],
        november["second"][0]: november["second"][1],
    }
    b = world.pipeline.kafka_bootstrap
    issued = await collect(b, world.pipeline.topic("attestations.issued"), count=2, settle=1.5)
    deliveries = await collect(b, world.pipeline.topic("ebox.deliveries"), count=2, settle=0.5)
    mine = [m for m in issued if m["value"]["attestationId"] in ids]
    boxed = [m for m in deliveries if m["value"]["attestationId"] in ids]
    assert sorted(m["value"]["attestationId"] for m in mine) == sorted(ids)
    assert sorted(m["value"]["attestationId"] for m in boxed) == sorted(ids)
    for message in mine + boxed:
        assert message["key"] == STUDENT
        # Keyed by SSIN, so on the partition our rotation assigns the student to.
        assert message["partition"] == partition_of(STUDENT, PARTITIONS)
    for message in mine:
        value = message["value"]
        assert value["remainingHours"] == 650 - sum(DECLARED_HOURS)
        assert value["accessCodeValidUntil"] == "2027-01-31"
        assert value["sha256"] == hashlib.sha256(pdfs[value["attestationId"]]).hexdigest()
    for message in boxed:
        value = message["value"]
        assert base64.b64decode(value["pdfBase64"]) == pdfs[value["attestationId"]]
        assert value["contentType"] == "application/pdf"


@needs_poppler
async def test_two_attestations_of_a_month_show_the_same_code(world: World, tmp_path: Path) -> None:
    november = await world.november()
    first = codes_in(pdf_text(november["first"][1], tmp_path))
    second = codes_in(pdf_text(november["second"][1], tmp_path))
    assert first == second == {format_code(november["code"])}
    async with world.db.acquire() as conn:
        n = await conn.fetchval("SELECT count(*) FROM access_codes WHERE ssin = $1", STUDENT)
    assert n == 1


async def test_next_year_is_refused_before_december(world: World) -> None:
    await world.on(NOV_30)
    refused = await world.request_attestation(2027)
    assert refused.status_code == 400
    assert "1 December 2026" in refused.json()["error"]
    assert (await world.request_attestation(2025)).status_code == 400
    async with world.client() as http:
        headers = world.headers(Role.STUDENT, STUDENT)
        bad = await http.post("/v1/attestations", json={"year": "soon"}, headers=headers)
        assert bad.status_code == 400
        listed = await http.get("/v1/attestations", headers=headers)
    assert listed.status_code == 200
    assert {a["year"] for a in listed.json()["attestations"]} <= {2026, 2027}


async def test_an_attestation_is_its_students_only(world: World) -> None:
    november = await world.november()
    location = f"/v1/attestations/{november['first'][0]}"
    other = valid_ssin("010101", 3)
    async with world.client() as http:
        assert (await http.get(location)).status_code == 401
        employer = world.headers(Role.EMPLOYER, EMPLOYER_A)
        assert (await http.get(location, headers=employer)).status_code == 403
        stranger = world.headers(Role.STUDENT, other)
        assert (await http.get(location, headers=stranger)).status_code == 404
        owner = world.headers(Role.STUDENT, STUDENT)
        unknown = f"/v1/attestations/{uuid.uuid4()}"
        assert (await http.get(unknown, headers=owner)).status_code == 404
        assert (await http.get("/v1/attestations/not-an-id", headers=owner)).status_code == 404


async def test_requests_that_bypass_the_api_are_refused_or_dead_lettered(world: World) -> None:
    await world.november()
    topic = world.pipeline.topic("attestation.requests")
    forged = AttestationRequest(
        event_id="forged-2030",
        attestation_id=str(uuid.uuid4()),
        ssin=STUDENT,
        year=2030,
        requested_at=datetime.now(UTC),
    )
    await publish(
        world.pipeline.kafka_bootstrap,
        [
            Outgoing(topic, STUDENT.encode(), b"{not json"),
            Outgoing(topic, STUDENT.encode(), forged.to_json_bytes()),
        ],
    )

    async def closed() -> str | None:
        async with world.db.acquire() as conn:
            status: str | None = await conn.fetchval(
                "SELECT status FROM attestations WHERE attestation_id = $1",
                forged.attestation_id,
            )
        return status

    assert await eventually(closed, what="the forged request") == "refused"
    async with world.client() as http:
        got = await http.get(
            f"/v1/attestations/{forged.attestation_id}",
            headers=world.headers(Role.STUDENT, STUDENT),
        )
    assert got.status_code == 422
    assert got.json()["status"] == "refused"
    letters = await collect(
        world.pipeline.kafka_bootstrap, world.pipeline.topic("declarations.rejected"), count=1
    )
    assert base64.b64decode(letters[0]["value"]["rawBase64"]) == b"{not json"


async def test_employer_lookup_answers_exactly_three_fields(world: World) -> None:
    november = await world.november()
    await world.forget_failures()
    # The code as a person might type it: lowercase, spaces instead of dashes.
    typed = format_code(november["code"]).lower().replace("-", " ")
    answer = await world.lookup(typed, employer=EMPLOYER_A)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "year": 2026,
        "remainingHours": 650 - sum(DECLARED_HOURS),
        "validUntil": "2027-01-31",
    }
    async with world.client() as http:
        as_student = await http.get(
            "/v1/employer/balance",
            params={"code": typed},
            headers=world.headers(Role.STUDENT, STUDENT),
        )
        assert as_student.status_code == 403
        seen = await http.get("/v1/me/lookups", headers=world.headers(Role.STUDENT, STUDENT))
    assert seen.status_code == 200
    lookups = seen.json()["lookups"]
    assert lookups[0]["employer"] == "0123.456.749"
    assert lookups[0]["codeMonth"] == "2026-11"
    assert datetime.fromisoformat(lookups[0]["lookedUpAt"]).tzinfo is not None
    assert lookups[0]["by"] == "employer"
    assert lookups[0]["via"] == "access_code"
    assert set(lookups[0]) == {"employer", "by", "via", "lookedUpAt", "codeMonth"}


async def test_wrong_random_and_malformed_codes_get_the_same_404(world: World) -> None:
    await world.november()
    await world.forget_failures()
    answers = [
        await world.lookup("ABCD-EFGH-JKMN-PQRS"),  # well-formed, nobody's code
        await world.lookup("not a code <script>"),
        await world.lookup(None),
    ]
    assert [a.status_code for a in answers] == [404, 404, 404]
    assert len({a.content for a in answers}) == 1
    assert answers[0].json() == {"error": "no valid access code matches"}
    await world.forget_failures()


async def test_repeated_failures_are_rate_limited_per_employer_and_per_address(
    world: World,
) -> None:
    november = await world.november()
    await world.forget_failures()
    code = format_code(november["code"])
    employer_c = valid_enterprise_number(4_242_424)
    for _ in range(FAILURES_ALLOWED):
        wrong = await world.lookup("ZZZZ-ZZZZ-ZZZZ-ZZZZ", employer=EMPLOYER_B, address="127.0.0.2")
        assert wrong.status_code == 404
    # Even the right code is refused now: the limit is checked first.
    blocked = await world.lookup(code, employer=EMPLOYER_B, address="127.0.0.2")
    assert blocked.status_code == 429
    retry_after = int(blocked.headers["Retry-After"])
    assert 0 < retry_after <= world.pipeline.settings().lookup_failure_window_seconds
    # The same employer from elsewhere, and another employer from that address: blocked too.
    assert (await world.lookup(code, EMPLOYER_B, "127.0.0.3")).status_code == 429
    assert (await world.lookup(code, employer_c, "127.0.0.2")).status_code == 429
    # Another employer from another address is not affected.
    assert (await world.lookup(code, employer_c, "127.0.0.4")).status_code == 200
    await world.forget_failures()


# --- 1 December 2026: the first worker missed the month boundary -----------------------------


async def test_a_missed_boundary_is_caught_up_at_start(world: World) -> None:
    await world.november()  # the students exist, the November worker has stopped
    await world.on(DEC_1)

    async def rotated() -> int | None:
        async with world.db.acquire() as conn:
            done = await conn.fetchval(
                "SELECT count(*) FROM access_code_rotations WHERE month = $1", DEC_1
            )
            return int(done) if done == PARTITIONS else None

    await eventually(rotated, what="the December rotation")
    async with world.db.acquire() as conn:
        students = await conn.fetchval("SELECT count(*) FROM students")
        december = await conn.fetch(
            "SELECT ssin, valid_from, valid_until FROM access_codes WHERE month = $1", DEC_1
        )
        rotations = await conn.fetch(
            "SELECT partition, partitions, codes_created FROM access_code_rotations"
            " WHERE month = $1 ORDER BY partition",
            DEC_1,
        )
    assert students == 1 + len(CROWD)
    assert len(december) == students
    assert {(r["valid_from"], r["valid_until"]) for r in december} == {(DEC_1, date(2027, 2, 28))}
    everyone = [STUDENT, *CROWD]
    assert [(r["partition"], r["partitions"], r["codes_created"]) for r in rotations] == [
        (p, PARTITIONS, sum(1 for s in everyone if partition_of(s, PARTITIONS) == p))
        for p in range(PARTITIONS)
    ]


@needs_poppler
async def test_new_month_new_code_and_next_year_from_december(world: World, tmp_path: Path) -> None:
    november = await world.november()
    await world.on(DEC_1)
    _, pdf = await world.attestation(2027)
    text = pdf_text(pdf, tmp_path)
    december_code = await world.code_of(STUDENT, DEC_1)
    assert december_code is not None
    assert december_code != november["code"]
    assert codes_in(text) == {format_code(december_code)}
    assert "Attestation for the year 2027" in text
    assert "650 hours" in text  # nothing declared for 2027 yet: the full quota
    assert "Valid from 01/12/2026 until 28/02/2027" in text
    world.facts["december_code"] = december_code


async def test_the_november_code_still_works_in_december(world: World) -> None:
    november = await world.november()
    await world.on(DEC_1)
    await world.forget_failures()
    answer = await world.lookup(november["code"], employer=EMPLOYER_B)
    assert answer.status_code == 200, answer.text
    assert answer.json()["validUntil"] == "2027-01-31"


async def test_rotating_a_month_twice_changes_nothing(world: World) -> None:
    await world.november()
    await world.on(DEC_1)

    async def codes() -> list[tuple[str, date, bytes]] | None:
        async with world.db.acquire() as conn:
            rotated = await conn.fetchval(
                "SELECT count(*) FROM access_code_rotations WHERE month = $1", DEC_1
            )
            rows = await conn.fetch(
                "SELECT ssin, month, digest FROM access_codes ORDER BY ssin, month"
            )
        if rotated != PARTITIONS:
            return None
        return [(r["ssin"], r["month"], r["digest"]) for r in rows]

    before = await eventually(codes, what="the December rotation")
    # The scheduler fires again (a retry, a second leader): same commands, same month.
    sent = await publish_rotation(world.pipeline.settings(), DEC_1, datetime.now(UTC))
    assert sent == list(range(PARTITIONS))

    async def second_run() -> bool | None:
        async with world.db.acquire() as conn:
            runs = await conn.fetch(
                "SELECT runs FROM access_code_rotations WHERE month = $1", DEC_1
            )
        return True if [r["runs"] for r in runs] == [2] * PARTITIONS else None

    await eventually(second_run, what="the second rotation")
    assert await codes() == before
    commands = await collect(
        world.pipeline.kafka_bootstrap,
        world.pipeline.topic(ACCESS_CODES_ROTATE),
        count=2 * PARTITIONS,
    )
    # Each command went to the partition it names.
    assert all(m["partition"] == m["value"]["partition"] for m in commands)


# --- 1 February 2027: the November code has expired ------------------------------------------


async def test_a_code_expires_three_months_after_its_month_began(world: World) -> None:
    november = await world.november()
    if "december_code" not in world.facts:
        await world.on(DEC_1)
        await world.attestation(2026)
        world.facts["december_code"] = await world.code_of(STUDENT, DEC_1)
    await world.on(FEB_1)
    await world.forget_failures()
    expired = await world.lookup(november["code"])
    assert expired.status_code == 404
    assert expired.json() == {"error": "no valid access code matches"}
    valid = await world.lookup(world.facts["december_code"])
    assert valid.status_code == 200
    # 2027 now: nothing declared for it, so the full quota.
    assert valid.json() == {"year": 2027, "remainingHours": 650, "validUntil": "2027-02-28"}
