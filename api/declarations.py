"""The Dimona-compatible HTTP entry, for payroll systems that run no Kafka client.

``POST /v1/declarations`` takes the body a payroll package sends to the Dimona REST
interface (the contracts of :mod:`schemas.declarations`, both generations of names) with
an employer's or agency's token, or a social secretariat's under a mandate of the
employer (``mandates`` table, ``studentwork mandates import``). The declaration goes
where a Kafka one goes: a record of ``dimona.declarations`` keyed by the worker's SSIN,
written to the outbox in the same transaction as its row in ``http_declarations``
before the 201, so a broker outage delays it and never loses it. The record carries the
envelope the API fills in from the request, so the worker applies it exactly as a Kafka
record with that envelope:

- ``declarant``: who the token names (the body cannot claim another);
- ``eventId``: the ``Idempotency-Key`` header, else the body's ``eventId``, else derived
  from the exact bytes posted (``"sha256:" + hex(SHA-256(body))``, as on Kafka). A repeated
  POST under the same key and body returns the same declaration; another body under
  the same key is refused (409);
- ``employer``: for a follow-up that names none, the period's.

The declaration id, in the ``Location``, is a 12-digit number. For a ``dimonaIn`` it is the
id of the period it creates (:func:`streams.messages.declared_period_id`), so a package
that sends the ``Location`` id back as ``periodId`` / ``dimonaNumber`` (Odoo) names the
period; should the worker have given the period another number (a taken one), a
follow-up posted here is translated to it. ``GET /v1/declarations/{id}`` answers 202
until the worker decided, then the answer in the Dimona REST shape. Only the declarant
and the employer it declared for see a declaration; anyone else gets 404, as for an id
that does not exist.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any

import asyncpg
import pydantic
from fastapi import APIRouter, Depends, Header, HTTPException, Request, Response
from fastapi.responses import JSONResponse

from api.auth import Principal, Role
from api.deps import COMMON_ERRORS, Pool, State, caller, errors
from api.models import (
    DeclarationAccepted,
    DeclarationAnswer,
    DeclarationStatusOut,
    DimonaAnomalyOut,
    DimonaPeriodOut,
)
from db import declarations as queries
from db import store
from db.store import OutboxMessage
from quota import period_id_for
from schemas.declarations import DimonaDeclaration
from schemas.i18n import anomaly_description
from schemas.topics import DIMONA
from streams.messages import (
    derived_event_id,
    describe_validation_error,
    idempotency_key,
    refusal_code,
)

router = APIRouter(tags=["declarations"], responses=COMMON_ERRORS)

Declarant = Annotated[
    Principal, Depends(caller(Role.EMPLOYER, Role.AGENCY, Role.SOCIAL_SECRETARIAT))
]

_NOT_FOUND = "no such declaration"

#: The declarant kinds of the envelope, by the token's role.
_KIND = {
    Role.EMPLOYER: "employer",
    Role.AGENCY: "agency",
    Role.SOCIAL_SECRETARIAT: "social_secretariat",
}


def _location(declaration_id: str) -> str:
    return f"/v1/declarations/{declaration_id}"


def _employer_ref(employer: str) -> dict[str, str]:
    """An employer id (``0123456749`` or ``NSSO<number>``) as a Dimona body names it."""
    if employer.startswith("NSSO"):
        return {"nssoRegistrationNumber": employer.removeprefix("NSSO")}
    return {"enterpriseNumber": employer}


def _accepted(declaration: queries.HttpDeclaration, response: Response) -> DeclarationAccepted:
    location = _location(declaration.declaration_id)
    response.headers["Location"] = location
    return DeclarationAccepted(
        declaration_id=int(declaration.declaration_id),
        status="answered" if declaration.answer is not None else "pending",
        location=location,
    )


def _event_id(header: str | None, declaration: DimonaDeclaration, raw: bytes) -> str:
    """The idempotency key: the header, else the body's eventId, else derived from it."""
    if header is None:
        return declaration.event_id or derived_event_id(raw)
    if not header.strip() or len(header) > 128 or not header.isprintable():
        raise HTTPException(400, "Idempotency-Key must be 1 to 128 printable characters")
    return header


