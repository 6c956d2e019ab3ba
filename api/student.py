"""The student's API: balance, detailed view, calendar.

What a student sees (DOMAIN.md section 4):

``GET /v1/me/balance``
    Remaining hours of the previous, current and next year.
``GET /v1/me/years/{year}``
    How the balance of a year was computed: per employer the planned hours split into
    worked (DmfA) and still to work, per quarter planned against actual, the DmfA status
    and the gross wage; every term of the sum with a plain-language sentence; and what
    the student should check (an employer that never lowered its declaration, a missing
    DmfA, a late declaration).
``GET /v1/me/years/{year}/calendar``
    The days booked or worked per employer.
``GET /v1/students/{ssin}/balance``
    The balance with an explicit SSIN: the caller's own only (403 for anyone else's).

Figures come from the system of record through :mod:`db.reads` (read-only, no locks):
the overview reads the stored balances, the detailed view recomputes the year with the
pure domain core (:func:`quota.compute_balance`) over one consistent snapshot, so every
term shown is exactly the one the worker applied. The quota of a year is always the
effective one: configuration plus the operators' changes in ``quota_years``.

"Today" is :meth:`api.deps.ApiState.today`, so tests and demos can pin it.
"""

from __future__ import annotations

import calendar
from collections import defaultdict
from collections.abc import Iterable
from datetime import date, timedelta
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path

from api.deps import COMMON_ERRORS, Pool, State, StudentSsin
from api.models import (
    BalanceOverview,
    CalendarEmployer,
    CalendarPeriod,
    Check,
    CheckKind,
    DeclarationOut,
    DmfaStatus,
    EmployerDetail,
    QuarterDetail,
    TermExplanation,
    YearBalance,
    YearCalendar,
    YearDetail,
)
from db import reads
from quota import Balance, BalanceTerm, Period, QuotaRules, StudentLedger, compute_balance
from quota.balance import TermSource
from quota.calendar import brussels_date
from quota.employment import spells
from quota.rules import STUDENT_MONTHS_IN_A_ROW
from schemas.identifiers import format_enterprise_number, normalize_ssin

#: First year of the hour quota (earlier years counted days and are not modelled).
FIRST_YEAR = 2017


# ------------------------------------------------------------------------ pure helpers


def employer_display(employer: str) -> str:
    """The display form of an employer id: ``0123.456.749``, or ``NSSO 1234567``."""
    if employer.startswith("NSSO"):
        return f"NSSO {employer.removeprefix('NSSO')}"
    try:
        return format_enterprise_number(employer)
    except ValueError:
        return employer


def dmfa_due_by(year: int, quarter: int) -> date:
    """The last day the DmfA of a quarter is on time: end of the month after the quarter.

    The NSSO expects the quarterly declaration by the last day of the month following the
    quarter (Q1 by 30 April, Q2 by 31 July, Q3 by 31 October, Q4 by 31 January).
    """
    month = 3 * quarter + 1
    if month > 12:
        year, month = year + 1, month - 12
    return date(year, month, calendar.monthrange(year, month)[1])


def dmfa_status(
    year: int, quarter: int, *, received: bool, expected: bool, today: date
) -> DmfaStatus:
    """Where the DmfA of one employer's quarter stands on ``today``.

    The rule: ``received`` once it arrived; ``not_expected`` when no declaration is in
    force (everything cancelled); ``missing`` when today is after :func:`dmfa_due_by`
    (the quarter ended and the declaration is overdue); ``awaiting`` otherwise (the
    quarter is not over, or it is over and the DmfA is not due yet).
    """
    if received:
        return "received"
    if not expected:
        return "not_expected"
    if today > dmfa_due_by(year, quarter):
        return "missing"
    return "awaiting"


def parse_year(raw: str, today: date) -> int:
    """The ``{year}`` path parameter, or a 400 naming what is wrong with it.

    Known years are 2017 (the first hour quota) to next year (declarations for next year
    are accepted from now on).
    """
    text = raw.strip()
    if not text.isascii() or not text.isdigit():
        raise HTTPException(400, f"year must be a whole number (got {raw[:16]!r})")
    year = int(text)
    last = today.year + 1
    if not FIRST_YEAR <= year <= last:
        raise HTTPException(
            400, f"unknown year {year}: the quota is known from {FIRST_YEAR} to {last}"
        )
    return year


