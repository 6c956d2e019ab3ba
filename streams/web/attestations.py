"""attestations views (to be written)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import faust

if TYPE_CHECKING:
    from streams.app import WorkerState


def register(app: faust.App, state: WorkerState) -> None:
    """Mount the attestations views."""
