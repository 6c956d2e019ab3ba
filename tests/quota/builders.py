"""Small builders for the quota domain tests: commands, instants and a student harness."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from quota import (
    Balance,
    CancelPeriod,
    Command,
    Decision,
    DeclarePeriod,
    Period,
    QuotaRules,
    ReportWages,
    StudentLedger,
    UpdatePeriod,
    WageReport,
    apply,
    compute_balance,
    period_id_for,
)

BRUSSELS = ZoneInfo("Europe/Brussels")
UTC = ZoneInfo("UTC")

SSIN = "93051822361"
#: Valid enterprise numbers (97 - first eight digits mod 97).
EMPLOYER_A = "0123456749"
EMPLOYER_B = "0403128634"
EMPLOYER_C = "0877901171"

#: A quota of 475 hours for every year and no neutralised quarter: the worked examples of
#: DOMAIN.md use 475.
RULES_475 = QuotaRules({2021: 475}, ())
#: The configured defaults: the quota table and the neutralised quarters of 2020-2022.
DEFAULT_RULES = QuotaRules()


def brussels(day: date, hour: int = 10, minute: int = 0) -> datetime:
    """An instant given in Brussels local time."""
    return datetime.combine(day, time(hour, minute), tzinfo=BRUSSELS)


def utc(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def before(day: date) -> datetime:
    """On time: the day before the first day of work, 10:00 in Brussels."""
    return brussels(day - timedelta(days=1))


def declare(
    event_id: str,
    employer: str,
    start: date,
    end: date,
    hours: int,
    *,
    received_at: datetime | None = None,
    worker_type: str = "STU",
    joint_commission: str | None = None,
    using_employer: str | None = None,
) -> DeclarePeriod:
    return DeclarePeriod(
        event_id=event_id,
        employer=employer,
        declarant=employer,
        start=start,
        end=end,
        planned_hours=hours,
        received_at=received_at or before(start),
        worker_type=worker_type,
        joint_commission=joint_commission,
        using_employer=using_employer,
    )


def update(
    event_id: str,
    employer: str,
    declared_by: str,
    end: date,
    hours: int,
    *,
    received_at: datetime | None = None,
    start: date | None = None,
) -> UpdatePeriod:
    """An update of the period created by the event ``declared_by``."""
    return UpdatePeriod(
        event_id=event_id,
        employer=employer,
        period_id=period_id_for(declared_by),
        end=end,
        planned_hours=hours,
        received_at=received_at or brussels(end),
        start=start,
    )


def cancel(
    event_id: str, employer: str, declared_by: str, *, received_at: datetime | None = None
) -> CancelPeriod:
    return CancelPeriod(
        event_id=event_id,
        employer=employer,
        period_id=period_id_for(declared_by),
        received_at=received_at or utc(2026, 1, 1, 12),
    )


def dmfa(
    event_id: str,
    employer: str,
    year: int,
    quarter: int,
    hours: int,
    *,
    wage_cents: int = 50_000,
    received_at: datetime | None = None,
) -> ReportWages:
    return ReportWages(
        event_id=event_id,
        employer=employer,
        year=year,
        quarter=quarter,
        hours_worked=hours,
        gross_wage_cents=wage_cents,
        received_at=received_at or utc(year + 1, 2, 1, 12),
    )


LedgerState = tuple[dict[str, Period], dict[tuple[str, int, int], WageReport], int]


def ledger_state(ledger: StudentLedger) -> LedgerState:
    """What a ledger holds, without the bookkeeping of what changed since loading."""
    return (dict(ledger.periods), dict(ledger.wage_reports), ledger.next_seq)


@dataclass
class Student:
    """One student's ledger under fixed rules, with the commands applied so far."""

    rules: QuotaRules = DEFAULT_RULES
    ledger: StudentLedger = field(default_factory=lambda: StudentLedger(SSIN))

    def do(self, command: Command) -> Decision:
        return apply(self.ledger, command, self.rules)

    def balance(self, year: int, rules: QuotaRules | None = None) -> Balance:
        return compute_balance(self.ledger, year, rules or self.rules)

    def period(self, declared_by: str) -> Period:
        return self.ledger.periods[period_id_for(declared_by)]

    def snapshot(self) -> StudentLedger:
        return copy.deepcopy(self.ledger)
