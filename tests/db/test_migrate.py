"""Migrations: applied in order, recorded, and a second run changes nothing."""

from __future__ import annotations

import asyncpg
import pytest

from db.migrate import migrate, migration_files

pytestmark = pytest.mark.integration


def test_migrations_are_numbered_and_ordered() -> None:
    versions = [version for version, _sql in migration_files()]
    assert versions == sorted(versions)
    assert versions[0] == "0001_ledger"
    assert all(v[:4].isdigit() for v in versions)


async def test_migrate_applies_once_then_is_a_no_op(database_url: str) -> None:
    expected = [version for version, _sql in migration_files()]
    assert await migrate(database_url) == expected
    assert await migrate(database_url) == []
    conn = await asyncpg.connect(database_url)
    try:
        recorded = [
            r["version"]
            for r in await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
        ]
        tables = {
            r["tablename"]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
    finally:
        await conn.close()
    assert recorded == expected
    assert {
        "students",
        "periods",
        "wage_reports",
        "balances",
        "applied_events",
        "outbox",
        "quota_years",
        "access_codes",
        "attestations",
        "consents",
        "ebox_documents",
    } <= tables
