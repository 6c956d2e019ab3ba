"""Applying commands to a ledger: the rules of Dimona STU and DmfA, as plain functions.

Each ``apply`` changes the ledger (or leaves it as it was, for a refusal) and returns
the answer for the employer. The reduced-rate and ordinary split in the answer is read
from the balance computed after the change, so an answer never disagrees with the
balance the student sees.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date

from quota.balance import (
    PeriodAllocation,
    allocate_period,
    declared_tranches,
    derived_dmfa_tranches,
    dmfa_places,
    remaining_hours,
)
from quota.calendar import same_quarter
from quota.employment import add_months, spell_of
from quota.ledger import (
    STUDENT_WORKER_TYPE,
    Anomaly,
    AnomalyCode,
    CancelPeriod,
    Command,
    Decision,
    DeclarePeriod,
    Period,
    ReportWages,
    Status,
    StudentLedger,
    Tranche,
    UpdatePeriod,
    WageReport,
    fit_tranches,
    is_late,
    period_id_for,
    refusal,
    shrink_tranches,
)
from quota.rules import QuotaRules


def apply(ledger: StudentLedger, command: Command, rules: QuotaRules) -> Decision:
    """Apply one command to ``ledger`` and return the employer's answer."""
    if isinstance(command, DeclarePeriod):
        return _declare(ledger, command, rules)
    if isinstance(command, UpdatePeriod):
        return _update(ledger, command, rules)
    if isinstance(command, CancelPeriod):
        return _cancel(ledger, command, rules)
    return _report_wages(ledger, command, rules)


def settle_dmfa_places(ledger: StudentLedger) -> None:
    """Give the reports stored before their places were kept (migration 0006) the places
    the balance derives for them, marked to be saved.

    The derivation reads the declarations in force, so it must be fixed before a command
    changes them: a cancellation after the DmfA would otherwise move the DmfA's hours.
    """
    for (employer, year, quarter), report in list(ledger.wage_reports.items()):
        if report.tranches is not None:
            continue
        group = _group_periods(ledger, employer, year, quarter)
        ledger.put_report(replace(report, tranches=derived_dmfa_tranches(report, group)))


def _period_dates_problem(start: date, end: date) -> Decision | None:
    if end < start:
        return refusal(
            AnomalyCode.END_BEFORE_START, f"the end date {end} is before the start date {start}"
        )
    if not same_quarter(start, end):
        return refusal(
            AnomalyCode.CROSS_QUARTER,
            f"a student declaration covers at most one calendar quarter: {start} and {end} "
            "are in different quarters; declare one period per quarter",
        )
    return None


def _hours_problem(hours: int) -> Decision | None:
    if hours <= 0:
        return refusal(
            AnomalyCode.ZERO_HOURS,
            f"the planned hours must be a whole number above 0 (got {hours})",
        )
    return None


def _declare(ledger: StudentLedger, cmd: DeclarePeriod, rules: QuotaRules) -> Decision:
    if cmd.worker_type != STUDENT_WORKER_TYPE:
        return refusal(
            AnomalyCode.NOT_A_STUDENT,
            f"worker type {cmd.worker_type!r} is not a student declaration (expected STU)",
        )
    problem = _period_dates_problem(cmd.start, cmd.end) or _hours_problem(cmd.planned_hours)
    if problem:
        return problem

    late = is_late(cmd.start, cmd.received_at)
    period = Period(
        period_id=cmd.period_id or period_id_for(cmd.event_id),
        employer=cmd.employer,
        declarant=cmd.declarant,
        start=cmd.start,
        end=cmd.end,
        tranches=(Tranche(ledger.take_seq(), cmd.planned_hours),),
        received_at=cmd.received_at,
        late=late,
        event_id=cmd.event_id,
        joint_commission=cmd.joint_commission,
        using_employer=cmd.using_employer,
    )
    ledger.put_period(period)
    if late:
        until = (
            " until the quarterly declaration (DmfA) arrives, whose hours then count as reported"
            if rules.dmfa_counts_late_hours
            else ", also once the quarterly declaration (DmfA) arrives,"
        )
        decision = Decision(
            Status.WARNING,
            (
                Anomaly(
                    AnomalyCode.LATE_DECLARATION,
                    f"declared after the first day of work ({cmd.start}): all "
                    f"{cmd.planned_hours} hours fall outside the student quota (ordinary "
                    f"contributions){until} and the declaration cannot be updated",
                    cmd.planned_hours,
                ),
            ),
            period.period_id,
            0,
            cmd.planned_hours,
            frozenset({period.year}),
        )
        return _with_spell_warning(ledger, period, decision, rules)
    # A new period is the last in the queue, so its allocation after tells everything.
    after = allocate_period(ledger, period, rules)
    decision = _answer_for_hours(period, None, after, cmd.planned_hours)
    return _with_spell_warning(ledger, period, decision, rules)


