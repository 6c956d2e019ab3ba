"""The balance of a student for a year, with every term of its computation.

The method (DOMAIN.md section 3), per student and calendar year::

    used = sum over (employer, quarter) of
             DmfA hours minus the planned hours of the late declarations (not below 0)
                                   if the DmfA of that employer and quarter arrived,
             planned hours         of the on-time declarations still in force otherwise
           minus neutralised hours
    remaining = max(0, quota - used)

Reduced-rate hours then go to the hours in order of acceptance, over one queue for the
year in which no later message moves what was accepted before it: every tranche of
planned hours at its own rank (hours added by an update queue at the back); the hours a
DmfA confirms keep the places of the declarations they replace, the hours it reports
beyond them queue at the DmfA's own rank, fewer hours free the most recent places.
Neutralisation rules walk the same queue, each declaration in its own sector.

The result keeps every term so that a student (or a civil servant answering the student's
complaint) can see exactly which employer's hours, planned or actual, make up the figure.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from quota.ledger import (
    Period,
    StudentLedger,
    Tranche,
    WageReport,
    fit_tranches,
    shrink_tranches,
)
from quota.rules import Neutralisation, QuotaRules


class TermSource(StrEnum):
    #: Actual hours from the quarterly wage declaration replace the planned ones.
    DMFA = "dmfa"
    #: No DmfA yet: the planned hours of the declarations in force count.
    PLANNED = "planned"


class PeriodShare(NamedTuple):
    """How one period's hours were counted.

    Named tuples rather than frozen dataclasses, as :class:`quota.ledger.Tranche` is:
    every balance a batch touches builds a share per period and a term per (employer,
    quarter), and a frozen dataclass's constructor sets each field through
    ``object.__setattr__`` (py-spy: the terms' constructors were 3 % of the worker).
    """

    period_id: str
    planned_hours: int
    late: bool
    cancelled: bool
    reduced_hours: int
    ordinary_hours: int
    counted: bool
    #: Hours of the period a neutralisation rule does not count (counted periods only).
    neutralised_hours: int = 0


class BalanceTerm(NamedTuple):
    """One (employer, quarter) term of the sum (a named tuple, as :class:`PeriodShare`)."""

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
    #: Hours of the group's late declarations taken out of the DmfA hours (they are
    #: outside the quota); 0 without a DmfA, and under the literal reading
    #: (``QuotaRules.dmfa_counts_late_hours``), where the DmfA hours count as reported.
    late_deducted_hours: int = 0

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

    def compute_rank(self) -> int:
        if self.report is not None and self.report.tranches:
            # The DmfA's first place: fixed when it arrived, whatever happens to the
            # declarations it replaced.
            return min(self.report.tranches[0].seq, self.report.seq)
        ranks = [p.accepted_seq for p in self.periods if p.counts]
        if self.report is not None:
            # A DmfA with no declaration of its own before it queues at its arrival; a
            # declaration sent after it must not move it back in the queue.
            ranks.append(self.report.seq)
        if ranks:
            return min(ranks)
        return min((p.accepted_seq for p in self.periods), default=0)


def declared_tranches(periods: Iterable[Period], before: int | None = None) -> tuple[Tranche, ...]:
    """The places in the queue of the on-time declarations in force, in acceptance order
    (only those accepted before rank ``before``, if given)."""
    tranches = [
        t for p in periods if p.counts for t in p.tranches if before is None or t.seq < before
    ]
    return tuple(sorted(tranches, key=lambda t: t.seq))


def late_planned_hours(periods: Iterable[Period]) -> int:
    """Planned hours of the late declarations in force: outside the quota."""
    return sum(p.planned_hours for p in periods if p.in_force and p.late)


def derived_dmfa_tranches(report: WageReport, periods: Iterable[Period]) -> tuple[Tranche, ...]:
    """The places of a report stored before they were kept (migration 0006): the
    declared places accepted before the DmfA, the rest of its hours at its own rank."""
    declared = declared_tranches(periods, before=report.seq)
    return fit_tranches(declared, report.hours_worked, lambda: report.seq)


def dmfa_places(
    report: WageReport, periods: Sequence[Period], rules: QuotaRules
) -> tuple[tuple[Tranche, ...], int]:
    """The places in the queue of the hours a DmfA counts, and the late hours deducted.

    ``periods`` are the declarations of the DmfA's group (employer, quarter). The rule
    (DOMAIN.md section 3): the DmfA hours minus the planned hours of the group's late
    declarations in force, never below 0, unless ``rules.dmfa_counts_late_hours`` keeps
    the literal reading. Deducted hours leave from the back of the DmfA's places.
    """
    tranches = report.tranches
    if tranches is None:
        tranches = derived_dmfa_tranches(report, periods)
    deducted = 0
    if not rules.dmfa_counts_late_hours:
        deducted = min(report.hours_worked, late_planned_hours(periods))
    return shrink_tranches(tranches, deducted), deducted


def _commission_of_record(
    group: Sequence[Period], employer_periods: Sequence[Period], seq: int
) -> str | None:
    """The joint commission of DmfA hours that no declaration of the group reserved.

    The group's earliest declaration accepted before those hours queued (rank ``seq``),
    else the employer's earliest declaration of the year; cancelled ones included (a
    cancellation does not change the employer's sector). Once a commission is known it
    stays: a later declaration can only tell one where none was known, never replace it,
    so hours already queued are not counted differently afterwards.
    """
    for period in sorted(group, key=lambda p: p.accepted_seq):
        if period.accepted_seq < seq and period.joint_commission:
            return period.joint_commission
    for period in sorted(employer_periods, key=lambda p: p.accepted_seq):
        if period.joint_commission:
            return period.joint_commission
    return None


#: One place in the year's queue: (rank, hours, (employer, quarter), period id of a
#: planned tranche or None for DmfA hours, joint commission of the hours).
_Slot = tuple[int, int, tuple[str, int], str | None, str | None]


@dataclass
class _Allocation:
    quota: int
    ordered: list[_Group]
    hours_by: dict[tuple[str, int], int]
    deducted: dict[tuple[str, int], int]
    neutralised_by: dict[tuple[str, int] | str, int]
    reduced_by: dict[tuple[str, int] | str, int]
    ordinary_by: dict[tuple[str, int] | str, int]


def _slots(
    groups: Iterable[_Group],
    by_employer: dict[str, list[Period]],
    rules: QuotaRules,
    deducted: dict[tuple[str, int], int],
    sectors: bool,
) -> list[_Slot]:
    """Every place of the year's queue, in acceptance order (with the joint commission of
    the DmfA places only where a sector rule of the year needs it: ``sectors``)."""
    slots: list[_Slot] = []
    for group in groups:
        key = (group.employer, group.quarter)
        if group.report is None:
            for p in group.periods:
                if p.counts:
                    # Most periods hold one tranche: a loop, not a generator per period.
                    for t in p.tranches:
                        slots.append((t.seq, t.hours, key, p.period_id, p.joint_commission))
            continue
        places, deducted[key] = dmfa_places(group.report, group.periods, rules)
        if not sectors:
            slots.extend((t.seq, t.hours, key, None, None) for t in places)
            continue
        # Hours in a declared place keep that declaration's sector.
        own = {t.seq: p.joint_commission for p in group.periods for t in p.tranches}
        for t in places:
            if t.seq in own:
                jc = own[t.seq]
            else:
                jc = _commission_of_record(group.periods, by_employer[group.employer], t.seq)
            slots.append((t.seq, t.hours, key, None, jc))
    slots.sort(key=lambda slot: (slot[0], slot[2], slot[3] or ""))
    return slots


def _neutralised(year: int, slots: Sequence[_Slot], rules: Iterable[Neutralisation]) -> list[int]:
    """Neutralised hours of each slot: each rule walks the queue in acceptance order, so
    "the first 45 hours" are the first accepted across employers, and a sector rule
    judges each declaration on its own joint commission."""
    taken = [0] * len(slots)
    for rule in rules:
        left = rule.max_hours
        for index, (_seq, hours, key, _pid, jc) in enumerate(slots):
            if left == 0:
                break
            if not rule.applies_to(year, key[1], jc):
                continue
            take = hours - taken[index]
            if left is not None:
                take = min(take, left)
                left -= take
            taken[index] += take
    return taken


class _Queue(NamedTuple):
    """The year's queue of a ledger: its groups, its places in acceptance order, the
    hours each neutralisation rule takes of each place and the late hours deducted."""

    groups: dict[tuple[str, int], _Group]
    slots: list[_Slot]
    neutralised: list[int] | None
    deducted: dict[tuple[str, int], int]


def _queue(ledger: StudentLedger, year: int, rules: QuotaRules) -> _Queue:
    """The year's queue, in the order both the balance and one period's answer walk it."""
    year_rules = [rule for rule in rules.neutralisations if rule.year == year]
    sectors = any(rule.joint_commissions is not None for rule in year_rules)
    groups: dict[tuple[str, int], _Group] = {}
    # Each employer's periods of the year: only a sector rule reads them.
    by_employer: dict[str, list[Period]] = defaultdict(list)
    for period in ledger.periods.values():
        if period.year != year:
            continue
        key = (period.employer, period.quarter)
        group = groups.get(key)
        if group is None:
            group = groups[key] = _Group(period.employer, period.quarter, [period], None)
        else:
            group.periods.append(period)
        if sectors:
            by_employer[period.employer].append(period)
    for (employer, report_year, quarter), report in ledger.wage_reports.items():
        if report_year != year:
            continue
        group = groups.get((employer, quarter))
        if group is None:
            group = groups[(employer, quarter)] = _Group(employer, quarter, [], None)
        group.report = report

    # One queue for the whole year: every tranche of the planned terms and every place
    # of the DmfA terms at its own rank.
    deducted: dict[tuple[str, int], int] = {}
    slots = _slots(groups.values(), by_employer, rules, deducted, sectors)
    neutralised = _neutralised(year, slots, year_rules) if year_rules else None
    return _Queue(groups, slots, neutralised, deducted)


def _allocate(ledger: StudentLedger, year: int, rules: QuotaRules) -> _Allocation:
    """Walk the year's queue once: reduced and ordinary hours per group and per period."""
    groups, slots, neutralised, deducted = _queue(ledger, year, rules)
    for group in groups.values():
        group.rank = group.compute_rank()
    ordered = sorted(groups.values(), key=lambda g: (g.rank, g.employer, g.quarter))

    quota = rules.quota(year)
    room = quota
    hours_by: dict[tuple[str, int], int] = defaultdict(int)
    neutralised_by: dict[tuple[str, int] | str, int] = defaultdict(int)
    reduced_by: dict[tuple[str, int] | str, int] = defaultdict(int)
    ordinary_by: dict[tuple[str, int] | str, int] = defaultdict(int)
    for index, (_seq, hours, key, period_id, _jc) in enumerate(slots):
        hours_by[key] += hours
        skipped = neutralised[index] if neutralised else 0
        if skipped:
            neutralised_by[key] += skipped
            if period_id is not None:
                neutralised_by[period_id] += skipped
            hours -= skipped
        reduced = hours if hours <= room else room
        room -= reduced
        reduced_by[key] += reduced
        ordinary_by[key] += hours - reduced
        if period_id is not None:
            reduced_by[period_id] += reduced
            ordinary_by[period_id] += hours - reduced
    return _Allocation(quota, ordered, hours_by, deducted, neutralised_by, reduced_by, ordinary_by)


