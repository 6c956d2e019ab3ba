"""The outbox relay: publishes the outbox to Kafka, in order, and marks rows sent.

The worker writes every outgoing message into the ``outbox`` table in the same
transaction as the ledger change that caused it; this relay is the only path from there
to Kafka. It publishes with an idempotent producer (acks=all) and marks rows sent only
after the broker acknowledged them, so a crash between the two republishes a few
messages (consumers deduplicate on event id) but never loses one.

Only one relay publishes at a time (a PostgreSQL advisory lock), which keeps the
outbox order; others wait as hot standbys. It wakes on NOTIFY from the outbox trigger and
polls as a fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer

from schemas.settings import Settings

log = logging.getLogger(__name__)

_RELAY_LOCK_KEY = 0x5245_4C41  # "RELA"
_CHANNEL = "studentwork_outbox"


class OutboxRelay:
    """Moves outbox rows to Kafka until stopped."""

    def __init__(self, settings: Settings, *, sent_retention_hours: float = 24.0) -> None:
        self._settings = settings
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        self._sent_retention_hours = sent_retention_hours
        self.published = 0

    async def run(self) -> None:
        """Publish until :meth:`stop` is called. Retries on broker or database trouble."""
        while not self._stopping.is_set():
            try:
                await self._run_once()
            except Exception as error:
                if self._stopping.is_set():
                    break
                log.warning("outbox relay interrupted (%s); retrying in 1 s", error)
                await self._sleep(1.0)

    def stop(self) -> None:
        self._stopping.set()
        self._wakeup.set()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), seconds)
        self._wakeup.clear()

    async def _run_once(self) -> None:
        conn: asyncpg.Connection = await asyncpg.connect(self._settings.database_url)
        producer = AIOKafkaProducer(
            bootstrap_servers=self._settings.kafka_bootstrap,
            enable_idempotence=True,
            acks="all",
            linger_ms=5,
            max_batch_size=256 * 1024,
        )
        try:
            while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _RELAY_LOCK_KEY):
                if self._stopping.is_set():
                    return
                await self._sleep(self._settings.relay_poll_seconds)
            await conn.add_listener(_CHANNEL, self._on_notify)
            await producer.start()
            drained = 0
            while not self._stopping.is_set():
                sent = await self.drain(conn, producer)
                drained += sent
                if sent < self._settings.relay_batch:
                    if drained:
                        await self._purge_sent(conn)
                        drained = 0
                    await self._sleep(self._settings.relay_poll_seconds)
        finally:
            with contextlib.suppress(Exception):
                await producer.stop()
            with contextlib.suppress(Exception):
                await conn.close()

    def _on_notify(self, *_: Any) -> None:
        self._wakeup.set()

    async def drain(self, conn: asyncpg.Connection, producer: AIOKafkaProducer) -> int:
        """Publish one batch of pending rows; return how many were published."""
        rows = await conn.fetch(
            "SELECT id, topic, key, value FROM outbox WHERE sent_at IS NULL ORDER BY id LIMIT $1",
            self._settings.relay_batch,
        )
        if not rows:
            return 0
        futures = [
            await producer.send(self._settings.topic(r["topic"]), value=r["value"], key=r["key"])
            for r in rows
        ]
        await asyncio.gather(*futures)
        await conn.execute(
            "UPDATE outbox SET sent_at = now() WHERE id = ANY($1::bigint[])",
            [r["id"] for r in rows],
        )
        self.published += len(rows)
        return len(rows)

    async def _purge_sent(self, conn: asyncpg.Connection) -> None:
        await conn.execute(
            "DELETE FROM outbox WHERE sent_at < now() - make_interval(secs => $1)",
            self._sent_retention_hours * 3600,
        )


async def pending_count(database_url: str) -> int:
    """How many outbox rows wait to be published (the relay backlog)."""
    conn: asyncpg.Connection = await asyncpg.connect(database_url)
    try:
        count: int = await conn.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
        return count
    finally:
        await conn.close()
