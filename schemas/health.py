"""What the worker's ``/health`` answers: each dependency's check and the outbox backlog."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas._base import Contract


class ServiceCheck(Contract):
    ok: bool
    detail: str


class Health(Contract):
    """Liveness of the worker's dependencies (503 unless broker and database are ok)."""

    status: Literal["ok", "degraded"]
    broker: ServiceCheck
    database: ServiceCheck
    relay_backlog: int | None = Field(
        description="Outbox messages not yet published (null when the database is down)."
    )
