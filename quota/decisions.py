"""Applying commands to a ledger: the rules of Dimona STU and DmfA, as plain functions.

Each ``apply`` changes the ledger (or leaves it as it was, for a refusal) and returns
the answer for the employer. The reduced-rate and ordinary split in the answer is read
from the balance computed after the change, so an answer never disagrees with the
balance the student sees.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date

from quota.balance import PeriodAllocation, allocate_period, compute_balance
from quota.calendar import same_quarter
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
    is_late,
    period_id_for,
    refusal,
)
from quota.rules import QuotaRules


def apply(ledger: StudentLedger, command: Command, rules: QuotaRules) -> Decision:
    """Apply one command to ``ledger`` and return the employer's answer."""
    if isinstance(command, DeclarePeriod):
        return _declare(ledger, command, rules)
    if isinstance(command, UpdatePeriod):
        return _update(ledger, command, rules)
    if isinstance(command, CancelPeriod):
        return _cancel(ledger, command)
    return _report_wages(ledger, command)


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
        return Decision(
            Status.WARNING,
            (
                Anomaly(
                    AnomalyCode.LATE_DECLARATION,
                    f"declared after the first day of work ({cmd.start}): all "
                    f"{cmd.planned_hours} hours fall outside the student quota (ordinary "
                    "contributions) and the declaration cannot be updated",
                    cmd.planned_hours,
                ),
            ),
            period.period_id,
            0,
            cmd.planned_hours,
            frozenset({period.year}),
        )
    # A new period is the last in the queue, so its allocation after tells everything.
    after = allocate_period(ledger, period, rules)
    return _answer_for_hours(period, None, after, cmd.planned_hours)


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

    before_balance = compute_balance(ledger, period.year, rules)
    before = allocate_period(ledger, period, rules)
    delta = hours - period.planned_hours
    if delta > 0:
        tranches = (*period.tranches, Tranche(ledger.take_seq(), delta))
    else:
        tranches = _shrink(period.tranches, -delta)
    ledger.put_period(replace(period, end=cmd.end, tranches=tranches))
    changed = ledger.periods[pid]
    after = allocate_period(ledger, changed, rules)
    return _answer_for_hours(changed, before, after, max(0, delta), before_balance.remaining)


def _shrink(tranches: tuple[Tranche, ...], hours: int) -> tuple[Tranche, ...]:
    """Remove ``hours`` from the most recent reservations first."""
    kept: list[Tranche] = []
    for tranche in reversed(tranches):
        take = min(hours, tranche.hours)
        hours -= take
        if tranche.hours - take > 0:
            kept.append(Tranche(tranche.seq, tranche.hours - take))
    return tuple(reversed(kept))


def _cancel(ledger: StudentLedger, cmd: CancelPeriod) -> Decision:
    found = _owned_period(ledger, cmd.employer, cmd.period_id)
    if isinstance(found, Decision):
        return found
    ledger.put_period(replace(found, cancelled=True))
    return Decision(Status.ACCEPTED, (), found.period_id, 0, 0, frozenset({found.year}))


def _report_wages(ledger: StudentLedger, cmd: ReportWages) -> Decision:
    if not 1 <= cmd.quarter <= 4:
        return refusal(AnomalyCode.INVALID_QUARTER, f"quarter must be 1 to 4 (got {cmd.quarter})")
    if cmd.hours_worked < 0 or cmd.gross_wage_cents < 0:
        return refusal(
            AnomalyCode.NEGATIVE_AMOUNT, "hours worked and gross wage cannot be negative"
        )
    key = (cmd.employer, cmd.year, cmd.quarter)
    previous = ledger.wage_reports.get(key)
    report = WageReport(
        employer=cmd.employer,
        year=cmd.year,
        quarter=cmd.quarter,
        hours_worked=cmd.hours_worked,
        gross_wage_cents=cmd.gross_wage_cents,
        received_at=cmd.received_at,
        event_id=cmd.event_id,
        # A corrected DmfA keeps the place of the one it replaces.
        seq=previous.seq if previous else ledger.take_seq(),
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
