"""Which partition a record key goes to: the hash of Kafka's default partitioner.

Java clients, aiokafka and faust all hash the key bytes with murmur2 (Kafka's variant, seed
``0x9747b28c``) and keep the positive 31 bits; the partition among ``P`` is that hash
modulo ``P``. The hash itself does not depend on ``P``, so it is stored once per student
(``students.key_hash``) and the students of any partition of any SSIN-keyed topic are
then chosen in SQL (``key_hash % P = p``), the way the monthly access-code rotation does.

aiokafka's own ``murmur2`` is used, so the result is bit-identical to what its producer
does; it is pure Python (about 2.4 us per SSIN), paid once per student when the row is
first written.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from aiokafka.partitioner import DefaultPartitioner, murmur2

__all__ = [
    "KEY_HASH_MASK",
    "KeyHashPartitioner",
    "key_hash",
    "partition_of_key",
    "student_key_hash",
]

KEY_HASH_MASK = 0x7FFFFFFF
"""The positive 31 bits Kafka keeps of murmur2 (``Utils.toPositive``)."""


def key_hash(key: bytes) -> int:
    """Kafka's default-partitioner hash of a record key: 0 <= hash < 2**31."""
    return int(murmur2(key)) & KEY_HASH_MASK


def student_key_hash(ssin: str) -> int:
    """The key hash of a student's records, keyed by the SSIN's ASCII bytes."""
    return key_hash(ssin.encode())


def partition_of_key(hash_: int, partitions: int) -> int:
    """The partition among ``partitions`` that a key of hash ``hash_`` goes to."""
    if partitions < 1:
        raise ValueError(f"a topic has at least one partition, got {partitions}")
    return hash_ % partitions


class KeyHashPartitioner:
    """Kafka's default partitioner for a producer (``AIOKafkaProducer(partitioner=...)``)
    that keeps the hashes of the last ``keys`` keys it placed.

    The outbox relay publishes the same keys again and again (an employer's answers, a
    balance on two topics), and the pure-Python murmur2 was a fifth of its time (py-spy).
    A record without a key goes where the default partitioner would send it.
    """

    def __init__(self, keys: int = 1 << 16) -> None:
        self._hash = lru_cache(maxsize=keys)(key_hash)

    def __call__(
        self, key: bytes | None, all_partitions: Sequence[int], available: Sequence[int]
    ) -> int:
        if key is None:
            return int(DefaultPartitioner()(key, all_partitions, available))
        return all_partitions[self._hash(key) % len(all_partitions)]
