"""Shared fixtures: one Kafka broker and one PostgreSQL server for the whole session.

Both come from `infra.local_services`, so `KAFKA_BOOTSTRAP` / `DATABASE_URL` point the
tests at existing services and nothing is started for those.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
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


@pytest.fixture
async def database_url(postgres_admin_dsn: str) -> AsyncIterator[str]:
    """DSN of a new, empty database that exists for one test only.

    A database per test keeps tests independent without any clean-up code in them.
    """
    name = f"test_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(postgres_admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()

    yield urlsplit(postgres_admin_dsn)._replace(path=f"/{name}").geturl()

    admin = await asyncpg.connect(postgres_admin_dsn)
    try:
        # FORCE ends connections a test left open (e.g. an unclosed pool).
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
