"""Input contracts: Dimona student declarations and DmfA quarterly wage lines.

The Dimona bodies mirror the administration's REST JSON (``dimonaIn``, ``dimonaUpdate``,
``dimonaCancel``) so that payroll software can publish what it already builds; the
envelope adds what a stream needs: a unique event id (the idempotency key), who sent it
and when. Messages are keyed by the worker's SSIN so that all of one student's events
land on one partition, in order.
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Annotated, Any, Literal, Self

from pydantic import AliasChoices, AwareDatetime, BeforeValidator, Field, model_validator
from pydantic_core import PydanticCustomError

from schemas._base import (
    Contract,
    EmployerRef,
    Hours,
    PrintableText,
    ReportingYear,
    WageCents,
    WorkDate,
    WorkedHours,
    Worker,
    planned_hours,
)
from schemas.identifiers import EnterpriseNumber, NssoNumber

SCHEMA_VERSION: Literal[1] = 1

EventId = Field(
    default=None,
    min_length=1,
    max_length=128,
    description="Unique per declarant and kind (Dimona or DmfA); the idempotency key.",
)


class DeclarantKind(StrEnum):
    EMPLOYER = "employer"
    AGENCY = "agency"
    SOCIAL_SECRETARIAT = "social_secretariat"


class Declarant(Contract):
    """Who submitted the message: the employer, a temp agency or a social secretariat."""

    kind: DeclarantKind = DeclarantKind.EMPLOYER
    enterprise_number: EnterpriseNumber | None = None
    nsso_registration_number: NssoNumber | None = None

    @property
    def declarant_id(self) -> str:
        if self.enterprise_number is not None:
            return self.enterprise_number
        if self.nsso_registration_number is not None:
            return f"NSSO{self.nsso_registration_number}"
        return ""


class DimonaFeatures(Contract):
    joint_commission_number: PrintableText = Field(min_length=1, max_length=10)
    worker_type: PrintableText = Field(min_length=1, max_length=10, description="STU for students.")


class UsingEmployer(Contract):
    """The client company of a temp agency (the agency is the legal employer)."""

    enterprise_number: EnterpriseNumber | None = None
    name: PrintableText | None = Field(default=None, max_length=200)


def _names(*names: str) -> AliasChoices:
    """Both generations of Dimona REST names (and the Python name)."""
    return AliasChoices(*names)


def _period_reference(value: Any) -> Any:
    # The Dimona interface numbers periods; payroll packages send the number as a JSON
    # number or a string (whatever intval / int() / parseInt made of the answer).
    if type(value) is int and value >= 0:
        return str(value)
    return value


PeriodReference = Annotated[
    PrintableText,
    BeforeValidator(_period_reference),
    Field(min_length=1, max_length=64, description="The period's id, a number or a string."),
]


def _end_date_given(end: date | None) -> date:
    if end is None:
        raise PydanticCustomError(
            "missing_end_date",
            "the end date (endDate, or endingDate) is missing: a student declaration "
            "covers a period within one quarter and must say when it ends",
        )
    return end


def _updated_hours(value: Any) -> int | None:
    return None if value is None else planned_hours(value)


#: The hours of an update: absent or null keeps the period's hours (the update changes its
#: end date only), as payroll packages that update dates alone send it.
UpdatedHours = Annotated[int | None, BeforeValidator(_updated_hours)]


class DimonaIn(Contract):
    starting_date: WorkDate = Field(
        validation_alias=_names("startDate", "startingDate", "starting_date")
    )
    ending_date: WorkDate | None = Field(
        default=None, validation_alias=_names("endDate", "endingDate", "ending_date")
    )
    dimona_features: DimonaFeatures = Field(
        validation_alias=_names("features", "dimonaFeatures", "dimona_features")
    )
    planned_hours_number: Hours = Field(
        description="Hours; a fraction rounds up (every started hour counts); null is no "
        "hours, which is refused (ZERO_HOURS)."
    )
    using_employer: UsingEmployer | None = None
    student_place_of_work: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _ends(self) -> Self:
        _end_date_given(self.ending_date)
        return self

    @property
    def end(self) -> date:
        return _end_date_given(self.ending_date)


class DimonaUpdate(Contract):
    period_id: PeriodReference = Field(
        validation_alias=_names("periodId", "dimonaNumber", "period_id")
    )
    starting_date: WorkDate | None = Field(
        default=None,
        validation_alias=_names("startDate", "startingDate", "starting_date"),
        description="If given, must equal the declared start (it cannot change).",
    )
    ending_date: WorkDate | None = Field(
        default=None, validation_alias=_names("endDate", "endingDate", "ending_date")
    )
    planned_hours_number: UpdatedHours = Field(
        default=None, description="The new planned hours; absent or null: unchanged."
    )

    @model_validator(mode="after")
    def _ends(self) -> Self:
        _end_date_given(self.ending_date)
        return self

    @property
    def end(self) -> date:
        return _end_date_given(self.ending_date)


class DimonaCancel(Contract):
    period_id: PeriodReference = Field(
        validation_alias=_names("periodId", "dimonaNumber", "period_id")
    )


class DimonaDeclaration(Contract):
    """One Dimona STU message on ``dimona.declarations`` (key: the worker's SSIN).

    The body payroll software sends to the Dimona REST interface, as it is: the envelope
    (``eventId``, ``submittedAt``) is optional, and follow-ups (update, cancel) may carry
    only the period reference, since the period tells the employer and the worker.
    """

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: PrintableText | None = EventId
    submitted_at: AwareDatetime | None = Field(
        default=None, description="Informative only: the broker's time decides lateness."
    )
    declarant: Declarant = Field(default_factory=Declarant)
    employer: EmployerRef | None = None
    worker: Worker | None = None
    dimona_in: DimonaIn | None = None
    dimona_update: DimonaUpdate | None = None
    dimona_cancel: DimonaCancel | None = None

    @model_validator(mode="after")
    def _exactly_one_action(self) -> Self:
        actions = [self.dimona_in, self.dimona_update, self.dimona_cancel]
        if sum(a is not None for a in actions) != 1:
            raise ValueError("give exactly one of dimonaIn, dimonaUpdate or dimonaCancel")
        if self.dimona_in is not None and (self.employer is None or self.worker is None):
            raise ValueError("a dimonaIn names its employer and its worker")
        return self

    @property
    def action(self) -> Literal["in", "update", "cancel"]:
        if self.dimona_in is not None:
            return "in"
        if self.dimona_update is not None:
            return "update"
        return "cancel"

    @property
    def declarant_id(self) -> str:
        """Who sent it: the declarant, else the employer; empty for a bare follow-up."""
        if self.declarant.declarant_id:
            return self.declarant.declarant_id
        return self.employer.employer_id if self.employer is not None else ""


class DmfaDeclaration(Contract):
    """One DmfA student line on ``dmfa.declarations`` (key: the worker's SSIN).

    The hours actually worked for one employer in one quarter; they replace the planned
    hours of that employer's declarations in that quarter.
    """

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: PrintableText | None = EventId
    submitted_at: AwareDatetime | None = None
    employer: EmployerRef
    worker: Worker
    year: ReportingYear
    quarter: int = Field(ge=1, le=4, strict=True)
    hours_worked: WorkedHours
    gross_wage_cents: WageCents
