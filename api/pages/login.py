"""Signing in and out, and the language choice.

``/dev/login`` exists in development mode only (``STUDENTWORK_DEVELOPMENT``): a form that
mints a token for a student, employer or agency, as ``studentwork token`` does, and sets
it as the session cookie. In production the identity service in front signs callers in
and these routes answer 404.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from api.auth import Role, mint_token
from api.deps import State
from api.pages.common import (
    CSRF_FIELD,
    LANGUAGE_COOKIE,
    TOKEN_COOKIE,
    cookie_options,
    csrf_valid,
    page_language,
    problem,
    refuse_csrf,
    render,
    signed_in,
)
from schemas.i18n import LANGUAGES, translations
from schemas.identifiers import normalize_enterprise_number, normalize_ssin

router = APIRouter(include_in_schema=False)

#: Where each role lands after signing in.
HOME: dict[Role, str] = {Role.STUDENT: "/", Role.EMPLOYER: "/employer", Role.AGENCY: "/employer"}


def local_target(target: str | None, fallback: str) -> str:
    """``target`` when it is a path of this site, else ``fallback`` (no open redirect)."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return fallback


@router.get("/dev/login")
async def login_form(request: Request, state: State, next: str = "") -> Response:
    if not state.settings.development:
        return problem(request, state, 404, translations(page_language(request, state)).gettext(
            "No such page."
        ))  # fmt: skip
    return render(request, state, "login.html", next=local_target(next, ""), error="")


@router.post("/dev/login")
async def login(
    request: Request,
    state: State,
    role: Annotated[str, Form()] = "",
    subject: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "",
) -> Response:
    _ = translations(page_language(request, state)).gettext
    if not state.settings.development:
        return problem(request, state, 404, _("No such page."))
    try:
        chosen = Role(role)
        if chosen is Role.STUDENT:
            subject = normalize_ssin(subject, today=state.today())
        else:
            subject = normalize_enterprise_number(subject)
    except ValueError:
        return render(
            request,
            state,
            "login.html",
            status_code=400,
            next=local_target(next, ""),
            error=_("Enter a valid social security number or enterprise number."),
        )
    token = mint_token(state.settings, chosen, subject)
    response = RedirectResponse(local_target(next, HOME[chosen]), status_code=303)
    response.set_cookie(
        TOKEN_COOKIE, token, max_age=state.settings.token_ttl_minutes * 60, **cookie_options()
    )
    return response


@router.post("/logout")
async def logout(request: Request, state: State) -> Response:
    session = await signed_in(request, state)
    if session is not None:
        form = await request.form()
        if not csrf_valid(state, session, form.get(CSRF_FIELD)):
            return refuse_csrf(request, state, session)
    response = RedirectResponse("/dev/login" if state.settings.development else "/", 303)
    response.delete_cookie(TOKEN_COOKIE, **cookie_options())
    return response


@router.get("/language/{language}")
async def choose_language(
    request: Request, state: State, language: str, next: str = "/"
) -> Response:
    """Remember the language choice (a preference cookie: no data changes, so a link)."""
    response = RedirectResponse(local_target(next, "/"), status_code=303)
    if language in LANGUAGES:
        response.set_cookie(LANGUAGE_COOKIE, language, max_age=365 * 24 * 3600, **cookie_options())
    return response
