"""Shared fixtures: one Kafka broker and one PostgreSQL server for the whole session.

Both come from `infra.local_services`, so `KAFKA_BOOTSTRAP` / `DATABASE_URL` point the
tests at existing services and nothing is started for those.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import asyncpg
import pytest

from db.migrate import migrate
from infra import Services, local_services

if TYPE_CHECKING:
    from selenium.webdriver import Chrome


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the tests marked ``long`` first (the order is otherwise kept).

    `infra/test` spreads whole modules over several processes; a multi-minute replay
    handed out last would leave one process running it alone at the end.
    """
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


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


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A small pool on a new database with every migration applied (one test only)."""
    await migrate(database_url)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture(scope="module")
async def module_database_url(postgres_admin_dsn: str) -> AsyncIterator[str]:
    """DSN of a new, empty database shared by one test module (one worker per module)."""
    async with throwaway_database(postgres_admin_dsn) as url:
        yield url


@pytest.fixture(scope="session")
def browser_downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the session's browser saves downloaded files (attestation PDFs)."""
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="session")
def browser(browser_downloads: Path) -> Iterator[Chrome]:
    """One headless Chromium (Debian's, through Selenium) for the session's page tests.

    Skipped, with the reason, where Debian's chromium or chromium-driver is missing.
    """
    from tests.browser import browser_missing, chromium

    missing = browser_missing()
    if missing is not None:
        pytest.skip(missing)
    with chromium(browser_downloads) as driver:
        yield driver


@pytest.fixture
def screenshot(browser: Chrome, request: pytest.FixtureRequest) -> Callable[[str], Path]:
    """``screenshot("home")`` saves what the browser shows as a test artefact."""
    from tests.browser import save_screenshot

    return lambda page: save_screenshot(browser, request.node.name, page)
