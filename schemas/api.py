"""HTTP API contracts: the JSON the ``/v1`` views answer, and the OpenAPI document.

Responses are pydantic models with camelCase JSON (like every contract of the project),
so the OpenAPI schemas are generated from the very classes the views serialise: the
document cannot drift from the answers.

Every view module describes its endpoints in the module-level registry
:data:`OPENAPI_PATHS` with :func:`add_operation`; ``GET /v1/openapi.json`` renders
whatever is registered when it is called. Example, in a view module::

    add_operation(
        "/v1/me/attestations",
        "post",
        Operation(
            summary="Issue an attestation",
            response=AttestationOut,
            request=AttestationRequestIn,
            status=201,
            tags=("student",),
        ),
    )
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field
from pydantic.json_schema import JsonSchemaMode, models_json_schema

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


# ------------------------------------------------------------------------------ health


# ----------------------------------------------------------------------------- OpenAPI

ParameterLocation = Literal["path", "query", "header"]


@dataclass(frozen=True)
class Parameter:
    """A path, query or header parameter of an operation."""

    name: str
    where: ParameterLocation
    description: str
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})
    required: bool = True


@dataclass(frozen=True)
class Operation:
    """One endpoint as the OpenAPI document shows it.

    ``response`` None means a body that is not a JSON model (give ``media_type``, e.g.
    ``application/pdf``). ``errors`` lists the error statuses, answered with
    :class:`ErrorBody`. ``auth`` False drops the bearer-token requirement.
    """

    summary: str
    response: type[BaseModel] | None
    description: str = ""
    tags: tuple[str, ...] = ()
    auth: bool = True
    parameters: tuple[Parameter, ...] = ()
    request: type[BaseModel] | None = None
    status: int = 200
    media_type: str = "application/json"
    errors: tuple[int, ...] = (400, 401, 403)
    #: Extra responses with their own model, e.g. {503: Health}.
    other_responses: tuple[tuple[int, type[BaseModel]], ...] = ()


#: path -> HTTP method (lower case) -> operation. View modules extend it at import time.
OPENAPI_PATHS: dict[str, dict[str, Operation]] = {}

_ERROR_TEXT = {
    400: "Malformed or out-of-range parameter.",
    401: "Missing, malformed, forged or expired token.",
    403: "The token's role or subject may not see this resource.",
    404: "No such resource.",
    409: "Conflicts with the current state.",
    429: "Too many attempts; try again later.",
    503: "A dependency is unavailable.",
}


def add_operation(path: str, method: str, operation: Operation) -> None:
    """Describe ``method path`` in the OpenAPI document (replaces an earlier entry)."""
    OPENAPI_PATHS.setdefault(path, {})[method.lower()] = operation


def openapi_document(
    *, title: str = "Student@work API", version: str = "1", description: str = ""
) -> dict[str, Any]:
    """An OpenAPI 3.1 document of every registered operation.

    Schemas come from the pydantic models in serialization mode with their JSON aliases,
    collected once in ``components.schemas`` and referenced from the operations.
    """
    models: dict[tuple[type[BaseModel], JsonSchemaMode], None] = {
        (ErrorBody, "serialization"): None
    }
    for operations in OPENAPI_PATHS.values():
        for op in operations.values():
            if op.response is not None:
                models[(op.response, "serialization")] = None
            if op.request is not None:
                models[(op.request, "validation")] = None
            for _status, model in op.other_responses:
                models[(model, "serialization")] = None
    refs, top = models_json_schema(list(models), ref_template="#/components/schemas/{model}")

    def ref(model: type[BaseModel], mode: JsonSchemaMode) -> dict[str, Any]:
        return dict(refs[(model, mode)])

    paths: dict[str, Any] = {}
    for path in sorted(OPENAPI_PATHS):
        item: dict[str, Any] = {}
        for method, op in sorted(OPENAPI_PATHS[path].items()):
            responses: dict[str, Any] = {}
            if op.response is not None:
                body = {"schema": ref(op.response, "serialization")}
            elif op.media_type.endswith("json"):
                body = {"schema": {"type": "object"}}
            else:
                body = {"schema": {"type": "string", "format": "binary"}}
            responses[str(op.status)] = {
                "description": op.summary,
                "content": {op.media_type: body},
            }
            for status, model in op.other_responses:
                responses[str(status)] = {
                    "description": _ERROR_TEXT.get(status, model.__name__),
                    "content": {"application/json": {"schema": ref(model, "serialization")}},
                }
            for status in op.errors:
                responses.setdefault(
                    str(status),
                    {
                        "description": _ERROR_TEXT.get(status, "Error."),
                        "content": {
                            "application/json": {"schema": ref(ErrorBody, "serialization")}
                        },
                    },
                )
            entry: dict[str, Any] = {
                "summary": op.summary,
                "operationId": _operation_id(method, path),
                "responses": responses,
            }
            if op.description:
                entry["description"] = op.description
            if op.tags:
                entry["tags"] = list(op.tags)
            if op.parameters:
                entry["parameters"] = [
                    {
                        "name": p.name,
                        "in": p.where,
                        "required": p.required or p.where == "path",
                        "description": p.description,
                        "schema": p.schema,
                    }
                    for p in op.parameters
                ]
            if op.request is not None:
                entry["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": ref(op.request, "validation")}},
                }
            entry["security"] = [{"bearerAuth": []}] if op.auth else []
            item[method] = entry
        paths[path] = item

    info: dict[str, Any] = {"title": title, "version": version}
    if description:
        info["description"] = description
    return {
        "openapi": "3.1.0",
        "info": info,
        "paths": paths,
        "components": {
            "schemas": top.get("$defs", {}),
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "Token of the federal identity service naming the caller "
                    "(role student: the SSIN; employer or agency: the enterprise number).",
                }
            },
        },
    }


def _operation_id(method: str, path: str) -> str:
    words = [w.strip("{}") for w in path.split("/") if w and w != "v1"]
    return method + "".join(w[:1].upper() + w[1:].replace(".", "_") for w in words)