def _with_spell_warning(
    ledger: StudentLedger, period: Period, decision: Decision, rules: QuotaRules
) -> Decision:
    """``decision`` with the 12-month warning when ``period`` makes its employer's
    employment of the student longer than the limit (DOMAIN.md section 1).

    Only a warning: the hours are counted as before; whether the contract is still a
    student contract is for the employer to settle.
    """
    months = rules.student_months_in_a_row
    if months is None:
        return decision
    mine = [p for p in ledger.periods.values() if p.employer == period.employer and p.in_force]
    # Most employers' periods span less than the limit altogether: no spell to look for.
    first, last = min(p.start for p in mine), max(p.end for p in mine)
    if last < add_months(first, months):
        return decision
    spell = spell_of(mine, period)
    if spell is None or not spell.exceeds(months):
        return decision
    text = (
        f"this employer has declared the worker without interruption from {spell.start} to "
        f"{spell.end}, more than {months} months in a row: from {spell.limit_day(months)} "
        "on the worker is no longer a student for this employer (student contributions no "
        "longer apply); check the contract"
    )
    anomaly = Anomaly(AnomalyCode.TWELVE_MONTHS_IN_A_ROW, text)
    return replace(decision, status=Status.WARNING, anomalies=(*decision.anomalies, anomaly))


def _answer_for_hours(
    period: Period,
    before: PeriodAllocation | None,
    after: PeriodAllocation,
    added: int,
    left_before: int | None = None,
) -> Decision:
    """The answer once ``added`` hours joined ``period``; ``before`` for a changed period."""
    share = after
    years = frozenset({period.year})
    if not share.counted:
        text = (
            f"the quarterly declaration (DmfA) of {period.year} Q{period.quarter} has already "
            "been received: its actual hours count instead of the planned ones"
        )
        anomaly = Anomaly(AnomalyCode.DMFA_ALREADY_RECEIVED, text)
        return Decision(Status.WARNING, (anomaly,), period.period_id, 0, 0, years)
    # Only the hours this command added can newly exceed the quota: the ordinary hours its
    # period has now beyond those it had before (neutralised hours never exceed it).
    already = before.ordinary_hours if before is not None and before.counted else 0
    exceeding = max(0, share.ordinary_hours - already) if added > 0 else 0
    if exceeding:
        # A new period exceeding the quota took exactly the room that was left.
        left = left_before if left_before is not None else share.reduced_hours
        text = (
            f"exceeding {exceeding} hours: {left} hours were left in the "
            f"{period.year} student quota of {share.quota}; the {exceeding} hours above it "
            "are at ordinary contributions"
        )
        anomaly = Anomaly(AnomalyCode.QUOTA_EXCEEDED, text, exceeding)
        return Decision(
            Status.WARNING,
            (anomaly,),
            period.period_id,
            share.reduced_hours,
            share.ordinary_hours,
            years,
        )
    return Decision(
        Status.ACCEPTED,
        (),
        period.period_id,
        share.reduced_hours,
        share.ordinary_hours,
        years,
    )


def _owned_period(ledger: StudentLedger, employer: str | None, period_id: str) -> Period | Decision:
    period = ledger.periods.get(period_id)
    # Another employer's period is reported as unknown: employers never learn of each other.
    if period is None or (employer is not None and period.employer != employer):
        return refusal(
            AnomalyCode.UNKNOWN_PERIOD,
            f"no period {period_id} declared by this employer for this student",
            period_id,
        )
    if period.cancelled:
        return refusal(AnomalyCode.PERIOD_CANCELLED, f"period {period_id} was cancelled", period_id)
    return period


