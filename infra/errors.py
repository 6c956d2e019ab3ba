"""Errors raised by the local-infrastructure helpers."""

from __future__ import annotations


class MissingTool(RuntimeError):
    """A program needed to run a local service (Java, Maven, PostgreSQL) is not installed.

    The message is a single line naming what to install, so that it reads well both in a
    pytest error and on a terminal.
    """
