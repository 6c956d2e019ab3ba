"""The student's pages: balance, detailed view, calendar, attestations, eBox, look-ups,
consents.

Each page reads through the JSON API's own endpoint functions (:mod:`api.student`,
:mod:`api.attestations`, :mod:`api.consents`, :mod:`api.ebox`): the same reads, the same
view models, no second computation. The pages add the employers' names
(:func:`db.employers.display_names`, one query per page) and the language.

The pages name no SSIN in their address: each shows the signed-in student's own data,
so there is no address at which a student could open another student's page.
"""

from __future__ import annotations

import calendar
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Annotated, TypeVar

import asyncpg
from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from api.attestations import (
    AttestationAsk,
    ask_attestation,
    attestation,
    my_attestations,
    my_lookups,
)
from api.auth import Principal, Role
from api.consents import ConsentGrant, grant_consent, my_consents, revoke_consent
from api.deps import ApiState, State
from api.ebox import my_ebox
from api.models import YearCalendar, YearDetail
from api.pages.common import (
    CSRF_FIELD,
    Session,
    checked_form,
    page_language,
    problem,
    render,
    require,
)
from api.student import my_balance, my_calendar, my_year
from db.employers import display_names
from quota.attestations import year_refusal
from schemas.i18n import month_names, translations, weekday_names
from schemas.identifiers import normalize_enterprise_number, normalize_ssin

router = APIRouter(include_in_schema=False)


@dataclass(frozen=True)
class StudentSession(Session):
    """A signed-in student's session and the SSIN its token names (already checked)."""

    ssin: str


async def _student(
    request: Request, state: ApiState, *, csrf: str | None = None
) -> StudentSession | Response:
    """The signed-in student and their SSIN, or the response to send instead; ``csrf``
    as for :func:`api.pages.common.require`, checked once the SSIN is."""
    session = await require(request, state, Role.STUDENT)
    if not isinstance(session, Session):
        return session
    try:
        ssin = normalize_ssin(session.principal.subject, today=state.today())
    except ValueError:
        _ = translations(page_language(request, state)).gettext
        return problem(request, state, 401, _("Your sign-in does not name a valid SSIN."))
    student = StudentSession(session.principal, session.token, ssin)
    return checked_form(request, state, student, csrf)


async def _names(request: Request, state: ApiState, employers: Iterable[str]) -> dict[str, str]:
    pool = await state.shared.pool()
    async with pool.acquire() as conn:
        return await display_names(conn, employers, page_language(request, state))


def _digits(shown: str) -> str:
    """An employer's id from its display form (``0123.456.749``), as stored."""
    try:
        return normalize_enterprise_number(shown)
    except ValueError:
        return shown


def _year_problem(
    request: Request, state: ApiState, session: Session, error: HTTPException
) -> Response:
    """The page for a year the API refuses (400: not a number, before 2017, after next
    year), in the page's language; the API's own reason follows in English."""
    _ = translations(page_language(request, state)).gettext
    message = _("Unknown year: the service knows the years from 2017 to next year.")
    return problem(request, state, error.status_code, f"{message} ({error.detail})", session)


@router.get("/")
async def home(request: Request, state: State) -> Response:
    session = await _student(request, state)
    if not isinstance(session, StudentSession):
        return session
    overview = await my_balance(state, await state.shared.pool(), session.ssin)
    current = next(y for y in overview.years if y.year == overview.current_year)
    others = [y for y in overview.years if y.year != overview.current_year]
    return render(
        request, state, "home.html", session=session, overview=overview, current=current,
        others=others,
    )  # fmt: skip


#: What a year's page reads through the JSON API: the detail or the calendar.
_YearView = TypeVar("_YearView", YearDetail, YearCalendar)


async def _student_year(
    request: Request,
    state: ApiState,
    year: str,
    read: Callable[[ApiState, asyncpg.Pool, str, str], Awaitable[_YearView]],
) -> tuple[StudentSession, _YearView, dict[str, str]] | Response:
    """The signed-in student's ``year`` as ``read`` gives it, with its employers' names;
    or the response to send instead (not signed in, or a year the API refuses)."""
    session = await _student(request, state)
    if not isinstance(session, StudentSession):
        return session
    try:
        view = await read(state, await state.shared.pool(), session.ssin, year)
    except HTTPException as error:
        return _year_problem(request, state, session, error)
    names = await _names(request, state, [e.employer for e in view.employers])
    return session, view, names


@router.get("/years/{year}")
async def year_page(request: Request, state: State, year: str) -> Response:
    found = await _student_year(request, state, year, my_year)
    if not isinstance(found, tuple):
        return found
    session, detail, names = found
    return render(request, state, "year.html", session=session, detail=detail, names=names)


@dataclass
class CalendarDay:
    """One day of a month grid and what was declared on it."""

    day: date
    #: (employer name, declared hours of the period, period start, period end, late).
    entries: list[tuple[str, int, date, date, bool]] = field(default_factory=list)


def month_grids(
    cal: YearCalendar, names: dict[str, str]
) -> list[tuple[int, list[list[CalendarDay | None]]]]:
    """Twelve months as weeks (Monday first) of days, each with its declared periods."""
    entries: dict[date, list[tuple[str, int, date, date, bool]]] = {}
    for employer in cal.employers:
        name = names.get(employer.employer, employer.employer_display)
        for period in employer.periods:
            for day in period.days:
                entries.setdefault(day, []).append(
                    (name, period.declared_hours, period.start, period.end, period.late)
                )
    months = []
    for month in range(1, 13):
        weeks: list[list[CalendarDay | None]] = []
        for week in calendar.Calendar(firstweekday=0).monthdatescalendar(cal.year, month):
            weeks.append(
                [CalendarDay(d, entries.get(d, [])) if d.month == month else None for d in week]
            )
        months.append((month, weeks))
    return months