def _update(ledger: StudentLedger, cmd: UpdatePeriod, rules: QuotaRules) -> Decision:
    found = _owned_period(ledger, cmd.employer, cmd.period_id)
    if isinstance(found, Decision):
        return found
    period = found
    pid = period.period_id
    if cmd.start is not None and cmd.start != period.start:
        return refusal(
            AnomalyCode.START_DATE_CHANGE,
            f"the start date cannot be changed ({period.start} to {cmd.start}): cancel the "
            "period and declare it again",
            pid,
        )
    if period.late:
        return refusal(
            AnomalyCode.LATE_NOT_UPDATABLE,
            "a late declaration cannot be updated: its hours are already outside the quota",
            pid,
        )
    if (period.employer, period.year, period.quarter) in ledger.wage_reports:
        return refusal(
            AnomalyCode.UPDATE_AFTER_DMFA,
            f"the quarterly declaration (DmfA) of {period.year} Q{period.quarter} has arrived: "
            "the period can no longer be updated",
            pid,
        )
    # An update without hours changes the end date only.
    hours = period.planned_hours if cmd.planned_hours is None else cmd.planned_hours
    problem = _period_dates_problem(period.start, cmd.end) or _hours_problem(hours)
    if problem:
        return replace(problem, period_id=pid)

    left_before = remaining_hours(ledger, period.year, rules)
    before = allocate_period(ledger, period, rules)
    delta = hours - period.planned_hours
    if delta > 0:
        tranches = (*period.tranches, Tranche(ledger.take_seq(), delta))
    else:
        tranches = shrink_tranches(period.tranches, -delta)
    ledger.put_period(replace(period, end=cmd.end, tranches=tranches))
    changed = ledger.periods[pid]
    after = allocate_period(ledger, changed, rules)
    decision = _answer_for_hours(changed, before, after, max(0, delta), left_before)
    return _with_spell_warning(ledger, changed, decision, rules)


def _group_periods(ledger: StudentLedger, employer: str, year: int, quarter: int) -> list[Period]:
    return [
        p
        for p in ledger.periods.values()
        if (p.employer, p.year, p.quarter) == (employer, year, quarter)
    ]


def _cancel(ledger: StudentLedger, cmd: CancelPeriod, rules: QuotaRules) -> Decision:
    found = _owned_period(ledger, cmd.employer, cmd.period_id)
    if isinstance(found, Decision):
        return found
    key = (found.employer, found.year, found.quarter)
    report = ledger.wage_reports.get(key)
    if report is not None and found.late and not rules.dmfa_counts_late_hours:
        # The late hours deducted from the DmfA come back into the quota: they queue
        # behind everything accepted so far, like any hours added later.
        places, _deducted = dmfa_places(report, _group_periods(ledger, *key), rules)
        tranches = fit_tranches(places, report.hours_worked, ledger.take_seq)
        ledger.put_report(replace(report, tranches=tranches))
    ledger.put_period(replace(found, cancelled=True))
    return Decision(Status.ACCEPTED, (), found.period_id, 0, 0, frozenset({found.year}))


def _report_wages(ledger: StudentLedger, cmd: ReportWages, rules: QuotaRules) -> Decision:
    if not 1 <= cmd.quarter <= 4:
        return refusal(AnomalyCode.INVALID_QUARTER, f"quarter must be 1 to 4 (got {cmd.quarter})")
    if cmd.hours_worked < 0 or cmd.gross_wage_cents < 0:
        return refusal(
            AnomalyCode.NEGATIVE_AMOUNT, "hours worked and gross wage cannot be negative"
        )
    key = (cmd.employer, cmd.year, cmd.quarter)
    previous = ledger.wage_reports.get(key)
    group = _group_periods(ledger, *key)
    if previous is None:
        # The hours the DmfA confirms keep the places of the declarations; the ones it
        # reports beyond them queue at its own rank, behind everything accepted before.
        seq = ledger.take_seq()
        places = declared_tranches(group)
        tranches = fit_tranches(places, cmd.hours_worked, lambda: seq)
    else:
        # A corrected DmfA keeps the place of the one it replaces; hours it adds to those
        # counted so far queue at the back.
        seq = previous.seq
        places, _deducted = dmfa_places(previous, group, rules)
        tranches = fit_tranches(places, cmd.hours_worked, ledger.take_seq)
    report = WageReport(
        employer=cmd.employer,
        year=cmd.year,
        quarter=cmd.quarter,
        hours_worked=cmd.hours_worked,
        gross_wage_cents=cmd.gross_wage_cents,
        received_at=cmd.received_at,
        event_id=cmd.event_id,
        seq=seq,
        tranches=tranches,
    )
    ledger.put_report(report)
    # A cancelled declaration was withdrawn: hours reported for it are undeclared work.
    declared = any(
        p.in_force and (p.employer, p.year, p.quarter) == (cmd.employer, cmd.year, cmd.quarter)
        for p in ledger.periods.values()
    )
    years = frozenset({cmd.year})
    if not declared:
        text = (
            f"no Dimona student declaration of this employer for {cmd.year} Q{cmd.quarter}: "
            f"the {cmd.hours_worked} hours reported count against the quota all the same"
        )
        anomaly = Anomaly(AnomalyCode.DMFA_WITHOUT_DECLARATION, text, cmd.hours_worked)
        return Decision(Status.WARNING, (anomaly,), None, 0, 0, years)
    return Decision(Status.ACCEPTED, (), None, 0, 0, years)
