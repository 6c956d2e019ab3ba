"""The employer's and the agency's pages.

``/employer``: type an access code, see the year, the remaining hours and the end of the
code's validity, nothing else; the look-up goes through the JSON API's own endpoint
(:func:`api.attestations.employer_balance`), so it is recorded for the student, and
failures count towards the same limit (429). It is a form that changes state (a
look-up is recorded), so it carries the CSRF token.

``/agency/students/{ssin}``: an agency sees a student's remaining hours of the current
year while the student's consent is active (:func:`api.consents.agency_balance`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import JSONResponse, Response

from api.attestations import employer_balance
from api.auth import Role
from api.consents import agency_balance
from api.deps import State
from api.models import EmployerBalance
from api.pages.common import (
    CSRF_FIELD,
    Session,
    page_language,
    problem,
    render,
    require,
)
from schemas.i18n import translations

router = APIRouter(include_in_schema=False)


@router.get("/employer")
async def employer_page(request: Request, state: State) -> Response:
    session = await require(request, state, Role.EMPLOYER, Role.AGENCY)
    if not isinstance(session, Session):
        return session
    return render(request, state, "employer.html", session=session, answer=None, error="")


@router.post("/employer")
async def employer_lookup(
    request: Request,
    state: State,
    code: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form(alias=CSRF_FIELD)] = "",
) -> Response:
    session = await require(request, state, Role.EMPLOYER, Role.AGENCY, csrf=csrf)
    if not isinstance(session, Session):
        return session
    _ = translations(page_language(request, state)).gettext
    pool = await state.shared.pool()
    try:
        answer = await employer_balance(request, Response(), state, pool, session.principal, code)
    except HTTPException as error:  # 429: too many failed look-ups
        message = _("Too many failed look-ups; try again later.")
        return render(
            request, state, "employer.html", session=session, answer=None, error=message,
            status_code=error.status_code,
        )  # fmt: skip
    if isinstance(answer, EmployerBalance):
        return render(request, state, "employer.html", session=session, answer=answer, error="")
    status = answer.status_code if isinstance(answer, JSONResponse) else 404
    return render(
        request, state, "employer.html", session=session, answer=None, status_code=status,
        error=_("No valid access code: check the code on the attestation."),
    )  # fmt: skip


@router.get("/agency/students/{ssin}")
async def agency_student_page(request: Request, state: State, ssin: str) -> Response:
    session = await require(request, state, Role.AGENCY)
    if not isinstance(session, Session):
        return session
    try:
        balance = await agency_balance(
            state, await state.shared.pool(), session.principal, Response(), ssin
        )
    except HTTPException as error:
        _ = translations(page_language(request, state)).gettext
        message = (
            _("This student has not given your agency consent (or has withdrawn it).")
            if error.status_code == 403
            else str(error.detail)
        )
        return problem(request, state, error.status_code, message, session)
    return render(request, state, "agency.html", session=session, balance=balance)
