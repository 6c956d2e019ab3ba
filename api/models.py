"""The JSON the ``/v1`` endpoints answer, as pydantic models.

Responses are pydantic models with camelCase JSON (like every contract of the project);
FastAPI serialises the answers with them and generates the OpenAPI schemas from the very
same classes, so the document cannot drift from the answers.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import Field

from schemas._base import Contract, PeriodId

# ------------------------------------------------------------------------------ errors


class ErrorBody(Contract):
    """Every error answer: 400, 401, 403, 404, 429, 503 (health has its own body)."""

    error: str = Field(description="Why the request failed, in plain language.")


# ----------------------------------------------------------------------------- balance


class YearBalance(Contract):
    """The remaining hours of one calendar year."""

    year: int
    quota: int = Field(description="Quota of the year: configuration plus operators' changes.")
    used: int = Field(description="Hours counted against the quota (see the detailed view).")
    remaining: int = Field(description="max(0, quota - used).")


class BalanceOverview(Contract):
    """Remaining hours of the previous, current and next calendar year."""

    ssin: str
    today: date = Field(description="'Today' in Brussels, which decides the current year.")
    current_year: int
    years: list[YearBalance] = Field(description="Previous, current and next year, in order.")


# ------------------------------------------------------------------------ detailed view

DmfaStatus = Literal["received", "awaiting", "missing", "not_expected"]
CheckKind = Literal[
    "dmfa_missing",
    "planned_above_actual",
    "actual_above_planned",
    "late_declaration",
    "dmfa_without_declaration",
    "twelve_months_in_a_row",
]


class DeclarationOut(Contract):
    """One Dimona period as the student sees it, with how its hours were counted."""

    period_id: PeriodId
    start: date
    end: date
    planned_hours: int
    received_at: datetime
    late: bool = Field(description="Received after the first day of work: outside the quota.")
    cancelled: bool = Field(description="Withdrawn: listed, never counted.")
    counted: bool = Field(description="Its planned hours count (on time, in force, no DmfA).")
    reduced_hours: int
    ordinary_hours: int
    neutralised_hours: int = Field(
        0, description="Hours a neutralisation rule does not count (counted declarations)."
    )
    using_employer: str | None = Field(
        default=None, description="Client company of an interim agency, if any."
    )


class QuarterDetail(Contract):
    """One employer's quarter: planned against actual, and where its DmfA stands."""

    quarter: int
    planned_hours: int = Field(description="Hours of the declarations in force, late included.")
    late_hours: int = Field(description="Part of plannedHours declared late.")
    cancelled_hours: int = Field(description="Hours of cancelled declarations (not counted).")
    actual_hours: int | None = Field(description="Hours worked according to the DmfA.")
    to_work_hours: int = Field(
        description="Planned hours not yet confirmed by a DmfA: still to work, or worked "
        "and not yet declared. 0 once the DmfA arrived."
    )
    gross_wage_cents: int | None = Field(description="Gross wage of the quarter (DmfA).")
    dmfa_status: DmfaStatus = Field(
        description="received; awaiting (quarter not over, or DmfA not yet due); missing "
        "(today is after dmfaDueBy and no DmfA arrived); not_expected (nothing in force)."
    )
    dmfa_due_by: date = Field(description="Last day of the month following the quarter.")
    dmfa_received_at: datetime | None
    counted_hours: int = Field(description="What this quarter adds to 'used'.")
    reduced_hours: int
    ordinary_hours: int
    declarations: list[DeclarationOut]


class EmployerDetail(Contract):
    """One employer with a student contract in the year, and its quarters."""

    employer: str = Field(description="Enterprise number (10 digits) or NSSO<number>.")
    employer_display: str = Field(description="Display form, e.g. 0123.456.749.")
    planned_hours: int
    worked_hours: int = Field(description="Hours worked according to the DmfA received.")
    to_work_hours: int
    late_hours: int
    cancelled_hours: int
    counted_hours: int
    gross_wage_cents: int
    quarters: list[QuarterDetail]


class TermExplanation(Contract):
    """One term of the sum that gives 'used', in the order of acceptance."""

    employer: str
    employer_display: str
    quarter: int
    source: Literal["planned", "dmfa"] = Field(
        description="dmfa: actual hours replace the planned ones; planned: no DmfA yet."
    )
    hours: int = Field(
        description="Hours of the term before neutralisation (DmfA hours less the late ones)."
    )
    planned_hours: int = Field(description="On-time planned hours in force.")
    late_hours: int = Field(description="Late hours: outside the quota, ordinary contributions.")
    late_deducted_hours: int = Field(
        0,
        description="Late hours taken out of the DmfA hours, which include them; 0 without "
        "a DmfA, or where the DmfA hours count as reported (the older reading).",
    )
    dmfa_hours: int | None
    gross_wage_cents: int | None
    neutralised_hours: int = Field(description="Hours a neutralisation rule does not count.")
    counted_hours: int = Field(description="hours - neutralisedHours: added to 'used'.")
    reduced_hours: int = Field(description="Counted hours inside the quota (reduced rate).")
    ordinary_hours: int = Field(description="Counted hours beyond the quota (ordinary rate).")
    text: str = Field(description="The term in one plain-language sentence.")


