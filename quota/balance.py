"""The balance of a student for a year, with every term of its computation.

The method (DOMAIN.md section 3), per student and calendar year::

    used = sum over (employer, quarter) of
             DmfA hours            if the DmfA of that employer and quarter arrived,
             planned hours         of the on-time declarations still in force otherwise
           minus neutralised hours
    remaining = max(0, quota - used)

Reduced-rate hours then go to the hours in order of acceptance, over one queue for the
year: every tranche of planned hours at its own rank (hours added by an update queue at
the back), every DmfA term at the rank of its group's earliest reservation.

The result keeps every term so that a student (or a civil servant answering the student's
complaint) can see exactly which employer's hours, planned or actual, make up the figure.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from enum import StrEnum

from quota.ledger import Period, StudentLedger, WageReport
from quota.rules import QuotaRules


class TermSource(StrEnum):
    #: Actual hours from the quarterly wage declaration replace the planned ones.
    DMFA = "dmfa"
    #: No DmfA yet: the planned hours of the declarations in force count.
    PLANNED = "planned"


@dataclass(frozen=True)
class PeriodShare:
    """How one period's hours were counted."""

    period_id: str
    planned_hours: int
    late: bool
    cancelled: bool
    reduced_hours: int
    ordinary_hours: int
    counted: bool


@dataclass(frozen=True)
class BalanceTerm:
    """One (employer, quarter) term of the sum."""

    employer: str
    quarter: int
    source: TermSource
    hours: int
    planned_hours: int
    late_hours: int
    dmfa_hours: int | None
    gross_wage_cents: int | None
    neutralised_hours: int
    reduced_hours: int
    ordinary_hours: int
    periods: tuple[PeriodShare, ...]

    @property
    def counted_hours(self) -> int:
        return self.hours - self.neutralised_hours


@dataclass(frozen=True)
class Balance:
    ssin: str
    year: int
    quota: int
    used: int
    remaining: int
    reduced_hours: int
    ordinary_hours: int
    neutralised_hours: int
    late_hours: int
    terms: tuple[BalanceTerm, ...]

    def share_of(self, period_id: str) -> PeriodShare | None:
        for term in self.terms:
            for share in term.periods:
                if share.period_id == period_id:
                    return share
        return None


@dataclass
class _Group:
    employer: str
    quarter: int
    periods: list[Period]
    report: WageReport | None
    rank: int = 0

    def joint_commission(self) -> str | None:
        for period in sorted(self.periods, key=lambda p: p.accepted_seq):
            if period.joint_commission:
                return period.joint_commission
        return None

    def compute_rank(self) -> int:
        ranks = [p.accepted_seq for p in self.periods if p.counts]
        if self.report is not None:
            # A DmfA with no declaration of its own before it queues at its arrival; a
            # declaration sent after it must not move it back in the queue.
            ranks.append(self.report.seq)
        if ranks:
            return min(ranks)
        return min((p.accepted_seq for p in self.periods), default=0)


@dataclass
class _Allocation:
    quota: int
    ordered: list[_Group]
    neutralised: dict[tuple[str, int], int]
    reduced_by: dict[tuple[str, int] | str, int]
    ordinary_by: dict[tuple[str, int] | str, int]


def _allocate(ledger: StudentLedger, year: int, rules: QuotaRules) -> _Allocation:
    """Walk the year's queue once: reduced and ordinary hours per group and per period."""
    groups: dict[tuple[str, int], _Group] = {}
    for period in ledger.periods.values():
        if period.year != year:
            continue
        key = (period.employer, period.quarter)
        group = groups.get(key)
        if group is None:
            group = groups[key] = _Group(period.employer, period.quarter, [], None)
        group.periods.append(period)
    for (employer, report_year, quarter), report in ledger.wage_reports.items():
        if report_year != year:
            continue
        group = groups.setdefault((employer, quarter), _Group(employer, quarter, [], None))
        group.report = report
    for group in groups.values():
        group.rank = group.compute_rank()

    quota = rules.quota(year)
    ordered = sorted(groups.values(), key=lambda g: (g.rank, g.employer, g.quarter))

    # Neutralised hours per group, first hours of the student's quarter first.
    neutralised: dict[tuple[str, int], int] = defaultdict(int)
    for rule in rules.neutralisations:
        if rule.year != year:
            continue
        left = rule.max_hours
        for group in ordered:
            if not rule.applies_to(year, group.quarter, group.joint_commission()):
                continue
            key = (group.employer, group.quarter)
            available = _group_hours(group) - neutralised[key]
            take = available if left is None else min(available, left)
            neutralised[key] += take
            if left is not None:
                left -= take

    # One queue for the whole year: every tranche of the planned terms at its own rank,
    # every DmfA term at the rank of its group's earliest reservation.
    queue: list[tuple[int, int, tuple[str, int], str | None]] = []
    for group in ordered:
        key = (group.employer, group.quarter)
        if group.report is not None:
            queue.append((group.rank, group.report.hours_worked, key, None))
            continue
        for p in group.periods:
            if p.counts:
                queue.extend((t.seq, t.hours, key, p.period_id) for t in p.tranches)
    queue.sort(key=lambda item: (item[0], item[2], item[3] or ""))

    room = quota
    skip = dict(neutralised) if neutralised else None
    reduced_by: dict[tuple[str, int] | str, int] = defaultdict(int)
    ordinary_by: dict[tuple[str, int] | str, int] = defaultdict(int)
    for _rank, hours, key, period_id in queue:
        if skip:
            skipped = min(skip.get(key, 0), hours)
            skip[key] = skip.get(key, 0) - skipped
            hours -= skipped
        reduced = hours if hours <= room else room
        room -= reduced
        reduced_by[key] += reduced
        ordinary_by[key] += hours - reduced
        if period_id is not None:
            reduced_by[period_id] += reduced
            ordinary_by[period_id] += hours - reduced
    return _Allocation(quota, ordered, neutralised, reduced_by, ordinary_by)


