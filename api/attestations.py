"""Attestation and access-code views (DOMAIN.md section 5).

Students ask for attestations and download them; employers look a student's remaining
hours up with the access code printed on an attestation; students see who looked.

``POST /v1/attestations`` writes the pending attestation row and its
``AttestationRequest`` to the outbox in one small transaction: the 202 is only given when
both are durable, a broker outage delays the PDF instead of failing the request, and
``GET`` finds the pending row at once (never a 404 for an id it was just given).

The employer look-up answers exactly ``year``, ``remainingHours`` and ``validUntil``.
Unknown, malformed and expired codes get the same 404 after the same work: the digest is
always computed (a decoy one for malformed input) and the same single query runs, and
the failure is recorded where a success would record the look-up. Failures are counted
in PostgreSQL per employer and per client address, so every API process enforces one
limit.
"""

from __future__ import annotations

import ipaddress
import math
import re
import uuid
from collections.abc import Sequence
from datetime import timedelta
from ipaddress import IPv4Network, IPv6Network
from typing import Annotated, Any

import pydantic
from fastapi import APIRouter, Body, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import StrictInt

from api.deps import COMMON_ERRORS, EmployerOrAgency, Pool, State, Student, errors
from api.models import (
    AttestationList,
    AttestationOut,
    AttestationPending,
    EmployerBalance,
    Lookup,
    LookupList,
)
from db import attestations as queries
from db import store
from db.store import OutboxMessage
from quota.attestations import year_refusal
from schemas._base import Contract
from schemas.attestations import AttestationRequest
from schemas.i18n import Language
from schemas.identifiers import format_enterprise_number
from schemas.topics import ATTESTATION_REQUESTS
from streams import metrics
from streams.attestations import code_valid_on
from streams.messages import describe_validation_error

#: The one answer to every code that does not give access, whatever the reason.
NO_ACCESS = "no valid access code matches"

_ATTESTATION_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

router = APIRouter(responses=COMMON_ERRORS)


def _location(attestation_id: str) -> str:
    return f"/v1/attestations/{attestation_id}"


def client_address(request: Request, trusted: Sequence[IPv4Network | IPv6Network]) -> str:
    """The address of the client, for the per-address limit of failed look-ups.

    The peer address, unless the peer is one of the ``trusted`` proxies: then the
    ``X-Forwarded-For`` chain is read from the right (each proxy appends the address it
    received from) and the first address that is not a trusted proxy is the client's. A
    client can write anything in the header, so only what trusted proxies appended counts;
    a malformed entry among those is refused (400).
    """
    peer = request.client.host if request.client is not None else "unknown"
    if not trusted or not _is_trusted(peer, trusted):
        return peer
    chain = [
        part.strip()
        for header in request.headers.getlist("X-Forwarded-For")
        for part in header.split(",")
    ]
    client = peer
    for hop in reversed(chain):
        try:
            address = ipaddress.ip_address(hop)
        except ValueError as error:
            raise HTTPException(400, f"malformed X-Forwarded-For entry {hop[:64]!r}") from error
        client = str(address)
        if not _is_trusted(client, trusted):
            break
    return client