class Check(Contract):
    """Something that may make the balance look wrong, and which employer to ask."""

    kind: CheckKind
    employer: str
    employer_display: str
    quarter: int
    hours: int = Field(description="The hours at issue.")
    period_id: PeriodId | None = None
    message: str


class YearDetail(Contract):
    """How the balance of one year was computed, employer by employer, term by term."""

    ssin: str
    year: int
    today: date
    quota: int
    used: int
    remaining: int
    reduced_hours: int
    ordinary_hours: int
    neutralised_hours: int
    late_hours: int
    explanation: str = Field(description="The totals in one sentence.")
    employers: list[EmployerDetail]
    terms: list[TermExplanation]
    checks: list[Check] = Field(description="What the student should check, and with whom.")


# ---------------------------------------------------------------------------- calendar


class CalendarPeriod(Contract):
    """A declaration in force: its date range and every day of it."""

    period_id: PeriodId
    start: date
    end: date
    declared_hours: int = Field(
        description="Hours deducted for the whole period, however many days it spans."
    )
    late: bool
    days: list[date]


class CalendarEmployer(Contract):
    employer: str
    employer_display: str
    days: list[date] = Field(description="Every day booked or worked, sorted, no duplicates.")
    periods: list[CalendarPeriod]


class YearCalendar(Contract):
    """The days booked or worked per employer (cancelled declarations left out)."""

    ssin: str
    year: int
    employers: list[CalendarEmployer]


# ------------------------------------------------------------------------ attestations


class AttestationPending(Contract):
    """An attestation asked for: where its PDF will be (``GET`` answers 202 until then)."""

    attestation_id: str
    status: Literal["pending"]
    location: str


class AttestationOut(Contract):
    attestation_id: str
    year: int
    status: str = Field(description="pending, issued or refused.")
    requested_at: datetime
    issued_at: datetime | None
    location: str


class AttestationList(Contract):
    attestations: list[AttestationOut]


class EmployerBalance(Contract):
    """What the holder of a valid access code learns: exactly these three fields."""

    year: int
    remaining_hours: int
    valid_until: date = Field(description="Last day the access code is valid.")


class Lookup(Contract):
    """One read of the student's remaining hours: a code look-up or an agency's read."""

    employer: str = Field(description="Who looked (employer or agency), in its display form.")
    by: Literal["employer", "agency"] = Field(description="The role of whoever looked.")
    via: Literal["access_code", "consent"] = Field(
        description="With an access code, or as an agency under the student's consent."
    )
    looked_up_at: datetime
    code_month: str | None = Field(
        description="Month of the access code used, YYYY-MM; null for a read under consent."
    )


class LookupList(Contract):
    lookups: list[Lookup]


# ---------------------------------------------------------------------------- consents


class ConsentOut(Contract):
    agency: str = Field(description="The agency's enterprise number, 0123.456.749.")
    active: bool
    status: Literal["active", "revoked"]
    granted_at: datetime | None
    revoked_at: datetime | None


class ConsentList(Contract):
    consents: list[ConsentOut]


class ConsentAccepted(Contract):
    """A grant or revocation committed to the outbox; the consent agent applies it."""

    event_id: str
    agency: str
    action: Literal["grant", "revoke"]
    changed_at: datetime
    status: Literal["accepted"]


class AgencyBalance(Contract):
    """What an agency learns of a consenting student: the current year's remaining hours."""

    ssin: str
    year: int
    remaining_hours: int


# -------------------------------------------------------------------------------- eBox


class EboxDocument(Contract):
    id: str
    title: str
    year: int
    file_name: str
    content_type: str
    size: int
    issued_at: datetime
    delivered_at: datetime
    available_until: date | None = Field(description="null once archived.")
    archived: bool
    archived_at: datetime | None


class EboxList(Contract):
    documents: list[EboxDocument]


# ------------------------------------------------------------------------ declarations


class DeclarationAccepted(Contract):
    """A declaration committed (outbox) for the worker; its answer follows at ``location``."""

    declaration_id: int = Field(
        description="12 digits. For a dimonaIn it is also the id of the period it creates, "
        "so a follow-up may name it as periodId or dimonaNumber."
    )
    status: Literal["pending", "answered"]
    location: str


class DimonaAnomalyOut(Contract):
    code: str
    description_fr: str
    description_nl: str
    description: str = Field(description="The worker's own sentence (English), with figures.")


class DimonaPeriodOut(Contract):
    id: int | str = Field(description="The period's id (a number; older periods: text).")


class DeclarationStatusOut(Contract):
    declaration_id: int
    result: Literal["A", "W", "B"]
    period: DimonaPeriodOut | None
    anomalies: list[DimonaAnomalyOut]
    anomalies_collection: list[DimonaAnomalyOut] = Field(
        description="The same anomalies under the name Odoo reads."
    )
    informations_collection: list[DimonaAnomalyOut] = Field(default_factory=list)
    reduced_hours: int = Field(description="Hours at the reduced (student) contribution rate.")
    ordinary_hours: int = Field(description="Hours beyond the quota: ordinary contributions.")


class DeclarationAnswer(Contract):
    """The decision, in the shape of the Dimona REST answer (``declarationStatus``)."""

    declaration_status: DeclarationStatusOut
