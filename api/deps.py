"""What every endpoint depends on: the process state, the caller, today, the pool.

Authentication and roles are FastAPI dependencies: an endpoint names the callers it
serves (``Depends(caller(Role.STUDENT))``) and never sees a request it may not answer.
Errors are raised as :class:`fastapi.HTTPException` with the reason as ``detail``;
:mod:`api.app` renders every one as ``{"error": "<reason>"}``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import date
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.auth import InvalidToken, Principal, Role, bearer_token, verify_token_async
from api.models import ErrorBody
from schemas.identifiers import normalize_ssin
from schemas.settings import Settings
from streams.attestations import AccessCodes
from streams.runtime import WorkerState


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI description of error answers: each is :class:`api.models.ErrorBody`."""
    return {status: {"model": ErrorBody, "description": _ERROR_TEXT[status]} for status in statuses}


_ERROR_TEXT = {
    400: "Malformed or out-of-range parameter or body.",
    401: "Missing, malformed, forged or expired token.",
    403: "The token's role or subject may not see this resource.",
    404: "No such resource (or not the caller's: the same answer).",
    409: "The idempotency key was used for another body.",
    429: "Too many attempts; try again later (Retry-After).",
    503: "The database is unavailable.",
}

#: What every endpoint with a token may answer besides its success.
COMMON_ERRORS = errors(400, 401, 403, 503)

#: Declares the bearer scheme in the OpenAPI document (``bearerAuth``). It reads nothing
#: itself (``auto_error`` off): :func:`caller` parses the header, to give each failure
#: its own reason.
bearer_scheme = HTTPBearer(auto_error=False, scheme_name="bearerAuth")


class ApiState:
    """What the endpoints of one process share: settings, clock, database pool, codes.

    The pool and the clock are the worker's own :class:`streams.runtime.WorkerState`
    (same connection settings, same retry while the database is away), made in the
    application's lifespan.
    """

    def __init__(self, shared: WorkerState) -> None:
        self.shared = shared
        self.settings: Settings = shared.settings
        self.access_codes = AccessCodes(shared.settings)

    def today(self) -> date:
        """'Today' in Brussels (pinned by ``STUDENTWORK_TODAY`` in demos and tests)."""
        return self.settings.today_in_brussels(self.shared.clock())


def api_state(request: Request) -> ApiState:
    state: ApiState = request.app.state.studentwork
    return state


State = Annotated[ApiState, Depends(api_state)]


async def database(state: State) -> asyncpg.Pool:
    """The process's pool (created in the lifespan, so this never waits)."""
    return await state.shared.pool()


Pool = Annotated[asyncpg.Pool, Depends(database)]


def caller(*roles: Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency giving the authenticated caller, who must have one of ``roles``.

    401 with the reason for a missing, malformed, forged or expired token; 403 for a
    valid token of another role. With a JWKS URL the key look-up may fetch over HTTP, so
    verification then runs in a thread (:func:`api.auth.verify_token_async`).
    """
    wanted = " or ".join(r.value for r in roles)

    async def dependency(
        request: Request,
        state: State,
        _scheme: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    ) -> Principal:
        try:
            principal = await verify_token_async(
                state.settings, bearer_token(request.headers.get("Authorization"))
            )
        except InvalidToken as error:
            raise HTTPException(401, str(error)) from error
        if roles and principal.role not in roles:
            raise HTTPException(403, f"this resource is for {wanted} tokens")
        return principal

    return dependency


async def student_ssin(
    state: State, principal: Annotated[Principal, Depends(caller(Role.STUDENT))]
) -> str:
    """The SSIN of the calling student (401 when the token names no valid SSIN)."""
    try:
        return normalize_ssin(principal.subject, today=state.today())
    except ValueError as error:
        raise HTTPException(401, "the token does not name a valid SSIN") from error


Student = Annotated[Principal, Depends(caller(Role.STUDENT))]
StudentSsin = Annotated[str, Depends(student_ssin)]
EmployerOrAgency = Annotated[Principal, Depends(caller(Role.EMPLOYER, Role.AGENCY))]
Agency = Annotated[Principal, Depends(caller(Role.AGENCY))]
