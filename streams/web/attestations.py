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
in PostgreSQL per employer and per client address, so every worker enforces one limit.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import faust
import pydantic
from faust import web
from faust.web import exceptions

from db import attestations as queries
from db import store
from db.store import OutboxMessage
from quota.attestations import year_refusal
from schemas.attestations import AttestationRequest
from schemas.identifiers import format_enterprise_number
from schemas.topics import ATTESTATION_REQUESTS
from streams.attestations import AccessCodes, code_valid_on
from streams.messages import describe_validation_error
from streams.web.auth import Role
from streams.web.base import ApiView

if TYPE_CHECKING:
    from streams.runtime import WorkerState

#: The one answer to every code that does not give access, whatever the reason.
NO_ACCESS = "no valid access code matches"

_ATTESTATION_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def _location(attestation_id: str) -> str:
    return f"/v1/attestations/{attestation_id}"


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def client_address(request: web.Request) -> str:
    """The peer address of the connection (no proxy header is trusted)."""
    remote = getattr(request, "remote", None)
    return str(remote) if remote else "unknown"


class _AttestationApi(ApiView):
    def access_codes(self) -> AccessCodes:
        """The worker's key holder (made by the agents), or one of our own."""
        codes: AccessCodes | None = getattr(self.app, "studentwork_access_codes", None)
        if codes is None:
            codes = AccessCodes(self.state.settings)
            self.app.studentwork_access_codes = codes  # type: ignore[attr-defined]
        return codes