def compute_balance(ledger: StudentLedger, year: int, rules: QuotaRules) -> Balance:
    """The balance of ``ledger`` for ``year`` under ``rules``."""
    allocation = _allocate(ledger, year, rules)
    quota = allocation.quota
    terms = [_term(g, allocation) for g in allocation.ordered]

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
    """The reduced and ordinary hours of one period, without building the whole balance.

    Every declaration's answer needs this, so it walks the queue for the one period
    only: no terms, no ranks of groups, and no walk at all for a period whose hours do
    not count (a DmfA replaced them, or it is late or cancelled).
    """
    quota = rules.quota(period.year)
    report = ledger.wage_reports.get((period.employer, period.year, period.quarter))
    if report is not None or not period.counts:
        return PeriodAllocation(quota, False, 0, 0)
    _groups, slots, neutralised, _deducted = _queue(ledger, period.year, rules)
    target = period.period_id
    room = quota
    reduced_hours = ordinary_hours = 0
    for index, (_seq, hours, _key, period_id, _jc) in enumerate(slots):
        if neutralised:
            hours -= neutralised[index]
        reduced = hours if hours <= room else room
        room -= reduced
        if period_id == target:
            reduced_hours += reduced
            ordinary_hours += hours - reduced
    return PeriodAllocation(quota, True, reduced_hours, ordinary_hours)


