"""A student's hour ledger and the commands that change it.

The ledger holds everything the quota depends on for one student: the declared periods
(Dimona) and the quarterly wage reports (DmfA). Commands are applied one at a time, in
the order the student's partition delivers them, and each yields a :class:`Decision`,
the answer the employer receives. Nothing here knows about Kafka, databases or clocks:
the reception instant is part of each command.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import date, datetime
from enum import StrEnum
from typing import Any, NamedTuple

from quota.calendar import brussels_date, quarter_of

#: Namespace for period ids derived from the declaring event, so that a replayed event
#: yields the same period id.

STUDENT_WORKER_TYPE = "STU"


class Status(StrEnum):
    ACCEPTED = "A"
    WARNING = "W"
    REFUSED = "B"
    WAITING_IDENTIFICATION = "S"


class AnomalyCode(StrEnum):
    QUOTA_EXCEEDED = "QUOTA_EXCEEDED"
    LATE_DECLARATION = "LATE_DECLARATION"
    DMFA_ALREADY_RECEIVED = "DMFA_ALREADY_RECEIVED"
    DMFA_WITHOUT_DECLARATION = "DMFA_WITHOUT_DECLARATION"
    TWELVE_MONTHS_IN_A_ROW = "TWELVE_MONTHS_IN_A_ROW"
    NOT_A_STUDENT = "NOT_A_STUDENT"
    ZERO_HOURS = "ZERO_HOURS"
    END_BEFORE_START = "END_BEFORE_START"
    CROSS_QUARTER = "CROSS_QUARTER"
    START_DATE_CHANGE = "START_DATE_CHANGE"
    UPDATE_AFTER_DMFA = "UPDATE_AFTER_DMFA"
    LATE_NOT_UPDATABLE = "LATE_NOT_UPDATABLE"
    UNKNOWN_PERIOD = "UNKNOWN_PERIOD"
    PERIOD_CANCELLED = "PERIOD_CANCELLED"
    INVALID_QUARTER = "INVALID_QUARTER"
    NEGATIVE_AMOUNT = "NEGATIVE_AMOUNT"
    INVALID_MESSAGE = "INVALID_MESSAGE"
    HOURS_OUT_OF_RANGE = "HOURS_OUT_OF_RANGE"
    HOURS_NOT_INTEGER = "HOURS_NOT_INTEGER"
    DATE_OUT_OF_RANGE = "DATE_OUT_OF_RANGE"
    AMOUNT_OUT_OF_RANGE = "AMOUNT_OUT_OF_RANGE"
    INVALID_TEXT = "INVALID_TEXT"
    INVALID_KEY = "INVALID_KEY"
    INVALID_TIMESTAMP = "INVALID_TIMESTAMP"
    DUPLICATE_EVENT_ID = "DUPLICATE_EVENT_ID"
    MISSING_END_DATE = "MISSING_END_DATE"
    PROCESSING_FAILED = "PROCESSING_FAILED"
    EMPLOYER_IDS_CONFLICT = "EMPLOYER_IDS_CONFLICT"


@dataclass(frozen=True)
class Anomaly:
    code: AnomalyCode
    text: str
    hours: int | None = None


@dataclass(frozen=True)
class Decision:
    """The answer to one command."""

    status: Status
    anomalies: tuple[Anomaly, ...] = ()
    period_id: str | None = None
    reduced_hours: int = 0
    ordinary_hours: int = 0
    #: Calendar years whose balance the command may have changed.
    years: frozenset[int] = frozenset()

    @property
    def refused(self) -> bool:
        return self.status is Status.REFUSED


def refusal(code: AnomalyCode, text: str, period_id: str | None = None) -> Decision:
    return Decision(Status.REFUSED, (Anomaly(code, text),), period_id)


class Tranche(NamedTuple):
    """Hours of a period reserved at one moment.

    A period starts with one tranche; an update that raises its hours adds one at the
    back of the queue, so the extra hours get reduced-rate room only where some is left
    ("raising hours uses the quota only where there is room"), while the original hours
    keep their place.

    A named tuple rather than a frozen dataclass: every batch and every recompute builds
    the tranches of every period it loads, and a frozen dataclass's constructor was the
    largest part of turning rows into ledgers (py-spy).
    """

    seq: int
    hours: int


def shrink_tranches(tranches: tuple[Tranche, ...], hours: int) -> tuple[Tranche, ...]:
    """``tranches`` less ``hours``, taken from the most recent reservations first.

    Fewer hours free the places reserved last: what was accepted earlier keeps its rank.
    """
    if hours <= 0:
        return tranches
    kept: list[Tranche] = []
    for tranche in reversed(tranches):
        take = min(hours, tranche.hours)
        hours -= take
        if tranche.hours - take > 0:
            kept.append(Tranche(tranche.seq, tranche.hours - take))
    return tuple(reversed(kept))


def fit_tranches(
    tranches: tuple[Tranche, ...], hours: int, next_seq: Callable[[], int]
) -> tuple[Tranche, ...]:
    """``tranches`` made to hold exactly ``hours``.

    Fewer hours free the most recent places (:func:`shrink_tranches`); more hours queue
    their surplus in one new tranche at the back (``next_seq()``, called only then), the
    way an update that raises hours does.
    """
    held = sum(t.hours for t in tranches)
    if hours <= held:
        return shrink_tranches(tranches, held - hours)
    return (*tranches, Tranche(next_seq(), hours - held))


@dataclass(frozen=True, slots=True)
class Period:
    """A declared student period (one Dimona STU, at most one quarter).

    Slotted: a batch holds every period of every student it touches (memray at 30,000
    students: some 27 MiB of them at the worker's peak), and a period with a ``__dict__``
    took 560 bytes, with slots 209.
    """

    period_id: str
    employer: str
    declarant: str
    start: date
    end: date
    tranches: tuple[Tranche, ...]
    received_at: datetime
    late: bool
    event_id: str
    joint_commission: str | None = None
    using_employer: str | None = None
    cancelled: bool = False

    # Derived once at construction: the balance reads them for every period of a student
    # at every command (cached_property would take a lock on each read).
    planned_hours: int = field(init=False, repr=False, compare=False)
    accepted_seq: int = field(init=False, repr=False, compare=False)
    year: int = field(init=False, repr=False, compare=False)
    quarter: int = field(init=False, repr=False, compare=False)
    counts: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        derived = _derived(self.tranches, self.start, self.cancelled, self.late)
        for name, value in zip(_DERIVED_FIELDS, derived, strict=True):
            object.__setattr__(self, name, value)  # frozen forbids a plain store

    @property
    def in_force(self) -> bool:
        return not self.cancelled

    @classmethod
    def restore(cls, **fields: Any) -> Period:
        """The period with these fields, as the database gives it back: every field
        given (a missing or unknown one is an error), none converted.

        Filled as a mutable twin with the same slots, then given this class: a frozen
        dataclass's ``__init__`` sets each of the seventeen fields through
        ``object.__setattr__``, and turning rows into ledgers is what every batch and
        every recompute does for every period of every student it touches (1.8 - 1.9 us a
        period this way, 2.0 with the former ``__dict__`` update side by side; py-spy
        had the frozen ``__init__`` at 3.8).
        """
        if fields.keys() != _PERIOD_FIELDS:
            raise TypeError(
                f"a period has the fields {sorted(_PERIOD_FIELDS)}, got {sorted(fields)}"
            )
        draft: Any = _PeriodDraft()
        draft.period_id = fields["period_id"]
        draft.employer = fields["employer"]
        draft.declarant = fields["declarant"]
        draft.start = start = fields["start"]
        draft.end = fields["end"]
        draft.tranches = tranches = fields["tranches"]
        draft.received_at = fields["received_at"]
        draft.late = late = fields["late"]
        draft.event_id = fields["event_id"]
        draft.joint_commission = fields["joint_commission"]
        draft.using_employer = fields["using_employer"]
        draft.cancelled = cancelled = fields["cancelled"]
        (draft.planned_hours, draft.accepted_seq, draft.year, draft.quarter, draft.counts) = (
            _derived(tranches, start, cancelled, late)
        )
        draft.__class__ = cls
        period: Period = draft
        return period


_DERIVED_FIELDS = ("planned_hours", "accepted_seq", "year", "quarter", "counts")


def _derived(
    tranches: tuple[Tranche, ...], start: date, cancelled: bool, late: bool
) -> tuple[int, int, int, int, bool]:
    """A period's derived fields, in the order of ``_DERIVED_FIELDS``."""
    return (
        sum(t.hours for t in tranches),
        tranches[0].seq,
        start.year,
        quarter_of(start),
        # In force and on time: its planned hours count while no DmfA replaces them.
        not cancelled and not late,
    )


class _PeriodDraft:
    """A :class:`Period` being restored: the same slots, without the frozen guard."""

    __slots__ = Period.__slots__


@dataclass(frozen=True, slots=True)
class WageReport:
    """A DmfA line: the hours actually worked for one employer in one quarter.

    ``tranches`` are the places in the year's queue of the hours worked, fixed when the
    DmfA arrived: the declared places of the group first (the hours the DmfA confirms
    keep the rank they had), the hours it reports beyond them in a tranche at the DmfA's
    own rank (behind everything accepted before it). Hours that leave the quota later
    (late declarations deducted, DOMAIN.md section 3) are taken from the back; hours
    that come back queue at the back again. None for reports stored before the queue
    kept their places (migration 0006): the balance derives them from the declarations.
    """

    employer: str
    year: int
    quarter: int
    hours_worked: int
    gross_wage_cents: int
    received_at: datetime
    event_id: str
    #: Acceptance order, used when no declaration of the group gives one.
    seq: int = 0
    tranches: tuple[Tranche, ...] | None = None

    @classmethod
    def restore(cls, **fields: Any) -> WageReport:
        """The report with these fields, as the database gives it back (every field
        given); built as :meth:`Period.restore` builds a period."""
        if fields.keys() != _REPORT_FIELDS:
            raise TypeError(
                f"a wage report has the fields {sorted(_REPORT_FIELDS)}, got {sorted(fields)}"
            )
        draft: Any = _WageReportDraft()
        draft.employer = fields["employer"]
        draft.year = fields["year"]
        draft.quarter = fields["quarter"]
        draft.hours_worked = fields["hours_worked"]
        draft.gross_wage_cents = fields["gross_wage_cents"]
        draft.received_at = fields["received_at"]
        draft.event_id = fields["event_id"]
        draft.seq = fields["seq"]
        draft.tranches = fields["tranches"]
        draft.__class__ = cls
        report: WageReport = draft
        return report


class _WageReportDraft:
    """A :class:`WageReport` being restored: the same slots, without the frozen guard."""

    __slots__ = WageReport.__slots__


_PERIOD_FIELDS = frozenset(f.name for f in fields(Period) if f.init)
_REPORT_FIELDS = frozenset(f.name for f in fields(WageReport))


# ----------------------------------------------------------------------------- commands


@dataclass(frozen=True)
class DeclarePeriod:
    event_id: str
    employer: str
    declarant: str
    start: date
    end: date
    planned_hours: int
    received_at: datetime
    worker_type: str = STUDENT_WORKER_TYPE
    joint_commission: str | None = None
    using_employer: str | None = None
    #: The id the new period gets; None: :func:`period_id_for` of the event id.
    period_id: str | None = None


@dataclass(frozen=True)
class UpdatePeriod:
    event_id: str
    #: None when the follow-up names only the period: the period tells the employer.
    employer: str | None
    period_id: str
    end: date
    #: None: the hours stay as they are (the update changes the end date only).
    planned_hours: int | None
    received_at: datetime
    start: date | None = None


@dataclass(frozen=True)
class CancelPeriod:
    event_id: str
    #: None when the follow-up names only the period: the period tells the employer.
    employer: str | None
    period_id: str
    received_at: datetime


@dataclass(frozen=True)
class ReportWages:
    event_id: str
    employer: str
    year: int
    quarter: int
    hours_worked: int
    gross_wage_cents: int
    received_at: datetime


Command = DeclarePeriod | UpdatePeriod | CancelPeriod | ReportWages


#: Period ids are 12-digit numbers, as the Dimona interface's are.
PERIOD_ID_DIGITS = 12


def period_id_for(event_id: str, attempt: int = 0) -> str:
    """The id of the period a declaring event creates: a 12-digit number (as text).

    Derived from the event's idempotency key, so it is stable under replay and a sender
    can compute it; ``attempt`` gives the next candidate in the rare case that the first
    is taken (the worker checks, see :attr:`DeclarePeriod.period_id`).
    """
    seed = event_id if attempt == 0 else f"{event_id}#{attempt}"
    number = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big")
    low = 10 ** (PERIOD_ID_DIGITS - 1)
    return str(low + number % (9 * low))


def is_late(start: date, received_at: datetime) -> bool:
    """A declaration is late when it reached us after the first day of work."""
    return brussels_date(received_at) > start


# ------------------------------------------------------------------------------ ledger


@dataclass
class StudentLedger:
    """Everything one student's quota depends on, plus what changed since loading."""

    ssin: str
    periods: dict[str, Period] = field(default_factory=dict)
    wage_reports: dict[tuple[str, int, int], WageReport] = field(default_factory=dict)
    next_seq: int = 1
    changed_periods: set[str] = field(default_factory=set)
    changed_reports: set[tuple[str, int, int]] = field(default_factory=set)

    def take_seq(self) -> int:
        seq = self.next_seq
        self.next_seq += 1
        return seq

    def years(self) -> set[int]:
        return {p.year for p in self.periods.values()} | {k[1] for k in self.wage_reports}

    def put_period(self, period: Period) -> None:
        self.periods[period.period_id] = period
        self.changed_periods.add(period.period_id)

    def put_report(self, report: WageReport) -> None:
        key = (report.employer, report.year, report.quarter)
        self.wage_reports[key] = report
        self.changed_reports.add(key)

    def mark_saved(self) -> None:
        self.changed_periods.clear()
        self.changed_reports.clear()
