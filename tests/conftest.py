"""Shared fixtures: one Kafka broker and one PostgreSQL server for the whole session.

Both come from `infra.local_services`, so `KAFKA_BOOTSTRAP` / `DATABASE_URL` point the
tests at existing services and nothing is started for those.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import asyncpg
import pytest

from infra import Services, local_services


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    with local_services() as running:
        yield running


@pytest.fixture(scope="session")
def kafka_bootstrap(services: Services) -> str:
    return services.kafka_bootstrap


@pytest.fixture(scope="session")
def postgres_admin_dsn(services: Services) -> str:
    """DSN of a superuser on the shared server; tests should prefer `database_url`."""
    return services.database_url


@asynccontextmanager
async def throwaway_database(admin_dsn: str, label: str = "test") -> AsyncIterator[str]:
    """A new, empty database on the shared server, dropped afterwards.

    A database per test (or per module) keeps tests independent without any clean-up
    code in them; ``WITH (FORCE)`` ends connections a test left open.
    """
    name = f"{label}_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield urlsplit(admin_dsn)._replace(path=f"/{name}").geturl()
    finally:
        admin = await asyncpg.connect(admin_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture
async def database_url(postgres_admin_dsn: str) -> AsyncIterator[str]:
    """DSN of a new, empty database that exists for one test only."""
    async with throwaway_database(postgres_admin_dsn) as url:
        yield url


@pytest.fixture(scope="module")
async def module_database_url(postgres_admin_dsn: str) -> AsyncIterator[str]:
    """DSN of a new, empty database shared by one test module (one worker per module)."""
    async with throwaway_database(postgres_admin_dsn) as url:
        yield url