def compute_balance(ledger: StudentLedger, year: int, rules: QuotaRules) -> Balance:
    """The balance of ``ledger`` for ``year`` under ``rules``."""
    allocation = _allocate(ledger, year, rules)
    quota, ordered, neutralised = allocation.quota, allocation.ordered, allocation.neutralised
    reduced_by, ordinary_by = allocation.reduced_by, allocation.ordinary_by
    terms = [
        _term(g, neutralised.get((g.employer, g.quarter), 0), reduced_by, ordinary_by)
        for g in ordered
    ]

    used = 0
    reduced_total = ordinary_total = neutralised_total = late_total = 0
    for t in terms:
        used += t.hours - t.neutralised_hours
        reduced_total += t.reduced_hours
        ordinary_total += t.ordinary_hours
        neutralised_total += t.neutralised_hours
        late_total += t.late_hours
    return Balance(
        ssin=ledger.ssin,
        year=year,
        quota=quota,
        used=used,
        remaining=max(0, quota - used),
        reduced_hours=reduced_total,
        ordinary_hours=ordinary_total,
        neutralised_hours=neutralised_total,
        late_hours=late_total,
        terms=tuple(terms),
    )


@dataclass(frozen=True)
class PeriodAllocation:
    """How one period's hours stand in its year's queue (what an answer needs)."""

    quota: int
    counted: bool
    reduced_hours: int
    ordinary_hours: int


def allocate_period(ledger: StudentLedger, period: Period, rules: QuotaRules) -> PeriodAllocation:
    """The reduced and ordinary hours of one period, without building the whole balance."""
    allocation = _allocate(ledger, period.year, rules)
    report = ledger.wage_reports.get((period.employer, period.year, period.quarter))
    counted = report is None and period.counts
    if not counted:
        return PeriodAllocation(allocation.quota, False, 0, 0)
    return PeriodAllocation(
        allocation.quota,
        True,
        allocation.reduced_by.get(period.period_id, 0),
        allocation.ordinary_by.get(period.period_id, 0),
    )


def _group_hours(group: _Group) -> int:
    if group.report is not None:
        return group.report.hours_worked
    return sum(p.planned_hours for p in group.periods if p.in_force and not p.late)


def _term(
    group: _Group,
    neutralised: int,
    reduced_by: dict[tuple[str, int] | str, int],
    ordinary_by: dict[tuple[str, int] | str, int],
) -> BalanceTerm:
    key = (group.employer, group.quarter)
    periods = sorted(group.periods, key=lambda p: p.accepted_seq)
    planned = sum(p.planned_hours for p in periods if p.in_force and not p.late)
    late = sum(p.planned_hours for p in periods if p.in_force and p.late)
    shares = []
    for p in periods:
        counted = group.report is None and p.in_force and not p.late
        if counted:
            reduced, ordinary = reduced_by.get(p.period_id, 0), ordinary_by.get(p.period_id, 0)
        else:
            # Late hours sit wholly outside the quota; superseded or cancelled ones do not
            # count at all.
            reduced, ordinary = 0, (p.planned_hours if p.in_force and p.late else 0)
        shares.append(
            PeriodShare(
                p.period_id, p.planned_hours, p.late, p.cancelled, reduced, ordinary, counted
            )
        )
    report = group.report
    return BalanceTerm(
        employer=group.employer,
        quarter=group.quarter,
        source=TermSource.PLANNED if report is None else TermSource.DMFA,
        hours=planned if report is None else report.hours_worked,
        planned_hours=planned,
        late_hours=late,
        dmfa_hours=None if report is None else report.hours_worked,
        gross_wage_cents=None if report is None else report.gross_wage_cents,
        neutralised_hours=neutralised,
        reduced_hours=reduced_by.get(key, 0),
        ordinary_hours=ordinary_by.get(key, 0),
        periods=tuple(shares),
    )
