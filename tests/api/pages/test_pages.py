"""The pages in a real browser: Debian's headless Chromium against the real API process
(``studentwork api``) on real PostgreSQL, with declarations applied by a real worker
from Kafka (the scenario of ``tests/api/test_student_api.py``, "today" 26 November 2026).

The browser signs in through ``/dev/login``, reads the exact remaining hours on ``/``,
the employers' names and hours in the detailed view, hovers a calendar day and reads the
tooltip, downloads an attestation and finds its hours and code in the PDF, looks the
code up on ``/employer`` (three fields, nothing else), and switches to Dutch. Every page
is saved as a screenshot (``test-artifacts/screenshots/``). The security rules are
checked over plain HTTP: another student's pages, CSRF, roles, cookie attributes.

The tests of this module run in order and share one browser session.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import httpx
import pytest
from selenium.common.exceptions import WebDriverException
from selenium.webdriver import ActionChains, Chrome
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.wait import WebDriverWait

from api.auth import Role, mint_token
from db.employers import import_export
from tests.api.test_student_api import (  # noqa: F401  (module fixtures, shared scenario)
    OTHER,
    Scenario,
    api,
    pipeline,
    scenario,
    worker,
)
from tests.browser import DESKTOP, PHONE
from tests.support import (
    EMPLOYER_A,
    STUDENT,
    ApiProcess,
    Outgoing,
    Pipeline,
    brussels_millis,
    collect,
    dimona_in,
    publish,
)

pytestmark = pytest.mark.integration

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "kbo"
EMPLOYER_MARKUP = "0877901171"
MARKUP_NAME = '<script>alert("kroon")</script> & <b>Zonen</b>'
CODE = re.compile(r"\b[2-9A-HJKMNP-Z]{4}(?:-[2-9A-HJKMNP-Z]{4}){3}\b")


@pytest.fixture(scope="module")
async def world(scenario: Scenario, pipeline: Pipeline, api: ApiProcess) -> Pipeline:  # noqa: F811
    """The scenario, the fixture's employer names, and one more declaration for OTHER
    by the employer whose name is markup."""
    from datetime import date

    conn = await asyncpg.connect(pipeline.database_url)
    try:
        report = await import_export(conn, FIXTURE)
    finally:
        await conn.close()
    assert report.refused == 0
    topic = pipeline.topic("dimona.declarations")
    await publish(
        pipeline.kafka_bootstrap,
        [
            Outgoing.json(
                topic,
                OTHER,
                dimona_in(
                    "o-markup",
                    ssin=OTHER,
                    employer=EMPLOYER_MARKUP,
                    start="2026-09-07",
                    end="2026-09-08",
                    hours=10,
                ),
                brussels_millis(date(2026, 6, 1)),
            )
        ],
    )
    acks = await collect(pipeline.kafka_bootstrap, pipeline.topic("dimona.acks"), count=10)
    assert {a["value"]["inReplyTo"]: a["value"]["status"] for a in acks}["o-markup"] == "A"
    return pipeline


def base(on: Pipeline) -> str:
    # localhost, not 127.0.0.1: browsers treat it as a secure context, so the Secure
    # session cookie is kept over plain HTTP in tests.
    return f"http://localhost:{on.api_port}"


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not seen within {timeout:.0f} s: {what}")
        time.sleep(0.2)


def click_and_load(browser: Chrome, element: WebElement) -> None:
    """Click a link or a submit button and wait until the next page has replaced this one.

    ``click()`` returns once the click is dispatched, not once the page it leads to is
    loaded: a lookup right after it can still see the old page (a CI run once failed so).
    While the old document is torn down, chromedriver may answer a question about its
    element with a plain error ("Node with given id does not belong to the document")
    instead of a stale reference; such answers are asked again.
    """
    page = browser.find_element(By.TAG_NAME, "html")
    element.click()
    WebDriverWait(browser, 60, ignored_exceptions=(WebDriverException,)).until(
        expected_conditions.staleness_of(page)
    )


def sign_in(browser: Chrome, on: Pipeline, role: str, subject: str) -> None:
    browser.delete_all_cookies()
    browser.get(f"{base(on)}/dev/login")
    Select(browser.find_element(By.ID, "role")).select_by_value(role)
    browser.find_element(By.ID, "subject").send_keys(subject)
    click_and_load(browser, browser.find_element(By.CSS_SELECTOR, "form.stack button[type=submit]"))
    wait_for(lambda: "/dev/login" not in browser.current_url, f"signed in as {role}")


def text(browser: Chrome, selector: str) -> str:
    return str(browser.find_element(By.CSS_SELECTOR, selector).text)


def pdf_text(path: Path) -> str:
    return subprocess.run(
        ["pdftotext", "-layout", str(path), "-"], check=True, capture_output=True, text=True
    ).stdout


# ---------------------------------------------------------------------------- browser


def test_sign_in_and_read_the_exact_remaining_hours(
    world: Pipeline, browser: Chrome, screenshot: Callable[[str], Path]
) -> None:
    browser.get(f"{base(world)}/")
    # Not signed in: the development login, which brings the student back to "/".
    assert browser.current_url.startswith(f"{base(world)}/dev/login")
    screenshot("login")
    sign_in(browser, world, "student", STUDENT)
    assert browser.current_url == f"{base(world)}/"
    assert text(browser, "h1") == "My student hours"
    assert text(browser, "#remaining-current") == "318"
    assert text(browser, "#remaining-2025") == "650"
    assert text(browser, "#remaining-2027") == "700"
    screenshot("home")
    browser.set_window_size(*PHONE)
    try:
        assert text(browser, "#remaining-current") == "318"
        screenshot("home-phone")
    finally:
        browser.set_window_size(*DESKTOP)


def test_the_detailed_view_shows_each_employers_name_and_hours(
    world: Pipeline, browser: Chrome, screenshot: Callable[[str], Path]
) -> None:
    browser.get(f"{base(world)}/years/2026")
    sections = browser.find_elements(By.CSS_SELECTOR, "section.employer")
    shown = {
        s.find_element(By.CSS_SELECTOR, ".employer-name").text: {
            d.get_attribute("data-figure"): d.text for d in s.find_elements(By.CSS_SELECTOR, "dd")
        }
        for s in sections
    }
    # No English name in the export: the official name in French, the first language.
    assert shown == {
        "Brasserie La Couronne": {
            "planned": "320",
            "worked": "280",
            "to-work": "20",
            "late": "0",
            "counted": "300",
        },
        "Supermarché Lambert": {
            "planned": "56",
            "worked": "0",
            "to-work": "56",
            "late": "24",
            "counted": "32",
        },
    }
    assert "0123.456.749" in browser.page_source  # the number beside the name
    screenshot("year")


def test_hovering_and_focusing_a_calendar_day_shows_its_employers(
    world: Pipeline, browser: Chrome, screenshot: Callable[[str], Path]
) -> None:
    browser.get(f"{base(world)}/years/2026/calendar")
    assert "The declared hours count, not the days" in text(browser, "p.note")
    july = browser.find_element(By.CSS_SELECTOR, 'td[data-day="2026-07-15"]')
    # In the middle of the window, so the screenshot shows the tooltip too.
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", july)
    tip = july.find_element(By.CSS_SELECTOR, ".tip")
    assert not tip.is_displayed()
    ActionChains(browser).move_to_element(july).perform()
    wait_for(tip.is_displayed, "the tooltip of 15 July")
    assert "Brasserie La Couronne: 300 hours declared from 1 July 2026 to 31 July 2026" in tip.text
    screenshot("calendar-hover")
    # The keyboard reaches every booked day (tabindex) and focus shows the same.
    august = browser.find_element(By.CSS_SELECTOR, 'td[data-day="2026-08-04"]')
    assert august.get_attribute("tabindex") == "0"
    ActionChains(browser).move_by_offset(0, 0).perform()
    browser.execute_script("arguments[0].focus()", august)
    august_tip = august.find_element(By.CSS_SELECTOR, ".tip")
    wait_for(august_tip.is_displayed, "the tooltip of 4 August")
    assert "Supermarché Lambert: 32 hours declared from 3 August 2026 to 6 August 2026" in (
        august_tip.text
    )
    # A cancelled declaration is not on the calendar; an unbooked day has no tooltip.
    assert browser.find_elements(By.CSS_SELECTOR, 'td[data-day="2026-09-14"]') == []
    screenshot("calendar-focus")


def test_download_an_attestation_and_find_its_hours_and_code(
    world: Pipeline,
    browser: Chrome,
    browser_downloads: Path,
    screenshot: Callable[[str], Path],
) -> None:
    browser.get(f"{base(world)}/attestations")
    assert text(browser, "h1") == "Attestations"
    screenshot("attestations")
    before = set(browser_downloads.glob("*.pdf"))
    browser.find_element(By.ID, "ask-2026").click()
    wait_for(lambda: len(set(browser_downloads.glob("*.pdf")) - before) == 1, "the PDF")
    (pdf,) = set(browser_downloads.glob("*.pdf")) - before
    wait_for(lambda: pdf.stat().st_size > 0, "the whole PDF")
    content = pdf_text(pdf)
    assert "318 hours" in content
    assert "Attestation for the year 2026" in content
    assert len(set(CODE.findall(content))) == 1
    browser.get(f"{base(world)}/attestations")
    assert "issued" in text(browser, "table")
    screenshot("attestations-issued")


def test_the_employer_looks_the_code_up_and_sees_three_fields_only(
    world: Pipeline,
    browser: Chrome,
    browser_downloads: Path,
    screenshot: Callable[[str], Path],
) -> None:
    # The code of the attestation the previous test downloaded.
    newest = max(browser_downloads.glob("*.pdf"), key=lambda p: p.stat().st_mtime)
    (code,) = set(CODE.findall(pdf_text(newest)))
    sign_in(browser, world, "employer", EMPLOYER_A)
    assert browser.current_url == f"{base(world)}/employer"
    browser.find_element(By.ID, "code").send_keys(code)
    click_and_load(browser, browser.find_element(By.CSS_SELECTOR, "form.stack button[type=submit]"))
    answer = browser.find_element(By.ID, "answer")
    fields = {
        dt.text: dd.text
        for dt, dd in zip(
            answer.find_elements(By.TAG_NAME, "dt"),
            answer.find_elements(By.TAG_NAME, "dd"),
            strict=True,
        )
    }
    assert fields == {
        "Year": "2026",
        "Remaining hours": "318",
        "Code valid until": "31 January 2027",
    }
    main = text(browser, "main")
    for other in ("Brasserie", "Lambert", STUDENT, "93.05.18", "280"):
        assert other not in main
    screenshot("employer")


def test_switch_to_dutch_and_read_dutch_labels(
    world: Pipeline, browser: Chrome, screenshot: Callable[[str], Path]
) -> None:
    sign_in(browser, world, "student", STUDENT)
    click_and_load(browser, browser.find_element(By.CSS_SELECTOR, 'nav.languages a[hreflang="nl"]'))
    assert browser.current_url == f"{base(world)}/"
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "nl"
    assert text(browser, "h1") == "Mijn studentenuren"
    assert text(browser, "#current-heading") == "Resterend in 2026"
    assert text(browser, "#remaining-current") == "318"
    screenshot("home-nl")
    browser.get(f"{base(world)}/years/2026/calendar")
    day = browser.find_element(By.CSS_SELECTOR, 'td[data-day="2026-07-15"]')
    ActionChains(browser).move_to_element(day).perform()
    tip = day.find_element(By.CSS_SELECTOR, ".tip")
    wait_for(tip.is_displayed, "the Dutch tooltip")
    # In Dutch the employer's Dutch official name.
    assert "Brasserie De Kroon: 300 uren aangegeven van 1 juli 2026 tot 31 juli 2026" in tip.text
    screenshot("calendar-nl")
    for page in ("years/2026", "ebox", "lookups", "consents"):
        browser.get(f"{base(world)}/{page}")
        assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "nl"
        screenshot(f"{page.replace('/', '-')}-nl")


def test_markup_in_an_employers_name_is_shown_as_text(
    world: Pipeline, browser: Chrome, screenshot: Callable[[str], Path]
) -> None:
    sign_in(browser, world, "student", OTHER)
    browser.get(f"{base(world)}/years/2026")
    names = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".employer-name")]
    assert MARKUP_NAME in names
    assert browser.find_elements(By.CSS_SELECTOR, ".employer-name b") == []
    assert browser.find_elements(By.CSS_SELECTOR, "main script") == []
    screenshot("year-markup")


# ------------------------------------------------------------------------------ security


@pytest.fixture
async def http(world: Pipeline) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=world.api_url) as client:
        yield client


def bearer(on: Pipeline, role: Role, subject: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(on.settings(), role, subject)}"}


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf" value="([0-9a-f]{64})"', page)
    assert match is not None
    return match.group(1)


async def test_a_student_sees_only_their_own_pages(
    world: Pipeline, http: httpx.AsyncClient
) -> None:
    mine = await http.get("/", headers=bearer(world, Role.STUDENT, STUDENT))
    other = await http.get("/", headers=bearer(world, Role.STUDENT, OTHER))
    assert 'id="remaining-current">318<' in mine.text
    # OTHER: 40 hours for A and 10 for the markup employer.
    assert 'id="remaining-current">600<' in other.text
    # The random CSRF token may hold the digits 318 by chance: look at the rest.
    assert "318" not in other.text.replace(csrf_of(other.text), "")
    # STUDENT's attestation is not OTHER's: the same answer as an unknown one.
    listed = await http.get("/v1/attestations", headers=bearer(world, Role.STUDENT, STUDENT))
    attestation_id = listed.json()["attestations"][0]["attestationId"]
    theirs = await http.get(
        f"/attestations/{attestation_id}", headers=bearer(world, Role.STUDENT, OTHER)
    )
    assert theirs.status_code == 404
    assert b"%PDF" not in theirs.content
    own = await http.get(
        f"/attestations/{attestation_id}", headers=bearer(world, Role.STUDENT, STUDENT)
    )
    assert own.status_code == 200
    assert own.content.startswith(b"%PDF-")
    assert own.headers["content-disposition"].startswith("attachment;")
    # A student is not an agency: no agency page, not even for their own SSIN.
    agency = await http.get(
        f"/agency/students/{STUDENT}", headers=bearer(world, Role.STUDENT, OTHER)
    )
    assert agency.status_code == 403
    employer = await http.get("/", headers=bearer(world, Role.EMPLOYER, EMPLOYER_A))
    assert employer.status_code == 403


async def test_a_state_changing_form_without_its_csrf_token_is_refused(
    world: Pipeline, http: httpx.AsyncClient
) -> None:
    student = bearer(world, Role.STUDENT, STUDENT)
    before = (await http.get("/v1/attestations", headers=student)).json()["attestations"]
    missing = await http.post("/attestations", data={"year": "2026"}, headers=student)
    assert missing.status_code == 403
    assert "security token" in missing.text
    # Another session's token is refused as well.
    other_page = await http.get("/attestations", headers=bearer(world, Role.STUDENT, OTHER))
    forged = await http.post(
        "/attestations", data={"year": "2026", "csrf": csrf_of(other_page.text)}, headers=student
    )
    assert forged.status_code == 403
    consent = await http.post("/consents", data={"agency": "0403170701"}, headers=student)
    assert consent.status_code == 403
    after = (await http.get("/v1/attestations", headers=student)).json()["attestations"]
    assert after == before
    # With its own token the same form is accepted.
    page = await http.get("/attestations", headers=student)
    accepted = await http.post(
        "/attestations", data={"year": "2026", "csrf": csrf_of(page.text)}, headers=student
    )
    assert accepted.status_code == 303
    assert accepted.headers["location"].startswith("/attestations/")


async def test_the_session_cookie_is_httponly_secure_and_samesite_lax(
    world: Pipeline, http: httpx.AsyncClient
) -> None:
    anonymous = await http.get("/years/2026")
    assert anonymous.status_code == 303
    assert anonymous.headers["location"] == "/dev/login?next=%2Fyears%2F2026"
    signed = await http.post(
        "/dev/login", data={"role": "student", "subject": STUDENT, "next": "/years/2026"}
    )
    assert signed.status_code == 303
    assert signed.headers["location"] == "/years/2026"
    cookie = signed.headers["set-cookie"]
    assert cookie.startswith("studentwork_token=")
    attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "secure", "samesite=lax", "path=/"} <= attributes
    # Only local targets: no open redirect.
    away = await http.post(
        "/dev/login", data={"role": "student", "subject": STUDENT, "next": "//evil.example"}
    )
    assert away.headers["location"] == "/"
    bad = await http.post("/dev/login", data={"role": "student", "subject": "123"})
    assert bad.status_code == 400
    assert "valid social security number" in bad.text


async def test_the_language_from_the_cookie_else_accept_language(
    world: Pipeline, http: httpx.AsyncClient
) -> None:
    student = bearer(world, Role.STUDENT, STUDENT)
    french = await http.get("/", headers={**student, "Accept-Language": "fr-BE,fr;q=0.9,nl;q=0.8"})
    assert '<html lang="fr">' in french.text
    assert '<h2 id="current-heading">Restant en 2026</h2>' in french.text
    # The choice on the page wins over the browser's languages.
    german = await http.get(
        "/", headers={**student, "Accept-Language": "fr", "Cookie": "studentwork_lang=de"}
    )
    assert '<h2 id="current-heading">Verbleibend 2026</h2>' in german.text
    chosen = await http.get("/language/nl", params={"next": "/years/2026"})
    assert chosen.status_code == 303
    assert chosen.headers["location"] == "/years/2026"
    assert chosen.headers["set-cookie"].startswith("studentwork_lang=nl;")
    unknown = await http.get("/", headers={**student, "Accept-Language": "es, it"})
    assert '<html lang="en">' in unknown.text  # STUDENTWORK_DEFAULT_LANGUAGE


async def test_a_wrong_code_shows_no_figures(world: Pipeline, http: httpx.AsyncClient) -> None:
    employer = bearer(world, Role.EMPLOYER, EMPLOYER_A)
    page = await http.get("/employer", headers=employer)
    wrong = await http.post(
        "/employer",
        data={"code": "AAAA-BBBB-CCCC-DDDD", "csrf": csrf_of(page.text)},
        headers=employer,
    )
    assert wrong.status_code == 404
    assert "No valid access code" in wrong.text
    assert 'id="answer"' not in wrong.text


async def test_consent_granted_and_revoked_from_the_page_opens_and_closes_the_agency_page(
    world: Pipeline, http: httpx.AsyncClient
) -> None:
    agency = "0403170701"
    student = bearer(world, Role.STUDENT, STUDENT)
    as_agency = bearer(world, Role.AGENCY, agency)

    async def agency_page() -> httpx.Response:
        return await http.get(f"/agency/students/{STUDENT}", headers=as_agency)

    async def until(status: int) -> httpx.Response:
        deadline = time.monotonic() + 60
        while True:
            response = await agency_page()
            if response.status_code == status or time.monotonic() > deadline:
                return response
            await asyncio.sleep(0.2)

    assert (await agency_page()).status_code == 403
    page = await http.get("/consents", headers=student)
    granted = await http.post(
        "/consents", data={"agency": "0403.170.701", "csrf": csrf_of(page.text)}, headers=student
    )
    assert granted.status_code == 303
    opened = await until(200)
    assert opened.status_code == 200
    assert 'id="agency-hours">318 <' in opened.text
    listed = await http.get("/consents", headers=student)
    assert "Supermarché Lambert (0403.170.701)" in listed.text
    revoked = await http.post(
        f"/consents/{agency}/revoke", data={"csrf": csrf_of(listed.text)}, headers=student
    )
    assert revoked.status_code == 303
    closed = await until(403)
    assert closed.status_code == 403
    assert "has not given your agency consent" in closed.text


async def test_an_unknown_year_is_refused_with_the_reason_in_the_pages_language(
    world: Pipeline, http: httpx.AsyncClient
) -> None:
    student = {**bearer(world, Role.STUDENT, STUDENT), "Accept-Language": "nl"}
    for page in ("/years/2016", "/years/2016/calendar", "/years/abc"):
        refused = await http.get(page, headers=student)
        assert refused.status_code == 400, page
        assert "Onbekend jaar: de dienst kent de jaren van 2017 tot volgend jaar." in refused.text