def remaining_hours(ledger: StudentLedger, year: int, rules: QuotaRules) -> int:
    """The hours left in ``year``'s quota (:attr:`Balance.remaining`), from the queue
    alone: the used hours are its places' hours less what neutralisation takes."""
    _groups, slots, neutralised, _deducted = _queue(ledger, year, rules)
    used = sum(slot[1] for slot in slots) - (sum(neutralised) if neutralised else 0)
    return max(0, rules.quota(year) - used)


def _term(group: _Group, allocation: _Allocation) -> BalanceTerm:
    key = (group.employer, group.quarter)
    reduced_by, ordinary_by = allocation.reduced_by, allocation.ordinary_by
    periods = sorted(group.periods, key=lambda p: p.accepted_seq)
    planned = sum(p.planned_hours for p in periods if p.in_force and not p.late)
    late = late_planned_hours(periods)
    shares = []
    for p in periods:
        counted = group.report is None and p.counts
        neutralised = 0
        if counted:
            reduced, ordinary = reduced_by.get(p.period_id, 0), ordinary_by.get(p.period_id, 0)
            neutralised = allocation.neutralised_by.get(p.period_id, 0)
        else:
            # Late hours sit wholly outside the quota; superseded or cancelled ones do not
            # count at all.
            reduced, ordinary = 0, (p.planned_hours if p.in_force and p.late else 0)
        shares.append(
            PeriodShare(
                p.period_id,
                p.planned_hours,
                p.late,
                p.cancelled,
                reduced,
                ordinary,
                counted,
                neutralised,
            )
        )
    report = group.report
    return BalanceTerm(
        employer=group.employer,
        quarter=group.quarter,
        source=TermSource.PLANNED if report is None else TermSource.DMFA,
        hours=allocation.hours_by.get(key, 0),
        planned_hours=planned,
        late_hours=late,
        dmfa_hours=None if report is None else report.hours_worked,
        gross_wage_cents=None if report is None else report.gross_wage_cents,
        neutralised_hours=allocation.neutralised_by.get(key, 0),
        reduced_hours=reduced_by.get(key, 0),
        ordinary_hours=ordinary_by.get(key, 0),
        periods=tuple(shares),
        late_deducted_hours=allocation.deducted.get(key, 0),
    )