@router.post(
    "/v1/declarations",
    status_code=201,
    summary="Declare (dimonaIn), update or cancel a student period, as to Dimona REST",
    response_model=DeclarationAccepted,
    responses=errors(404, 409),
)
async def declare(
    request: Request,
    response: Response,
    state: State,
    pool: Pool,
    principal: Declarant,
    idempotency: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> DeclarationAccepted:
    raw = await request.body()
    try:
        body = json.loads(raw)
    except ValueError as error:
        raise HTTPException(400, f"the body is not JSON: {error}") from error
    if not isinstance(body, dict):
        raise HTTPException(400, "the body must be a JSON object: a Dimona declaration")
    try:
        declaration = DimonaDeclaration.model_validate_json(raw)
    except pydantic.ValidationError as error:
        raise HTTPException(
            400, f"{refusal_code(error).value}: {describe_validation_error(error)}"
        ) from error
    event_id = _event_id(idempotency, declaration, raw)
    try:
        stored = await _store(state, pool, principal, declaration, body, raw, event_id)
    except asyncpg.UniqueViolationError:
        # The same key posted twice at once: the other request stored it first.
        async with pool.acquire() as conn:
            earlier = await queries.by_event_id(conn, principal.subject, event_id)
        if earlier is None:
            raise
        stored = _replay(earlier, event_id, hashlib.sha256(raw).digest())
    return _accepted(stored, response)


def _replay(
    earlier: queries.HttpDeclaration, event_id: str, digest: bytes
) -> queries.HttpDeclaration:
    """The declaration stored under the key again; another body under it is refused."""
    if earlier.body_sha256 != digest:
        raise HTTPException(
            409,
            f"the idempotency key {event_id!r} was used for another body "
            f"(declaration {earlier.declaration_id})",
        )
    return earlier


async def _store(
    state: State,
    pool: Pool,
    principal: Principal,
    declaration: DimonaDeclaration,
    body: dict[str, Any],
    raw: bytes,
    event_id: str,
) -> queries.HttpDeclaration:
    """Check who may send it, then store the row and its record (outbox) in one
    transaction; the declaration stored earlier under the same key, if any."""
    subject = principal.subject
    digest = hashlib.sha256(raw).digest()
    follow_up = declaration.dimona_update or declaration.dimona_cancel
    async with pool.acquire() as conn, conn.transaction():
        earlier = await queries.by_event_id(conn, subject, event_id)
        if earlier is not None:
            return _replay(earlier, event_id, digest)

        named = declaration.employer.employer_id if declaration.employer is not None else None
        reference = follow_up.period_id if follow_up is not None else None
        owner = await queries.period_owner(conn, reference) if reference is not None else None
        if reference is not None and owner is None:
            raise HTTPException(404, f"unknown period {reference}")
        if principal.role is Role.SOCIAL_SECRETARIAT:
            employer = named or (owner.employer if owner is not None else None)
            if employer is None or not await queries.has_mandate(conn, subject, employer):
                raise HTTPException(
                    403, f"social secretariat {subject} holds no mandate of employer {employer}"
                )
        else:
            if named is not None and named != subject:
                raise HTTPException(
                    403,
                    f"a token of {subject} declares for {subject} only (a social "
                    "secretariat declares for an employer under its mandate)",
                )
            employer = subject
        if owner is not None:
            # A period that is not this employer's is answered like an unknown one.
            named_worker = declaration.worker.ssin if declaration.worker is not None else None
            if owner.employer != employer or named_worker not in (None, owner.ssin):
                raise HTTPException(404, f"unknown period {reference}")
            ssin = owner.ssin
        else:
            assert declaration.worker is not None  # the contract requires it of a dimonaIn
            ssin = declaration.worker.ssin

        outgoing: dict[str, Any] = {
            **body,
            "eventId": event_id,
            "declarant": {"kind": _KIND[principal.role], **_employer_ref(subject)},
        }
        if declaration.employer is None:
            outgoing["employer"] = _employer_ref(employer)
        if owner is not None and owner.period_id != reference:
            # The Location id of a dimonaIn whose period got another number.
            action = "dimonaUpdate" if declaration.dimona_update is not None else "dimonaCancel"
            named_fields = {k: v for k, v in body[action].items() if k != "dimonaNumber"}
            outgoing[action] = {**named_fields, "periodId": owner.period_id}
        value = json.dumps(outgoing, ensure_ascii=False, separators=(",", ":")).encode()
        sent = DimonaDeclaration.model_validate_json(value)
        key = idempotency_key("dimona", sent.declarant_id, event_id)

        seed = key if declaration.dimona_in is not None else f"http:{key}"
        attempt = 0
        declaration_id = period_id_for(seed, attempt)
        while await queries.id_taken(conn, declaration_id):
            attempt += 1
            declaration_id = period_id_for(seed, attempt)
        stored = queries.HttpDeclaration(
            declaration_id=declaration_id,
            declarant=subject,
            employer=employer,
            ssin=ssin,
            action=sent.action,
            event_id=event_id,
            body_sha256=digest,
            received_at=state.shared.clock(),
            answer=None,
        )
        await queries.insert(conn, stored, ack_event_id=f"ack:{key}")
        await store.enqueue(conn, [OutboxMessage(DIMONA, ssin.encode(), value)])
    return stored


@router.get(
    "/v1/declarations/{declaration_id}",
    summary="The answer to a declaration, in the Dimona REST shape (202 until decided)",
    response_model=DeclarationAnswer,
    responses={202: {"model": DeclarationAccepted}, **errors(404)},
)
async def declaration_answer(
    pool: Pool, principal: Declarant, declaration_id: str
) -> DeclarationAnswer | Response:
    found = None
    if declaration_id.isascii() and declaration_id.isdigit():
        async with pool.acquire() as conn:
            found = await queries.by_id(conn, declaration_id)
    if found is None or principal.subject not in (found.declarant, found.employer):
        raise HTTPException(404, _NOT_FOUND)
    if found.answer is None:
        pending = DeclarationAccepted(
            declaration_id=int(found.declaration_id),
            status="pending",
            location=_location(found.declaration_id),
        )
        return JSONResponse(
            pending.model_dump(mode="json", by_alias=True),
            status_code=202,
            headers={"Retry-After": "1"},
        )
    return dimona_answer(found.declaration_id, found.answer)


def dimona_answer(declaration_id: str, answer: dict[str, Any]) -> DeclarationAnswer:
    """The worker's answer (``dimona.acks``) in the Dimona REST answer's shape."""
    anomalies = [
        DimonaAnomalyOut(
            code=str(a.get("code", "")),
            # The code's meaning from the one message catalogue (as the worker's answer
            # carries it); the worker's own sentence follows as ``description``.
            description_fr=anomaly_description(str(a.get("code", "")), "fr"),
            description_nl=anomaly_description(str(a.get("code", "")), "nl"),
            description=str(a.get("text", "")),
        )
        for a in answer.get("anomalies", [])
    ]
    period = answer.get("periodId")
    return DeclarationAnswer(
        declaration_status=DeclarationStatusOut(
            declaration_id=int(declaration_id),
            result=answer["status"],
            period=DimonaPeriodOut(id=period) if period is not None else None,
            anomalies=anomalies,
            anomalies_collection=anomalies,
            reduced_hours=int(answer.get("reducedHours", 0)),
            ordinary_hours=int(answer.get("ordinaryHours", 0)),
        )
    )
