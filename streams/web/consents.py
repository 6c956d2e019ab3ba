"""Agency consent: the student grants or revokes, the agency reads remaining hours.

A temporary work agency may check a student's remaining hours directly when the student
agreed to it, and the student may withdraw that at any time (DOMAIN.md section 2).

- ``POST /v1/consents`` (student) ``{"agency": "0123.456.749"}``: grant, 202.
- ``DELETE /v1/consents/{agency}`` (student): revoke, 202.
- ``GET /v1/consents`` (student): the student's consents and their state.
- ``GET /v1/agency/students/{ssin}/balance`` (agency): remaining hours of the current
  year, and nothing else, while the student's consent to that agency is active.

Grants and revocations are not written here: they are published to ``consents`` (key:
SSIN) through the **outbox**, in a one-statement transaction, and the consent agent
applies them. Why the outbox rather than the faust producer: the 202 then means
"committed in the system of record", whatever the broker's state at that instant (the
relay retries with an idempotent producer until Kafka has it); the outbox is already the
project's one path to Kafka, ordered by row id, so a grant and the revocation that
follows it reach the partition in the order the student clicked; and the API never
waits on a broker round trip. The price is a redelivery now and then (consumers
deduplicate on event id, as they must anyway) and a delay of one relay wake-up.
"""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any

import faust
from faust import web
from faust.web import exceptions

from db import consents as consent_db
from db import store
from db.store import OutboxMessage
from schemas.consents import ConsentChange
from schemas.identifiers import (
    format_enterprise_number,
    normalize_enterprise_number,
    normalize_ssin,
)
from schemas.topics import CONSENTS
from streams.web.auth import Role
from streams.web.base import ApiView

if TYPE_CHECKING:
    from streams.runtime import WorkerState

#: Personal data: no cache anywhere on the way may keep it.
NO_STORE = {"Cache-Control": "no-store"}


def _agency_from(raw: object) -> str:
    """The enterprise number (10 digits) of an agency as the client wrote it, or 400."""
    if not isinstance(raw, str):
        raise exceptions.ValidationError("'agency' must be the agency's enterprise number")
    try:
        return normalize_enterprise_number(raw)
    except ValueError as error:
        raise exceptions.ValidationError(f"agency: {error}") from error


class _ConsentPublisher(ApiView):
    """Publishes a student's consent change through the outbox."""

    async def publish(self, ssin: str, agency: str, action: str) -> web.Response:
        change = ConsentChange.model_validate(
            {
                "event_id": str(uuid.uuid4()),
                "ssin": ssin,
                "agency": agency,
                "action": action,
                "changed_at": self.state.clock(),
            }
        )
        pool = await self.state.pool()
        async with pool.acquire() as conn, conn.transaction():
            await store.enqueue(
                conn, [OutboxMessage(CONSENTS, ssin.encode(), change.to_json_bytes())]
            )
        return self.json(
            {
                "eventId": change.event_id,
                "agency": format_enterprise_number(agency),
                "action": action,
                "changedAt": change.changed_at.isoformat(),
                "status": "accepted",
            },
            status=202,
            headers=dict(NO_STORE),
        )


class ConsentsView(_ConsentPublisher):
    """``/v1/consents``: list (GET) and grant (POST)."""

    async def get(self, request: web.Request, **kwargs: Any) -> web.Response:
        ssin = self.principal(request, Role.STUDENT).subject
        pool = await self.state.pool()
        async with pool.acquire() as conn:
            consents = await consent_db.list_consents(conn, ssin)
        return self.json(
            {
                "consents": [
                    {
                        "agency": format_enterprise_number(c.agency),
                        "active": c.active,
                        "status": "active" if c.active else "revoked",
                        "grantedAt": c.granted_at.isoformat() if c.granted_at else None,
                        "revokedAt": c.revoked_at.isoformat() if c.revoked_at else None,
                    }
                    for c in consents
                ]
            },
            headers=dict(NO_STORE),
        )

    async def post(self, request: web.Request, **kwargs: Any) -> web.Response:
        ssin = self.principal(request, Role.STUDENT).subject
        try:
            body = json.loads(await request.read() or b"null")
        except ValueError as error:
            raise exceptions.ValidationError(f"the body is not JSON: {error}") from error
        if not isinstance(body, dict) or "agency" not in body:
            raise exceptions.ValidationError(
                'the body must be a JSON object {"agency": "<enterprise number>"}'
            )
        return await self.publish(ssin, _agency_from(body["agency"]), "grant")


class ConsentView(_ConsentPublisher):
    """``/v1/consents/{agency}``: revoke (DELETE).

    Always accepted, even when no consent is stored yet: a grant posted a moment ago
    may still be on its way, and the revocation must then follow it, not be refused.
    """

    async def delete(self, request: web.Request, agency: str = "", **kwargs: Any) -> web.Response:
        ssin = self.principal(request, Role.STUDENT).subject
        return await self.publish(ssin, _agency_from(agency), "revoke")


class AgencyBalanceView(ApiView):
    """``/v1/agency/students/{ssin}/balance``: remaining hours, for a consenting student.

    Only the remaining hours of the current year are returned: no employers, no jobs, no
    wages (GDPR: each party sees only what it is entitled to). Without an active consent
    the answer is 403, the same whether or not the student has any data, so an agency
    learns nothing about students who did not agree.
    """

    async def get(self, request: web.Request, ssin: str = "", **kwargs: Any) -> web.Response:
        agency = _agency_of_token(self.principal(request, Role.AGENCY).subject)
        settings = self.state.settings
        today = settings.today_in_brussels(self.state.clock())
        try:
            student = normalize_ssin(ssin, today=today)
        except ValueError as error:
            raise exceptions.ValidationError(f"ssin: {error}") from error
        pool = await self.state.pool()
        async with pool.acquire() as conn:
            if not await consent_db.has_active_consent(conn, student, agency):
                raise exceptions.PermissionDenied(
                    "this student has not given (or has withdrawn) consent to agency "
                    f"{format_enterprise_number(agency)}"
                )
            remaining = await consent_db.remaining_hours(
                conn, student, today.year, settings.quota_rules
            )
        return self.json(
            {"ssin": student, "year": today.year, "remainingHours": remaining},
            headers=dict(NO_STORE),
        )


def _agency_of_token(subject: str) -> str:
    """The enterprise number an agency token names, or 403 if it names none."""
    try:
        return normalize_enterprise_number(subject)
    except ValueError as error:
        raise exceptions.PermissionDenied(
            "the token does not name an agency's enterprise number"
        ) from error


def register(app: faust.App, state: WorkerState) -> None:
    """Mount the consent views and the agency's balance view."""
    app.page("/v1/consents")(ConsentsView)
    app.page("/v1/consents/{agency}")(ConsentView)
    app.page("/v1/agency/students/{ssin}/balance")(AgencyBalanceView)
