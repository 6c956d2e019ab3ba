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


class Readiness(Contract):
    """``/health/ready``: may this worker take traffic (503 with the reasons if not).

    Ready means: broker and database reachable, every lane in its consumer group, and no
    partition stuck (lag, and no progress for ``STUDENTWORK_STUCK_PARTITION_SECONDS``).
    """

    status: Literal["ready", "not-ready"]
    reasons: list[str] = Field(description="Why not ready (empty when ready).")
    broker: ServiceCheck
    database: ServiceCheck
    lanes: dict[str, list[str]] = Field(
        description="Each lane's assigned partitions as topic[partition]."
    )
