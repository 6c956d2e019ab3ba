"""The README's first command, end to end at a small size."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import asyncpg
import pytest

from tests.support import REPO, free_port

pytestmark = pytest.mark.integration


def test_demo_feeds_a_simulated_year_and_stops(kafka_bootstrap: str, database_url: str) -> None:
    port = free_port()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP": kafka_bootstrap,
        "DATABASE_URL": database_url,
        "STUDENTWORK_TOPIC_PREFIX": f"demo{port}.",
        "STUDENTWORK_APP_ID": f"demo{port}",
        "COLUMNS": "200",
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "infra",
            "demo",
            "--students",
            "120",
            "--seed",
            "3",
            "--exit-after-feed",
            "--port",
            str(port),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "records fed" in result.stderr
    assert "A accepted" in result.stderr
    assert "dead letters:" in result.stderr
    # The ready-to-paste curl goes to stdout with a fresh token.
    assert f"http://127.0.0.1:{port}/v1/me/balance" in result.stdout
    assert "Authorization: Bearer ey" in result.stdout
    students, backlog = asyncio.run(_students_and_backlog(database_url))
    assert students > 100
    assert backlog == 0


async def _students_and_backlog(database_url: str) -> tuple[int, int]:
    conn = await asyncpg.connect(database_url)
    try:
        students = await conn.fetchval("SELECT count(DISTINCT ssin) FROM balances")
        backlog = await conn.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
        return int(students), int(backlog)
    finally:
        await conn.close()
