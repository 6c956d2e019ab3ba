"""What every API view shares: authentication, the worker state, errors as JSON."""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from faust import web
from faust.web import exceptions

from streams.web.auth import (
    InvalidToken,
    Principal,
    Role,
    bearer_token,
    verify_token,
    verify_token_async,
)

if TYPE_CHECKING:
    from streams.runtime import WorkerState

#: This request's Authorization header and what verifying it gave (a principal, or the
#: reason it is invalid), when :meth:`ApiView.dispatch` verified it ahead of the view.
#: A context variable because one view instance serves every request concurrently.
_verified_ahead: ContextVar[tuple[str, Principal | str] | None] = ContextVar(
    "studentwork_verified_ahead", default=None
)


class ApiView(web.View):
    """Base of the ``/v1`` views.

    Errors are JSON ``{"error": "<reason>"}`` with the right status; views raise
    ``exceptions.NotAuthenticated`` (401), ``PermissionDenied`` (403), ``NotFound`` (404),
    ``ValidationError`` (400) or ``Throttled`` (429).
    """

    @property
    def state(self) -> WorkerState:
        state: WorkerState = self.app.studentwork_state  # type: ignore[attr-defined]
        return state

    async def dispatch(self, request: Any) -> Any:
        """Run the view; with a JWKS URL, verify its token first without blocking the loop.

        Views call the synchronous :meth:`principal`, but a JWKS key look-up may fetch
        over HTTP; so the token is verified here in a thread, and :meth:`principal` uses
        that outcome. Other token settings verify inline, as before.
        """
        header = request.headers.get("Authorization")
        if self.state.settings.jwt_jwks_url is None or not header:
            return await super().dispatch(request)
        outcome: Principal | str
        try:
            outcome = await verify_token_async(self.state.settings, bearer_token(header))
        except InvalidToken as error:
            outcome = str(error)
        reset = _verified_ahead.set((header, outcome))
        try:
            return await super().dispatch(request)
        finally:
            _verified_ahead.reset(reset)

    def principal(self, request: web.Request, *roles: Role) -> Principal:
        """The authenticated caller, who must have one of ``roles``."""
        header = request.headers.get("Authorization")
        ahead = _verified_ahead.get()
        try:
            if ahead is not None and ahead[0] == header:
                if isinstance(ahead[1], str):
                    raise InvalidToken(ahead[1])
                principal = ahead[1]
            else:
                principal = verify_token(self.state.settings, bearer_token(header))
        except InvalidToken as error:
            raise exceptions.NotAuthenticated(str(error)) from error
        if roles and principal.role not in roles:
            wanted = " or ".join(r.value for r in roles)
            raise exceptions.PermissionDenied(f"this resource is for {wanted} tokens")
        return principal

    @staticmethod
    def query_int(request: web.Request, name: str, default: int | None = None) -> int:
        raw = request.query.get(name)
        if raw is None:
            if default is None:
                raise exceptions.ValidationError(f"query parameter {name!r} is required")
            return default
        try:
            return int(raw)
        except ValueError as error:
            raise exceptions.ValidationError(
                f"query parameter {name!r} must be a whole number (got {raw!r})"
            ) from error

    def problem(self, status: int, reason: str, **extra: Any) -> web.Response:
        return self.json({"error": reason, **extra}, status=status)
