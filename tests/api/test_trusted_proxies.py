"""The per-address limit of failed look-ups behind a reverse proxy (issue 8 item 9).

``X-Forwarded-For`` counts only when the peer is a configured trusted proxy; otherwise,
and by default, the peer address is the client's. Real API processes on real PostgreSQL
(no worker needed: the API migrates the database itself).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from api.auth import Role, mint_token
from tests.support import EMPLOYER_A, EMPLOYER_B, ApiProcess, Pipeline

pytestmark = pytest.mark.integration

PROXY = "127.0.0.2"
DIRECT = "127.0.0.3"


async def failed_addresses(database_url: str) -> list[str]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT subject FROM lookup_failures WHERE scope = 'address'"
            " ORDER BY failed_at, subject"
        )
        await conn.execute("DELETE FROM lookup_failures")
        return [r["subject"] for r in rows]
    finally:
        await conn.close()


async def bad_lookup(
    pipeline: Pipeline, peer: str, forwarded: str | None, employer: str = EMPLOYER_A
) -> httpx.Response:
    token = mint_token(pipeline.settings(), Role.EMPLOYER, employer)
    headers = {"Authorization": f"Bearer {token}"}
    if forwarded is not None:
        headers["X-Forwarded-For"] = forwarded
    transport = httpx.AsyncHTTPTransport(local_address=peer)
    async with httpx.AsyncClient(base_url=pipeline.api_url, transport=transport) as http:
        return await http.get(
            "/v1/employer/balance", params={"code": "ABCD-EFGH-JKMN-PQRS"}, headers=headers
        )


@pytest.fixture
async def behind_proxy(
    kafka_bootstrap: str, database_url: str, tmp_path: Path
) -> AsyncIterator[Pipeline]:
    pipeline = Pipeline(
        kafka_bootstrap,
        database_url,
        extra_env={
            "STUDENTWORK_TRUSTED_PROXIES": f'["{PROXY}/32", "10.0.0.0/8"]',
            "STUDENTWORK_LOOKUP_FAILURES_ALLOWED": "2",
        },
    )
    with ApiProcess(pipeline, tmp_path / "api.log"):
        yield pipeline


async def test_a_trusted_proxy_s_forwarded_address_is_the_client_s(
    behind_proxy: Pipeline, database_url: str
) -> None:
    pipeline = behind_proxy
    assert (await bad_lookup(pipeline, PROXY, "203.0.113.7")).status_code == 404
    # The rightmost address that is not a trusted proxy: the client wrote the leftmost
    # itself, 10.1.2.3 is a trusted inner proxy.
    chain = "198.51.100.1, 203.0.113.8, 10.1.2.3"
    assert (await bad_lookup(pipeline, PROXY, chain, EMPLOYER_B)).status_code == 404
    # A peer that is not a trusted proxy: its header is ignored.
    assert (await bad_lookup(pipeline, DIRECT, "203.0.113.9", EMPLOYER_B)).status_code == 404
    # Without the header, the proxy's own address.
    assert (await bad_lookup(pipeline, PROXY, None)).status_code == 404
    assert await failed_addresses(database_url) == ["203.0.113.7", "203.0.113.8", DIRECT, PROXY]

    # Two clients behind one proxy have their own limits.
    for _ in range(2):
        assert (await bad_lookup(pipeline, PROXY, "203.0.113.7")).status_code == 404
    blocked = await bad_lookup(pipeline, PROXY, "203.0.113.7", EMPLOYER_B)
    assert blocked.status_code == 429
    assert (await bad_lookup(pipeline, PROXY, "203.0.113.50", EMPLOYER_B)).status_code == 404

    malformed = await bad_lookup(pipeline, PROXY, "203.0.113.7, not-an-address")
    assert malformed.status_code == 400
    assert malformed.json() == {"error": "malformed X-Forwarded-For entry 'not-an-address'"}


async def test_without_trusted_proxies_the_peer_address_counts(
    kafka_bootstrap: str, database_url: str, tmp_path: Path
) -> None:
    pipeline = Pipeline(kafka_bootstrap, database_url)
    with ApiProcess(pipeline, tmp_path / "api.log"):
        assert (await bad_lookup(pipeline, PROXY, "203.0.113.7")).status_code == 404
        assert (await bad_lookup(pipeline, DIRECT, "not-an-address")).status_code == 404
    assert await failed_addresses(database_url) == [PROXY, DIRECT]