def balance_overview(
    ssin: str, today: date, rules: QuotaRules, stored: dict[int, reads.StoredBalance]
) -> BalanceOverview:
    """Previous, current and next year: quota, used and remaining hours.

    ``used`` does not depend on the quota, so it is read from the stored balance while the
    quota is always the effective one; a year without data has used 0.
    """
    years = []
    for year in (today.year - 1, today.year, today.year + 1):
        quota = rules.quota(year)
        used = stored[year].used if year in stored else 0
        years.append(YearBalance(year=year, quota=quota, used=used, remaining=max(0, quota - used)))
    return BalanceOverview(ssin=ssin, today=today, current_year=today.year, years=years)


def _day(d: date) -> str:
    return f"{d.day} {d:%B} {d.year}"


def _euros(cents: int) -> str:
    return f"EUR {cents / 100:,.2f}"


def _hours(n: int) -> str:
    return f"{n} hour" if n == 1 else f"{n} hours"


def late_counted(term: BalanceTerm) -> bool:
    """Whether a term counts the hours of its late declarations: a DmfA term under the
    older, literal reading (``STUDENTWORK_DMFA_COUNTS_LATE_HOURS``), where the DmfA
    hours count as reported. Under the rule, late hours are deducted from them."""
    return (
        term.source is TermSource.DMFA
        and term.late_hours > 0
        and term.late_deducted_hours == 0
        and bool(term.dmfa_hours)
    )


def term_text(term: BalanceTerm, cancelled_hours: int) -> str:
    """One term of the sum as a sentence, e.g. "Employer 0123.456.749, Q3: 280 hours
    worked (DmfA) replace 300 planned; 280 hours counted"."""
    who = f"Employer {employer_display(term.employer)}, Q{term.quarter}: "
    parts: list[str] = []
    if term.source is TermSource.DMFA:
        worked = term.dmfa_hours or 0
        if term.planned_hours:
            parts.append(f"{_hours(worked)} worked (DmfA) replace {term.planned_hours} planned")
        elif term.late_hours:
            parts.append(f"{_hours(worked)} worked (DmfA), no declaration on time")
        else:
            parts.append(f"{_hours(worked)} worked (DmfA), no declaration in force")
        if term.late_deducted_hours:
            parts.append(
                f"{_hours(term.late_deducted_hours)} of them declared late, outside the quota "
                "(ordinary contributions)"
            )
        elif late_counted(term):
            parts.append(
                f"the DmfA hours count as reported, the {_hours(term.late_hours)} declared "
                "late included"
            )
        if term.gross_wage_cents is not None:
            parts.append(f"gross wage {_euros(term.gross_wage_cents)}")
    elif term.planned_hours:
        parts.append(f"{_hours(term.planned_hours)} planned count until the DmfA arrives")
    if term.neutralised_hours:
        parts.append(f"{_hours(term.neutralised_hours)} neutralised (not counted)")
    if term.source is TermSource.DMFA or term.planned_hours:
        counted = f"{_hours(term.counted_hours)} counted"
        if term.ordinary_hours:
            counted += (
                f" ({term.reduced_hours} at the reduced rate, {term.ordinary_hours} beyond "
                "the quota at ordinary contributions)"
            )
        parts.append(counted)
    else:
        parts.append("nothing counted")
    if term.late_hours and not term.late_deducted_hours and not late_counted(term):
        parts.append(
            f"{_hours(term.late_hours)} declared late are outside the quota "
            "(ordinary contributions)"
        )
    if cancelled_hours:
        parts.append(f"{_hours(cancelled_hours)} cancelled, not counted")
    return who + "; ".join(parts)


def _late_check(period: Period) -> Check:
    return Check(
        kind="late_declaration",
        employer=period.employer,
        employer_display=employer_display(period.employer),
        quarter=period.quarter,
        hours=period.planned_hours,
        period_id=period.period_id,
        message=(
            f"Employer {employer_display(period.employer)} declared {_day(period.start)} to "
            f"{_day(period.end)} ({_hours(period.planned_hours)}) late, on "
            f"{_day(brussels_date(period.received_at))}, after work had started: these hours are "
            "outside the quota (ordinary contributions) and the declaration cannot be updated."
        ),
    )


