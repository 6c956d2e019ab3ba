"""Commands of the consumers package, added to the ``studentwork`` command line."""

from __future__ import annotations

import typer


def register(cli: typer.Typer) -> None:
    """Add this package's commands to ``cli``."""
