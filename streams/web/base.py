"""What every API view shares: authentication, the worker state, errors as JSON."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from faust import web
from faust.web import exceptions

from streams.web.auth import InvalidToken, Principal, Role, bearer_token, verify_token

if TYPE_CHECKING:
    from streams.runtime import WorkerState


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

    def principal(self, request: web.Request, *roles: Role) -> Principal:
        """The authenticated caller, who must have one of ``roles``."""
        try:
            principal = verify_token(
                self.state.settings, bearer_token(request.headers.get("Authorization"))
            )
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
