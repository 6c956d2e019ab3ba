"""Shared pieces of every contract: camelCase JSON and the party identifiers."""

from __future__ import annotations

import math
from datetime import date
from typing import Annotated, Any, Self

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from schemas.identifiers import EnterpriseNumber, NssoNumber, Ssin, normalize_nsso_number

#: The most hours one declaration or one DmfA line can hold: a calendar quarter has at
#: most 92 days of 24 hours. Anything above is an error of the sender, never a job.
MAX_QUARTER_HOURS = 92 * 24

#: Dates of work and reporting years are accepted from the first year with an hour quota
#: (2017) to the end of 2099: a wider window only admits typing errors (December 9999)
#: and values that overflow date arithmetic downstream.
FIRST_WORK_DATE = date(2017, 1, 1)
LAST_WORK_DATE = date(2099, 12, 31)

#: A quarter's gross wage above ten million euros (in cents) is an error of the sender.
MAX_WAGE_CENTS = 10_000_000 * 100


def _whole_number(value: Any, what: str) -> int:
    # JSON booleans are ints to Python and "30" would be coerced by lax mode: refuse both.
    if type(value) is not int:
        raise PydanticCustomError(
            "hours_not_integer",
            "{what} must be a number, not {given}",
            {"what": what, "given": type(value).__name__},
        )
    return value


def planned_hours(value: Any) -> int:
    """Planned hours as the rules take them (see :data:`Hours`)."""
    # Payroll packages send hours as JSON numbers with a fraction (30.0, 7.6): every
    # started hour counts, so a fraction rounds up. A missing number (null) is no hours,
    # which the rules refuse with the zero-hours reason.
    if value is None:
        return 0
    if type(value) is float and math.isfinite(value) and abs(value) <= 10 * MAX_QUARTER_HOURS:
        value = math.ceil(value)
    hours = _whole_number(value, "hours")
    if hours > MAX_QUARTER_HOURS:
        raise PydanticCustomError(
            "hours_out_of_range",
            "at most {limit} hours fit in one quarter (92 days of 24 hours), not {given}",
            {"limit": MAX_QUARTER_HOURS, "given": hours},
        )
    return hours


def _worked_hours(value: Any) -> int:
    if value is None:
        raise PydanticCustomError("hours_not_integer", "the hours worked are missing")
    hours = planned_hours(value)
    if hours < 0:
        raise PydanticCustomError(
            "hours_out_of_range", "hours worked cannot be negative ({given})", {"given": hours}
        )
    return hours


def _work_date(value: date) -> date:
    if not FIRST_WORK_DATE <= value <= LAST_WORK_DATE:
        raise PydanticCustomError(
            "date_out_of_range",
            "dates must lie between {first} and {last}, not {given}",
            {"first": str(FIRST_WORK_DATE), "last": str(LAST_WORK_DATE), "given": str(value)},
        )
    return value


def _reporting_year(value: Any) -> int:
    year = _whole_number(value, "the year")
    if not FIRST_WORK_DATE.year <= year <= LAST_WORK_DATE.year:
        raise PydanticCustomError(
            "date_out_of_range",
            "the year must lie between {first} and {last}, not {given}",
            {"first": FIRST_WORK_DATE.year, "last": LAST_WORK_DATE.year, "given": year},
        )
    return year


def _wage_cents(value: Any) -> int:
    if type(value) is not int:
        raise PydanticCustomError(
            "amount_not_integer",
            "amounts are whole cents, not {given}",
            {"given": type(value).__name__},
        )
    if not 0 <= value <= MAX_WAGE_CENTS:
        raise PydanticCustomError(
            "amount_out_of_range",
            "the amount must lie between 0 and {limit} cents, not {given}",
            {"limit": MAX_WAGE_CENTS, "given": value},
        )
    return value


def _printable(value: str) -> str:
    # str.isprintable() is False for NUL and every control character, and for lone
    # UTF-16 surrogates, which no JSON encoder downstream (nor PostgreSQL) accepts.
    if not value.isprintable():
        raise PydanticCustomError(
            "invalid_text",
            "must be printable text (no control characters such as NUL, no lone surrogates)",
        )
    return value


