"""Employment in a row with one employer: the 12-month limit of student work.

A worker declared by the same employer for more than 12 months in a row stops being a
student for that employer (DOMAIN.md section 1). "In a row" is read on the declared
periods: the employer's periods in force (late ones included, since they are work all
the same) that follow each other without a day uncovered form one spell of employment;
a day without a declaration ends it. Declarations cover at most one quarter, so a long
contract shows as consecutive periods, one per quarter.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta

from quota.ledger import Period


@dataclass(frozen=True)
class Spell:
    """Days of work for one employer declared without interruption."""

    employer: str
    start: date
    end: date
    #: The declarations that make it up, in date order.
    period_ids: tuple[str, ...]

    def limit_day(self, months: int) -> date:
        """The first day beyond ``months`` months in a row: from it on, the spell is
        longer than ``months`` months (1 January + 12 months: 1 January next year)."""
        return add_months(self.start, months)

    def exceeds(self, months: int) -> bool:
        """Whether the spell lasts more than ``months`` months."""
        return self.end >= self.limit_day(months)


def add_months(day: date, months: int) -> date:
    """``day`` moved by whole months, kept within the target month (31 January + 1
    month: 28 or 29 February)."""
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return date(year, month + 1, min(day.day, last))


def spells(periods: Iterable[Period]) -> list[Spell]:
    """The spells of every employer among ``periods``, by employer then start date.

    Cancelled periods are left out: a withdrawn declaration is no employment.
    """
    by_employer: dict[str, list[Period]] = {}
    for period in periods:
        if period.in_force:
            by_employer.setdefault(period.employer, []).append(period)
    found: list[Spell] = []
    for employer in sorted(by_employer):
        ordered = sorted(by_employer[employer], key=lambda p: (p.start, p.end, p.period_id))
        start, end, ids = ordered[0].start, ordered[0].end, [ordered[0].period_id]
        for period in ordered[1:]:
            if period.start <= end + timedelta(days=1):
                end = max(end, period.end)
                ids.append(period.period_id)
                continue
            found.append(Spell(employer, start, end, tuple(ids)))
            start, end, ids = period.start, period.end, [period.period_id]
        found.append(Spell(employer, start, end, tuple(ids)))
    return found


def spell_of(periods: Iterable[Period], period: Period) -> Spell | None:
    """The spell ``period`` belongs to (None for a cancelled period)."""
    mine = [p for p in periods if p.employer == period.employer]
    for spell in spells(mine):
        if period.period_id in spell.period_ids:
            return spell
    return None
