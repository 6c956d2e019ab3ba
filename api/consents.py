"""Agency consent: the student grants or revokes, the agency reads remaining hours.

A temporary work agency may check a student's remaining hours directly when the student
agreed to it, and the student may withdraw that at any time (DOMAIN.md section 2).

- ``POST /v1/consents`` (student) ``{"agency": "0123.456.749"}``: grant, 202.
- ``DELETE /v1/consents/{agency}`` (student): revoke, 202.
- ``GET /v1/consents`` (student): the student's consents and their state.
- ``GET /v1/agency/students/{ssin}/balance`` (agency): remaining hours of the current
  year, and nothing else, while the student's consent to that agency is active.

Grants and revocations are not written here: they are published to ``consents`` (key:
SSIN) through the **outbox**, in a one-statement transaction, and the worker's consent lane
applies them. Why the outbox rather than the faust producer: the 202 then means
"committed in the system of record", whatever the broker's state at that instant (the
relay retries with an idempotent producer until Kafka has it); the outbox is already the
project's one path to Kafka, ordered by row id, so a grant and the revocation that
follows it reach the partition in the order the student clicked; and the API never
waits on a broker round trip. The price is a redelivery now and then (consumers
deduplicate on event id, as they must anyway) and a delay of one relay wake-up.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Body, HTTPException, Path, Response
from pydantic import Field

from api.deps import COMMON_ERRORS, Agency, Pool, State, Student
from api.models import AgencyBalance, ConsentAccepted, ConsentList, ConsentOut
from db import attestations as attestation_db
from db import consents as consent_db
from db import store
from db.store import OutboxMessage
from schemas._base import Contract
from schemas.consents import ConsentChange
from schemas.identifiers import (
    format_enterprise_number,
    normalize_enterprise_number,
    normalize_ssin,
)
from schemas.topics import CONSENTS

#: Personal data: no cache anywhere on the way may keep it.
NO_STORE = "no-store"

router = APIRouter(responses=COMMON_ERRORS)


def _agency_from(raw: str) -> str:
    """The enterprise number (10 digits) of an agency as the client wrote it, or 400."""
    try:
        return normalize_enterprise_number(raw)
    except ValueError as error:
        raise HTTPException(400, f"agency: {error}") from error


class ConsentGrant(Contract):
    """The body of ``POST /v1/consents``."""

    agency: str = Field(description="The agency's enterprise number, 0123.456.749 or 10 digits.")


async def _publish(
    state: State,
    pool: Pool,
    response: Response,
    ssin: str,
    agency: str,
    action: Literal["grant", "revoke"],
) -> ConsentAccepted:
    """Publish a student's consent change through the outbox (one small transaction)."""
    change = ConsentChange.model_validate(
        {
            "event_id": str(uuid.uuid4()),
            "ssin": ssin,
            "agency": agency,
            "action": action,
            "changed_at": state.shared.clock(),
        }
    )
    async with pool.acquire() as conn, conn.transaction():
        await store.enqueue(conn, [OutboxMessage(CONSENTS, ssin.encode(), change.to_json_bytes())])
    response.headers["Cache-Control"] = NO_STORE
    return ConsentAccepted(
        event_id=change.event_id,
        agency=format_enterprise_number(agency),
        action=action,
        changed_at=change.changed_at,
        status="accepted",
    )


@router.get(
    "/v1/consents",
    summary="The calling student's consents to agencies and their state",
    response_model=ConsentList,
    tags=["consents"],
)
async def my_consents(pool: Pool, principal: Student, response: Response) -> ConsentList:
    async with pool.acquire() as conn:
        consents = await consent_db.list_consents(conn, principal.subject)
    response.headers["Cache-Control"] = NO_STORE
    return ConsentList(
        consents=[
            ConsentOut(
                agency=format_enterprise_number(c.agency),
                active=c.active,
                status="active" if c.active else "revoked",
                granted_at=c.granted_at,
                revoked_at=c.revoked_at,
            )
            for c in consents
        ]
    )


@router.post(
    "/v1/consents",
    status_code=202,
    summary="Grant an agency access to the remaining hours",
    response_model=ConsentAccepted,
    tags=["consents"],
)
async def grant_consent(
    state: State,
    pool: Pool,
    principal: Student,
    response: Response,
    grant: Annotated[ConsentGrant, Body()],
) -> ConsentAccepted:
    agency = _agency_from(grant.agency)
    return await _publish(state, pool, response, principal.subject, agency, "grant")


@router.delete(
    "/v1/consents/{agency}",
    status_code=202,
    summary="Revoke an agency's access",
    description="Always accepted, even when no consent is stored yet: a grant posted a "
    "moment ago may still be on its way, and the revocation must then follow it.",
    response_model=ConsentAccepted,
    tags=["consents"],
)
async def revoke_consent(
    state: State,
    pool: Pool,
    principal: Student,
    response: Response,
    agency: Annotated[str, Path(description="The agency's enterprise number.")],
) -> ConsentAccepted:
    return await _publish(state, pool, response, principal.subject, _agency_from(agency), "revoke")


@router.get(
    "/v1/agency/students/{ssin}/balance",
    summary="Remaining hours of a consenting student (agencies)",
    description="Only the remaining hours of the current year: no employers, no jobs, no "
    "wages. Without an active consent the answer is 403, the same whether or not the "
    "student has any data.",
    response_model=AgencyBalance,
    tags=["agency"],
)
async def agency_balance(
    state: State, pool: Pool, principal: Agency, response: Response, ssin: str
) -> AgencyBalance:
    agency = _agency_of_token(principal.subject)
    settings = state.settings
    today = state.today()
    try:
        student = normalize_ssin(ssin, today=today)
    except ValueError as error:
        raise HTTPException(400, f"ssin: {error}") from error
    async with pool.acquire() as conn:
        if not await consent_db.has_active_consent(conn, student, agency):
            raise HTTPException(
                403,
                "this student has not given (or has withdrawn) consent to agency "
                f"{format_enterprise_number(agency)}",
            )
        # Audited like a code look-up: the student sees it in GET /v1/me/lookups.
        await attestation_db.record_agency_read(
            conn, ssin=student, agency=agency, at=state.shared.clock()
        )
        remaining = await consent_db.remaining_hours(
            conn, student, today.year, settings.quota_rules
        )
    response.headers["Cache-Control"] = NO_STORE
    return AgencyBalance(ssin=student, year=today.year, remaining_hours=remaining)


def _agency_of_token(subject: str) -> str:
    """The enterprise number an agency token names, or 403 if it names none."""
    try:
        return normalize_enterprise_number(subject)
    except ValueError as error:
        raise HTTPException(403, "the token does not name an agency's enterprise number") from error
