"""Fixtures of the HTTP API tests: one database per test module.

A worker subprocess takes seconds to start, so API tests share one worker (and so one
database) per module; the session-wide ``database_url`` fixture is per test.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import asyncpg
import pytest


@pytest.fixture(scope="module")
async def module_database_url(postgres_admin_dsn: str) -> AsyncIterator[str]:
    """DSN of a new, empty database that exists for one test module."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(postgres_admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()

    yield urlsplit(postgres_admin_dsn)._replace(path=f"/{name}").geturl()

    admin = await asyncpg.connect(postgres_admin_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
