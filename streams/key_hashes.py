"""Every student's partitioner hash stored, so a partition's students are one SQL predicate.

The monthly access-code rotation and the recompute after a quota change each work on the
students of one partition (``key_hash % partitions``, see :mod:`schemas.partitioning`).
Rows written before migration 0013 (or by a worker of an older version during a rolling
upgrade) have no hash yet; both fill them in first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import asyncpg

from db import store
from schemas.partitioning import student_key_hash

#: Students whose missing key hash is filled in per transaction (rows older than the column).
KEY_HASH_CHUNK = 10_000


def _key_hashes(ssins: Sequence[str]) -> list[int]:
    return [student_key_hash(ssin) for ssin in ssins]


async def fill_key_hashes(pool: asyncpg.Pool, *, chunk: int = KEY_HASH_CHUNK) -> int:
    """Store the partitioner hash of every student that has none yet; return how many.

    A worker runs this when it starts, and every rotation and every recompute share
    first; once all are filled it costs one empty index probe.
    """
    filled = 0
    after = ""
    while True:
        async with pool.acquire() as conn, conn.transaction():
            ssins = await store.lock_students_without_key_hash(conn, after=after, limit=chunk)
            if not ssins:
                return filled
            # Pure-Python murmur2: off the event loop, the lanes go on meanwhile.
            hashes = await asyncio.to_thread(_key_hashes, ssins)
            await store.set_key_hashes(conn, ssins, hashes)
        filled += len(ssins)
        after = ssins[-1]
