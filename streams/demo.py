"""``studentwork demo`` (to be written)."""

from __future__ import annotations

import typer


def register(cli: typer.Typer) -> None:
    """Add the demo command."""