#: Planned hours of a declaration: a JSON number (a fraction rounds up: every started
#: hour counts), at most :data:`MAX_QUARTER_HOURS`; null counts as no hours.
Hours = Annotated[int, BeforeValidator(planned_hours)]
#: Hours worked in a quarter (DmfA): 0 to :data:`MAX_QUARTER_HOURS`.
WorkedHours = Annotated[int, BeforeValidator(_worked_hours)]
#: A date of work between :data:`FIRST_WORK_DATE` and :data:`LAST_WORK_DATE`.
WorkDate = Annotated[date, AfterValidator(_work_date)]
#: A reporting year in the same window.
ReportingYear = Annotated[int, BeforeValidator(_reporting_year)]
#: A gross wage in cents: a JSON integer, 0 to :data:`MAX_WAGE_CENTS`.
WageCents = Annotated[int, BeforeValidator(_wage_cents)]
#: Ids and codes: printable text only.
PrintableText = Annotated[str, AfterValidator(_printable)]


def numeric_period_id(value: Any) -> Any:
    """A period id as the Dimona interface writes it: a number (12 digits). Ids from
    before numeric period ids stay text."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return value


#: A period id on the way out: a JSON number, or text for the older ids.
PeriodId = Annotated[int | str, BeforeValidator(numeric_period_id)]


class Contract(BaseModel):
    """Base of every message: camelCase on the wire, snake_case in Python, immutable."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        # Payroll software sends more of the Dimona REST shape than the quota needs.
        extra="ignore",
    )

    def to_json_bytes(self) -> bytes:
        return self.model_dump_json(by_alias=True, exclude_none=True).encode()

    @classmethod
    def from_json_bytes(cls, raw: bytes) -> Self:
        return cls.model_validate_json(raw)


class EmployerRef(Contract):
    """An employer as Dimona names it: enterprise number, NSSO registration number, or both.

    The current Dimona REST interface calls the NSSO number ``employerId`` and payroll
    packages send it as a string or a number; both are read as the NSSO number (without
    leading zeros, :func:`schemas.identifiers.normalize_nsso_number`). A message naming
    both numbers tells the system they are one employer: the worker keeps that mapping
    (table ``employer_ids``) and counts the employer's declarations and DmfA lines as one
    term, whichever number each was filed under.
    """

    enterprise_number: EnterpriseNumber | None = None
    nsso_registration_number: NssoNumber | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "nssoRegistrationNumber", "employerId", "nsso_registration_number"
        ),
    )

    @model_validator(mode="before")
    @classmethod
    def _one_nsso_number(cls, data: Any) -> Any:
        # Both names of the NSSO number may come in one body; the alias would read the
        # first and silently drop the other, so two different numbers are refused.
        if isinstance(data, dict) and "nssoRegistrationNumber" in data and "employerId" in data:
            given = {
                _nsso_or_none(data["nssoRegistrationNumber"]),
                _nsso_or_none(data["employerId"]),
            }
            if len(given) != 1:
                raise ValueError(
                    "nssoRegistrationNumber and employerId both name the NSSO number and "
                    "must be the same number"
                )
        return data

    @field_validator("enterprise_number", "nsso_registration_number", mode="before")
    @classmethod
    def _number_as_text(cls, value: Any) -> Any:
        # A number given as a JSON number loses nothing but leading zeros, which the
        # identifier types restore (enterprise numbers) or drop anyway (NSSO numbers).
        if type(value) is int and value >= 0:
            return str(value)
        return value

    @model_validator(mode="after")
    def _at_least_one(self) -> Self:
        if self.enterprise_number is None and self.nsso_registration_number is None:
            raise ValueError(
                "give enterpriseNumber, nssoRegistrationNumber (or employerId), or both"
            )
        return self

    @property
    def employer_id(self) -> str:
        """The identifier the message gives the employer: its enterprise number when it
        names one, else ``NSSO<number>`` (prefixed so the two numbering schemes can never
        collide). The worker then replaces an NSSO id by the enterprise number it is
        mapped to, when the mapping is known."""
        if self.enterprise_number is not None:
            return self.enterprise_number
        return f"NSSO{self.nsso_registration_number}"

    @property
    def nsso_id(self) -> str | None:
        """``NSSO<number>`` when the message names the NSSO number, else None."""
        if self.nsso_registration_number is None:
            return None
        return f"NSSO{self.nsso_registration_number}"

    @property
    def identities(self) -> tuple[str, str] | None:
        """(NSSO id, enterprise number) when the message names both: one employer."""
        if self.nsso_id is None or self.enterprise_number is None:
            return None
        return self.nsso_id, self.enterprise_number


def _nsso_or_none(value: Any) -> str | None:
    """The normalized NSSO number of a raw value, or None where it is not one (the field
    validator then refuses it with its own reason)."""
    try:
        return normalize_nsso_number(str(value))
    except ValueError:
        return None


class Worker(Contract):
    ssin: Ssin


def dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)
