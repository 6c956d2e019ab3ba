"""consents agents (to be written)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import faust

if TYPE_CHECKING:
    from streams.app import WorkerState


def register_agents(app: faust.App, state: WorkerState) -> None:
    """Add the consents agents, topics and timers to the worker."""
