"""The monthly access-code scheduler: publishes ``access-codes.rotate`` commands.

"New month, new code" (DOMAIN.md section 5). At midnight Brussels time on the first of
each month the faust leader's crontab (``streams.attestations``) calls
:func:`publish_rotation`; each command goes to its own partition, and the worker that owns
that partition rotates the codes of its students in bulk. Operators can publish the same
commands by hand with ``studentwork rotate-codes``; rotation is idempotent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Iterable
from datetime import date, datetime

from aiokafka import AIOKafkaProducer

from quota.access_codes import month_start
from schemas.attestations import AccessCodeRotation
from schemas.settings import Settings
from schemas.topics import ACCESS_CODES_ROTATE


def rotation_commands(
    month: date, partitions: int, now: datetime, only: Iterable[int] | None = None
) -> list[AccessCodeRotation]:
    """The commands rotating ``month``: one per partition (or per partition in ``only``).

    Event ids are deterministic, so a consumer can tell a republished command from a new
    one; the rotation itself is idempotent anyway.
    """
    first = month_start(month)
    wanted = range(partitions) if only is None else sorted(set(only))
    return [
        AccessCodeRotation(
            event_id=f"access-codes:{first:%Y-%m}:{p}/{partitions}",
            month=first,
            partition=p,
            partitions=partitions,
            requested_at=now,
        )
        for p in wanted
    ]


async def publish_rotation(
    settings: Settings, month: date, now: datetime, *, skip: Collection[int] = ()
) -> list[int]:
    """Publish the rotation commands of ``month``, each to its own partition.

    The partition count is the topic's, as the broker reports it. ``skip`` lists
    partitions already rotated (the start-up catch-up publishes only the others).
    Returns the partitions published to.
    """
    topic = settings.topic(ACCESS_CODES_ROTATE)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, enable_idempotence=True, acks="all"
    )
    await producer.start()
    try:
        partitions = sorted(await producer.partitions_for(topic))
        wanted = [p for p in partitions if p not in skip]
        commands = rotation_commands(month, len(partitions), now, wanted)
        futures = [
            await producer.send(
                topic, c.to_json_bytes(), key=str(c.partition).encode(), partition=c.partition
            )
            for c in commands
        ]
        await asyncio.gather(*futures)
        return [c.partition for c in commands]
    finally:
        await producer.stop()