def _is_trusted(address: str, trusted: Sequence[IPv4Network | IPv6Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


class AttestationAsk(Contract):
    """The body of ``POST /v1/attestations``; without a year, the current one.

    ``language`` is the PDF's (``nl``, ``fr``, ``de``, ``en``); without one the service's
    ``default_language``.
    """

    year: StrictInt | None = None
    language: Language | None = None


@router.post(
    "/v1/attestations",
    status_code=202,
    summary="Ask for an attestation of a year (the PDF follows at its location)",
    response_model=AttestationPending,
    tags=["attestations"],
)
async def ask_attestation(
    state: State,
    pool: Pool,
    principal: Student,
    response: Response,
    ask: Annotated[AttestationAsk | None, Body()] = None,
) -> AttestationPending:
    """Writes the pending row and its request to the outbox in one transaction."""
    now = state.shared.clock()
    today = state.settings.today_in_brussels(now)
    year = ask.year if ask is not None and ask.year is not None else today.year
    refusal = year_refusal(year, today)
    if refusal is not None:
        raise HTTPException(400, refusal)
    attestation_id = str(uuid.uuid4())
    try:
        message = AttestationRequest(
            event_id=str(uuid.uuid4()),
            attestation_id=attestation_id,
            ssin=principal.subject,
            year=year,
            requested_at=now,
            language=ask.language if ask is not None else None,
        )
    except pydantic.ValidationError as error:  # e.g. a token naming no valid SSIN
        raise HTTPException(400, describe_validation_error(error)) from error
    async with pool.acquire() as conn, conn.transaction():
        await queries.insert_pending(
            conn,
            attestation_id=attestation_id,
            ssin=message.ssin,
            year=year,
            event_id=message.event_id,
            requested_at=now,
        )
        await store.enqueue(
            conn,
            [OutboxMessage(ATTESTATION_REQUESTS, message.ssin.encode(), message.to_json_bytes())],
        )
    location = _location(attestation_id)
    response.headers["Location"] = location
    return AttestationPending(attestation_id=attestation_id, status="pending", location=location)


@router.get(
    "/v1/attestations",
    summary="The calling student's attestations, most recent first",
    response_model=AttestationList,
    tags=["attestations"],
)
async def my_attestations(
    pool: Pool, principal: Student, limit: Annotated[int, Query(ge=1, le=500)] = 50
) -> AttestationList:
    async with pool.acquire() as conn:
        rows = await queries.attestations_of(conn, principal.subject, limit)
    return AttestationList(
        attestations=[
            AttestationOut(
                attestation_id=r.attestation_id,
                year=r.year,
                status=r.status,
                requested_at=r.requested_at,
                issued_at=r.issued_at,
                location=_location(r.attestation_id),
            )
            for r in rows
        ]
    )


@router.get(
    "/v1/attestations/{attestation_id}",
    summary="The attestation's PDF when issued; 202 while pending, 422 when refused",
    response_class=Response,
    responses={
        200: {"content": {"application/pdf": {"schema": {"type": "string", "format": "binary"}}}},
        202: {"model": AttestationPending},
        **errors(404),
    },
    tags=["attestations"],
)
async def attestation(pool: Pool, principal: Student, attestation_id: str) -> Response:
    row = None
    if _ATTESTATION_ID.match(attestation_id):
        async with pool.acquire() as conn:
            row = await queries.attestation_of(conn, attestation_id, principal.subject)
    if row is None:  # unknown, malformed, or another student's: all the same
        raise HTTPException(404, "no such attestation")
    status_body: dict[str, Any] = {
        "attestationId": row.attestation_id,
        "year": row.year,
        "status": row.status,
        "location": _location(row.attestation_id),
    }
    if row.status == "pending":
        return JSONResponse(status_body, status_code=202, headers={"Retry-After": "1"})
    if row.status == "refused":
        return JSONResponse({**status_body, "error": row.reason}, status_code=422)
    if row.status != "issued" or row.pdf is None:
        return JSONResponse(
            {**status_body, "error": row.reason or "not available"}, status_code=500
        )
    name = f"student-at-work-attestation-{row.year}-{row.attestation_id[:8]}.pdf"
    return Response(
        row.pdf,
        media_type="application/pdf",
        headers={
            "Content-Disposition": f'inline; filename="{name}"',
            "Cache-Control": "private, no-store",
        },
    )


@router.get(
    "/v1/employer/balance",
    summary="Remaining hours of the student whose access code is given",
    description="Answers exactly the year, the remaining hours and the code's end of "
    "validity. Unknown, malformed and expired codes all answer 404; too many failures "
    "per employer or per address answer 429 with Retry-After.",
    response_model=EmployerBalance,
    responses=errors(404, 429),
    tags=["employer"],
)
async def employer_balance(
    request: Request,
    response: Response,
    state: State,
    pool: Pool,
    principal: EmployerOrAgency,
    code: Annotated[str, Query(description="The access code printed on an attestation.")] = "",
) -> EmployerBalance | Response:
    employer = principal.subject
    settings = state.settings
    address = client_address(request, settings.trusted_proxies)
    now = state.shared.clock()
    today = settings.today_in_brussels(now)
    allowed = settings.lookup_failures_allowed
    window = timedelta(seconds=settings.lookup_failure_window_seconds)
    codes = state.access_codes
    digest = codes.digest(code)
    if digest is None:
        digest = codes.decoy_digest(code)

    async with pool.acquire() as conn, conn.transaction():
        await queries.lock_lookup_subjects(conn, employer, address)
        windows = await queries.recent_failures(
            conn, employer, address, since=now - window, nth=allowed
        )
        waits = [
            (w.nth_latest + window - now).total_seconds()
            for w in windows.values()
            if w.failures >= allowed and w.nth_latest is not None
        ]
        if waits:
            retry_after = max(1, math.ceil(max(waits)))
            metrics.API_RATE_LIMITED.labels("/v1/employer/balance").inc()
            raise HTTPException(
                429,
                "too many failed look-ups; try again later",
                headers={"Retry-After": str(retry_after)},
            )
        match = await queries.find_code(conn, digest, today.year)
        if (
            match.ssin is None
            or match.month is None
            or match.valid_from is None
            or match.valid_until is None
            or not code_valid_on(match.valid_from, match.valid_until, today)
        ):
            await queries.record_failure(conn, employer, address, now)
            metrics.API_LOOKUP_FAILURES.inc()
            # Returned, not raised: the failure row must commit with the transaction.
            return JSONResponse({"error": NO_ACCESS}, status_code=404)
        await queries.record_lookup(
            conn,
            ssin=match.ssin,
            employer=employer,
            at=now,
            code_month=match.month,
            reader_role=principal.role.value,
        )
    remaining = match.remaining
    if remaining is None:
        overrides = {today.year: match.quota_override} if match.quota_override else {}
        remaining = settings.quota_rules.with_overrides(overrides).quota(today.year)
    response.headers["Cache-Control"] = "private, no-store"
    return EmployerBalance(
        year=today.year, remaining_hours=remaining, valid_until=match.valid_until
    )


@router.get(
    "/v1/me/lookups",
    summary="Who read the student's remaining hours (employers, agencies), and when",
    response_model=LookupList,
    tags=["student"],
)
async def my_lookups(
    pool: Pool, principal: Student, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> LookupList:
    async with pool.acquire() as conn:
        rows = await queries.lookups_of(conn, principal.subject, limit)
    return LookupList(
        lookups=[
            Lookup(
                employer=_shown_employer(r.employer),
                by="agency" if r.reader_role == "agency" else "employer",
                via="consent" if r.via == "consent" else "access_code",
                looked_up_at=r.looked_up_at,
                code_month=f"{r.code_month:%Y-%m}" if r.code_month is not None else None,
            )
            for r in rows
        ]
    )


def _shown_employer(employer: str) -> str:
    try:
        return format_enterprise_number(employer)
    except ValueError:  # an NSSO-registered employer or a non-standard identifier
        return employer