@router.get("/years/{year}/calendar")
async def calendar_page(request: Request, state: State, year: str) -> Response:
    found = await _student_year(request, state, year, my_calendar)
    if not isinstance(found, tuple):
        return found
    session, cal, names = found
    language = page_language(request, state)
    return render(
        request, state, "calendar.html", session=session, cal=cal, names=names,
        months=month_grids(cal, names), month_names=month_names(language),
        weekdays=weekday_names(language),
    )  # fmt: skip


def _offered_years(today: date) -> list[int]:
    """The years an attestation can be asked for: the current one, the next from 1 December."""
    return [y for y in (today.year, today.year + 1) if year_refusal(y, today) is None]


@router.get("/attestations")
async def attestations_page(request: Request, state: State) -> Response:
    session = await _student(request, state)
    if not isinstance(session, StudentSession):
        return session
    earlier = await my_attestations(await state.shared.pool(), session.principal, 50)
    return render(
        request, state, "attestations.html", session=session,
        years=_offered_years(state.today()), attestations=earlier.attestations,
    )  # fmt: skip


@router.post("/attestations")
async def ask_attestation_page(
    request: Request,
    state: State,
    year: Annotated[int, Form()],
    csrf: Annotated[str, Form(alias=CSRF_FIELD)] = "",
) -> Response:
    session = await _student(request, state, csrf=csrf)
    if not isinstance(session, StudentSession):
        return session
    ask = AttestationAsk(year=year, language=page_language(request, state))
    try:
        pending = await ask_attestation(
            state, await state.shared.pool(), session.principal, Response(), ask
        )
    except HTTPException as error:
        return problem(request, state, error.status_code, str(error.detail), session)
    return RedirectResponse(f"/attestations/{pending.attestation_id}", status_code=303)


@router.get("/attestations/{attestation_id}")
async def attestation_page(request: Request, state: State, attestation_id: str) -> Response:
    """The PDF as a download once issued; until then a page that looks again each second."""
    session = await _student(request, state)
    if not isinstance(session, StudentSession):
        return session
    try:
        answer = await attestation(await state.shared.pool(), session.principal, attestation_id)
    except HTTPException as error:  # unknown or another student's: the same 404
        return problem(request, state, error.status_code, str(error.detail), session)
    if answer.status_code == 200:
        disposition = answer.headers["Content-Disposition"].replace("inline", "attachment", 1)
        answer.headers["Content-Disposition"] = disposition
        return answer
    return render(
        request, state, "attestation_wait.html", session=session,
        pending=answer.status_code == 202, status_code=200 if answer.status_code == 202 else 422,
    )  # fmt: skip


@router.get("/ebox")
async def ebox_page(request: Request, state: State) -> Response:
    session = await _student(request, state)
    if not isinstance(session, StudentSession):
        return session
    box = await my_ebox(state, await state.shared.pool(), session.principal, Response())
    return render(request, state, "ebox.html", session=session, documents=box.documents)


@router.get("/lookups")
async def lookups_page(request: Request, state: State) -> Response:
    session = await _student(request, state)
    if not isinstance(session, StudentSession):
        return session
    found = await my_lookups(await state.shared.pool(), session.principal, 100)
    names = await _names(request, state, [_digits(x.employer) for x in found.lookups])
    return render(
        request, state, "lookups.html", session=session, lookups=found.lookups, names=names,
        digits=_digits,
    )  # fmt: skip


@router.get("/consents")
async def consents_page(request: Request, state: State) -> Response:
    session = await _student(request, state)
    if not isinstance(session, StudentSession):
        return session
    return await _consents(request, state, session, status_code=200, error="")


async def _consents(
    request: Request, state: ApiState, session: Session, *, status_code: int, error: str
) -> Response:
    listed = await my_consents(await state.shared.pool(), session.principal, Response())
    names = await _names(request, state, [_digits(c.agency) for c in listed.consents])
    return render(
        request, state, "consents.html", session=session, consents=listed.consents,
        names=names, digits=_digits, error=error, status_code=status_code,
    )  # fmt: skip


async def _change_consent(
    request: Request, state: ApiState, csrf: str, agency: str, action: str
) -> Response:
    session = await _student(request, state, csrf=csrf)
    if not isinstance(session, StudentSession):
        return session
    principal: Principal = session.principal
    pool = await state.shared.pool()
    try:
        if action == "grant":
            await grant_consent(state, pool, principal, Response(), ConsentGrant(agency=agency))
        else:
            await revoke_consent(state, pool, principal, Response(), agency)
    except HTTPException as error:
        return await _consents(
            request, state, session, status_code=error.status_code, error=str(error.detail)
        )
    return RedirectResponse("/consents", status_code=303)


@router.post("/consents")
async def grant_consent_page(
    request: Request,
    state: State,
    agency: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form(alias=CSRF_FIELD)] = "",
) -> Response:
    return await _change_consent(request, state, csrf, agency, "grant")


@router.post("/consents/{agency}/revoke")
async def revoke_consent_page(
    request: Request,
    state: State,
    agency: str,
    csrf: Annotated[str, Form(alias=CSRF_FIELD)] = "",
) -> Response:
    return await _change_consent(request, state, csrf, agency, "revoke")