class AttestationsView(_AttestationApi):
    """``/v1/attestations``: ask for an attestation (POST), list one's own (GET)."""

    async def post(self, request: web.Request, **_: Any) -> web.Response:
        principal = self.principal(request, Role.STUDENT)
        body = await self._body(request)
        settings = self.state.settings
        now = self.state.clock()
        today = settings.today_in_brussels(now)
        year = body.get("year", today.year)
        if not isinstance(year, int) or isinstance(year, bool):
            raise exceptions.ValidationError("'year' must be a whole number, e.g. 2026")
        refusal = year_refusal(year, today)
        if refusal is not None:
            raise exceptions.ValidationError(refusal)
        attestation_id = str(uuid.uuid4())
        try:
            message = AttestationRequest(
                event_id=str(uuid.uuid4()),
                attestation_id=attestation_id,
                ssin=principal.subject,
                year=year,
                requested_at=now,
            )
        except pydantic.ValidationError as error:  # e.g. a token naming no valid SSIN
            raise exceptions.ValidationError(describe_validation_error(error)) from error
        pool = await self.state.pool()
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
                [
                    OutboxMessage(
                        ATTESTATION_REQUESTS, message.ssin.encode(), message.to_json_bytes()
                    )
                ],
            )
        location = _location(attestation_id)
        return self.json(
            {"attestationId": attestation_id, "status": "pending", "location": location},
            status=202,
            headers={"Location": location},
        )

    async def get(self, request: web.Request, **_: Any) -> web.Response:
        principal = self.principal(request, Role.STUDENT)
        limit = self.query_int(request, "limit", 50)
        if not 1 <= limit <= 500:
            raise exceptions.ValidationError("'limit' must be between 1 and 500")
        pool = await self.state.pool()
        async with pool.acquire() as conn:
            rows = await queries.attestations_of(conn, principal.subject, limit)
        return self.json(
            {
                "attestations": [
                    {
                        "attestationId": r.attestation_id,
                        "year": r.year,
                        "status": r.status,
                        "requestedAt": _iso(r.requested_at),
                        "issuedAt": _iso(r.issued_at),
                        "location": _location(r.attestation_id),
                    }
                    for r in rows
                ]
            }
        )

    @staticmethod
    async def _body(request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except ValueError as error:
            raise exceptions.ValidationError(f"the body is not JSON: {error}") from error
        if not isinstance(body, dict):
            raise exceptions.ValidationError('the body must be a JSON object like {"year": 2026}')
        return body


class AttestationView(_AttestationApi):
    """``/v1/attestations/{id}``: the PDF when ready, 202 while pending."""

    async def get(self, request: web.Request, attestation_id: str, **_: Any) -> web.Response:
        principal = self.principal(request, Role.STUDENT)
        row = None
        if _ATTESTATION_ID.match(attestation_id):
            pool = await self.state.pool()
            async with pool.acquire() as conn:
                row = await queries.attestation_of(conn, attestation_id, principal.subject)
        if row is None:  # unknown, malformed, or another student's: all the same
            raise exceptions.NotFound("no such attestation")
        status_body = {
            "attestationId": row.attestation_id,
            "year": row.year,
            "status": row.status,
            "location": _location(row.attestation_id),
        }
        if row.status == "pending":
            return self.json(status_body, status=202, headers={"Retry-After": "1"})
        if row.status == "refused":
            return self.json({**status_body, "error": row.reason}, status=422)
        if row.status != "issued" or row.pdf is None:
            return self.json({**status_body, "error": row.reason or "not available"}, status=500)
        name = f"student-at-work-attestation-{row.year}-{row.attestation_id[:8]}.pdf"
        return self.bytes(
            row.pdf,
            content_type="application/pdf",
            headers={
                "Content-Disposition": f'inline; filename="{name}"',
                "Cache-Control": "private, no-store",
            },
        )


class EmployerBalanceView(_AttestationApi):
    """``/v1/employer/balance?code=...``: remaining hours for the holder of a valid code."""

    async def get(self, request: web.Request, **_: Any) -> web.Response:
        principal = self.principal(request, Role.EMPLOYER, Role.AGENCY)
        employer = principal.subject
        address = client_address(request)
        settings = self.state.settings
        now = self.state.clock()
        today = settings.today_in_brussels(now)
        allowed = settings.lookup_failures_allowed
        window = timedelta(seconds=settings.lookup_failure_window_seconds)

        typed = request.query.get("code", "")
        codes = self.access_codes()
        digest = codes.digest(typed)
        if digest is None:
            digest = codes.decoy_digest(typed)

        pool = await self.state.pool()
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
                return self.json(
                    {"error": "too many failed look-ups; try again later"},
                    status=429,
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
                return self.json({"error": NO_ACCESS}, status=404)
            await queries.record_lookup(
                conn, ssin=match.ssin, employer=employer, at=now, code_month=match.month
            )
        remaining = match.remaining
        if remaining is None:
            overrides = {today.year: match.quota_override} if match.quota_override else {}
            remaining = settings.quota_rules.with_overrides(overrides).quota(today.year)
        return self.json(
            {
                "year": today.year,
                "remainingHours": remaining,
                "validUntil": match.valid_until.isoformat(),
            },
            headers={"Cache-Control": "private, no-store"},
        )


class StudentLookupsView(_AttestationApi):
    """``/v1/me/lookups``: which employers looked the student's hours up, and when."""

    async def get(self, request: web.Request, **_: Any) -> web.Response:
        principal = self.principal(request, Role.STUDENT)
        limit = self.query_int(request, "limit", 100)
        if not 1 <= limit <= 1000:
            raise exceptions.ValidationError("'limit' must be between 1 and 1000")
        pool = await self.state.pool()
        async with pool.acquire() as conn:
            rows = await queries.lookups_of(conn, principal.subject, limit)
        return self.json(
            {
                "lookups": [
                    {
                        "employer": _shown_employer(r.employer),
                        "lookedUpAt": r.looked_up_at.isoformat(),
                        "codeMonth": f"{r.code_month:%Y-%m}",
                    }
                    for r in rows
                ]
            }
        )


def _shown_employer(employer: str) -> str:
    try:
        return format_enterprise_number(employer)
    except ValueError:  # an NSSO-registered employer or a non-standard identifier
        return employer


def register(app: faust.App, state: WorkerState) -> None:
    """Mount the attestation, employer look-up and look-up history views."""
    app.page("/v1/attestations")(AttestationsView)
    app.page("/v1/attestations/{attestation_id}")(AttestationView)
    app.page("/v1/employer/balance")(EmployerBalanceView)
    app.page("/v1/me/lookups")(StudentLookupsView)
