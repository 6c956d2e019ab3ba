"""What every page shares: templates, the signed-in caller, the language, CSRF tokens.

**Who is signed in.** In production the federal identity service in front of the
service sets a signed token, as ``Authorization: Bearer`` or as the cookie
:data:`TOKEN_COOKIE`; in development mode ``/dev/login`` mints one and sets the cookie.
The token is verified exactly as the JSON API verifies it (:mod:`api.auth`). Cookies are
``HttpOnly`` (no script reads them), ``Secure`` (HTTPS only; browsers treat
``localhost`` as secure) and ``SameSite=Lax`` (not sent with cross-site form posts).

**CSRF.** Every form that changes state carries :func:`csrf_token`: an HMAC of the
caller's token under the service's secret, so it needs no server-side state, differs per
session and cannot be computed by another site. A state-changing request without it, or
with another one, is refused (403) with the reason.

**Language.** The choice on the page (the cookie :data:`LANGUAGE_COOKIE`, set by
``/language/{lang}``), else ``Accept-Language``, else ``STUDENTWORK_DEFAULT_LANGUAGE``.
Templates get ``_`` (the catalogue of that language, :mod:`schemas.i18n`) and are
autoescaped: every value, an employer's name included, is shown as text.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from api.auth import InvalidToken, Principal, Role, bearer_token, verify_token_async
from api.deps import ApiState
from schemas.i18n import (
    LANGUAGE_NAMES,
    LANGUAGES,
    Language,
    anomaly_description,
    format_euros,
    format_hours,
    format_long_date,
    language_or_default,
    negotiate,
    translations,
)

PACKAGE = Path(__file__).resolve().parent.parent
TEMPLATES = Jinja2Templates(directory=PACKAGE / "templates")
STATIC = PACKAGE / "static"

TOKEN_COOKIE = "studentwork_token"
LANGUAGE_COOKIE = "studentwork_lang"
#: The hidden form field of :func:`csrf_token`.
CSRF_FIELD = "csrf"


def cookie_options() -> dict[str, Any]:
    """The attributes of every cookie the pages set."""
    return {"httponly": True, "secure": True, "samesite": "lax", "path": "/"}


def page_language(request: Request, state: ApiState) -> Language:
    """The page's language: the cookie, else ``Accept-Language``, else the default."""
    default = state.settings.default_language
    chosen = request.cookies.get(LANGUAGE_COOKIE)
    if chosen in LANGUAGES:
        return language_or_default(chosen, default)
    return negotiate(request.headers.get("Accept-Language"), default)


def session_token(request: Request) -> str | None:
    """The caller's token: the bearer header (identity service) or the cookie."""
    header = request.headers.get("Authorization")
    if header:
        try:
            return bearer_token(header)
        except InvalidToken:
            return None
    return request.cookies.get(TOKEN_COOKIE) or None


@dataclass(frozen=True)
class Session:
    """A verified caller of a page and the token it came with (which keys its CSRF)."""

    principal: Principal
    token: str


async def signed_in(request: Request, state: ApiState) -> Session | None:
    """The verified caller, or None (no token, or a forged or expired one)."""
    token = session_token(request)
    if token is None:
        return None
    try:
        principal = await verify_token_async(state.settings, token)
    except InvalidToken:
        return None
    return Session(principal, token)


def csrf_token(state: ApiState, session: Session) -> str:
    """The CSRF token of ``session``'s forms (HMAC-SHA256 of its token)."""
    key = hashlib.sha256(
        b"studentwork pages csrf:" + state.settings.access_code_secret.get_secret_value().encode()
    ).digest()
    return hmac.new(key, session.token.encode(), hashlib.sha256).hexdigest()


def csrf_valid(state: ApiState, session: Session, sent: object) -> bool:
    """Whether a form's ``csrf`` field is this session's token (constant-time)."""
    return isinstance(sent, str) and hmac.compare_digest(sent, csrf_token(state, session))


def render(
    request: Request,
    state: ApiState,
    template: str,
    *,
    session: Session | None = None,
    status_code: int = 200,
    **values: Any,
) -> HTMLResponse:
    """A page in the caller's language, with what every page needs."""
    language = page_language(request, state)
    catalogue = translations(language)
    context: dict[str, Any] = {
        "language": language,
        "languages": LANGUAGE_NAMES,
        "_": catalogue.gettext,
        "ngettext": catalogue.ngettext,
        "hours": lambda n: format_hours(n, language),
        "euros": lambda cents: format_euros(cents, language),
        "long_date": lambda d: format_long_date(d, language) if isinstance(d, date) else "",
        "anomaly": lambda code: anomaly_description(code, language),
        "session": session,
        "csrf": csrf_token(state, session) if session is not None else "",
        "development": state.settings.development,
        "path": request.url.path,
        "current_year": state.today().year,
        **values,
    }
    response = TEMPLATES.TemplateResponse(request, template, context, status_code=status_code)
    # Pages show personal data: never kept by a shared cache.
    response.headers["Cache-Control"] = "private, no-store"
    return response


def problem(
    request: Request,
    state: ApiState,
    status_code: int,
    message: str,
    session: Session | None = None,
) -> HTMLResponse:
    """An error page: the status and the reason (already in the page's language)."""
    return render(
        request, state, "problem.html", session=session, status_code=status_code, message=message
    )


def to_login(request: Request, state: ApiState) -> Response:
    """Where an anonymous caller goes: the development login, else a 401 page."""
    if state.settings.development:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/dev/login?next={quote(target, safe='')}", status_code=303)
    catalogue = translations(page_language(request, state))
    return problem(request, state, 401, catalogue.gettext("Please sign in."))


async def require(
    request: Request, state: ApiState, *roles: Role, csrf: str | None = None
) -> Session | Response:
    """The signed-in caller with one of ``roles``, or the response to send instead.

    ``csrf`` is what a state-changing form sent in :data:`CSRF_FIELD` (None for a page
    that only reads): the form is refused unless it is this session's token.
    """
    session = await signed_in(request, state)
    if session is None:
        return to_login(request, state)
    if session.principal.role not in roles:
        catalogue = translations(page_language(request, state))
        return problem(
            request,
            state,
            403,
            catalogue.gettext("This page is not for your role."),
            session,
        )
    return checked_form(request, state, session, csrf)


#: A session, or a subclass that carries more of the signed-in caller (the student's SSIN).
AnySession = TypeVar("AnySession", bound=Session)


def checked_form(
    request: Request, state: ApiState, session: AnySession, csrf: str | None
) -> AnySession | HTMLResponse:
    """``session`` when its form carried this session's CSRF token (or there is no form,
    ``csrf`` None), else the refusal: the last step of every signed-in check."""
    if csrf is None or csrf_valid(state, session, csrf):
        return session
    return refuse_csrf(request, state, session)


def refuse_csrf(request: Request, state: ApiState, session: Session) -> HTMLResponse:
    """The refusal of a state-changing form without this session's CSRF token."""
    catalogue = translations(page_language(request, state))
    return problem(
        request,
        state,
        403,
        catalogue.gettext(
            "The form was refused: it did not carry this session's security token. "
            "Open the page again and resend it."
        ),
        session,
    )