def _quarter_checks(
    year: int, quarter: QuarterDetail, employer: str, periods: Iterable[Period]
) -> list[Check]:
    shown = employer_display(employer)
    where = f"Employer {shown}, Q{quarter.quarter} {year}"
    declared, actual = quarter.planned_hours, quarter.actual_hours
    on_time = declared - quarter.late_hours
    checks: list[Check] = []

    def check(kind: CheckKind, hours: int, message: str) -> None:
        checks.append(
            Check(
                kind=kind,
                employer=employer,
                employer_display=shown,
                quarter=quarter.quarter,
                hours=hours,
                message=message,
            )
        )

    if actual is not None:
        if declared == 0:
            check(
                "dmfa_without_declaration",
                actual,
                f"{where}: the DmfA reports {_hours(actual)} worked without any declaration "
                "in force. Check these hours with the employer.",
            )
        elif declared > actual:
            check(
                "planned_above_actual",
                declared - actual,
                f"{where}: {_hours(declared)} declared but {actual} worked according to the "
                f"DmfA. The employer never lowered its declaration, so {_hours(declared - actual)}"
                " stayed booked until the DmfA arrived.",
            )
        elif actual > declared:
            check(
                "actual_above_planned",
                actual - declared,
                f"{where}: the DmfA reports {_hours(actual)} worked, {actual - declared} more "
                f"than the {declared} declared. Check the hours you worked with the employer.",
            )
    elif quarter.dmfa_status == "missing":
        still = (
            f"its {_hours(on_time)} planned still count against your quota"
            if on_time
            else "its hours were declared late and stay outside the quota"
        )
        check(
            "dmfa_missing",
            declared,
            f"{where}: no DmfA (quarterly wage declaration) although it was due by "
            f"{_day(quarter.dmfa_due_by)}; {still}. If you worked fewer hours, ask the "
            "employer to send its DmfA or to update the declaration.",
        )
    checks.extend(_late_check(p) for p in periods if p.late and p.in_force)
    return checks


def _twelve_months_checks(
    year: int, history: Iterable[Period], months: int | None
) -> list[tuple[str, int, Check]]:
    """(employer, quarter, check) for each employment of more than ``months`` months in
    a row whose part beyond the limit falls in ``year`` (DOMAIN.md section 1)."""
    if months is None:
        return []
    periods = list(history)
    by_id = {p.period_id: p for p in periods}
    found = []
    for spell in spells(periods):
        limit = spell.limit_day(months)
        if not spell.exceeds(months) or limit.year > year or spell.end.year < year:
            continue
        beyond = [
            by_id[pid]
            for pid in spell.period_ids
            if by_id[pid].year == year and by_id[pid].end >= limit
        ]
        if not beyond:
            continue
        shown = employer_display(spell.employer)
        quarter = beyond[0].quarter
        found.append(
            (
                spell.employer,
                quarter,
                Check(
                    kind="twelve_months_in_a_row",
                    employer=spell.employer,
                    employer_display=shown,
                    quarter=quarter,
                    hours=sum(p.planned_hours for p in beyond),
                    period_id=beyond[0].period_id,
                    message=(
                        f"Employer {shown} declared you without interruption from "
                        f"{_day(spell.start)} to {_day(spell.end)}, more than {months} months "
                        f"in a row: from {_day(limit)} you are no longer a student for this "
                        "employer, and student contributions no longer apply to this job. "
                        "Ask the employer about your contract."
                    ),
                ),
            )
        )
    return found


