"""Plain-SQL migrations, applied in order, each once, each in its own transaction.

Files named ``NNNN_name.sql`` in ``db/migrations`` are applied in name order and recorded
in ``schema_migrations``. An advisory lock lets several workers start at once safely.
"""

from __future__ import annotations

from importlib import resources

import asyncpg

_LOCK_KEY = 0x5354_5544  # "STUD": serialises concurrent migrators.


def migration_files() -> list[tuple[str, str]]:
    """(version, sql) of every migration shipped with the package, in order."""
    folder = resources.files("db") / "migrations"
    files = sorted(
        (entry.name, entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    )
    return [(name.removesuffix(".sql"), sql) for name, sql in files]


async def migrate(database_url: str) -> list[str]:
    """Apply the pending migrations; return the versions applied now."""
    connection: asyncpg.Connection = await asyncpg.connect(database_url)
    try:
        await connection.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
        try:
            await connection.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {
                r["version"]
                for r in await connection.fetch("SELECT version FROM schema_migrations")
            }
            applied: list[str] = []
            for version, sql in migration_files():
                if version in done:
                    continue
                async with connection.transaction():
                    await connection.execute(sql)
                    await connection.execute(
                        "INSERT INTO schema_migrations (version) VALUES ($1)", version
                    )
                applied.append(version)
            return applied
        finally:
            await connection.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    finally:
        await connection.close()
