"""Input contracts: Dimona student declarations and DmfA quarterly wage lines.

The Dimona bodies mirror the administration's REST JSON (``dimonaIn``, ``dimonaUpdate``,
``dimonaCancel``) so that payroll software can publish what it already builds; the
envelope adds what a stream needs: a unique event id (the idempotency key), who sent it
and when. Messages are keyed by the worker's SSIN so that all of one student's events
land on one partition, in order.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal, Self

from pydantic import AwareDatetime, Field, model_validator

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
)
from schemas.identifiers import EnterpriseNumber, NssoNumber

SCHEMA_VERSION: Literal[1] = 1

EventId = Field(
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


class DimonaIn(Contract):
    starting_date: WorkDate
    ending_date: WorkDate
    dimona_features: DimonaFeatures
    planned_hours_number: Hours = Field(description="Whole hours, above 0.")
    using_employer: UsingEmployer | None = None
    student_place_of_work: dict[str, Any] | None = None


class DimonaUpdate(Contract):
    period_id: PrintableText = Field(min_length=1, max_length=64)
    starting_date: WorkDate | None = Field(
        default=None, description="If given, must equal the declared start (it cannot change)."
    )
    ending_date: WorkDate
    planned_hours_number: Hours


class DimonaCancel(Contract):
    period_id: PrintableText = Field(min_length=1, max_length=64)


class DimonaDeclaration(Contract):
    """One Dimona STU message on ``dimona.declarations`` (key: the worker's SSIN)."""

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: PrintableText = EventId
    submitted_at: AwareDatetime
    declarant: Declarant = Field(default_factory=Declarant)
    employer: EmployerRef
    worker: Worker
    dimona_in: DimonaIn | None = None
    dimona_update: DimonaUpdate | None = None
    dimona_cancel: DimonaCancel | None = None

    @model_validator(mode="after")
    def _exactly_one_action(self) -> Self:
        actions = [self.dimona_in, self.dimona_update, self.dimona_cancel]
        if sum(a is not None for a in actions) != 1:
            raise ValueError("give exactly one of dimonaIn, dimonaUpdate or dimonaCancel")
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
        return self.declarant.declarant_id or self.employer.employer_id


class DmfaDeclaration(Contract):
    """One DmfA student line on ``dmfa.declarations`` (key: the worker's SSIN).

    The hours actually worked for one employer in one quarter; they replace the planned
    hours of that employer's declarations in that quarter.
    """

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: PrintableText = EventId
    submitted_at: AwareDatetime
    employer: EmployerRef
    worker: Worker
    year: ReportingYear
    quarter: int = Field(ge=1, le=4, strict=True)
    hours_worked: WorkedHours
    gross_wage_cents: WageCents