def year_detail(
    ledger: StudentLedger,
    balance: Balance,
    today: date,
    *,
    history: Iterable[Period] | None = None,
    months_in_a_row: int | None = STUDENT_MONTHS_IN_A_ROW,
) -> YearDetail:
    """The detailed view of one year, built from a ledger and its balance.

    Employers appear in the order of their first term (order of acceptance, which is
    also the order reduced-rate hours are handed out), their quarters in calendar order.
    ``history`` is every period of the student, all years (employment in a row runs
    across years); by default the ledger's.
    """
    year = balance.year
    periods_by_group: dict[tuple[str, int], list[Period]] = defaultdict(list)
    for period in ledger.periods.values():
        if period.year == year:
            periods_by_group[(period.employer, period.quarter)].append(period)

    terms: list[TermExplanation] = []
    quarters_by_employer: dict[str, list[QuarterDetail]] = {}
    checks_by_employer: dict[str, list[tuple[int, list[Check]]]] = defaultdict(list)
    for term in balance.terms:
        key = (term.employer, term.quarter)
        group = periods_by_group.get(key, [])
        by_id = {p.period_id: p for p in group}
        report = ledger.wage_reports.get((term.employer, year, term.quarter))
        declared = sum(p.planned_hours for p in group if p.in_force)
        late = sum(p.planned_hours for p in group if p.in_force and p.late)
        cancelled = sum(p.planned_hours for p in group if p.cancelled)
        declarations = [
            DeclarationOut(
                period_id=share.period_id,
                start=by_id[share.period_id].start,
                end=by_id[share.period_id].end,
                planned_hours=share.planned_hours,
                received_at=by_id[share.period_id].received_at,
                late=share.late,
                cancelled=share.cancelled,
                counted=share.counted,
                reduced_hours=share.reduced_hours,
                ordinary_hours=share.ordinary_hours,
                neutralised_hours=share.neutralised_hours,
                using_employer=by_id[share.period_id].using_employer,
            )
            for share in term.periods
            if share.period_id in by_id
        ]
        quarter = QuarterDetail(
            quarter=term.quarter,
            planned_hours=declared,
            late_hours=late,
            cancelled_hours=cancelled,
            actual_hours=term.dmfa_hours,
            to_work_hours=0 if report is not None else declared,
            gross_wage_cents=term.gross_wage_cents,
            dmfa_status=dmfa_status(
                year, term.quarter, received=report is not None, expected=declared > 0, today=today
            ),
            dmfa_due_by=dmfa_due_by(year, term.quarter),
            dmfa_received_at=report.received_at if report is not None else None,
            counted_hours=term.counted_hours,
            reduced_hours=term.reduced_hours,
            ordinary_hours=term.ordinary_hours,
            declarations=declarations,
        )
        quarters_by_employer.setdefault(term.employer, []).append(quarter)
        checks_by_employer[term.employer].append(
            (term.quarter, _quarter_checks(year, quarter, term.employer, group))
        )
        terms.append(
            TermExplanation(
                employer=term.employer,
                employer_display=employer_display(term.employer),
                quarter=term.quarter,
                source=term.source.value,
                hours=term.hours,
                planned_hours=term.planned_hours,
                late_hours=term.late_hours,
                late_deducted_hours=term.late_deducted_hours,
                dmfa_hours=term.dmfa_hours,
                gross_wage_cents=term.gross_wage_cents,
                neutralised_hours=term.neutralised_hours,
                counted_hours=term.counted_hours,
                reduced_hours=term.reduced_hours,
                ordinary_hours=term.ordinary_hours,
                text=term_text(term, cancelled),
            )
        )

    periods = ledger.periods.values() if history is None else history
    for employer, quarter_number, spell_check in _twelve_months_checks(
        year, periods, months_in_a_row
    ):
        checks_by_employer[employer].append((quarter_number, [spell_check]))

    employers: list[EmployerDetail] = []
    checks: list[Check] = []
    for employer, quarters in quarters_by_employer.items():
        quarters.sort(key=lambda q: q.quarter)
        employers.append(
            EmployerDetail(
                employer=employer,
                employer_display=employer_display(employer),
                planned_hours=sum(q.planned_hours for q in quarters),
                worked_hours=sum(q.actual_hours or 0 for q in quarters),
                to_work_hours=sum(q.to_work_hours for q in quarters),
                late_hours=sum(q.late_hours for q in quarters),
                cancelled_hours=sum(q.cancelled_hours for q in quarters),
                counted_hours=sum(q.counted_hours for q in quarters),
                gross_wage_cents=sum(q.gross_wage_cents or 0 for q in quarters),
                quarters=quarters,
            )
        )
        for _quarter, found in sorted(checks_by_employer[employer], key=lambda item: item[0]):
            checks.extend(found)

    return YearDetail(
        ssin=balance.ssin,
        year=year,
        today=today,
        quota=balance.quota,
        used=balance.used,
        remaining=balance.remaining,
        reduced_hours=balance.reduced_hours,
        ordinary_hours=balance.ordinary_hours,
        neutralised_hours=balance.neutralised_hours,
        late_hours=balance.late_hours,
        explanation=_explanation(balance),
        employers=employers,
        terms=terms,
        checks=checks,
    )


def _explanation(balance: Balance) -> str:
    counted = [t.counted_hours for t in balance.terms if t.counted_hours]
    if counted:
        sum_text = " + ".join(str(h) for h in counted)
        used = (
            f"{_hours(balance.used)} used ({sum_text})"
            if len(counted) > 1
            else (f"{_hours(balance.used)} used")
        )
    else:
        used = "nothing used"
    text = (
        f"{balance.year}: quota {_hours(balance.quota)}, {used}, "
        f"{_hours(balance.remaining)} remaining."
    )
    if balance.ordinary_hours:
        text += f" {_hours(balance.ordinary_hours)} beyond the quota pay ordinary contributions."
    counted_late = sum(t.late_hours for t in balance.terms if late_counted(t))
    outside = balance.late_hours - counted_late
    if outside:
        text += f" {_hours(outside)} declared late are outside the quota."
    if counted_late:
        text += (
            f" {_hours(counted_late)} declared late count all the same: the DmfA hours that "
            "include them count as reported."
        )
    return text


