"""Fixtures of the relay tests: the relays run in the test process."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from db.migrate import migrate
from schemas.settings import Settings
from streams.admin import ensure_topics
from tests.support import Pipeline


@pytest.fixture
async def settings(kafka_bootstrap: str, database_url: str) -> AsyncIterator[Settings]:
    """A pipeline's settings on the session's broker, its database migrated and its topics
    created."""
    settings = Pipeline(kafka_bootstrap, database_url).settings()
    await migrate(database_url)
    await ensure_topics(settings)
    yield settings
