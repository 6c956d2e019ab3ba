"""The FastAPI application of the HTTP tier, and how uvicorn serves it.

Every error is JSON ``{"error": "<reason>"}`` with its status: the endpoints raise
:class:`fastapi.HTTPException` with the reason, FastAPI's own refusals (a malformed
query, path or body) become 400 with a sentence naming the parameter, and a database
that does not answer is 503. The OpenAPI document is FastAPI's, served at
``/v1/openapi.json`` (and listed in itself, for client developers); it has no docs UI.

The lifespan migrates the database (idempotent, under the migrators' advisory lock, so
the API may start before the worker) and opens the asyncpg pool the endpoints share.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import uvicorn
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route

from api import attestations, consents, declarations, ebox, student
from api.deps import ApiState
from api.pages import PAGE_ROUTERS
from api.pages.common import STATIC
from db.migrate import migrate
from schemas.settings import Settings
from streams import metrics
from streams.runtime import Clock, WorkerState, retry_transient, utc_now

log = logging.getLogger(__name__)

#: The routers of the application, one per audience; a new router is added here, which
#: also puts its endpoints under the tests that iterate over every endpoint.
ROUTERS: tuple[APIRouter, ...] = (
    student.router,
    attestations.router,
    consents.router,
    ebox.router,
    declarations.router,
)

_UNAVAILABLE = "the database is unavailable; try again later"


def create_app(settings: Settings, *, clock: Clock = utc_now) -> FastAPI:
    """The ``/v1`` API on ``settings``' database; ``clock`` is "now" (tests pin it)."""
    shared = WorkerState(settings, clock)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await retry_transient("migrating the database", migrate, settings.database_url)
        await shared.pool()
        try:
            yield
        finally:
            await shared.close()

    app = FastAPI(
        title="Student@work API",
        version="1",
        description="Hour quota of Belgian student jobs: what students, employers and "
        'agencies may see. Errors are JSON {"error": reason}.',
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.studentwork = ApiState(shared)
    for router in ROUTERS:
        app.include_router(router)
    # The pages (api/pages/) and their stylesheet: outside /v1 and the OpenAPI document.
    for page_router in PAGE_ROUTERS:
        app.include_router(page_router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.middleware("http")
    async def count_requests(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        # The route's template, never the filled path: no SSIN or code in a label.
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        template = route.path if isinstance(route, (APIRoute, Route)) else "unmatched"
        metrics.API_REQUESTS.labels(template, str(response.status_code)).inc()
        metrics.API_REQUEST_DURATION.labels(template).observe(time.perf_counter() - started)
        return response

    # Operators' scrape target, outside /v1 and the OpenAPI document (a plain route of its
    # own, not an endpoint): counts only, no personal data; expose it to the monitoring
    # network, not to the internet.
    app.add_route("/metrics", _prometheus_metrics, include_in_schema=False)

    @app.get("/v1/openapi.json", summary="This document", tags=["operations"])
    async def openapi() -> dict[str, Any]:
        return app.openapi()

    def document() -> dict[str, Any]:
        # FastAPI documents a 422 for every parameter; this API answers those with 400
        # and ErrorBody (see _invalid_request), so the 422 entries are taken out.
        if app.openapi_schema is None:
            doc = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            for methods in doc["paths"].values():
                for operation in methods.values():
                    operation["responses"].pop("422", None)
            for name in ("HTTPValidationError", "ValidationError"):
                doc["components"]["schemas"].pop(name, None)
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]

    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    for database_error in (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        app.add_exception_handler(database_error, _database_unavailable)
    return app


async def _prometheus_metrics(request: Request) -> Response:
    """The HTTP tier's Prometheus metrics (requests, look-up failures, 429s)."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


async def _http_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    return JSONResponse(
        {"error": str(error.detail)}, status_code=error.status_code, headers=error.headers
    )


async def _invalid_request(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    return JSONResponse({"error": validation_reason(error)}, status_code=400)


async def _database_unavailable(request: Request, error: Exception) -> JSONResponse:
    log.warning("%s %s: database unavailable: %r", request.method, request.url.path, error)
    return JSONResponse({"error": _UNAVAILABLE}, status_code=503)


_WHERE = {"query": "query parameter", "path": "path parameter", "header": "header"}


def validation_reason(error: RequestValidationError) -> str:
    """FastAPI's refusal of a request as one sentence per problem, naming where it is.

    E.g. ``query parameter 'limit' must be a whole number (got 'x')`` or ``the body is not
    JSON: Expecting value``.
    """
    reasons = []
    for problem in error.errors():
        kind = str(problem.get("type", ""))
        location = [str(part) for part in problem.get("loc", ())]
        if kind == "json_invalid":
            detail = problem.get("ctx", {}).get("error", problem.get("msg", ""))
            reasons.append(f"the body is not JSON: {detail}")
            continue
        where = location[0] if location else "body"
        name = ".".join(location[1:])
        label = f"{_WHERE[where]} {name!r}" if where in _WHERE else f"body field {name!r}"
        if where == "body" and not name:
            label = "the body"
        if kind.startswith("int_"):
            message = " must be a whole number"
        else:
            message = ": " + str(problem.get("msg", "is invalid")).lower()
        got = f" (got {problem['input']!r})" if "input" in problem and kind != "missing" else ""
        reasons.append(f"{label}{message}{got}")
    return "; ".join(reasons) or "invalid request"


def serve(settings: Settings, host: str, port: int) -> None:
    """Serve the API with uvicorn until SIGINT/SIGTERM.

    ``proxy_headers`` is off: uvicorn would otherwise take the client address from
    ``X-Forwarded-For`` of any local peer; the look-up limits read the peer address.
    """
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        proxy_headers=False,
        server_header=False,
        log_level=settings.log_level.lower(),
        access_log=False,
    )


def endpoints(app: FastAPI) -> list[APIRoute]:
    """Every endpoint of ``app``: its own and those of :data:`ROUTERS`.

    (FastAPI keeps included routers as such in ``app.routes``, so they are read from
    the routers themselves.)
    """
    routes = [*app.routes, *(route for router in ROUTERS for route in router.routes)]
    return [route for route in routes if isinstance(route, APIRoute)]