def year_calendar(ledger: StudentLedger, year: int) -> YearCalendar:
    """Every in-force period of ``year`` as days, per employer.

    A booked period shows as all its days while only its declared hours are deducted;
    cancelled declarations are left out. Employers appear by their first day.
    """
    by_employer: dict[str, list[Period]] = defaultdict(list)
    for period in ledger.periods.values():
        if period.year == year and period.in_force:
            by_employer[period.employer].append(period)
    employers = []
    for employer, periods in by_employer.items():
        periods.sort(key=lambda p: (p.start, p.end, p.period_id))
        shown = [
            CalendarPeriod(
                period_id=p.period_id,
                start=p.start,
                end=p.end,
                declared_hours=p.planned_hours,
                late=p.late,
                days=[p.start + timedelta(days=n) for n in range((p.end - p.start).days + 1)],
            )
            for p in periods
        ]
        days = sorted({d for p in shown for d in p.days})
        employers.append(
            CalendarEmployer(
                employer=employer,
                employer_display=employer_display(employer),
                days=days,
                periods=shown,
            )
        )
    employers.sort(key=lambda e: (e.days[0], e.employer))
    return YearCalendar(ssin=ledger.ssin, year=year, employers=employers)


# ---------------------------------------------------------------------------- endpoints

router = APIRouter(tags=["student"], responses=COMMON_ERRORS)

#: The ``{year}`` path parameter: read as text and checked by :func:`parse_year`, so a
#: wrong year gets its own reason (not a number, before 2017, after next year).
YearPath = Annotated[
    str,
    Path(
        description=f"Calendar year, {FIRST_YEAR} to next year (400 otherwise).",
        json_schema_extra={"type": "integer", "minimum": FIRST_YEAR},
    ),
]
SsinPath = Annotated[str, Path(description="SSIN, 11 digits (dots and dashes allowed).")]


async def _overview(state: State, pool: Pool, ssin: str) -> BalanceOverview:
    today = state.today()
    years = [today.year - 1, today.year, today.year + 1]
    async with reads.read_snapshot(pool) as conn:
        overrides = await reads.quota_overrides(conn)
        stored = await reads.stored_balances(conn, ssin, years)
    rules = state.settings.quota_rules.with_overrides(overrides)
    return balance_overview(ssin, today, rules, stored)


@router.get(
    "/v1/me/balance",
    summary="Remaining hours of the previous, current and next year",
    response_model=BalanceOverview,
)
async def my_balance(state: State, pool: Pool, ssin: StudentSsin) -> BalanceOverview:
    return await _overview(state, pool, ssin)


@router.get(
    "/v1/students/{ssin}/balance",
    summary="A student's balance by SSIN (the caller's own only)",
    response_model=BalanceOverview,
)
async def student_balance(
    state: State, pool: Pool, caller: StudentSsin, ssin: SsinPath
) -> BalanceOverview:
    """Only the student named by the token may read it: another SSIN is 403 whether or
    not that student exists, so the answer never reveals anything about someone else."""
    try:
        wanted = normalize_ssin(ssin, today=state.today())
    except ValueError as error:
        raise HTTPException(400, f"malformed SSIN: {error}") from error
    if wanted != caller:
        raise HTTPException(403, "a student may only see their own balance")
    return await _overview(state, pool, caller)


@router.get(
    "/v1/me/years/{year}",
    summary="How the balance of a year was computed",
    description="Per employer planned, worked (DmfA) and still-to-work hours; per quarter "
    "planned against actual, the DmfA status (received, awaiting, missing: overdue after "
    "the last day of the month following the quarter) and the gross wage; every term of "
    "the sum; what to check (planned above actual, missing DmfA, late declaration).",
    response_model=YearDetail,
)
async def my_year(state: State, pool: Pool, ssin: StudentSsin, year: YearPath) -> YearDetail:
    today = state.today()
    wanted = parse_year(year, today)
    async with reads.read_snapshot(pool) as conn:
        overrides = await reads.quota_overrides(conn)
        ledger = await reads.student_ledger(conn, ssin, wanted)
        history = await reads.student_periods(conn, ssin)
    rules = state.settings.quota_rules.with_overrides(overrides)
    balance = compute_balance(ledger, wanted, rules)
    return year_detail(
        ledger, balance, today, history=history, months_in_a_row=rules.student_months_in_a_row
    )


@router.get(
    "/v1/me/years/{year}/calendar",
    summary="Days booked or worked per employer",
    response_model=YearCalendar,
)
async def my_calendar(state: State, pool: Pool, ssin: StudentSsin, year: YearPath) -> YearCalendar:
    wanted = parse_year(year, state.today())
    async with reads.read_snapshot(pool) as conn:
        ledger = await reads.student_ledger(conn, ssin, wanted)
    return year_calendar(ledger, wanted)
