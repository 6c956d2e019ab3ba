"""The HTTP API (faust web views, versioned under ``/v1``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import faust

if TYPE_CHECKING:
    from streams.runtime import WorkerState


def register_views(app: faust.App, state: WorkerState) -> None:
    """Mount every view on the worker's web server."""
    from streams import health
    from streams.web import attestations, consents, ebox, student

    for module in (student, attestations, consents, ebox):
        module.register(app, state)
    health.register(app, state)
