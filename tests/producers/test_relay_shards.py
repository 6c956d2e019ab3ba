"""Relays share the outbox by shards (``STUDENTWORK_RELAY_SHARDS``), each key in one.

The relays run in this process against the session's real broker and a migrated
throwaway database, each on its own connection, as separate relay processes would; rows
are put in the outbox with :func:`db.store.enqueue`, as the worker does.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

import asyncpg
import pytest

from db import store
from db.store import OutboxMessage
from producers.relay import (
    BUCKETS,
    OutboxRelay,
    bucket_of,
    pending_count,
    relays_publishing,
    shard_of,
)
from schemas.settings import Settings
from schemas.topics import ACKS
from tests.support import collect

pytestmark = pytest.mark.integration

KEYS = [f"student-{n:03}".encode() for n in range(60)]
#: Every key's ten messages, in the order they were written.
ALL_TEN = {key.decode(): list(range(10)) for key in KEYS}


def with_shards(settings: Settings, shards: int) -> Settings:
    return settings.model_copy(update={"relay_shards": shards, "relay_poll_seconds": 0.2})


async def until(condition: Callable[[], Awaitable[bool] | bool], what: str) -> None:
    for _ in range(300):
        outcome = condition()
        if outcome if isinstance(outcome, bool) else await outcome:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within 30 s: {what}")


class Running:
    """Relays started in this process, each on its own connection; stopped at the end."""

    def __init__(self) -> None:
        self._tasks: dict[OutboxRelay, asyncio.Task[None]] = {}

    def start(self, settings: Settings) -> OutboxRelay:
        relay = OutboxRelay(settings, sent_retention_hours=0)
        self._tasks[relay] = asyncio.create_task(relay.run())
        return relay

    async def stop(self, relay: OutboxRelay) -> None:
        relay.stop()
        await asyncio.wait_for(self._tasks.pop(relay), 30)

    async def stop_all(self) -> None:
        for relay in list(self._tasks):
            await self.stop(relay)


@pytest.fixture
async def relays() -> AsyncIterator[Running]:
    running = Running()
    try:
        yield running
    finally:
        await running.stop_all()


def messages(rounds: Iterable[int]) -> list[OutboxMessage]:
    """Every key's messages ``n`` of ``rounds``, the keys interleaved as a busy worker
    writes them."""
    return [
        OutboxMessage(ACKS, key, json.dumps({"key": key.decode(), "n": n}).encode())
        for n in rounds
        for key in KEYS
    ]


async def enqueue(database_url: str, outgoing: list[OutboxMessage]) -> None:
    conn: asyncpg.Connection = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            await store.enqueue(conn, outgoing)
    finally:
        await conn.close()


async def drained(settings: Settings) -> bool:
    return await pending_count(settings.database_url) == 0


async def published_in_order(settings: Settings, count: int) -> dict[str, list[int]]:
    """Every key's ``n`` as the broker has them, after checking that exactly ``count``
    messages were published."""
    got = await collect(settings.kafka_bootstrap, settings.topic(ACKS), count=count, settle=1.0)
    assert len(got) == count
    by_key: dict[str, list[int]] = {}
    for message in sorted(got, key=lambda m: (m["partition"], m["offset"])):
        by_key.setdefault(message["key"], []).append(message["value"]["n"])
    return by_key


def rows_of(shards: frozenset[int], count: int, per_key: int) -> int:
    return per_key * sum(1 for key in KEYS if shard_of(key, count) in shards)


async def test_every_row_is_in_the_bucket_of_its_key(settings: Settings) -> None:
    outgoing = [*messages(range(1)), OutboxMessage(ACKS, None, b'{"n": 0}')]
    await enqueue(settings.database_url, outgoing)
    conn: asyncpg.Connection = await asyncpg.connect(settings.database_url)
    try:
        stored = [
            (r["key"], r["bucket"])
            for r in await conn.fetch("SELECT key, bucket FROM outbox ORDER BY id")
        ]
    finally:
        await conn.close()
    assert stored == [(m.key, bucket_of(m.key)) for m in outgoing]
    # The keys spread over the buckets (60 keys: most of the 32).
    assert len({bucket for _, bucket in stored}) > BUCKETS // 2


async def test_two_relays_share_the_shards_and_keep_the_order_of_each_key(
    settings: Settings, relays: Running
) -> None:
    sharded = with_shards(settings, 2)
    first, second = relays.start(sharded), relays.start(sharded)
    await until(
        lambda: len(first.held_shards) == len(second.held_shards) == 1,
        "one shard each",
    )
    assert first.held_shards | second.held_shards == {0, 1}
    conn: asyncpg.Connection = await asyncpg.connect(settings.database_url)
    try:
        assert await relays_publishing(conn) == 2
    finally:
        await conn.close()

    await enqueue(settings.database_url, messages(range(10)))
    await until(lambda: drained(settings), "the outbox drained")

    assert await published_in_order(settings, 600) == ALL_TEN
    # Each relay published exactly the rows of its shard, and both had some.
    assert first.published == rows_of(first.held_shards, 2, 10) > 0
    assert second.published == rows_of(second.held_shards, 2, 10) > 0
    assert first.published + second.published == 600


async def test_a_relay_alone_publishes_every_shard(settings: Settings, relays: Running) -> None:
    relay = relays.start(with_shards(settings, 4))
    await until(lambda: relay.held_shards == {0, 1, 2, 3}, "all four shards")
    await enqueue(settings.database_url, messages(range(3)))
    await until(lambda: drained(settings), "the outbox drained")
    assert await published_in_order(settings, 180) == {key.decode(): [0, 1, 2] for key in KEYS}
    assert relay.published == 180


async def test_shards_move_to_a_relay_that_joins_and_back_from_one_that_stops(
    settings: Settings, relays: Running
) -> None:
    sharded = with_shards(settings, 3)
    first = relays.start(sharded)
    await until(lambda: first.held_shards == {0, 1, 2}, "the first relay holds all three")
    await enqueue(settings.database_url, messages(range(0, 4)))
    await until(lambda: drained(settings), "the first rows drained")

    # A second relay joins: the first hands over what is beyond its share (2 of 3).
    second = relays.start(sharded)
    await until(
        lambda: len(first.held_shards) == 2 and len(second.held_shards) == 1,
        "two shards and one",
    )
    assert first.held_shards | second.held_shards == {0, 1, 2}
    await enqueue(settings.database_url, messages(range(4, 8)))
    await until(lambda: drained(settings), "the second rows drained")
    assert second.published == rows_of(second.held_shards, 3, 4) > 0

    # The first stops: the second takes its shards over.
    await relays.stop(first)
    await until(lambda: second.held_shards == {0, 1, 2}, "the second relay holds all three")
    await enqueue(settings.database_url, messages(range(8, 10)))
    await until(lambda: drained(settings), "the last rows drained")

    assert await published_in_order(settings, 600) == ALL_TEN


async def test_relays_configured_with_other_shard_counts_never_publish_side_by_side(
    settings: Settings, relays: Running
) -> None:
    single = relays.start(with_shards(settings, 1))
    await until(lambda: single.held_shards == {0}, "the single relay publishes")
    # A relay cut for two shards would publish half of what the single one publishes: it
    # waits, whatever it tries.
    sharded = relays.start(with_shards(settings, 2))
    await enqueue(settings.database_url, messages(range(0, 5)))
    await until(lambda: drained(settings), "the outbox drained")
    await asyncio.sleep(2.5)  # more than two looks at the relays running
    assert sharded.held_shards == frozenset()
    assert (single.published, sharded.published) == (300, 0)

    # The single one stops: the sharded one takes both shards.
    await relays.stop(single)
    await until(lambda: sharded.held_shards == {0, 1}, "the sharded relay takes over")

    # A relay with fewer shards starts: the sharded one lets go, then it publishes.
    fewer = relays.start(with_shards(settings, 1))
    await until(
        lambda: sharded.held_shards == frozenset() and fewer.held_shards == {0},
        "the relay with fewer shards publishes alone",
    )
    await enqueue(settings.database_url, messages(range(5, 10)))
    await until(lambda: drained(settings), "the outbox drained again")
    assert (fewer.published, sharded.published) == (300, 0)
    assert await published_in_order(settings, 600) == ALL_TEN
